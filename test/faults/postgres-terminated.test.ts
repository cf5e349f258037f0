// PostgreSQL cuts the server's connections under load (an administrator's pg_terminate_backend, a failover, a
// restart). A real server process runs on a database of its own while clients exchange and introspect tokens;
// every backend of that database is terminated several times mid-workload. The process must live through it,
// answer the requests that lost their connection with clean JSON errors (503 temporarily_unavailable), serve
// again on new connections, and leave nothing half-written: every token a client received has its lineage and
// audit event, and the chain verifies. Then PostgreSQL cannot be reached at all (the server's connections go
// through a TCP proxy that the test cuts, then turns into a black hole): every surface answers 503 in JSON until
// it is back. Every process started here is killed in afterAll.
import { createServer, connect as netConnect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { runDeputy } from "../helpers/cli.ts";
import { basicAuth } from "../helpers/oauth.ts";
import { ADMIN_SECRET, POSTGRES_ADMIN_URL, prepareEnvironment } from "../helpers/server.ts";
import {
  checkTrail,
  exchangeOnce,
  killStarted,
  RESOURCE,
  runExchangeLoad,
  seedExchangeFixture,
  startHealthy,
  stopServer,
} from "../helpers/server-process.ts";

const CONCURRENCY = 40;
/** Seeding, a server start and a workload, on a machine that may be busy: bounded, generously. */
const TEST_TIMEOUT_MS = 180_000;
const TERMINATIONS = 6;
/** What the server logs when a request fails unexpectedly (http/middleware.ts, oauth/database-outage.ts, …). */
const REQUEST_ERRORS = [
  "request failed",
  "oidc-provider server error",
  "page request failed",
  "could not record a client-credentials token; it was destroyed",
];

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

/**
 * A TCP proxy to PostgreSQL that can be cut (connections reset, new ones refused: a host down) or turned into a
 * black hole (connections reset, new ones accepted and never answered: a network partition), and restored.
 */
async function postgresProxy() {
  const sockets = new Set<Socket>();
  let silent = false;
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  };
  const server = createServer((client) => {
    track(client);
    if (silent) return;
    const upstream = netConnect(5432, "127.0.0.1");
    track(upstream);
    const both = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", both);
    upstream.on("close", both);
    client.pipe(upstream).pipe(client);
  });
  const listen = (port = 0) =>
    new Promise<number>((resolve) =>
      server.listen(port, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
    );
  const resetAll = () => {
    for (const socket of sockets) socket.destroy();
  };
  const port = await listen();
  return {
    port,
    async cut() {
      await new Promise((resolve) => {
        server.close(resolve);
        resetAll();
      });
    },
    blackHole() {
      silent = true;
      resetAll();
    },
    async restore() {
      silent = false;
      resetAll();
      if (!server.listening) await listen(port);
    },
  };
}

describe("PostgreSQL terminating the server's connections under load", () => {
  it(
    "keeps the process up, answers clean 503s, serves again and loses no token's record",
    async () => {
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
    },
    TEST_TIMEOUT_MS,
  );
});

describe("PostgreSQL unreachable", () => {
  it(
    "answers 503 temporarily_unavailable in JSON everywhere while it is down or silent, and serves again after",
    async () => {
      const prepared = await prepareEnvironment("postgresql", { LOG_LEVEL: "warn" });
      cleanups.push(prepared.cleanup);
      const proxy = await postgresProxy();
      const viaProxy = new URL(prepared.env.DATABASE_URL ?? "");
      viaProxy.port = String(proxy.port);
      const env: Record<string, string> = {
        ...prepared.env,
        ISSUER: prepared.url,
        DATABASE_URL: viaProxy.href,
      };
      const fixture = await seedExchangeFixture(env);
      const server = await startHealthy(env);
      const adminToken = async () =>
        fetch(`${server.url}/token`, {
          method: "POST",
          headers: {
            authorization: basicAuth("deputy-admin", ADMIN_SECRET),
            "content-type": "application/x-www-form-urlencoded",
          },
          body: "grant_type=client_credentials&scope=deputy%3Aadmin",
        });
      const admin = (await (await adminToken()).json()) as { access_token: string };
      const token = (await exchangeOnce(server.url, fixture)).body?.access_token as string;
      const requests: Record<string, () => Promise<Response>> = {
        "GET /healthz": () => fetch(`${server.url}/healthz`),
        "GET /admin/v1/people": () =>
          fetch(`${server.url}/admin/v1/people`, {
            headers: { authorization: `Bearer ${admin.access_token}` },
          }),
        "POST /token (client_credentials)": adminToken,
        "POST /access/v1/evaluation": () =>
          fetch(`${server.url}/access/v1/evaluation`, {
            method: "POST",
            headers: {
              authorization: basicAuth(fixture.resource.clientId, fixture.resource.secret),
              "content-type": "application/json",
            },
            body: JSON.stringify({
              subject: { type: "token", id: token },
              resource: { type: "ledger", id: RESOURCE },
              action: { name: "ledger.read" },
            }),
          }),
      };
      /** Every request at once: status, error and Retry-After of each. */
      const answers = async () => {
        const seen: Record<string, string> = {};
        const sent = Object.entries(requests).map(async ([name, send]) => {
          const response = await send();
          const body = JSON.parse(await response.text()) as { error?: string };
          seen[name] =
            `${response.status} ${body.error ?? "ok"} ${response.headers.get("retry-after") ?? "-"}`;
        });
        const exchanged = exchangeOnce(server.url, fixture).then((answer) => {
          seen["POST /token (token exchange)"] = answer.kind;
        });
        await Promise.all([...sent, exchanged]);
        return seen;
      };
      const serving = async () => Object.values(await answers()).every((answer) => answer.startsWith("200"));
      const unavailable = "503 temporarily_unavailable 1";
      const allUnavailable = {
        "GET /healthz": unavailable,
        "GET /admin/v1/people": unavailable,
        "POST /token (client_credentials)": unavailable,
        "POST /access/v1/evaluation": unavailable,
        "POST /token (token exchange)": "503 temporarily_unavailable",
      };
      expect(await serving()).toBe(true);

      // Refused: every request fails at once.
      await proxy.cut();
      expect(await answers()).toEqual(allUnavailable);
      await proxy.restore();
      expect(await serving()).toBe(true);
      // Never answered: every request fails when its connection attempt times out, rather than hanging.
      proxy.blackHole();
      expect(await answers()).toEqual(allUnavailable);
      await proxy.restore();
      expect(await serving()).toBe(true);

      expect(server.running()).toBe(true);
      // Requests that met the outage are logged as warnings, never as errors (with a stack) like a bug.
      const requestErrors = server
        .output()
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as { level: number; msg: string })
        .filter((line) => line.level >= 50 && REQUEST_ERRORS.includes(line.msg));
      expect(requestErrors).toEqual([]);
      expect((await stopServer(server)).code).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});
