// PostgreSQL cuts the server's connections under load (an administrator's pg_terminate_backend, a failover, a
// restart). A real server process runs on a database of its own while clients exchange and introspect tokens;
// every backend of that database is terminated several times mid-workload. The process must live through it,
// answer the requests that lost their connection with clean JSON errors (503 temporarily_unavailable), serve
// again on new connections, and leave nothing half-written: every token a client received has its lineage and
// audit event, and the chain verifies. Every process started here is killed in afterAll.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { runDeputy } from "../helpers/cli.ts";
import { POSTGRES_ADMIN_URL, prepareEnvironment } from "../helpers/server.ts";
import {
  checkTrail,
  exchangeOnce,
  killStarted,
  runExchangeLoad,
  seedExchangeFixture,
  startHealthy,
  stopServer,
} from "../helpers/server-process.ts";

const CONCURRENCY = 40;
const TERMINATIONS = 6;

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  await killStarted();
  for (const cleanup of cleanups) await cleanup();
});

/** Terminates every connection to `database` but the caller's; returns how many there were. */
async function terminateBackends(database: string): Promise<number> {
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await admin.connect();
  try {
    const { rows } = await admin.query<{ n: number }>(
      `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
        WHERE datname = $1 AND pid <> pg_backend_pid()`,
      [database],
    );
    return rows[0]?.n ?? 0;
  } finally {
    await admin.end();
  }
}

describe("PostgreSQL terminating the server's connections under load", () => {
  it("keeps the process up, answers clean 503s, serves again and loses no token's record", async () => {
    const prepared = await prepareEnvironment("postgresql", { LOG_LEVEL: "warn" });
    cleanups.push(prepared.cleanup);
    const env: Record<string, string> = { ...prepared.env, ISSUER: prepared.url };
    const database = new URL(env.DATABASE_URL ?? "").pathname.slice(1);
    const fixture = await seedExchangeFixture(env);
    const server = await startHealthy(env);

    const load = runExchangeLoad(server.url, fixture, { concurrency: CONCURRENCY, introspect: true });
    const terminated: number[] = [];
    for (let round = 0; round < TERMINATIONS; round++) {
      // Let the workload get going again (new connections, transactions in flight) before each cut.
      const before = load.received.length;
      for (let i = 0; i < 100 && load.received.length < before + 50; i++) await sleep(20);
      terminated.push(await terminateBackends(database));
    }
    const received = load.received.length;
    for (let i = 0; i < 100 && load.received.length < received + 50; i++) await sleep(20);
    await load.stop();

    const figures = {
      sent: load.sent,
      received: load.received.length,
      errors: load.errors,
      inactive: load.inactive,
      terminated,
    };
    expect(server.running(), `${JSON.stringify(figures)}\n${server.output()}`).toBe(true);
    expect(
      terminated.every((n) => n > 0),
      JSON.stringify(figures),
    ).toBe(true);
    // The requests that lost their connection were refused cleanly, and only those: no 500, no stack trace.
    const kinds = Object.keys(load.errors);
    expect(
      kinds.every((kind) => kind === "503 temporarily_unavailable"),
      JSON.stringify(figures),
    ).toBe(true);
    expect(load.inactive, JSON.stringify(figures)).toBe(0);
    expect(server.output()).not.toMatch(/\bat .+:\d+:\d+\)?$/m);
    // It carried on through the cuts, and serves on new connections afterwards.
    expect(load.received.length).toBeGreaterThan(received);
    const after = await exchangeOnce(server.url, fixture);
    expect(after.status, JSON.stringify(after.body)).toBe(200);

    const cli = await runDeputy(server.url, ["audit", "verify"]);
    expect(cli.code, cli.stdout + cli.stderr).toBe(0);
    expect((await stopServer(server)).code).toBe(0);

    const trail = await checkTrail(env, prepared.dataDir, load.received);
    console.info("postgres-terminated:", JSON.stringify({ ...figures, checked: trail.checked }));
    expect(trail.missingLineage).toEqual([]);
    expect(trail.missingAudit).toEqual([]);
    expect(trail.report.ok, JSON.stringify(trail.report.first_bad)).toBe(true);
  });
});
