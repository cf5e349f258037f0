// Revocation benchmark (part of `npm run bench`; alone: `npm run bench:revocation`). Two server processes share a
// PostgreSQL database created here and the local Redis (under a prefix of their own), with their revocation workers
// inline, as a production pair would run:
//   1. propagation: for each of TASKS tasks (a delegation, its subject token and one exchanged token, introspected
//      on both processes first so both hold its state in their caches), `POST /tasks/{id}/complete` to one
//      process, then introspection polled on BOTH until each answers `active: false`. Reported: the completion
//      request itself, and the time from its response ("accepted") to `active: false` on every process.
//   2. a subtree of 1,000 descendant tokens (subject → one token → 1,000 tokens exchanged from it by a sub-agent),
//      revoked by RFC 7009 revocation of its root; and a task of 1,001 tokens ended by `complete`. Reported: the
//      request, then every descendant checked inactive on the other process.
// Everything created here (processes, database, Redis keys, directories) is removed at the end, also on failure.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createDeputy, type Deputy } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";
import { issueSubjectToken } from "../src/oauth/issue-subject-token.ts";
import {
  cleanUp,
  cleanUpOnSignals,
  createDatabase,
  freePort,
  onCleanup,
  redisPrefix,
  startServer as startHarnessServer,
} from "./harness.ts";

const REDIS_URL = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
const TASKS = Number(process.env.BENCH_REVOCATION_TASKS ?? 200);
const SUBTREE = 1_000;
const CONCURRENCY = 16;
const ADMIN_SECRET = randomBytes(32).toString("base64url");
const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token";
const RESOURCE = "https://mail.bench.example";
const GOALS = { propagationP99Ms: 100, subtreeMs: 1_000 };

// ---------------------------------------------------------------------------------------------------------
// Cleanup.

/** The last output of each server process, shown if the benchmark fails. */
const outputs = new Map<string, () => string>();
cleanUpOnSignals();

async function startServer(env: Record<string, string>): Promise<string> {
  const server = await startHarnessServer(env, [], { benchNodeFlags: false });
  const { child } = server;
  outputs.set(
    server.url,
    () => `exit ${child.exitCode ?? "-"} signal ${child.signalCode ?? "-"}\n${server.stderr()}`,
  );
  return server.url;
}

// ---------------------------------------------------------------------------------------------------------
// Requests.

interface Client {
  client_id: string;
  client_secret: string;
}

const basic = (c: Client) =>
  `Basic ${Buffer.from(`${encodeURIComponent(c.client_id)}:${encodeURIComponent(c.client_secret)}`).toString("base64")}`;

async function post(url: string, form: Record<string, string>, client: Client) {
  const send = () =>
    fetch(url, {
      method: "POST",
      headers: { authorization: basic(client), "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(form).toString(),
    });
  // A kept-alive connection the server closed as it was reused (keepAliveTimeout) fails before any answer:
  // sending again is safe then.
  const response = await send().catch((error: unknown) => {
    if (error instanceof TypeError && error.message === "fetch failed") return send();
    throw error;
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : {} };
}

async function exchange(base: string, agent: Client, subjectToken: string): Promise<string> {
  const result = await post(
    `${base}/token`,
    { grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN },
    agent,
  );
  if (result.status !== 200)
    throw new Error(`exchange failed: ${result.status} ${JSON.stringify(result.body)}`);
  return String(result.body.access_token);
}

async function active(base: string, resource: Client, token: string): Promise<boolean> {
  const result = await post(`${base}/token/introspection`, { token }, resource);
  if (result.status !== 200) throw new Error(`introspection failed: ${result.status}`);
  return result.body.active === true;
}

/** Runs `work` over `items` with at most `limit` in flight. */
async function pool<T, R>(
  items: T[],
  limit: number,
  work: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const index = next++;
        results[index] = await work(items[index] as T, index);
      }
    }),
  );
  return results;
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN;
};
const ms = (value: number) => value.toFixed(1);

// ---------------------------------------------------------------------------------------------------------

interface World {
  seeder: Deputy;
  urls: [string, string];
  person: { id: string; email: string };
  resource: Client;
  planner: Client;
  researcher: Client;
}

async function setUp(): Promise<World> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "deputy-bench-rev-"));
  onCleanup(`remove ${dataDir}`, async () => rmSync(dataDir, { recursive: true, force: true }));
  const databaseUrl = await createDatabase();
  const ports = [await freePort(), await freePort()];
  const common = {
    NODE_ENV: "production",
    LOG_LEVEL: "warn",
    HOST: "127.0.0.1",
    ISSUER: `http://127.0.0.1:${ports[0]}`,
    DATABASE_URL: databaseUrl,
    REDIS_URL,
    REDIS_PREFIX: redisPrefix(),
    DEPUTY_BOOTSTRAP_ADMIN_SECRET: ADMIN_SECRET,
    DEPUTY_DATA_DIR: dataDir,
  };
  // The seeding process runs no workers and stays open to create delegations as the benchmark goes.
  const seeder = await createDeputy(
    loadConfig({ ...common, PORT: "0", DEPUTY_WORKERS: "off" }),
    createLogger("warn"),
  );
  onCleanup("close the seeding connections", () => seeder.close());
  const context = { actor: "bench" };
  const person = await seeder.people.create(context, {
    email: "bench@example.com",
    name: "Bench",
    password: randomBytes(16).toString("base64url"),
  });
  const resource = await seeder.resources.create(context, {
    uri: RESOURCE,
    name: "Mail (bench)",
    scopes: [{ name: "mail.read", description: "Read mail", risk: "low" as const }],
  });
  const agent = async (name: string, extra: Record<string, unknown> = {}) => {
    const created = await seeder.agents.create(context, {
      name,
      owner: person.email,
      purpose: "benchmark",
      grants: [{ resource: RESOURCE, scopes: ["mail.read"] }],
      auth: { method: "client_secret" },
      ...extra,
    });
    return { client_id: created.client_id, client_secret: String(created.client_secret) };
  };
  const researcher = await agent("Researcher (bench)");
  const planner = await agent("Planner (bench)", { may_delegate_to: [researcher.client_id], max_depth: 2 });
  const urls = (await Promise.all(ports.map((port) => startServer({ ...common, PORT: String(port) })))) as [
    string,
    string,
  ];
  return { seeder, urls, person, resource, planner, researcher };
}

async function newTask(world: World) {
  const { seeder, person, planner } = world;
  const delegation = await seeder.delegations.create(
    { actor: person.email },
    {
      personId: person.id,
      agentClientId: planner.client_id,
      taskId: `bench-${randomBytes(6).toString("hex")}`,
      taskDescription: "Benchmark a revocation",
      grants: [{ resource: RESOURCE, scopes: ["mail.read"] }],
      endsAt: new Date(Date.now() + 3_600_000),
    },
  );
  const subject = await issueSubjectToken(
    { provider: seeder.provider, audit: seeder.audit },
    { actor: person.email },
    { ...delegation, agentClientId: planner.client_id, personEmail: person.email },
  );
  return { taskId: String(delegation.taskId), subjectToken: subject.access_token };
}

interface Propagation {
  tasks: number;
  completeMs: number[];
  propagationMs: number[];
  firstProbeInactive: number;
}

async function propagation(world: World): Promise<Propagation> {
  const { urls, resource, planner } = world;
  console.log(`  preparing ${TASKS} tasks (each: a delegation, its subject token, one exchanged token)…`);
  const tasks = await pool(Array.from({ length: TASKS }), CONCURRENCY, async (_, i) => {
    const task = await newTask(world);
    const token = await exchange(urls[i % 2] as string, planner, task.subjectToken);
    // Both processes now hold the delegation's state (and the token) in their caches.
    for (const url of urls) if (!(await active(url, resource, token))) throw new Error("token not active");
    return { ...task, token };
  });
  console.log(`  completing them one at a time, alternating processes…`);
  const completeMs: number[] = [];
  const propagationMs: number[] = [];
  let firstProbeInactive = 0;
  for (const [i, task] of tasks.entries()) {
    const started = performance.now();
    const done = await post(`${urls[i % 2]}/tasks/${encodeURIComponent(task.taskId)}/complete`, {}, planner);
    const accepted = performance.now();
    if (done.status !== 200 || done.body.revoked?.delegations !== 1)
      throw new Error(`completion failed: ${done.status} ${JSON.stringify(done.body)}`);
    let probes = 0;
    const stillActive = new Set(urls);
    while (stillActive.size) {
      probes++;
      const answers = await Promise.all(
        [...stillActive].map(async (url) => [url, await active(url, resource, task.token)] as const),
      );
      for (const [url, isActive] of answers) if (!isActive) stillActive.delete(url);
      if (performance.now() - accepted > 10_000) throw new Error("a revoked token stayed active for 10 s");
    }
    const inactiveEverywhere = performance.now();
    if (probes === 1) firstProbeInactive++;
    completeMs.push(accepted - started);
    propagationMs.push(inactiveEverywhere - accepted);
  }
  return { tasks: TASKS, completeMs, propagationMs, firstProbeInactive };
}

interface SubtreeResult {
  what: string;
  tokens: number;
  requestMs: number;
  verifiedMs: number;
  stillActive: number;
}

async function subtrees(world: World): Promise<SubtreeResult[]> {
  const { urls, resource, planner, researcher } = world;
  const results: SubtreeResult[] = [];
  for (const how of ["rfc7009", "complete"] as const) {
    const task = await newTask(world);
    const root = await exchange(urls[0], planner, task.subjectToken);
    console.log(`  ${how}: minting ${SUBTREE} tokens exchanged from one root token…`);
    const leaves = await pool(Array.from({ length: SUBTREE }), CONCURRENCY, (_, i) =>
      exchange(urls[i % 2] as string, researcher, root),
    );
    const started = performance.now();
    const response =
      how === "rfc7009"
        ? await post(`${urls[0]}/token/revocation`, { token: root }, planner)
        : await post(`${urls[0]}/tasks/${encodeURIComponent(task.taskId)}/complete`, {}, planner);
    const requestMs = performance.now() - started;
    if (response.status !== 200)
      throw new Error(`${how} failed: ${response.status} ${JSON.stringify(response.body)}`);
    const answers = await pool(leaves, CONCURRENCY, (token) => active(urls[1], resource, token));
    const verifiedMs = performance.now() - started;
    results.push({
      what:
        how === "rfc7009"
          ? `RFC 7009 revocation of a token with ${SUBTREE} descendants`
          : `task completion: delegation with ${SUBTREE + 2} tokens`,
      tokens: how === "rfc7009" ? SUBTREE + 1 : SUBTREE + 2,
      requestMs,
      verifiedMs,
      stillActive: answers.filter(Boolean).length,
    });
  }
  return results;
}

function machine() {
  const cpuModel =
    readFileSync("/proc/cpuinfo", "utf8")
      .match(/^model name\s*:\s*(.+)$/m)?.[1]
      ?.trim() ?? os.cpus()[0]?.model;
  let nproc = String(os.availableParallelism());
  try {
    nproc = execFileSync("nproc").toString().trim();
  } catch {}
  return { date: new Date().toISOString().replace(/\.\d+Z$/, "Z"), nproc, cpuModel, node: process.version };
}

function report(p: Propagation, trees: SubtreeResult[]): string {
  const m = machine();
  const verdict = (ok: boolean) => (ok ? "met" : "**missed**");
  const p99 = percentile(p.propagationMs, 99);
  const lines = [
    `Run ${m.date} on ${m.nproc} CPU (\`nproc\`), ${m.cpuModel}, Node ${m.node}; two server processes on PostgreSQL` +
      ` and Redis (loopback), revocation workers inline, benchmark client in a third process.`,
    "",
    `| revocation | n | p50 ms | p99 ms | max ms |`,
    "|---|---:|---:|---:|---:|",
    `| \`POST /tasks/{id}/complete\` (request) | ${p.tasks} | ${ms(percentile(p.completeMs, 50))} | ${ms(percentile(p.completeMs, 99))} | ${ms(Math.max(...p.completeMs))} |`,
    `| accepted → \`active: false\` on both processes | ${p.tasks} | ${ms(percentile(p.propagationMs, 50))} | ${ms(p99)} | ${ms(Math.max(...p.propagationMs))} |`,
    "",
    `Inactive on both processes at the first probe after the response: ${p.firstProbeInactive} of ${p.tasks}.`,
    "",
    "| subtree | tokens revoked | request ms | all descendants checked inactive (other process) ms | still active |",
    "|---|---:|---:|---:|---:|",
    ...trees.map(
      (t) => `| ${t.what} | ${t.tokens} | ${ms(t.requestMs)} | ${ms(t.verifiedMs)} | ${t.stillActive} |`,
    ),
    "",
    "| goal | measured | |",
    "|---|---:|---|",
    `| propagation p99 < ${GOALS.propagationP99Ms} ms | ${ms(p99)} ms | ${verdict(p99 < GOALS.propagationP99Ms)} |`,
    ...trees.map(
      (t) =>
        `| ${t.what} < ${GOALS.subtreeMs} ms | ${ms(t.requestMs)} ms | ${verdict(t.requestMs < GOALS.subtreeMs && t.stillActive === 0)} |`,
    ),
  ];
  return lines.join("\n");
}

async function main(): Promise<void> {
  const started = Date.now();
  console.log("\n## Revocation (2 processes, PostgreSQL)");
  try {
    const world = await setUp();
    const p = await propagation(world);
    const trees = await subtrees(world);
    console.log(`\n${report(p, trees)}\n`);
    if (trees.some((t) => t.stillActive > 0)) {
      console.error("FAILED: some revoked tokens were still active");
      process.exitCode = 1;
    }
  } finally {
    await cleanUp();
  }
  console.log(`revocation benchmark finished in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

main().catch(async (error: unknown) => {
  console.error("revocation bench failed:", error instanceof Error ? (error.stack ?? error.message) : error);
  for (const [url, output] of outputs) console.error(`\n--- server ${url} ---\n${output().slice(-4_000)}`);
  await cleanUp();
  process.exit(1);
});
