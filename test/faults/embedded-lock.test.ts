// Two servers on one embedded database would each see only their own writes and fork the audit chain. A second
// `node --import tsx src/main.ts` on the data directory of a running one must refuse with one clear line and a
// non-zero exit, on another port (the database's lock) and on the same port (the port, bound before anything is
// opened), while the first keeps serving; a server that cannot listen writes nothing, on PostgreSQL too. A lock
// left by a killed process is taken over, and only one of several processes racing for it wins. Every process
// started here is killed in afterAll.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import path from "node:path";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { openDatabase } from "../../src/db/connect.ts";
import { basicAuth } from "../helpers/oauth.ts";
import { ADMIN_SECRET, freePort, prepareEnvironment } from "../helpers/server.ts";
import {
  killStarted,
  runToExit,
  type ServerProcess,
  startHealthy,
  stopServer,
  within,
} from "../helpers/server-process.ts";

const REPO = path.resolve(import.meta.dirname, "../..");
const TEST_TIMEOUT_MS = 180_000;
/** A dependency's notice on Node 20 (oidc-provider supports Node 22+); not Deputy's output. */
const RUNTIME_WARNING = /^oidc-provider WARNING: Unsupported runtime/;

const cleanups: (() => Promise<void>)[] = [];
const racing: ChildProcess[] = [];
afterAll(async () => {
  await killStarted();
  for (const child of racing) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const cleanup of cleanups) await cleanup();
});

const lockFile = (dataDir: string) => path.join(dataDir, "database.lock");
const lockPid = (dataDir: string) => Number(readFileSync(lockFile(dataDir), "utf8").split("\n")[0]);

/** Deputy's one line on stderr, as main.ts reports a refused start: no stack, no frames. */
function oneLine(stderr: string): string {
  const lines = stderr
    .trimEnd()
    .split("\n")
    .filter((line) => !RUNTIME_WARNING.test(line));
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).not.toMatch(/\bat .+:\d+:\d+|node:internal/);
  return lines[0] ?? "";
}

/** The first server still answers: health, a token (an audit event written) and a chain that verifies. */
async function stillServing(proc: ServerProcess): Promise<void> {
  expect(proc.running()).toBe(true);
  expect((await fetch(`${proc.url}/healthz`)).status).toBe(200);
  const response = await fetch(`${proc.url}/token`, {
    method: "POST",
    headers: {
      authorization: basicAuth("deputy-admin", ADMIN_SECRET),
      "content-type": "application/x-www-form-urlencoded",
    },
    body: "grant_type=client_credentials&scope=deputy%3Aadmin",
  });
  const { access_token: token } = (await response.json()) as { access_token: string };
  expect(response.status).toBe(200);
  const verify = await fetch(`${proc.url}/admin/v1/audit/verify`, {
    headers: { authorization: `Bearer ${token}` },
  });
  expect(((await verify.json()) as { ok: boolean }).ok).toBe(true);
}

describe("a second server on the embedded database of a running one", () => {
  let env: Record<string, string>;
  let dataDir: string;
  let first: ServerProcess;

  it(
    "is refused on another port, naming the process that holds it; the first keeps serving",
    async () => {
      const prepared = await prepareEnvironment("pglite", { LOG_LEVEL: "info" });
      cleanups.push(prepared.cleanup);
      dataDir = prepared.dataDir;
      env = { ...prepared.env, ISSUER: prepared.url };
      first = await startHealthy(env);
      expect(lockPid(dataDir)).toBe(first.child.pid);

      const second = await runToExit({ ...env, PORT: String(await freePort()) });
      expect(second.code, second.stderr).toBe(1);
      expect(oneLine(second.stderr)).toBe(
        `deputy: the embedded database in ${dataDir} is in use by process ${first.child.pid}; ` +
          "use DATABASE_URL for several processes",
      );
      // Refused before anything was opened or logged.
      expect(second.stdout).toBe("");
      expect(lockPid(dataDir)).toBe(first.child.pid);
      await stillServing(first);
    },
    TEST_TIMEOUT_MS,
  );

  it("is refused on the same port before it opens anything; the first keeps serving", async () => {
    const second = await runToExit(env);
    expect(second.code, second.stderr).toBe(1);
    expect(oneLine(second.stderr)).toBe(
      `deputy: cannot listen on 127.0.0.1:${env.PORT}: the port is in use by another process`,
    );
    expect(second.stdout).toBe("");
    expect(lockPid(dataDir)).toBe(first.child.pid);
    await stillServing(first);
  });

  it(
    "takes over the lock of a killed server, and removes its own on shutdown",
    async () => {
      first.child.kill("SIGKILL");
      await first.exited;
      const killedPid = first.child.pid;
      expect(lockPid(dataDir)).toBe(killedPid);

      const next = await startHealthy(env);
      expect(lockPid(dataDir)).toBe(next.child.pid);
      await stillServing(next);
      expect((await stopServer(next)).code).toBe(0);
      expect(existsSync(lockFile(dataDir))).toBe(false);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "takes over an empty lock file left by a crash while it was written",
    async () => {
      writeFileSync(lockFile(dataDir), "");
      const old = new Date(Date.now() - 60_000);
      utimesSync(lockFile(dataDir), old, old);
      const next = await startHealthy(env);
      expect(lockPid(dataDir)).toBe(next.child.pid);
      expect((await stopServer(next)).code).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("a server that cannot listen", () => {
  it(
    "has written nothing: a second server on the port of a PostgreSQL one leaves its empty database empty",
    async () => {
      const prepared = await prepareEnvironment("postgresql", { LOG_LEVEL: "info" });
      cleanups.push(prepared.cleanup);
      const first = await startHealthy({ ...prepared.env, ISSUER: prepared.url });
      // Another data directory and a database of its own, never used: only the port is shared.
      const other = await prepareEnvironment("postgresql", { LOG_LEVEL: "info" });
      cleanups.push(other.cleanup);

      const second = await runToExit({ ...other.env, PORT: prepared.env.PORT ?? "" });
      expect(second.code, second.stderr).toBe(1);
      const client = new pg.Client({ connectionString: other.env.DATABASE_URL });
      await client.connect();
      const { rows } = await client.query(
        "SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = 'public'",
      );
      await client.end();
      expect(rows[0].n, "tables the second server created").toBe(0);
      expect(second.stdout).toBe("");
      expect(oneLine(second.stderr)).toMatch(
        /^deputy: cannot listen on 127\.0\.0\.1:\d+: the port is in use/,
      );
      await stillServing(first);
      expect((await stopServer(first)).code).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );
});

describe("one process opening its embedded database twice", () => {
  it("is refused the second time, and opens it again once closed", async () => {
    const prepared = await prepareEnvironment("pglite");
    cleanups.push(prepared.cleanup);
    const db = await openDatabase({ dataDir: prepared.dataDir });
    await expect(openDatabase({ dataDir: prepared.dataDir })).rejects.toThrow(
      `the embedded database in ${prepared.dataDir} is in use by process ${process.pid}`,
    );
    await db.close();
    expect(existsSync(lockFile(prepared.dataDir))).toBe(false);
    const again = await openDatabase({ dataDir: prepared.dataDir });
    expect(await again.sql.query("SELECT 1 AS one")).toEqual([{ one: 1 }]);
    await again.close();
  });
});

describe("processes racing for a stale lock", () => {
  it(
    "let exactly one of them take it over",
    async () => {
      const prepared = await prepareEnvironment("pglite");
      cleanups.push(prepared.cleanup);
      // A lock left by a process that has exited.
      const gone = spawn(process.execPath, ["-e", ""]);
      await new Promise((resolve) => gone.once("exit", resolve));
      writeFileSync(lockFile(prepared.dataDir), `${gone.pid}\n${"0".repeat(32)}\n`);

      // Each process says it is ready, locks when told to go, reports, and holds what it got until told to end.
      const script = `
        import { createInterface } from "node:readline";
        import { lockEmbeddedDatabase } from "./src/db/embedded-lock.ts";
        const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
        console.log("ready");
        await lines.next();
        try {
          await lockEmbeddedDatabase(process.argv[1]);
          console.log("locked");
        } catch (error) {
          console.log(error.constructor.name);
        }
        await lines.next();
      `;
      const racers = Array.from({ length: 6 }, () => {
        const child = spawn(
          process.execPath,
          ["--import", "tsx", "--input-type=module", "-e", script, prepared.dataDir],
          { cwd: REPO, stdio: ["pipe", "pipe", "inherit"] },
        );
        racing.push(child);
        const lines: string[] = [];
        const waiting: (() => void)[] = [];
        child.stdout.setEncoding("utf8");
        child.stdout.on("data", (chunk: string) => {
          lines.push(...chunk.split("\n").filter(Boolean));
          for (const wake of waiting.splice(0)) wake();
        });
        const line = async (n: number) => {
          while (lines.length < n) await new Promise<void>((resolve) => waiting.push(resolve));
          return lines[n - 1] ?? "";
        };
        const exited = new Promise((resolve) => child.once("exit", resolve));
        return { child, line, exited };
      });
      await within(Promise.all(racers.map((racer) => racer.line(1))), 60_000, "racers ready");
      for (const racer of racers) racer.child.stdin.write("go\n");
      const outcomes = await within(Promise.all(racers.map((racer) => racer.line(2))), 20_000, "racers lock");
      for (const racer of racers) racer.child.stdin.end("end\n");
      await within(Promise.all(racers.map((racer) => racer.exited)), 20_000, "racers exit");

      expect(outcomes.filter((outcome) => outcome === "locked")).toHaveLength(1);
      expect(outcomes.filter((outcome) => outcome === "EmbeddedDatabaseInUseError")).toHaveLength(5);
      expect(existsSync(lockFile(prepared.dataDir))).toBe(false);
    },
    TEST_TIMEOUT_MS,
  );
});
