// The benchmark's harness: temporary environments (directory, ports, Redis prefix, PostgreSQL database),
// seeding through Deputy's own services, server processes, and the three kinds of request measured.
// Everything created is registered for cleanUp() as soon as it exists.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import pg from "pg";
import { createDeputy } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";
import { issueSubjectToken } from "../src/oauth/issue-subject-token.ts";
import type { Target } from "./load.ts";

export const ROOT = path.resolve(import.meta.dirname, "..");
const POSTGRES_ADMIN_URL = process.env.BENCH_POSTGRES_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const REDIS_URL = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
const ADMIN_SECRET = randomBytes(32).toString("base64url");
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token";
export const RESOURCE_URI = "https://calendar.bench.example";
const SCOPES = ["calendar.read", "calendar.write"];
/** The delegation carries the low-risk scope only: the common case, with no step-up approval involved. */
const DELEGATED_SCOPES = ["calendar.read"];

// ---------------------------------------------------------------------------------------------------------
// Cleanup: every process, key prefix, database and directory is registered here as soon as it exists.

const cleanups: { what: string; run: () => Promise<void> }[] = [];
const children = new Set<ChildProcess>();

export function onCleanup(what: string, run: () => Promise<void>): void {
  cleanups.push({ what, run });
}

export async function cleanUp(): Promise<void> {
  while (cleanups.length) {
    const step = cleanups.pop();
    if (!step) break;
    try {
      await step.run();
    } catch (error) {
      console.error(`cleanup: ${step.what} failed:`, error instanceof Error ? error.message : error);
    }
  }
}

// Last resort if this process dies without running cleanUp: no server outlives it.
process.on("exit", () => {
  for (const child of children)
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

/** On Ctrl-C or SIGTERM, stop the servers and remove what was created before exiting. */
export function cleanUpOnSignals(): void {
  let interrupted = false;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.on(signal, () => {
      if (interrupted) return;
      interrupted = true;
      console.error(`\n${signal}: stopping servers and removing what the benchmark created…`);
      void cleanUp().finally(() => process.exit(130));
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Environment: temp dir, ports, Redis prefix, PostgreSQL database.

export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const address = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  if (!address || typeof address === "string") throw new Error("no free port");
  return address.port;
}

export function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "deputy-bench-"));
  onCleanup(`remove ${dir}`, async () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function redisPrefix(): string {
  const prefix = `deputy-bench:${randomBytes(6).toString("hex")}:`;
  onCleanup(`delete Redis keys ${prefix}*`, async () => {
    const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await redis.connect();
    try {
      let cursor = "0";
      do {
        const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 2000);
        cursor = next;
        if (keys.length) await redis.unlink(...keys);
      } while (cursor !== "0");
    } finally {
      redis.disconnect();
    }
  });
  return prefix;
}

export async function createDatabase(): Promise<string> {
  const name = `deputy_bench_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  onCleanup(`drop database ${name}`, async () => {
    const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
    await client.connect();
    try {
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    } finally {
      await client.end();
    }
  });
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  return url.href;
}

/** The settings of one server process (and of the seeding, which must agree on issuer, prefix and storage). */
export function serverEnv(options: {
  port: number;
  issuer: string;
  dataDir: string;
  prefix: string;
  databaseUrl?: string;
}): Record<string, string> {
  return {
    NODE_ENV: "production",
    LOG_LEVEL: "warn",
    HOST: "127.0.0.1",
    PORT: String(options.port),
    ISSUER: options.issuer,
    DEPUTY_DATA_DIR: options.dataDir,
    REDIS_URL,
    REDIS_PREFIX: options.prefix,
    DEPUTY_BOOTSTRAP_ADMIN_SECRET: ADMIN_SECRET,
    ...(options.databaseUrl ? { DATABASE_URL: options.databaseUrl } : {}),
  };
}

// ---------------------------------------------------------------------------------------------------------
// Seeding, in this process, through Deputy's services.

export interface Fixture {
  agent: { clientId: string; secret: string };
  resource: { clientId: string; secret: string };
  subjectToken: string;
}

export async function seed(env: Record<string, string>): Promise<Fixture> {
  const deputy = await createDeputy(loadConfig(env), createLogger("warn"));
  try {
    const context = { actor: "bench" };
    const person = await deputy.people.create(context, {
      email: "bench@example.com",
      name: "Bench Person",
      password: randomBytes(16).toString("base64url"),
    });
    const resource = await deputy.resources.create(context, {
      uri: RESOURCE_URI,
      name: "Calendar (bench)",
      scopes: SCOPES.map((name) => ({
        name,
        description: name,
        risk: name.endsWith("write") ? ("high" as const) : ("low" as const),
      })),
    });
    const agent = await deputy.agents.create(context, {
      name: "Bench agent",
      owner: person.email,
      purpose: "benchmark",
      grants: [{ resource: RESOURCE_URI, scopes: SCOPES }],
      auth: { method: "client_secret" },
    });
    if (!agent.client_secret) throw new Error("the agent was created without a secret");
    const delegation = await deputy.delegations.create(
      { actor: person.email },
      {
        personId: person.id,
        agentClientId: agent.client_id,
        taskId: "bench-task",
        taskDescription: "Benchmark the token exchange",
        grants: [{ resource: RESOURCE_URI, scopes: DELEGATED_SCOPES }],
        endsAt: new Date(Date.now() + 2 * 3600_000),
      },
    );
    const subject = await issueSubjectToken(
      { provider: deputy.provider, audit: deputy.audit },
      { actor: person.email },
      { ...delegation, agentClientId: agent.client_id, personEmail: person.email },
    );
    return {
      agent: { clientId: agent.client_id, secret: agent.client_secret },
      resource: { clientId: resource.client_id, secret: resource.client_secret },
      subjectToken: subject.access_token,
    };
  } finally {
    await deputy.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// Server processes.

export interface ServerProcess {
  url: string;
  child: ChildProcess;
  spawnedAt: number;
  /** The last 20,000 characters the process wrote (stdout and stderr). */
  stderr(): string;
  /** Undefined while the process runs; how it ended otherwise. */
  exit(): string | undefined;
  stop(): Promise<void>;
}

/** A server entry that writes no exchange or decision events (audit-off-server.ts): MEASUREMENT ONLY. */
export const AUDIT_OFF_ENTRY = "bench/audit-off-server.ts";

/**
 * Starts `src/main.ts` (or `entry`) with `env` (plus PATH and HOME) and waits until it is healthy; stopped at
 * clean-up. `benchNodeFlags: false` leaves out BENCH_NODE_FLAGS (the revocation and audit benchmarks do not take
 * them).
 */
export async function startServer(
  env: Record<string, string>,
  nodeFlags: string[] = [],
  { benchNodeFlags = true, entry = "src/main.ts" }: { benchNodeFlags?: boolean; entry?: string } = {},
): Promise<ServerProcess> {
  const spawnedAt = Date.now();
  // BENCH_NODE_FLAGS: extra V8/Node flags for the server processes (e.g. to try a workaround).
  const extra = benchNodeFlags ? (process.env.BENCH_NODE_FLAGS ?? "").split(" ").filter(Boolean) : [];
  const child = spawn(process.execPath, [...extra, ...nodeFlags, "--import", "tsx", entry], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const graceful = await Promise.race([exited.then(() => true), sleep(20_000).then(() => false)]);
    if (!graceful) {
      child.kill("SIGKILL");
      await exited;
    }
  };
  onCleanup(`stop server pid ${child.pid}`, stop);
  const url = `http://127.0.0.1:${env.PORT}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`server exited during start-up:\n${output}`);
    try {
      const response = await fetch(`${url}/healthz`);
      if (response.ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`server did not become healthy in 60 s:\n${output}`);
    await sleep(200);
  }
  const exit = () =>
    child.exitCode !== null || child.signalCode !== null
      ? `exited (code ${child.exitCode}, signal ${child.signalCode})`
      : undefined;
  return { url, child, spawnedAt, stderr: () => output, exit, stop };
}

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;

const lastCpuSeconds = new Map<number, number>();

/** CPU seconds (user + system) a process has used so far (for a process gone, the last figure read). */
export function cpuSeconds(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const seconds = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
    lastCpuSeconds.set(pid, seconds);
    return seconds;
  } catch {
    return lastCpuSeconds.get(pid) ?? 0;
  }
}

/** CPU seconds the whole machine has spent busy (everything but idle and I/O wait) so far. */
export function machineBusySeconds(): number {
  const fields = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "")
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const total = fields.slice(0, 8).reduce((sum, value) => sum + value, 0);
  return (total - (fields[3] ?? 0) - (fields[4] ?? 0)) / CLOCK_TICKS;
}

/** PostgreSQL's counters for one database (flushed by busy backends about once a second, idle ones within 10 s). */
export async function databaseActivity(url: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query(
      "SELECT xact_commit, tup_inserted, tup_returned, tup_fetched FROM pg_stat_database WHERE datname = current_database()",
    );
    const row = rows[0] ?? {};
    return {
      commits: Number(row.xact_commit),
      inserted: Number(row.tup_inserted),
      returned: Number(row.tup_returned),
      fetched: Number(row.tup_fetched),
    };
  } finally {
    await client.end();
  }
}

/**
 * Samples, ten times a second, how many sessions of the database wait for a lock (the audit chain's advisory
 * lock serializes group commits across processes). Stop it to get the share of samples with a waiter.
 */
export async function watchLockWaits(url: string) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  let samples = 0;
  let withWaiter = 0;
  let waiters = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const { rows } = await client.query(
        "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock')::int AS waiting FROM pg_stat_activity WHERE datname = current_database()",
      );
      const waiting = Number(rows[0]?.waiting ?? 0);
      samples++;
      waiters += waiting;
      if (waiting > 0) withWaiter++;
      await sleep(100);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop.catch(() => {});
      await client.end();
      return {
        samples,
        shareWithWaiter: samples ? withWaiter / samples : 0,
        meanWaiting: samples ? waiters / samples : 0,
      };
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Requests.

const FORM = "application/x-www-form-urlencoded";
const basic = (id: string, secret: string) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;

export const baselineTarget = (base: string): Target => ({
  base,
  path: "/token",
  headers: { "content-type": FORM, authorization: basic("deputy-admin", ADMIN_SECRET) },
  body: new URLSearchParams({ grant_type: "client_credentials", scope: "deputy:admin" }).toString(),
});

export const exchangeTarget = (base: string, fixture: Fixture): Target => ({
  base,
  path: "/token",
  headers: { "content-type": FORM, authorization: basic(fixture.agent.clientId, fixture.agent.secret) },
  body: new URLSearchParams({
    grant_type: TOKEN_EXCHANGE,
    subject_token: fixture.subjectToken,
    subject_token_type: ACCESS_TOKEN,
    resource: RESOURCE_URI,
  }).toString(),
});

export const introspectionTarget = (base: string, fixture: Fixture, token: string): Target => ({
  base,
  path: "/token/introspection",
  headers: { "content-type": FORM, authorization: basic(fixture.resource.clientId, fixture.resource.secret) },
  body: new URLSearchParams({ token }).toString(),
});

export async function send(target: Target): Promise<{ status: number; body: any }> {
  const response = await fetch(new URL(target.path, target.base), {
    method: "POST",
    headers: target.headers,
    body: target.body,
  });
  const text = await response.text();
  try {
    return { status: response.status, body: JSON.parse(text) };
  } catch {
    return { status: response.status, body: text };
  }
}

/** One request of each kind must succeed before any load is sent; returns an exchanged token to introspect. */
export async function checkScenarios(base: string, fixture: Fixture): Promise<string> {
  const baseline = await send(baselineTarget(base));
  if (baseline.status !== 200 || !baseline.body.access_token)
    throw new Error(`client_credentials failed: ${baseline.status} ${JSON.stringify(baseline.body)}`);
  const exchanged = await send(exchangeTarget(base, fixture));
  if (exchanged.status !== 200 || !exchanged.body.access_token)
    throw new Error(`token exchange failed: ${exchanged.status} ${JSON.stringify(exchanged.body)}`);
  const token = String(exchanged.body.access_token);
  await expectActive(introspectionTarget(base, fixture, token));
  return token;
}

export async function expectActive(target: Target): Promise<void> {
  const result = await send(target);
  if (result.status !== 200 || result.body.active !== true)
    throw new Error(`introspection did not report the token active: ${JSON.stringify(result.body)}`);
}
