// `deputy`: the command-line client of a running server's admin API.
import { readFileSync } from "node:fs";
import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { AdminClient, CliError, resolveCredentials } from "./admin-client.ts";
import { printResult } from "./output.ts";

const program = new Command("deputy")
  .description(
    "Manage a Deputy authorization server through its admin API (DEPUTY_URL, default http://localhost:3000)",
  )
  .option("--json", "print results as JSON")
  .configureOutput({
    // Usage errors are one line (Commander's own may span several: "Did you mean …?" suggestions).
    outputError: (message, write) =>
      write(
        `deputy: ${message
          .trim()
          .replace(/^error: /, "")
          .replace(/\s*\n\s*/g, " ")} (run with --help for usage)\n`,
      ),
  })
  .exitOverride();

let client: AdminClient | undefined;
const admin = () => {
  client ??= new AdminClient(resolveCredentials());
  return client;
};
const print = (value: unknown) => printResult(value, Boolean(program.opts().json));
const words = (value: string) => value.split(/[\s,]+/).filter(Boolean);
const collect = (value: string, previous: string[] = []) => [...previous, value];
const positiveInt = (value: string) => {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("must be a whole number");
  return Number(value);
};
const reasonOption = () =>
  new Option("--reason <reason>", "why (recorded in the audit trail)").makeOptionMandatory();
const path = (...parts: string[]) => parts.map(encodeURIComponent).join("/");

const users = program.command("users").description("people: owners of agents and the ones who delegate");
users
  .command("create")
  .requiredOption("--email <email>")
  .requiredOption("--name <name>")
  .requiredOption("--password <password>", "at least 12 characters")
  .option("--admin", "grant the admin flag")
  .action(async (o) =>
    print(
      await admin().request("POST", "/people", {
        email: o.email,
        name: o.name,
        password: o.password,
        admin: Boolean(o.admin),
      }),
    ),
  );
users.command("list").action(async () => print(await admin().request("GET", "/people")));
users
  .command("show <email>")
  .action(async (email: string) => print(await admin().request("GET", `/people/${path(email)}`)));
users
  .command("offboard <email>")
  .description("mark a person as gone; agents they own stop authenticating")
  .addOption(reasonOption().makeOptionMandatory(false).default("offboarded"))
  .action(async (email: string, o) =>
    print(await admin().request("POST", `/people/${path(email)}/offboard`, { reason: o.reason })),
  );

const resources = program.command("resources").description("resource servers and their scopes");
resources
  .command("create")
  .requiredOption("--uri <uri>", "the resource indicator (absolute URI)")
  .requiredOption("--name <name>")
  .requiredOption("--scopes <scopes>", 'space-separated scope names, e.g. "read write"')
  .option("--high-risk <scopes>", "which of the scopes are high risk")
  .option("--describe <scope=text>", "a human description of a scope (repeatable)", collect)
  .addOption(
    new Option("--format <format>", "access-token format").choices(["opaque", "jwt"]).default("opaque"),
  )
  .option("--ttl <seconds>", "access-token lifetime (10..900)", positiveInt)
  .option("--dpop-required", "only issue DPoP-bound tokens for this resource")
  .action(async (o) => {
    const highRisk = new Set(words(o.highRisk ?? ""));
    const descriptions = new Map<string, string>(
      (o.describe ?? []).map((entry: string) => [
        entry.slice(0, entry.indexOf("=")),
        entry.slice(entry.indexOf("=") + 1),
      ]),
    );
    const scopes = words(o.scopes);
    const unknown = [...highRisk, ...descriptions.keys()].filter((scope) => !scopes.includes(scope));
    if (unknown.length) throw new CliError(`not among --scopes: ${unknown.join(", ")}`);
    print(
      await admin().request("POST", "/resources", {
        uri: o.uri,
        name: o.name,
        scopes: scopes.map((name) => ({
          name,
          description: descriptions.get(name) ?? name,
          risk: highRisk.has(name) ? "high" : "low",
        })),
        token_format: o.format,
        token_ttl_seconds: o.ttl,
        dpop_required: o.dpopRequired ? true : undefined,
      }),
    );
  });
resources.command("list").action(async () => print(await admin().request("GET", "/resources")));
resources
  .command("show <id>")
  .description("by id, URI or client id")
  .action(async (id: string) => print(await admin().request("GET", `/resources/${path(id)}`)));
resources
  .command("rotate-secret <id>")
  .action(async (id: string) => print(await admin().request("POST", `/resources/${path(id)}/rotate-secret`)));

const agents = program.command("agents").description("registered agents and their lifecycle");
agents
  .command("create")
  .requiredOption("--name <name>")
  .requiredOption("--owner <email>", "the person accountable for the agent")
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
    print(
      await admin().request("POST", "/agents", {
        name: o.name,
        owner: o.owner,
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
  .option("--owner <email>")
  .action(async (o) => {
    const query = new URLSearchParams(
      Object.entries({ status: o.status, owner: o.owner }).filter(([, v]) => v) as [string, string][],
    );
    print(await admin().request("GET", `/agents${query.size ? `?${query}` : ""}`));
  });
agents
  .command("show <client_id>")
  .action(async (id: string) => print(await admin().request("GET", `/agents/${path(id)}`)));
agents
  .command("activate <client_id>")
  .action(async (id: string) => print(await admin().request("POST", `/agents/${path(id)}/activate`, {})));
agents
  .command("suspend <client_id>")
  .addOption(reasonOption())
  .action(async (id: string, o) =>
    print(await admin().request("POST", `/agents/${path(id)}/suspend`, { reason: o.reason })),
  );
agents
  .command("retire <client_id>")
  .addOption(reasonOption())
  .action(async (id: string, o) =>
    print(await admin().request("POST", `/agents/${path(id)}/retire`, { reason: o.reason })),
  );
agents
  .command("review <client_id>")
  .description("record a review; the next is due in 90 days")
  .action(async (id: string) => print(await admin().request("POST", `/agents/${path(id)}/review`, {})));

const keys = program.command("keys").description("token signing keys");
keys.command("list").action(async () => print(await admin().request("GET", "/keys")));
keys.command("rotate").action(async () => print(await admin().request("POST", "/keys/rotate")));

for (const command of [program, users, resources, agents, keys]) command.exitOverride();

try {
  await program.parseAsync(process.argv);
} catch (error) {
  if (error instanceof CommanderError) {
    // Commander has already printed its one-line message (or help, whose exit code is 0).
    process.exit(error.exitCode);
  }
  const message =
    error instanceof CliError
      ? error.message
      : `unexpected error: ${error instanceof Error ? error.message : String(error)}`;
  // One line, never a stack trace.
  process.stderr.write(`deputy: ${message.split("\n")[0]}\n`);
  process.exit(1);
}
