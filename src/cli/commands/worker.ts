// `deputy worker`: runs the revocation job workers in this process (not a client of the admin API: it connects to
// the servers' PostgreSQL and Redis itself, from DATABASE_URL, REDIS_URL and REDIS_PREFIX).
import type { Command } from "commander";
import { CliError } from "../admin-client.ts";
import type { Cli } from "../cli-context.ts";

export function registerWorker(program: Command, _cli: Cli): Command {
  return program
    .command("worker")
    .description(
      "run the revocation job workers (task ends, cascades, the sweep) against DATABASE_URL and REDIS_URL; " +
        "run the servers with DEPUTY_WORKERS=off",
    )
    .action(async () => {
      const { ConfigError, loadConfig } = await import("../../config.ts");
      let config: import("../../config.ts").Config;
      try {
        config = loadConfig();
      } catch (error) {
        if (error instanceof ConfigError) throw new CliError(error.message);
        throw error;
      }
      const { createLogger } = await import("../../logger.ts");
      const { startWorkerProcess, WorkerSetupError } = await import("../../worker.ts");
      const { RedisUnavailableError } = await import("../../redis/connect.ts");
      const log = createLogger(config.logLevel);
      let worker: Awaited<ReturnType<typeof startWorkerProcess>>;
      try {
        worker = await startWorkerProcess(config, log);
      } catch (error) {
        if (error instanceof WorkerSetupError || error instanceof RedisUnavailableError)
          throw new CliError(error.message);
        throw error;
      }
      log.info(
        { redisPrefix: config.redisPrefix, sweepSeconds: config.sweepSeconds },
        "deputy worker is running",
      );
      const signal = await new Promise<string>((resolve) => {
        process.once("SIGINT", () => resolve("SIGINT"));
        process.once("SIGTERM", () => resolve("SIGTERM"));
      });
      log.info({ signal }, "deputy worker: stopping after the jobs in progress");
      const timer = setTimeout(() => {
        log.error("deputy worker: jobs did not finish in time; exiting anyway");
        process.exit(1);
      }, 30_000);
      timer.unref();
      await worker.close();
      log.info("stopped");
      process.exit(0);
    });
}
