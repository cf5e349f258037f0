// `deputy`: the command-line client of a running server's admin API.
import { Command, CommanderError } from "commander";
import { AdminClient, CliError, resolveCredentials } from "./admin-client.ts";
import type { Cli } from "./cli-context.ts";
import { registerAgents } from "./commands/agents.ts";
import { registerAudit } from "./commands/audit.ts";
import { registerDelegations } from "./commands/delegations.ts";
import { registerJobs } from "./commands/jobs.ts";
import { registerKeys } from "./commands/keys.ts";
import { registerPolicy } from "./commands/policy.ts";
import { registerResources } from "./commands/resources.ts";
import { registerUsers } from "./commands/users.ts";
import { registerWorker } from "./commands/worker.ts";
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
const cli: Cli = {
  admin() {
    client ??= new AdminClient(resolveCredentials());
    return client;
  },
  print: (value) => printResult(value, Boolean(program.opts().json)),
};

const groups = [
  registerUsers(program, cli),
  registerResources(program, cli),
  registerAgents(program, cli),
  registerKeys(program, cli),
  registerAudit(program, cli),
  registerPolicy(program, cli),
  registerDelegations(program, cli),
  registerJobs(program, cli),
  registerWorker(program, cli),
];

for (const command of [program, ...groups]) command.exitOverride();

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
