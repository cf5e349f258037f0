import type { Command } from "commander";
import { type Cli, segments } from "../cli-context.ts";

export function registerKeys(program: Command, cli: Cli): Command {
  const keys = program.command("keys").description("token signing keys");
  keys.command("list").action(async () => cli.print(await cli.admin().request("GET", "/keys")));
  keys.command("rotate").action(async () => cli.print(await cli.admin().request("POST", "/keys/rotate")));
  keys
    .command("retire <kid>")
    .description("remove a retiring key now, everywhere (an emergency: tokens signed with it stop verifying)")
    .option("--reason <reason>", "why (recorded in the audit trail)")
    .action(async (kid: string, o) =>
      cli.print(
        await cli
          .admin()
          .request("POST", `/keys/${segments(kid)}/retire`, o.reason ? { reason: o.reason } : {}),
      ),
    );
  return keys;
}
