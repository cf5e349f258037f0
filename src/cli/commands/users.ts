import type { Command } from "commander";
import { type Cli, reasonOption, segments } from "../cli-context.ts";

export function registerUsers(program: Command, cli: Cli): Command {
  const users = program.command("users").description("people: owners of agents and the ones who delegate");
  users
    .command("create")
    .requiredOption("--email <email>")
    .requiredOption("--name <name>")
    .requiredOption("--password <password>", "at least 12 characters")
    .option("--admin", "grant the admin flag")
    .action(async (o) =>
      cli.print(
        await cli.admin().request("POST", "/people", {
          email: o.email,
          name: o.name,
          password: o.password,
          admin: Boolean(o.admin),
        }),
      ),
    );
  users.command("list").action(async () => cli.print(await cli.admin().request("GET", "/people")));
  users
    .command("show <email>")
    .action(async (email: string) =>
      cli.print(await cli.admin().request("GET", `/people/${segments(email)}`)),
    );
  users
    .command("offboard <email>")
    .description(
      "mark a person as gone: their delegations are revoked; agents they own go to another active owner, or are suspended",
    )
    .addOption(reasonOption().makeOptionMandatory(false).default("offboarded"))
    .action(async (email: string, o) =>
      cli.print(
        await cli.admin().request("POST", `/people/${segments(email)}/offboard`, { reason: o.reason }),
      ),
    );
  return users;
}
