import { readFileSync } from "node:fs";
import { type Command, Option } from "commander";
import { CliError } from "../admin-client.ts";
import { type Cli, collect, positiveInt, reasonOption, segments, words } from "../cli-context.ts";

const CO_OWNER_HELP =
  "a person who owns the agent too, in order of succession if the owner leaves (repeatable)";

export function registerAgents(program: Command, cli: Cli): Command {
  const agents = program.command("agents").description("registered agents and their lifecycle");
  agents
    .command("create")
    .requiredOption("--name <name>")
    .requiredOption("--owner <email>", "the person accountable for the agent")
    .option("--co-owner <email>", CO_OWNER_HELP, collect)
    .requiredOption("--purpose <text>")
    .option("--resource <uri>", "a resource server the agent may get tokens for (repeatable)", collect)
    .option("--scopes <scopes>", "scopes allowed on the resource(s)")
    .option("--secret", "authenticate with a generated client secret (default without --jwks-file)")
    .option("--jwks-file <file>", "authenticate with private_key_jwt using this public JWKS")
    .option("--redirect-uri <uri>", "repeatable", collect)
    .option("--may-delegate-to <client_id>", "repeatable", collect)
    .option("--max-depth <n>", "maximum delegation chain length", positiveInt)
    .option("--blast-radius <text>", "what the agent could damage if it misbehaves")
    .option("--allow-untasked", "allow delegations that name no task (generic clients)")
    .option("--dpop-required", "only issue DPoP-bound tokens to this agent")
    .action(async (o) => {
      if (o.secret && o.jwksFile) throw new CliError("use either --secret or --jwks-file, not both");
      if (o.resource?.length && !o.scopes) throw new CliError("--resource needs --scopes");
      let auth: unknown = { method: "client_secret" };
      if (o.jwksFile) {
        try {
          auth = { method: "private_key_jwt", jwks: JSON.parse(readFileSync(o.jwksFile, "utf8")) };
        } catch {
          throw new CliError(`cannot read a JSON JWKS from ${o.jwksFile}`);
        }
      }
      cli.print(
        await cli.admin().request("POST", "/agents", {
          name: o.name,
          owner: o.owner,
          co_owners: o.coOwner,
          purpose: o.purpose,
          grants: (o.resource ?? []).map((resource: string) => ({ resource, scopes: words(o.scopes) })),
          auth,
          redirect_uris: o.redirectUri,
          may_delegate_to: o.mayDelegateTo,
          max_depth: o.maxDepth,
          blast_radius: o.blastRadius,
          allow_untasked: o.allowUntasked ? true : undefined,
          dpop_required: o.dpopRequired ? true : undefined,
        }),
      );
    });
  agents
    .command("list")
    .addOption(new Option("--status <status>").choices(["pending", "active", "suspended", "retired"]))
    .option("--owner <email>", "only agents this person owns or co-owns")
    .action(async (o) => {
      const query = new URLSearchParams(
        Object.entries({ status: o.status, owner: o.owner }).filter(([, v]) => v) as [string, string][],
      );
      cli.print(await cli.admin().request("GET", `/agents${query.size ? `?${query}` : ""}`));
    });
  agents
    .command("show <client_id>")
    .action(async (id: string) => cli.print(await cli.admin().request("GET", `/agents/${segments(id)}`)));
  agents
    .command("update <client_id>")
    .description("change an agent's owners")
    .option("--owner <email>", "the new primary owner (a co-owner made primary owner stops being a co-owner)")
    .option("--co-owner <email>", `${CO_OWNER_HELP}; replaces the co-owners`, collect)
    .option("--no-co-owners", "remove every co-owner")
    .action(async (id: string, o) => {
      if (o.coOwner && !o.coOwners) throw new CliError("use either --co-owner or --no-co-owners, not both");
      const coOwners = o.coOwners ? o.coOwner : [];
      if (!o.owner && !coOwners)
        throw new CliError("nothing to update: give --owner, --co-owner or --no-co-owners");
      cli.print(
        await cli
          .admin()
          .request("PATCH", `/agents/${segments(id)}`, { owner: o.owner, co_owners: coOwners }),
      );
    });
  agents
    .command("activate <client_id>")
    .action(async (id: string) =>
      cli.print(await cli.admin().request("POST", `/agents/${segments(id)}/activate`, {})),
    );
  agents
    .command("suspend [client_id]")
    .description("suspend an agent (or every agent with --all); their delegations are revoked at once")
    .addOption(reasonOption())
    .option("--all", "the emergency stop: suspend every active or pending agent")
    .action(async (id: string | undefined, o) => {
      if (Boolean(id) === Boolean(o.all)) throw new CliError("name one agent, or use --all (not both)");
      const path = o.all ? "/agents/suspend-all" : `/agents/${segments(id ?? "")}/suspend`;
      cli.print(await cli.admin().request("POST", path, { reason: o.reason }));
    });
  agents
    .command("retire <client_id>")
    .addOption(reasonOption())
    .action(async (id: string, o) =>
      cli.print(await cli.admin().request("POST", `/agents/${segments(id)}/retire`, { reason: o.reason })),
    );
  agents
    .command("review <client_id>")
    .description("record a review; the next is due in 90 days")
    .action(async (id: string) =>
      cli.print(await cli.admin().request("POST", `/agents/${segments(id)}/review`, {})),
    );
  return agents;
}
