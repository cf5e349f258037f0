import type { Command } from "commander";
import { type Cli, positiveInt, segments } from "../cli-context.ts";

export function registerJobs(program: Command, cli: Cli): Command {
  const jobs = program.command("jobs").description("revocation jobs (task ends, cascades, the sweep)");
  jobs
    .command("failed")
    .description("jobs that failed all their attempts, newest first, with their error")
    .option("--limit <n>", "at most this many (default 100)", positiveInt)
    .action(async (o) =>
      cli.print(await cli.admin().request("GET", `/jobs/failed${o.limit ? `?limit=${o.limit}` : ""}`)),
    );
  jobs
    .command("retry <job_id>")
    .description("run a failed job again now")
    .action(async (id: string) =>
      cli.print(await cli.admin().request("POST", `/jobs/${segments(id)}/retry`, {})),
    );
  return jobs;
}
