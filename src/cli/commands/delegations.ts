import { type Command, Option } from "commander";
import { type Cli, reasonOption, segments } from "../cli-context.ts";

export function registerDelegations(program: Command, cli: Cli): Command {
  const delegations = program.command("delegations").description("what people delegated to agents");
  delegations
    .command("list")
    .addOption(new Option("--status <status>").choices(["active", "revoked", "ended"]))
    .option("--person <email>")
    .option("--agent <client_id>")
    .option("--task <task_id>")
    .action(async (o) => {
      const query = new URLSearchParams(
        Object.entries({ status: o.status, person: o.person, agent: o.agent, task: o.task }).filter(
          ([, v]) => v,
        ) as [string, string][],
      );
      cli.print(await cli.admin().request("GET", `/delegations${query.size ? `?${query}` : ""}`));
    });
  delegations
    .command("show <id>")
    .action(async (id: string) =>
      cli.print(await cli.admin().request("GET", `/delegations/${segments(id)}`)),
    );
  delegations
    .command("revoke <id>")
    .description("revoke a delegation and every token derived from it, now")
    .addOption(reasonOption())
    .action(async (id: string, o) =>
      cli.print(
        await cli.admin().request("POST", `/delegations/${segments(id)}/revoke`, { reason: o.reason }),
      ),
    );
  return delegations;
}
