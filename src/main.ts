// Starts a Deputy server: configuration → connections → HTTP; stops gracefully on SIGINT/SIGTERM.
import { createServer } from "node:http";
import { createDeputy } from "./app.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { createLogger } from "./logger.ts";
import { RedisUnavailableError } from "./redis/connect.ts";

const SHUTDOWN_GRACE_MS = 10_000;

async function main(): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.logLevel);
  const deputy = await createDeputy(config, log);
  const server = createServer(deputy.app.callback());
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, resolve);
  });
  log.info(
    { issuer: config.issuer, port: config.port, database: deputy.db.kind, redis: deputy.redis.source },
    "deputy is listening",
  );

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down: no new connections, finishing requests in flight");
    const forced = setTimeout(() => {
      log.warn("requests still in flight after the grace period; closing them");
      server.closeAllConnections();
    }, SHUTDOWN_GRACE_MS);
    forced.unref();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    });
    await deputy.close();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError || error instanceof RedisUnavailableError) {
    console.error(`deputy: ${error.message}`);
  } else {
    console.error("deputy: failed to start:", error instanceof Error ? error.message : error);
  }
  process.exit(1);
});
