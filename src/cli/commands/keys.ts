import type { Command } from "commander";
import type { Cli } from "../cli-context.ts";

export function registerKeys(program: Command, cli: Cli): Command {
  const keys = program.command("keys").description("token signing keys");
  keys.command("list").action(async () => cli.print(await cli.admin().request("GET", "/keys")));
  keys.command("rotate").action(async () => cli.print(await cli.admin().request("POST", "/keys/rotate")));
  return keys;
}
