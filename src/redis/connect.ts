// Connects to Redis. In development, when REDIS_URL is unreachable and `redis-server` is on the PATH, a
// private Redis (persistence on, data under the data directory, unix socket only) is started and stopped on exit.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis, type RedisOptions } from "ioredis";

export class RedisUnavailableError extends Error {}

export interface RedisConnection {
  redis: Redis;
  /** How the connection was made, for the start-up log. */
  source: "url" | "private";
  /** Creates another connection to the same server (for subscribers and queue workers). */
  duplicate(): Redis;
  close(): Promise<void>;
}

// Auto-pipelining sends the commands of concurrent requests in one write: fewer system calls under load.
const BASE_OPTIONS: RedisOptions = {
  lazyConnect: true,
  connectTimeout: 2000,
  maxRetriesPerRequest: 2,
  enableAutoPipelining: true,
};

export async function connectRedis(options: {
  url: string;
  dataDir: string;
  allowPrivate: boolean;
  log?: (msg: string, fields?: object) => void;
}): Promise<RedisConnection> {
  const direct = new Redis(options.url, { ...BASE_OPTIONS, retryStrategy: () => null });
  direct.on("error", () => {});
  try {
    await direct.connect();
    await direct.ping();
    direct.options.retryStrategy = (times) => Math.min(times * 200, 2000);
    return wrap(direct, "url", () => new Redis(options.url, { maxRetriesPerRequest: null }));
  } catch {
    direct.disconnect();
  }
  const where = redactUrl(options.url);
  if (!options.allowPrivate) {
    throw new RedisUnavailableError(
      `Redis is unreachable at ${where}. Start Redis there or set REDIS_URL to a reachable redis:// URL.`,
    );
  }
  if (!onPath("redis-server")) {
    throw new RedisUnavailableError(
      `Redis is unreachable at ${where} and redis-server is not installed. Install Redis (e.g. apt-get install redis-server) or set REDIS_URL.`,
    );
  }
  return startPrivateRedis(options.dataDir, options.log);
}

async function startPrivateRedis(dataDir: string, log?: (msg: string, fields?: object) => void) {
  const dir = path.resolve(dataDir, "redis");
  mkdirSync(dir, { recursive: true });
  const socket = path.join(dir, "redis.sock");
  // A private Redis left behind by a crash is reused rather than started twice over the same files.
  const reused = existsSync(socket) ? await tryConnect(socket) : undefined;
  let child: ChildProcess | undefined;
  let redis = reused;
  if (!redis) {
    child = spawn(
      "redis-server",
      [
        "--port",
        "0",
        "--unixsocket",
        socket,
        "--unixsocketperm",
        "700",
        "--dir",
        dir,
        "--appendonly",
        "yes",
        "--save",
        "60 1",
        "--logfile",
        path.join(dir, "redis.log"),
      ],
      { stdio: "ignore" },
    );
    child.on("error", () => {}); // a failed spawn shows up below as a Redis that never answers
    for (let attempt = 0; attempt < 50 && !redis; attempt++) {
      await sleep(100);
      redis = await tryConnect(socket);
    }
    if (!redis) {
      child.kill("SIGTERM");
      throw new RedisUnavailableError(
        `could not start a private redis-server under ${dir} (see redis.log there)`,
      );
    }
  }
  log?.("started a private Redis for development", { socket, reused: Boolean(reused) });
  const owned = child;
  let gone = false;
  const connection = wrap(
    redis,
    "private",
    () =>
      new Redis({
        path: socket,
        maxRetriesPerRequest: null,
        // Reconnect while our redis-server runs; once it has exited, nothing brings it back.
        retryStrategy: (times) => (gone ? null : Math.min(times * 50, 2000)),
      }),
    async () => {
      if (!owned) return;
      // It may be gone already (Ctrl-C signals the whole process group): then "exit" has been emitted.
      if (owned.exitCode !== null || owned.signalCode !== null) return;
      const exited = new Promise((resolve) => owned.once("exit", resolve));
      owned.kill("SIGTERM");
      await exited;
    },
  );
  // Once our redis-server has exited nothing brings it back: its connections end, so commands fail at once
  // rather than wait forever for a reconnection (which would hang a shutdown started by the same Ctrl-C).
  owned?.once("exit", () => {
    gone = true;
    connection.end();
  });
  return connection;
}

async function tryConnect(socket: string): Promise<Redis | undefined> {
  const redis = new Redis({ ...BASE_OPTIONS, path: socket, retryStrategy: () => null });
  redis.on("error", () => {});
  try {
    await redis.connect();
    await redis.ping();
    return redis;
  } catch {
    redis.disconnect();
    return undefined;
  }
}

const QUIT_TIMEOUT_MS = 2000;

function wrap(
  redis: Redis,
  source: RedisConnection["source"],
  duplicate: () => Redis,
  stop?: () => Promise<void>,
): RedisConnection & { end(): void } {
  const extra: Redis[] = [];
  let ended = false;
  return {
    redis,
    source,
    duplicate() {
      const connection = duplicate();
      // Like the main connection's: errors surface as failed commands, not as "[ioredis] Unhandled error event".
      connection.on("error", () => {});
      extra.push(connection);
      if (ended) connection.disconnect();
      return connection;
    },
    end() {
      ended = true;
      // (ioredis leaves a connection that is waiting to reconnect stuck if disconnected: its retryStrategy
      // ends it instead.)
      for (const connection of [redis, ...extra]) {
        if (connection.status !== "reconnecting") connection.disconnect();
      }
    },
    async close() {
      await Promise.all([redis, ...extra].map(quit));
      await stop?.();
    },
  };
}

/** QUIT, so replies in flight arrive; but a Redis that has gone away must not hold the shutdown. */
async function quit(connection: Redis): Promise<void> {
  if (connection.status !== "end") {
    const timeout = new AbortController();
    await Promise.race([
      connection.quit().catch(() => {}),
      sleep(QUIT_TIMEOUT_MS, undefined, { signal: timeout.signal }).catch(() => {}),
    ]);
    timeout.abort();
  }
  connection.disconnect();
}

function onPath(command: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" }).status === 0;
}

function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, "//***@");
}
