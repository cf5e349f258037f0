// Audit benchmark (`npm run bench` runs it last; alone: `npm run bench:audit`).
//
// 1. What auditing costs a token exchange: one server process at a time, on PGlite and then on PostgreSQL,
//    alternately with full auditing and with the audit-off entry (MEASUREMENT ONLY: the exchange's audit
//    event is not written, its lineage row still is; the server refuses the setting unless NODE_ENV=test,
//    so these servers run with NODE_ENV=test). Same machine, same data, same run; the ratio is the figure.
// 2. What the hash chain costs the writer: events/s through group commit with the chain (advisory lock, head
//    read, hashing) against the same batches inserted plainly, as the writer did before the chain.
// 3. Sustained load: 2,000 events/s offered through AuditLog.commit for 10 s, evenly spaced; every event must
//    be committed (rows counted afterwards) and the chain must verify.
// 4. Export: every event written above streamed as NDJSON, with the live heap watched (it must stay flat).
//
// Everything runs on loopback, bounded in time; every process, database, Redis prefix and directory it creates
// is removed at the end, also on failure or Ctrl-C.
import { execFileSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { exportChunks } from "../src/audit/audit-export.ts";
import { AuditLog } from "../src/audit/audit-log.ts";
import { iterateEvents } from "../src/audit/audit-query.ts";
import { verifyAuditTrail } from "../src/audit/audit-verify.ts";
import { GroupCommitWriter } from "../src/audit/group-commit.ts";
import { type Database, openDatabase } from "../src/db/connect.ts";
import { type ExchangeFixture, RESOURCE, seedExchangeFixture } from "../test/helpers/server-process.ts";
import {
  AUDIT_OFF_ENTRY,
  cleanUp,
  cleanUpOnSignals,
  createDatabase,
  freePort,
  onCleanup,
  redisPrefix,
  startServer,
  tempDir,
} from "./harness.ts";
import { closedLoop, type LoadResult, percentile, type Target } from "./load.ts";

const POSTGRES_ADMIN_URL = process.env.BENCH_POSTGRES_URL ?? "postgresql://postgres@127.0.0.1:5432/test";
const REDIS_URL = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
const ADMIN_SECRET = randomBytes(32).toString("base64url");
const RESOURCE_URI = RESOURCE;
const CONNECTIONS = 16;
const WARMUP_SECONDS = 3;
const MEASURE_SECONDS = 10;
const ROUNDS = 2;
const EXCHANGE_ROUNDS = 3;
const SUSTAINED_RATE = 2000;
const SUSTAINED_SECONDS = 10;
const WRITER_SECONDS = 5;
const WRITER_OUTSTANDING = 1000;
const GOALS = { auditCost: 0.15, sustainedRate: SUSTAINED_RATE };

// ---------------------------------------------------------------------------------------------------------
// Cleanup

cleanUpOnSignals();

// ---------------------------------------------------------------------------------------------------------
// 1. Token exchange with and without audit events

/** The agent, its secret and its subject token (the fault tests' fixture: one resource server, one delegation). */
type Fixture = ExchangeFixture;
const seed = seedExchangeFixture;

const CLOCK_TICKS = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
function cpuSeconds(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return 0;
  }
}

const basic = (id: string, secret: string) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;

const exchangeTarget = (base: string, fixture: Fixture): Target => ({
  base,
  path: "/token",
  headers: {
    "content-type": "application/x-www-form-urlencoded",
    authorization: basic(fixture.agent, fixture.secret),
  },
  body: new URLSearchParams({
    grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
    subject_token: fixture.subjectToken,
    subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
    resource: RESOURCE_URI,
    reasoning: "Reconcile this month's ledger entries for the person who asked",
  }).toString(),
});

interface ExchangeRun extends LoadResult {
  mode: "audited" | "off";
  serverCores: number;
  /** CPU time per exchange: the server process, plus its PostgreSQL backends when on PostgreSQL. */
  cpuMs: number;
}

/** CPU seconds used so far by the PostgreSQL backends serving `database` (same machine). */
async function backendCpuSeconds(database: string | undefined): Promise<number> {
  if (!database) return 0;
  const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await client.connect();
  try {
    const { rows } = await client.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE datname = $1",
      [database],
    );
    return rows.reduce((sum, row) => sum + cpuSeconds(row.pid), 0);
  } finally {
    await client.end();
  }
}

const failures: string[] = [];

async function exchangeRun(env: Record<string, string>, fixture: Fixture, mode: "audited" | "off") {
  const database = env.DATABASE_URL ? new URL(env.DATABASE_URL).pathname.slice(1) : undefined;
  const server = await startServer(env, [], {
    benchNodeFlags: false,
    entry: mode === "off" ? AUDIT_OFF_ENTRY : undefined,
  });
  try {
    const target = exchangeTarget(server.url, fixture);
    const probe = await fetch(new URL(target.path, target.base), {
      method: "POST",
      headers: target.headers,
      body: target.body,
    });
    if (probe.status !== 200) throw new Error(`token exchange failed: ${probe.status} ${await probe.text()}`);
    await closedLoop([target], { connections: CONNECTIONS, seconds: WARMUP_SECONDS });
    const cpuBefore = cpuSeconds(server.child.pid);
    const dbBefore = await backendCpuSeconds(database);
    const from = performance.now();
    const result = await closedLoop([target], { connections: CONNECTIONS, seconds: MEASURE_SECONDS });
    const wall = (performance.now() - from) / 1000;
    const serverCpu = cpuSeconds(server.child.pid) - cpuBefore;
    const dbCpu = (await backendCpuSeconds(database)) - dbBefore;
    const run: ExchangeRun = {
      ...result,
      mode,
      serverCores: serverCpu / wall,
      cpuMs: ((serverCpu + dbCpu) * 1000) / Math.max(1, result.ok),
    };
    console.log(
      `  ${mode.padEnd(8)} ${run.rps.toFixed(0).padStart(6)} exchanges/s  p50 ${run.p50.toFixed(2)} ms  p99 ${run.p99.toFixed(2)} ms` +
        `  non-2xx ${run.non2xx}  errors ${run.errors}  server CPU ${run.serverCores.toFixed(2)} cores` +
        `  CPU ${run.cpuMs.toFixed(2)} ms/exchange`,
    );
    if (run.non2xx || run.errors)
      failures.push(`exchange ${mode}: ${run.non2xx} non-2xx, ${run.errors} errors`);
    return run;
  } finally {
    await server.stop();
  }
}

interface ExchangeSetup {
  setup: string;
  runs: ExchangeRun[];
  audited: number;
  off: number;
  /** 1 − audited/off throughput. */
  cost: number;
  cpuAudited: number;
  cpuOff: number;
  /** The throughput a CPU-bound server loses: 1 − cpuOff/cpuAudited. Steadier than `cost` on a busy machine. */
  cpuCost: number;
}

async function exchangeSetup(setup: string, databaseUrl?: string): Promise<ExchangeSetup> {
  console.log(`\n## token exchange, ${setup}: audited vs the audit-off entry (measurement only)`);
  const port = await freePort();
  const env: Record<string, string> = {
    NODE_ENV: "test",
    LOG_LEVEL: "warn",
    HOST: "127.0.0.1",
    PORT: String(port),
    ISSUER: `http://127.0.0.1:${port}`,
    DEPUTY_DATA_DIR: path.join(tempDir(), "data"),
    REDIS_URL,
    REDIS_PREFIX: redisPrefix(),
    DEPUTY_BOOTSTRAP_ADMIN_SECRET: ADMIN_SECRET,
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
  };
  const fixture = await seed(env);
  const runs: ExchangeRun[] = [];
  // Alternating order (A B, B A, …) so drift in the machine's load falls on both sides.
  for (let round = 0; round < EXCHANGE_ROUNDS; round++) {
    const order: ("audited" | "off")[] = round % 2 === 0 ? ["audited", "off"] : ["off", "audited"];
    for (const mode of order) runs.push(await exchangeRun(env, fixture, mode));
  }
  const mean = (mode: string, value: (run: ExchangeRun) => number) => {
    const of = runs.filter((r) => r.mode === mode);
    return of.reduce((sum, r) => sum + value(r), 0) / of.length;
  };
  const audited = mean("audited", (r) => r.rps);
  const off = mean("off", (r) => r.rps);
  const cpuAudited = mean("audited", (r) => r.cpuMs);
  const cpuOff = mean("off", (r) => r.cpuMs);
  return {
    setup,
    runs,
    audited,
    off,
    cost: 1 - audited / off,
    cpuAudited,
    cpuOff,
    cpuCost: 1 - cpuOff / cpuAudited,
  };
}

// ---------------------------------------------------------------------------------------------------------
// 2–4. The writer on its own

async function openBenchDatabase(kind: "pglite" | "postgresql"): Promise<Database> {
  const db =
    kind === "pglite"
      ? await openDatabase({ dataDir: tempDir() })
      : await openDatabase({ databaseUrl: await createDatabase(), dataDir: tempDir() });
  onCleanup(`close ${kind}`, () => db.close());
  return db;
}

const event = (run: string, n: number) => ({
  action: "token.exchange" as const,
  decision: "allow" as const,
  delegatedBy: "bench@example.com",
  agentChain: ["agt_bench_sub", "agt_bench"],
  resource: RESOURCE_URI,
  scopesAsked: ["ledger.read"],
  scopesGranted: ["ledger.read"],
  delegationId: "7b0f8a1e-7f65-4c3e-9d55-0b5d1c2f9a10",
  taskId: "bench",
  details: { run, jti: randomBytes(32).toString("base64url"), n },
  agentClaim: "Reconcile this month's ledger entries for the person who asked",
});

/**
 * The same writer without the chain: the same batching and the same one-statement insert in a SqlRunner
 * transaction, but no lock, no head check, no numbering and no hashing, into a copy of the table (same columns
 * and indexes) so that the chain's own table holds only chained events. The difference is what the chain costs.
 */
const PLAIN_INSERT = `
INSERT INTO audit_events_plain (id, time, type, action, decision, actor, delegated_by, agent_chain, resource,
  scopes_asked, scopes_granted, delegation_id, task_id, request_id, client_address, details, agent_claim)
SELECT id, time, type, action, decision, actor, delegated_by, agent_chain, resource, scopes_asked, scopes_granted,
  delegation_id, task_id, request_id, client_address, details, agent_claim
FROM jsonb_to_recordset($1::jsonb) AS r(id uuid, time timestamptz, type text, action text, decision text,
  actor text, delegated_by text, agent_chain text[], resource text, scopes_asked text[], scopes_granted text[],
  delegation_id text, task_id text, request_id text, client_address text, details jsonb, agent_claim text)`;

class PlainBatcher {
  #queue: { row: Record<string, unknown>; done: () => void; fail: (e: unknown) => void }[] = [];
  #flushing = false;
  constructor(readonly db: Database) {}
  write(row: Record<string, unknown>): Promise<void> {
    return new Promise((done, fail) => {
      this.#queue.push({ row, done, fail });
      if (!this.#flushing && this.#queue.length === 1) setImmediate(() => void this.#flush());
    });
  }
  async #flush(): Promise<void> {
    if (this.#flushing || !this.#queue.length) return;
    this.#flushing = true;
    const batch = this.#queue.splice(0, 500);
    try {
      await this.db.sql.transaction((tx) =>
        tx.query(PLAIN_INSERT, [JSON.stringify(batch.map((b) => b.row))]),
      );
      for (const b of batch) b.done();
    } catch (error) {
      for (const b of batch) b.fail(error);
    }
    this.#flushing = false;
    if (this.#queue.length) setImmediate(() => void this.#flush());
  }
}

/** `outstanding` writers, each writing its next event when the last one is committed, for `seconds`. */
async function writerThroughput(write: (n: number) => Promise<void>, seconds: number) {
  let n = 0;
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: WRITER_OUTSTANDING }, async () => {
      while (performance.now() < deadline) {
        try {
          await write(n++);
        } catch {
          errors++;
        }
      }
    }),
  );
  return { perSecond: (n - errors) / ((performance.now() - started) / 1000), errors };
}

interface WriterResult {
  kind: string;
  chained: number;
  plain: number;
  sustained: {
    offered: number;
    sent: number;
    committed: number;
    rows: number;
    errors: number;
    p50: number;
    p99: number;
    max: number;
    achieved: number;
  };
  verified: boolean;
  verifySeconds: number;
  export: { events: number; seconds: number; megabytes: number; heapGrowthMb: number };
}

async function writerBench(kind: "pglite" | "postgresql"): Promise<WriterResult> {
  console.log(`\n## audit writer, ${kind}`);
  const db = await openBenchDatabase(kind);
  const writer = new GroupCommitWriter(db.prisma, db.sql);
  const audit = new AuditLog(writer);
  await db.sql.exec("CREATE TABLE audit_events_plain (LIKE audit_events INCLUDING ALL)");
  const plain = new PlainBatcher(db);
  const context = { actor: "agt_bench_sub", requestId: "bench", clientAddress: "127.0.0.1" };
  const plainRow = (n: number): Record<string, unknown> => {
    const e = event("bench.plain", n);
    return {
      id: randomUUID(),
      time: new Date().toISOString(),
      type: "exchange",
      action: e.action,
      decision: e.decision,
      actor: context.actor,
      delegated_by: e.delegatedBy,
      agent_chain: e.agentChain,
      resource: e.resource,
      scopes_asked: e.scopesAsked,
      scopes_granted: e.scopesGranted,
      delegation_id: e.delegationId,
      task_id: e.taskId,
      request_id: context.requestId,
      client_address: context.clientAddress,
      details: e.details,
      agent_claim: e.agentClaim,
    };
  };

  // Warm-up, then alternate chained and plain.
  await writerThroughput((n) => audit.commit(context, event("bench.warmup", n)), 1);
  const chainedRuns: number[] = [];
  const plainRuns: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const chained = await writerThroughput(
      (n) => audit.commit(context, event("bench.chained", n)),
      WRITER_SECONDS,
    );
    const flat = await writerThroughput((n) => plain.write(plainRow(n)), WRITER_SECONDS);
    chainedRuns.push(chained.perSecond);
    plainRuns.push(flat.perSecond);
    console.log(
      `  max throughput: chained ${chained.perSecond.toFixed(0)} events/s, plain insert ${flat.perSecond.toFixed(0)} events/s`,
    );
  }

  // Sustained: SUSTAINED_RATE events/s, evenly spaced, for SUSTAINED_SECONDS.
  const latencies: number[] = [];
  let errors = 0;
  let sent = 0;
  const pending: Promise<void>[] = [];
  const total = SUSTAINED_RATE * SUSTAINED_SECONDS;
  const start = performance.now();
  while (sent < total) {
    const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * SUSTAINED_RATE) + 1);
    while (sent < due) {
      const began = performance.now();
      const n = sent++;
      pending.push(
        audit.commit(context, event("bench.sustained", n)).then(
          () => {
            latencies.push(performance.now() - began);
          },
          () => {
            errors++;
          },
        ),
      );
    }
    await sleep(2);
  }
  await Promise.all(pending);
  const elapsed = (performance.now() - start) / 1000;
  const rows = Number(
    (
      await db.sql.query<{ n: string }>(
        "SELECT count(*)::text AS n FROM audit_events WHERE action = 'bench.sustained'",
      )
    )[0]?.n,
  );
  const sorted = Float64Array.from(latencies).sort();
  const sustained = {
    offered: SUSTAINED_RATE,
    sent,
    committed: latencies.length,
    rows,
    errors,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted.at(-1) ?? Number.NaN,
    achieved: latencies.length / elapsed,
  };
  console.log(
    `  sustained ${SUSTAINED_RATE}/s for ${SUSTAINED_SECONDS} s: ${sent} sent, ${latencies.length} committed, ${rows} rows,` +
      ` ${errors} errors, commit latency p50 ${sustained.p50.toFixed(1)} ms p99 ${sustained.p99.toFixed(1)} ms max ${sustained.max.toFixed(1)} ms`,
  );
  if (rows !== sent || errors)
    failures.push(`${kind}: sustained load lost events (${sent} sent, ${rows} rows)`);

  const verifyStart = performance.now();
  const report = await verifyAuditTrail(db.prisma, { archiveDir: tempDir() });
  const verifySeconds = (performance.now() - verifyStart) / 1000;
  console.log(
    `  verify: ${report.ok ? "ok" : `FAILED ${JSON.stringify(report.first_bad)}`}, ${report.checked.events} events in ${verifySeconds.toFixed(1)} s`,
  );
  if (!report.ok) failures.push(`${kind}: the chain did not verify`);

  // Export everything, watching the live heap: after a forced GC every 5,000 events (needs --expose-gc, which
  // `npm run bench` passes), the memory the export holds on to must not grow with the number of events.
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  let heapPeak = heapBefore;
  const exportStart = performance.now();
  let bytes = 0;
  let exported = 0;
  for await (const chunk of exportChunks(
    (async function* () {
      for await (const view of iterateEvents({ prisma: db.prisma, archiveDir: tempDir() }, {})) {
        exported++;
        if (exported % 5000 === 0 && gc) {
          gc();
          heapPeak = Math.max(heapPeak, process.memoryUsage().heapUsed);
        }
        yield view;
      }
    })(),
    "ndjson",
  ))
    bytes += Buffer.byteLength(chunk);
  const exportSeconds = (performance.now() - exportStart) / 1000;
  const exportResult = {
    events: exported,
    seconds: exportSeconds,
    megabytes: bytes / 1e6,
    heapGrowthMb: (heapPeak - heapBefore) / 1e6,
  };
  console.log(
    `  export: ${exported} events, ${exportResult.megabytes.toFixed(1)} MB NDJSON in ${exportSeconds.toFixed(1)} s` +
      ` (${(exported / exportSeconds).toFixed(0)} events/s), live heap grew at most ${exportResult.heapGrowthMb.toFixed(1)} MB` +
      (gc ? "" : " (run with node --expose-gc for a live-heap figure)"),
  );
  await writer.drain();
  const avg = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  return {
    kind,
    chained: avg(chainedRuns),
    plain: avg(plainRuns),
    sustained,
    verified: report.ok,
    verifySeconds,
    export: exportResult,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Report

function machine() {
  const cpuModel = readFileSync("/proc/cpuinfo", "utf8")
    .match(/^model name\s*:\s*(.+)$/m)?.[1]
    ?.trim();
  let nproc = String(os.availableParallelism());
  try {
    nproc = execFileSync("nproc").toString().trim();
  } catch {}
  return { date: new Date().toISOString().replace(/\.\d+Z$/, "Z"), nproc, cpuModel, node: process.version };
}

const pct = (value: number) => `${(value * 100).toFixed(1)}%`;
const verdict = (ok: boolean) => (ok ? "met" : "**missed**");

function markdown(exchanges: ExchangeSetup[], writers: WriterResult[]): string {
  const m = machine();
  const lines = [
    `Run ${m.date} on ${m.nproc} CPU (\`nproc\`), ${m.cpuModel}, Node ${m.node}; load generator in the benchmark process` +
      ` on the same machine. Token exchange: ${CONNECTIONS} connections, ${MEASURE_SECONDS} s per figure after a` +
      ` ${WARMUP_SECONDS} s warm-up, ${EXCHANGE_ROUNDS} rounds alternating audited / the audit-off entry (measurement only).` +
      " CPU per exchange counts the server process and, on PostgreSQL, its database backends.",
    "",
    "| setup | auditing | exchanges/s | p50 ms | p99 ms | server CPU (cores) | CPU ms / exchange |",
    "|---|---|---:|---:|---:|---:|---:|",
  ];
  for (const setup of exchanges) {
    for (const run of setup.runs) {
      lines.push(
        `| ${setup.setup} | ${run.mode === "audited" ? "on" : "off (bench only)"} | ${run.rps.toFixed(0)} | ${run.p50.toFixed(2)} | ${run.p99.toFixed(2)} | ${run.serverCores.toFixed(2)} | ${run.cpuMs.toFixed(2)} |`,
      );
    }
  }
  lines.push(
    "",
    "| writer | chained events/s (max) | plain insert events/s | chain cost | 2,000/s for 10 s: committed / rows | commit p50 / p99 ms | verify | export (flat heap) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const w of writers) {
    lines.push(
      `| ${w.kind} | ${w.chained.toFixed(0)} | ${w.plain.toFixed(0)} | ${pct(1 - w.chained / w.plain)} | ${w.sustained.committed} / ${w.sustained.rows} of ${w.sustained.sent} | ${w.sustained.p50.toFixed(1)} / ${w.sustained.p99.toFixed(1)} | ${w.verified ? "ok" : "FAILED"} in ${w.verifySeconds.toFixed(1)} s | ${w.export.events} events, ${(w.export.events / w.export.seconds).toFixed(0)}/s, heap +${w.export.heapGrowthMb.toFixed(1)} MB |`,
    );
  }
  lines.push("", "| goal | measured | |", "|---|---:|---|");
  for (const setup of exchanges) {
    lines.push(
      `| ${setup.setup}: auditing costs ≤ ${pct(GOALS.auditCost)} of exchange throughput | ${pct(setup.cost)} (${setup.audited.toFixed(0)} vs ${setup.off.toFixed(0)}/s) | ${verdict(setup.cost <= GOALS.auditCost)} |`,
      `| ${setup.setup}: same, from CPU per exchange (1 − off/on) | ${pct(setup.cpuCost)} (${setup.cpuAudited.toFixed(2)} vs ${setup.cpuOff.toFixed(2)} ms) | ${verdict(setup.cpuCost <= GOALS.auditCost)} |`,
    );
  }
  for (const w of writers) {
    const ok = w.sustained.rows === w.sustained.sent && w.sustained.errors === 0 && w.verified;
    lines.push(
      `| ${w.kind}: ${GOALS.sustainedRate} events/s sustained without loss | ${w.sustained.achieved.toFixed(0)}/s, ${w.sustained.rows}/${w.sustained.sent} rows | ${verdict(ok)} |`,
    );
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  const started = Date.now();
  try {
    const exchanges = [
      await exchangeSetup("1 process, PGlite"),
      await exchangeSetup("1 process, PostgreSQL", await createDatabase()),
    ];
    const writers = [await writerBench("pglite"), await writerBench("postgresql")];
    console.log(`\n${markdown(exchanges, writers)}\n`);
  } finally {
    await cleanUp();
  }
  console.log(`finished in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  if (failures.length) {
    console.error(`\nFAILED:\n- ${failures.join("\n- ")}`);
    process.exitCode = 1;
  }
}

main().catch(async (error: unknown) => {
  console.error("bench failed:", error instanceof Error ? (error.stack ?? error.message) : error);
  await cleanUp();
  process.exit(1);
});
