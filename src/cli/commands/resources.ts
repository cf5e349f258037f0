import { type Command, Option } from "commander";
import { CliError } from "../admin-client.ts";
import { type Cli, collect, positiveInt, segments, words } from "../cli-context.ts";

export function registerResources(program: Command, cli: Cli): Command {
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
      cli.print(
        await cli.admin().request("POST", "/resources", {
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
  resources.command("list").action(async () => cli.print(await cli.admin().request("GET", "/resources")));
  resources
    .command("show <id>")
    .description("by id, URI or client id")
    .action(async (id: string) => cli.print(await cli.admin().request("GET", `/resources/${segments(id)}`)));
  resources
    .command("rotate-secret <id>")
    .action(async (id: string) =>
      cli.print(await cli.admin().request("POST", `/resources/${segments(id)}/rotate-secret`)),
    );
  return resources;
}
