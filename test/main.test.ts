// Deputy as an operator runs it: `node --import tsx src/main.ts` in a process of its own. Restarts keep keys
// and the migration history, shutdown is graceful, bad settings and a missing Redis fail with one clear line,
// and development falls back to a private redis-server. Every process started here is killed in afterAll.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, statSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { basicAuth, postForm } from "./helpers/oauth.ts";
import { ADMIN_SECRET, freePort, prepareEnvironment } from "./helpers/server.ts";

const REPO = path.resolve(import.meta.dirname, "..");
const START_TIMEOUT_MS = 60_000;
const EXIT_TIMEOUT_MS = 20_000;
/** A dependency's notice on Node 20 (oidc-provider supports Node 22+); not Deputy's output. */
const RUNTIME_WARNING = /^oidc-provider WARNING: Unsupported runtime/;

interface ServerProcess {
  child: ChildProcess;
  url: string;
  stdout: string;
  stderr: string;
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>;
}

const started: ChildProcess[] = [];
const strayPids = new Set<number>();
const cleanups: (() => Promise<void>)[] = [];

afterAll(async () => {
  for (const child of started) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
  for (const pid of strayPids) {
    if (isRunning(pid)) process.kill(pid, "SIGKILL");
  }
  for (const cleanup of cleanups) await cleanup();
});

/** An environment of its own (data dir with a migrated PGlite, port, Redis prefix), logging at info. */
async function environment(extra: Record<string, string> = {}) {
  const prepared = await prepareEnvironment("pglite", { LOG_LEVEL: "info", ...extra });
  cleanups.push(prepared.cleanup);
  return prepared;
}

function startProcess(env: Record<string, string | undefined>, options: { detached?: boolean } = {}) {
  const fullEnv: Record<string, string> = {};
  for (const [key, value] of Object.entries({ PATH: process.env.PATH, HOME: process.env.HOME, ...env })) {
    if (value !== undefined) fullEnv[key] = value;
  }
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    cwd: REPO,
    env: fullEnv,
    stdio: ["ignore", "pipe", "pipe"],
    detached: options.detached ?? false,
  });
  started.push(child);
  const proc: ServerProcess = {
    child,
    url: `http://127.0.0.1:${fullEnv.PORT}`,
    stdout: "",
    stderr: "",
    exited: new Promise((resolve) => child.once("exit", (code) => resolve(code))),
  };
  child.stdout?.on("data", (chunk) => {
    proc.stdout += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    proc.stderr += chunk;
  });
  return proc;
}

function describeProcess(proc: ServerProcess): string {
  return `exit=${proc.child.exitCode} signal=${proc.child.signalCode}\nstdout:\n${proc.stdout}\nstderr:\n${proc.stderr}`;
}

/** Rejects after `ms` with `label`; the timer never keeps the worker alive. */
function within<T>(promise: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Starts a server and waits until /healthz answers 200. */
async function startHealthy(env: Record<string, string | undefined>, options?: { detached?: boolean }) {
  const proc = startProcess(env, options);
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
      throw new Error(`server exited during start-up\n${describeProcess(proc)}`);
    }
    try {
      const response = await fetch(`${proc.url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (response.status === 200) return proc;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`server not healthy in time\n${describeProcess(proc)}`);
    await sleep(150);
  }
}

async function stop(proc: ServerProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
  proc.child.kill(signal);
  return within(proc.exited, EXIT_TIMEOUT_MS, `exit after ${signal}\n${describeProcess(proc)}`);
}

/** Runs a server expected to fail at start-up; returns its exit code and output. */
async function runToExit(env: Record<string, string | undefined>) {
  const proc = startProcess(env);
  const code = await within(
    proc.exited,
    START_TIMEOUT_MS,
    `exit of a failing start\n${describeProcess(proc)}`,
  );
  return { code, stdout: proc.stdout, stderr: proc.stderr };
}

function logLines(output: string): { msg?: string; [key: string]: unknown }[] {
  return output
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line));
}

async function currentKid(url: string): Promise<string> {
  const jwks = (await (await fetch(`${url}/jwks`)).json()) as { keys: { kid: string }[] };
  expect(jwks.keys).toHaveLength(1);
  return jwks.keys[0]?.kid ?? "";
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // An exited child nobody has reaped yet is not running.
  const stat = `/proc/${pid}/stat`;
  return !(existsSync(stat) && /^\d+ \(.*\) Z/.test(readFileSync(stat, "utf8")));
}

/** One line, the way main.ts reports a failed start: no stack, no frames. */
function expectOneCleanLine(stderr: string): string {
  const lines = stderr
    .trimEnd()
    .split("\n")
    .filter((line) => !RUNTIME_WARNING.test(line));
  expect(lines, stderr).toHaveLength(1);
  const [line = ""] = lines;
  expect(line).toMatch(/^deputy: /);
  expect(line).not.toMatch(/\bat .+:\d+:\d+|node:internal/);
  return line;
}

describe("restarting on the same data directory", () => {
  // A data dir without a database, and no DEPUTY_BOOTSTRAP_ADMIN_SECRET: the first start creates both.
  let first: ServerProcess;
  let second: ServerProcess;
  let dataDir: string;
  const kids: string[] = [];
  const exitCodes: (number | null)[] = [];
  let secondToken: { status: number; body: any };

  it("starts, stops on SIGTERM with exit code 0, and starts again", async () => {
    const prepared = await environment({ DEPUTY_BOOTSTRAP_ADMIN_SECRET: "" });
    dataDir = prepared.dataDir;
    rmSync(path.join(dataDir, "pgdata"), { recursive: true, force: true });
    const env = { ...prepared.env, DEPUTY_BOOTSTRAP_ADMIN_SECRET: undefined };

    first = await startHealthy(env);
    kids.push(await currentKid(first.url));
    exitCodes.push(await stop(first));

    second = await startHealthy(env);
    kids.push(await currentKid(second.url));
    const stored = JSON.parse(readFileSync(path.join(dataDir, "bootstrap-admin.json"), "utf8"));
    secondToken = await postForm(
      `${second.url}/token`,
      { grant_type: "client_credentials", scope: "deputy:admin" },
      { authorization: basicAuth(stored.client_id, stored.client_secret) },
    );
    exitCodes.push(await stop(second));
    expect(exitCodes).toEqual([0, 0]);
    expect(logLines(first.stdout).at(-1)?.msg).toBe("stopped");
  });

  it("keeps the signing key id", () => {
    expect(kids).toHaveLength(2);
    expect(kids[0]).toMatch(/^[\w-]{8,}$/);
    expect(kids[1]).toBe(kids[0]);
  });

  it("applies the migrations on the first start only", () => {
    const applying = (output: string) => logLines(output).filter((line) => line.msg === "applying migration");
    expect(applying(first.stdout).length).toBeGreaterThan(0);
    expect(applying(second.stdout)).toEqual([]);
    expect(second.stdout).not.toContain("applying migration");
  });

  it("writes the bootstrap admin secret to a 0600 file that the log names, and never logs the secret", () => {
    const file = path.join(dataDir, "bootstrap-admin.json");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const stored = JSON.parse(readFileSync(file, "utf8"));
    expect(stored).toEqual({
      client_id: "deputy-admin",
      client_secret: expect.stringMatching(/^[\w-]{43}$/),
    });
    // The secret in the file is the real one, and it survived the restart.
    expect(secondToken.status, JSON.stringify(secondToken.body)).toBe(200);

    const named = logLines(first.stdout).find((line) => line.file === file);
    expect(named?.msg).toMatch(/bootstrap admin/);
    for (const output of [first.stdout, first.stderr, second.stdout, second.stderr]) {
      expect(output).not.toContain(stored.client_secret);
    }
  });
});

describe("graceful shutdown", () => {
  it("finishes a request in flight at SIGTERM, refuses new connections, then exits 0", async () => {
    const prepared = await environment();
    const proc = await startHealthy(prepared.env);
    const port = Number(prepared.env.PORT);

    // A token request whose body is still arriving when SIGTERM does.
    const body = "grant_type=client_credentials&scope=deputy%3Aadmin";
    const socket = connect(port, "127.0.0.1");
    let response = "";
    socket.setEncoding("utf8");
    socket.on("data", (chunk) => {
      response += chunk;
    });
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    await within(
      new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject)),
      5_000,
      "connect",
    );
    socket.write(
      [
        "POST /token HTTP/1.1",
        `Host: 127.0.0.1:${port}`,
        `Authorization: ${basicAuth("deputy-admin", ADMIN_SECRET)}`,
        "Content-Type: application/x-www-form-urlencoded",
        `Content-Length: ${body.length}`,
        "",
        body.slice(0, 10),
      ].join("\r\n"),
    );
    await sleep(300);

    proc.child.kill("SIGTERM");
    const deadline = Date.now() + 10_000;
    while (!proc.stdout.includes("shutting down") && Date.now() < deadline) await sleep(50);
    expect(proc.stdout).toContain("shutting down");

    // The listener is closed: a new connection is refused while the old request is still open.
    const refused = await within(
      new Promise<string>((resolve) => {
        const probe = connect(port, "127.0.0.1");
        probe.once("connect", () => {
          probe.destroy();
          resolve("connected");
        });
        probe.once("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? "error"));
      }),
      5_000,
      "probe connection",
    );
    expect(refused).toBe("ECONNREFUSED");
    expect(proc.child.exitCode).toBeNull();

    socket.write(body.slice(10));
    const stoppedAt = Date.now();
    const code = await within(
      proc.exited,
      EXIT_TIMEOUT_MS,
      `exit after the last request\n${describeProcess(proc)}`,
    );
    await within(closed, 5_000, "server closes the kept-alive connection");
    expect(response).toMatch(/^HTTP\/1\.1 200 /);
    expect(response).toContain('"access_token"');
    expect(response).toMatch(/^connection: close\r$/im);
    expect(code).toBe(0);
    // Not held open by the finished request's kept-alive connection (keepAliveTimeout is 5 s).
    expect(Date.now() - stoppedAt).toBeLessThan(4_000);
    expect(logLines(proc.stdout).at(-1)?.msg).toBe("stopped");
  });
});

describe("refusing to start", () => {
  it.each([
    ["PORT", "abc"],
    ["ISSUER", "not-a-url"],
    ["DATABASE_URL", "mysql://x"],
  ])("%s=%s exits 1 with one message naming the setting", async (name, value) => {
    const run = await runToExit({
      NODE_ENV: "test",
      DEPUTY_DATA_DIR: path.join(tmpdir(), "deputy-never-created"),
      LOG_LEVEL: "info",
      [name]: value,
    });
    expect(run.code, run.stderr).toBe(1);
    // The settings are checked before anything else loads: this is the only output.
    expect(run.stdout).toBe("");
    expect(run.stderr.trimEnd().split("\n")).toHaveLength(1);
    const line = expectOneCleanLine(run.stderr);
    expect(line).toMatch(new RegExp(`^deputy: invalid configuration: ${name}: `));
  });

  it("in production, without a reachable Redis, exits 1 and says how to provide one", async () => {
    const redisUrl = `redis://127.0.0.1:${await freePort()}`;
    const prepared = await environment({ NODE_ENV: "production", REDIS_URL: redisUrl });
    const run = await runToExit(prepared.env);
    expect(run.code, run.stderr).toBe(1);
    const line = expectOneCleanLine(run.stderr);
    expect(line).toContain(redisUrl);
    expect(line).toMatch(/Redis is unreachable/);
    expect(line).toMatch(/REDIS_URL/);
    // No private Redis in production.
    expect(existsSync(path.join(prepared.dataDir, "redis"))).toBe(false);
  });
});

const hasRedisServer = spawnSync("sh", ["-c", "command -v redis-server"]).status === 0;

describe.skipIf(!hasRedisServer)("development without a reachable Redis", () => {
  async function startPrivate(options?: { detached?: boolean }) {
    const redisUrl = `redis://127.0.0.1:${await freePort()}`;
    const prepared = await environment({ NODE_ENV: "development", REDIS_URL: redisUrl });
    const proc = await startHealthy(prepared.env, options);
    const socket = path.join(prepared.dataDir, "redis", "redis.sock");
    expect(statSync(socket).isSocket()).toBe(true);
    const client = new Redis({ path: socket, lazyConnect: true, maxRetriesPerRequest: 1 });
    await client.connect();
    const info = await client.info("server");
    client.disconnect();
    const pid = Number(info.match(/^process_id:(\d+)/m)?.[1]);
    expect(pid).toBeGreaterThan(0);
    strayPids.add(pid);
    return { proc, pid, socket };
  }

  async function waitGone(pid: number) {
    const deadline = Date.now() + 5_000;
    while (isRunning(pid) && Date.now() < deadline) await sleep(50);
    return !isRunning(pid);
  }

  it("starts a private redis-server under the data dir and stops it on SIGTERM", async () => {
    const { proc, pid } = await startPrivate();
    expect((await fetch(`${proc.url}/healthz`)).status).toBe(200);
    const lines = logLines(proc.stdout);
    expect(lines.find((line) => line.msg === "started a private Redis for development")).toBeTruthy();
    expect(lines.find((line) => line.msg === "deputy is listening")?.redis).toBe("private");
    expect(isRunning(pid)).toBe(true);

    expect(await stop(proc)).toBe(0);
    expect(await waitGone(pid)).toBe(true);
  });

  it("exits 0 on Ctrl-C, when the private redis-server has already stopped on the same SIGINT", async () => {
    // A terminal's Ctrl-C signals the whole foreground process group, redis-server included. A request in
    // flight holds Deputy's shutdown until redis-server has certainly exited.
    const { proc, pid } = await startPrivate({ detached: true });
    const groupId = proc.child.pid ?? 0;
    expect(groupId).toBeGreaterThan(0);
    const socket = connect(Number(new URL(proc.url).port), "127.0.0.1");
    socket.on("error", () => {});
    socket.resume();
    await within(
      new Promise((resolve) => socket.once("connect", resolve)),
      5_000,
      "connect for the held request",
    );
    socket.write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    await sleep(200);

    process.kill(-groupId, "SIGINT");
    expect(await waitGone(pid)).toBe(true);
    expect(proc.child.exitCode).toBeNull();
    socket.end("\r\n");

    const code = await within(proc.exited, EXIT_TIMEOUT_MS, `exit after Ctrl-C\n${describeProcess(proc)}`);
    expect(code, describeProcess(proc)).toBe(0);
  });
});
