// Starts a Deputy server: configuration → HTTP port → connections; stops gracefully on SIGINT/SIGTERM. Run as the
// entry point (`npm start`); `runServer` is also what a benchmark's own entry calls with its options.
import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from "node:http";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import type { Deputy, DeputyOptions } from "./app.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { EmbeddedDatabaseInUseError } from "./db/embedded-lock.ts";
import { RETRY_AFTER_SECONDS } from "./http/unavailable.ts";
import { createLogger } from "./logger.ts";
import { RedisUnavailableError } from "./redis/connect.ts";

const SHUTDOWN_GRACE_MS = 10_000;
const CLOSE_TIMEOUT_MS = 10_000;

export async function runServer(options: DeputyOptions = {}): Promise<void> {
  try {
    await serve(options);
  } catch (error) {
    if (
      error instanceof ConfigError ||
      error instanceof RedisUnavailableError ||
      error instanceof EmbeddedDatabaseInUseError ||
      error instanceof ListenError
    ) {
      console.error(`deputy: ${error.message}`);
    } else {
      console.error("deputy: failed to start:", error instanceof Error ? error.message : error);
    }
    process.exit(1);
  }
}

async function serve(options: DeputyOptions): Promise<void> {
  const config = loadConfig();
  const log = createLogger(config.logLevel);
  // Loaded only once the settings are valid: a bad setting is reported alone, before any dependency speaks.
  const { createDeputy } = await import("./app.ts");
  // The port is bound before anything is opened, so a server that cannot listen (another one has the port)
  // stops before it has opened the database, started workers or written anything. Until Deputy is assembled,
  // requests are answered 503.
  let handle: RequestListener = answerStarting;
  const server = createServer((req, res) => handle(req, res));
  server.keepAliveTimeout = 5_000;
  await listen(server, config.port, config.host);
  let deputy: Deputy;
  try {
    deputy = await createDeputy(config, log, options);
  } catch (error) {
    server.close();
    server.closeAllConnections();
    throw error;
  }
  handle = deputy.app.callback();
  log.info(
    { issuer: config.issuer, port: config.port, database: deputy.db.kind, redis: deputy.redis.source },
    "deputy is listening",
  );

  let stopping = false;
  // While stopping, responses close their connection: kept-alive clients must not hold the shutdown open
  // for keepAliveTimeout, nor send more requests on a connection that is about to go away.
  const inFlight = new Set<ServerResponse>();
  const closeAfter = (res: ServerResponse) => {
    if (!res.headersSent) res.setHeader("Connection", "close");
  };
  server.on("request", (_req, res: ServerResponse) => {
    if (stopping) return closeAfter(res);
    inFlight.add(res);
    res.once("close", () => inFlight.delete(res));
  });
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "shutting down: no new connections, finishing requests in flight");
    for (const res of inFlight) closeAfter(res);
    const forced = setTimeout(() => {
      log.warn("requests still in flight after the grace period; closing them");
      server.closeAllConnections();
    }, SHUTDOWN_GRACE_MS);
    forced.unref();
    // Connections whose response had already started when the signal came become idle once it ends.
    const sweep = setInterval(() => server.closeIdleConnections(), 250);
    sweep.unref();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeIdleConnections();
    });
    clearInterval(sweep);
    // Closing the connections is bounded too: a Redis or database that has gone away must not hang the exit.
    const closed = await Promise.race([
      deputy.close().then(
        () => "closed" as const,
        (error: unknown) => {
          log.error({ err: error }, "closing the connections failed");
          return "failed" as const;
        },
      ),
      sleep(CLOSE_TIMEOUT_MS, "timed out" as const),
    ]);
    if (closed !== "closed") {
      if (closed === "timed out") log.error("connections did not close in time; exiting anyway");
      process.exit(1);
    }
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGINT", () => void stop("SIGINT"));
  process.on("SIGTERM", () => void stop("SIGTERM"));
}

/** The HTTP port could not be bound (in use, not permitted). */
class ListenError extends Error {}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) => {
      const where = `${host}:${port}`;
      if (error.code === "EADDRINUSE")
        reject(new ListenError(`cannot listen on ${where}: the port is in use by another process`));
      else if (error.code === "EACCES") reject(new ListenError(`cannot listen on ${where}: not permitted`));
      else reject(error);
    });
    server.listen(port, host, resolve);
  });
}

/** While the server is being assembled (database, Redis, keys): 503, and the client closes the connection. */
function answerStarting(_req: IncomingMessage, res: ServerResponse): void {
  res.writeHead(503, {
    "content-type": "application/json",
    "retry-after": RETRY_AFTER_SECONDS,
    connection: "close",
  });
  res.end(
    JSON.stringify({
      error: "temporarily_unavailable",
      error_description: "the server is starting; try again shortly",
    }),
  );
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await runServer();
