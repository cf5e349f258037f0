// Deputy benchmark: client_credentials (baseline), RFC 8693 token exchange and introspection against real
// server processes, on loopback, for a bounded time (about 2.5 minutes). `npx tsx bench/run.ts` (also part of
// `npm run bench`) measures one server on the embedded database (PGlite), then two servers sharing PostgreSQL
// and Redis, and prints a markdown table for docs/BENCHMARKS.md; it exits non-zero if any request got no 2xx
// answer or a server died. `npx tsx bench/run.ts --profile` instead runs one server per scenario under
// `node --cpu-prof` (PGlite; PostgreSQL too for the exchange) and prints where its CPU time went.
//
// Data is seeded before a server starts, in this process, through Deputy's own services (PGlite allows one
// process at a time): a person, a resource server, an agent, a delegation and its subject token (kept in
// Redis under the same prefix, so the server process accepts it). Everything started or created here is
// stopped or removed at the end, also on failure or Ctrl-C. Settings: BENCH_POSTGRES_URL, BENCH_REDIS_URL,
// BENCH_NODE_FLAGS (extra flags for the server processes).
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  baselineTarget,
  checkScenarios,
  cleanUp,
  cleanUpOnSignals,
  cpuSeconds,
  createDatabase,
  databaseActivity,
  exchangeTarget,
  expectActive,
  freePort,
  introspectionTarget,
  machineBusySeconds,
  ROOT,
  redisPrefix,
  type ServerProcess,
  seed,
  send,
  serverEnv,
  startServer,
  tempDir,
  watchLockWaits,
} from "./harness.ts";
import { closedLoop, combine, type LoadResult, openLoop, type Target } from "./load.ts";
import { formatProfile, summariseProfile } from "./profile.ts";

const CONNECTIONS = 16;
const WARMUP_SECONDS = 3;
const MEASURE_SECONDS = 10;
const PEAK_SHARE = 0.7;
const STATS_FLUSH_MS = 11_000;
/** CPU used outside the servers and the load generator above which a run is flagged as disturbed. */
const NOISY_CORES = 0.6;
const GOALS = { exchangeVsBaseline: 0.8, introspectionVsExchange: 2, p99AtShareMs: 15 };

// ---------------------------------------------------------------------------------------------------------
// Measuring.

interface Measurement extends LoadResult {
  setup: string;
  scenario: string;
  /** CPU used by the server process(es) during the measurement, in cores (1.0 = one core busy). */
  serverCores: number;
  benchCores: number;
  /** CPU used by every other process on the machine (Redis, PostgreSQL, anything else running), in cores. */
  otherCores: number;
  /** 2xx responses during the warm-up that preceded the measurement. */
  warmupOk: number;
  from: number;
  to: number;
}

const failures: string[] = [];

async function measure(
  setup: string,
  scenario: string,
  servers: ServerProcess[],
  run: () => Promise<LoadResult>,
  probe: Target,
): Promise<Measurement> {
  const cpuBefore = servers.map((s) => cpuSeconds(s.child.pid));
  const benchBefore = process.cpuUsage();
  const machineBefore = machineBusySeconds();
  const from = Date.now();
  const result = await run();
  const to = Date.now();
  const wall = (to - from) / 1000;
  const serverCores =
    servers.reduce((sum, s, i) => sum + cpuSeconds(s.child.pid) - (cpuBefore[i] ?? 0), 0) / wall;
  const bench = process.cpuUsage(benchBefore);
  const benchCores = (bench.user + bench.system) / 1e6 / wall;
  const machineCores = (machineBusySeconds() - machineBefore) / wall;
  const measurement: Measurement = {
    ...result,
    setup,
    scenario,
    serverCores,
    benchCores,
    otherCores: Math.max(0, machineCores - serverCores - benchCores),
    warmupOk: 0,
    from,
    to,
  };
  console.log(
    `  ${scenario.padEnd(34)} ${result.rps.toFixed(0).padStart(6)} req/s  p50 ${result.p50.toFixed(2).padStart(6)} ms` +
      `  p99 ${result.p99.toFixed(2).padStart(6)} ms  non-2xx ${result.non2xx}  errors ${result.errors}` +
      `\n  ${"".padEnd(34)} CPU in cores: server ${serverCores.toFixed(2)}, load generator ${benchCores.toFixed(2)},` +
      ` everything else ${measurement.otherCores.toFixed(2)}; server CPU per request ${cpuPerRequest(measurement)}`,
  );
  const gone = servers.filter((server) => server.exit());
  if (gone.length) {
    const server = gone[0] as ServerProcess;
    throw new Error(
      `${setup} / ${scenario}: the server at ${server.url} ${server.exit()} during the measurement; its last output:\n` +
        server.stderr().split("\n").slice(-40).join("\n"),
    );
  }
  if (result.non2xx > 0 || result.errors > 0) {
    const sample = await send(probe).catch((error: Error) => ({ status: 0, body: error.message }));
    failures.push(
      `${setup} / ${scenario}: ${result.non2xx} non-2xx, ${result.errors} errors; status codes ${JSON.stringify(
        result.statusCodes,
      )}; a request now gets ${sample.status} ${JSON.stringify(sample.body).slice(0, 300)}`,
    );
  }
  return measurement;
}

async function saturate(setup: string, scenario: string, servers: ServerProcess[], targets: Target[]) {
  const warmUp = await closedLoop(targets, { connections: CONNECTIONS, seconds: WARMUP_SECONDS });
  const measurement = await measure(
    setup,
    scenario,
    servers,
    () => closedLoop(targets, { connections: CONNECTIONS, seconds: MEASURE_SECONDS }),
    targets[0] as Target,
  );
  return { ...measurement, warmupOk: warmUp.ok };
}

// ---------------------------------------------------------------------------------------------------------
// The two setups.

interface SetupResult {
  setup: string;
  baseline: Measurement;
  exchange: Measurement;
  introspection: Measurement;
  /** Exchange at PEAK_SHARE of its peak, evenly spaced. */
  paced: Measurement;
  /** The same rate through autocannon's overallRate (bursts at the start of every second). */
  burst?: Measurement;
}

async function singlePglite(): Promise<SetupResult> {
  const setup = "1 process, PGlite";
  console.log(`\n## ${setup}`);
  const dir = tempDir();
  const port = await freePort();
  const env = serverEnv({
    port,
    issuer: `http://127.0.0.1:${port}`,
    dataDir: path.join(dir, "data"),
    prefix: redisPrefix(),
  });
  console.log("  seeding…");
  const fixture = await seed(env);
  const server = await startServer(env);
  const token = await checkScenarios(server.url, fixture);
  const servers = [server];

  const baseline = await saturate(setup, "client_credentials (baseline)", servers, [
    baselineTarget(server.url),
  ]);
  const exchange = await saturate(setup, "token exchange", servers, [exchangeTarget(server.url, fixture)]);
  const rate = exchange.rps * PEAK_SHARE;
  const target = exchangeTarget(server.url, fixture);
  const paced = await atShareOfPeak(setup, servers, [target], rate);
  const burst = await measure(
    setup,
    `exchange @ ${Math.round(rate)}/s, autocannon overallRate`,
    servers,
    () => closedLoop([target], { connections: CONNECTIONS, seconds: MEASURE_SECONDS, overallRate: rate }),
    target,
  );
  const introspection = await saturate(setup, "introspection", servers, [
    introspectionTarget(server.url, fixture, token),
  ]);
  await expectActive(introspectionTarget(server.url, fixture, token));
  await server.stop();
  return { setup, baseline, exchange, introspection, paced, burst };
}

/**
 * Exchange latency at a share of the measured peak, with requests evenly spaced in time (open loop), split
 * evenly between the servers. autocannon's overallRate cannot do this: each connection spends its share of a
 * second's requests back to back at the start of the second, so the server is saturated in bursts.
 */
async function atShareOfPeak(
  setup: string,
  servers: ServerProcess[],
  targets: Target[],
  rate: number,
): Promise<Measurement> {
  let perSecondP99: number[] = [];
  const paced = await measure(
    setup,
    `exchange @ ${Math.round(rate)}/s, evenly spaced`,
    servers,
    async () => {
      const results = await Promise.all(
        targets.map((target) =>
          openLoop(target, { rate: rate / targets.length, seconds: MEASURE_SECONDS, maxSockets: 64 }),
        ),
      );
      perSecondP99 = (results[0]?.perSecondP99 ?? []).map((_, i) =>
        Math.max(...results.map((r) => r.perSecondP99[i] ?? 0)),
      );
      return combine(results);
    },
    targets[0] as Target,
  );
  console.log(
    `  ${"".padEnd(34)} p99 of each second, ms: ${perSecondP99.map((v) => v.toFixed(1)).join(" ")}`,
  );
  return paced;
}

async function dualPostgres(): Promise<SetupResult> {
  const setup = "2 processes, PostgreSQL";
  console.log(`\n## ${setup}`);
  const dir = tempDir();
  const databaseUrl = await createDatabase();
  const prefix = redisPrefix();
  const ports = [await freePort(), await freePort()];
  const issuer = `http://127.0.0.1:${ports[0]}`;
  const envs = ports.map((port, i) =>
    serverEnv({ port, issuer, dataDir: path.join(dir, `data-${i}`), prefix, databaseUrl }),
  );
  console.log("  seeding…");
  const fixture = await seed(envs[0] as Record<string, string>);
  const servers = await Promise.all(envs.map((env) => startServer(env)));
  const urls = servers.map((s) => s.url);
  // A token exchanged on one process is introspected on both: they share the database and Redis.
  const token = await checkScenarios(urls[0] as string, fixture);
  await checkScenarios(urls[1] as string, fixture);
  for (const url of urls) await expectActive(introspectionTarget(url, fixture, token));

  const baseline = await saturate(
    setup,
    "client_credentials (baseline)",
    servers,
    urls.map((url) => baselineTarget(url)),
  );
  // What each request costs PostgreSQL: counters before the warm-up and after the measurement, once idle
  // backends have flushed their statistics.
  const perRequest = async (before: Awaited<ReturnType<typeof databaseActivity>>, m: Measurement) => {
    await sleep(STATS_FLUSH_MS);
    const after = await databaseActivity(databaseUrl);
    const requests = m.ok + m.warmupOk;
    console.log(
      `  ${"".padEnd(34)} PostgreSQL per request: ${((after.commits - before.commits) / requests).toFixed(3)} commits,` +
        ` ${((after.inserted - before.inserted) / requests).toFixed(2)} rows inserted,` +
        ` ${((after.fetched - before.fetched) / requests).toFixed(2)} rows fetched`,
    );
    return after;
  };
  let activity = await databaseActivity(databaseUrl);
  const lockWaits = await watchLockWaits(databaseUrl);
  const exchange = await saturate(
    setup,
    "token exchange",
    servers,
    urls.map((url) => exchangeTarget(url, fixture)),
  );
  const waits = await lockWaits.stop();
  console.log(
    `  ${"".padEnd(34)} PostgreSQL sessions waiting for a lock: in ${(waits.shareWithWaiter * 100).toFixed(0)}% of` +
      ` ${waits.samples} samples, ${waits.meanWaiting.toFixed(2)} on average`,
  );
  activity = await perRequest(activity, exchange);
  const paced = await atShareOfPeak(
    setup,
    servers,
    urls.map((url) => exchangeTarget(url, fixture)),
    exchange.rps * PEAK_SHARE,
  );
  activity = await databaseActivity(databaseUrl);
  const introspection = await saturate(
    setup,
    "introspection",
    servers,
    urls.map((url) => introspectionTarget(url, fixture, token)),
  );
  await perRequest(activity, introspection);
  await Promise.all(servers.map((s) => s.stop()));
  return { setup, baseline, exchange, introspection, paced };
}

// ---------------------------------------------------------------------------------------------------------
// Profiling: one server per scenario under --cpu-prof, so each profile holds one path only.

type Scenario = "client_credentials (baseline)" | "token exchange" | "introspection";

async function profileRun(): Promise<void> {
  console.log("\n## CPU profiles (1 process, node --cpu-prof)");
  const dir = tempDir();
  const runs: { scenario: Scenario; backend: "PGlite" | "PostgreSQL" }[] = [
    { scenario: "client_credentials (baseline)", backend: "PGlite" },
    { scenario: "token exchange", backend: "PGlite" },
    { scenario: "introspection", backend: "PGlite" },
    { scenario: "token exchange", backend: "PostgreSQL" },
  ];
  const reports: string[] = [];
  for (const [i, { scenario, backend }] of runs.entries()) {
    const port = await freePort();
    const env = serverEnv({
      port,
      issuer: `http://127.0.0.1:${port}`,
      dataDir: path.join(dir, `data-${i}`),
      prefix: redisPrefix(),
      databaseUrl: backend === "PostgreSQL" ? await createDatabase() : undefined,
    });
    const fixture = await seed(env);
    const out = path.join(dir, `profile-${i}`);
    mkdirSync(out);
    const server = await startServer(env, ["--cpu-prof", `--cpu-prof-dir=${out}`, "--cpu-prof-interval=250"]);
    const token = await checkScenarios(server.url, fixture);
    const target =
      scenario === "token exchange"
        ? exchangeTarget(server.url, fixture)
        : scenario === "introspection"
          ? introspectionTarget(server.url, fixture, token)
          : baselineTarget(server.url);
    const measured = await saturate(`profiled, ${backend}`, scenario, [server], [target]);
    await server.stop();
    const file = readdirSync(out).find((name) => name.endsWith(".cpuprofile"));
    if (!file) throw new Error(`no CPU profile was written for ${scenario}`);
    const summary = summariseProfile(path.join(out, file), {
      spawnedAt: server.spawnedAt,
      from: measured.from + 250,
      to: measured.to - 250,
    });
    reports.push(
      formatProfile(`${scenario}, ${backend}: ${measured.rps.toFixed(0)} req/s under the profiler`, summary),
    );
  }
  console.log(`\n${reports.join("\n")}`);
}

// ---------------------------------------------------------------------------------------------------------
// Report.

function machine() {
  const cpuModel =
    readFileSync("/proc/cpuinfo", "utf8")
      .match(/^model name\s*:\s*(.+)$/m)?.[1]
      ?.trim() ?? os.cpus()[0]?.model;
  let nproc = String(os.availableParallelism());
  try {
    nproc = execFileSync("nproc").toString().trim();
  } catch {}
  let commit = "unknown commit";
  try {
    const git = (...args: string[]) => execFileSync("git", args, { cwd: ROOT }).toString().trim();
    commit = git("rev-parse", "--short", "HEAD");
    if (git("status", "--porcelain", "--", "src", "prisma"))
      commit += " with uncommitted changes in src/ or prisma/";
  } catch {}
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
    nproc,
    cpuModel,
    node: process.version,
    commit,
  };
}

const ms = (value: number) => value.toFixed(2);
/** Server CPU time per answered request: less disturbed by other work on the machine than req/s. */
const cpuPerRequest = (row: Measurement) => `${((row.serverCores * 1e6) / row.rps).toFixed(0)} µs`;
const ratio = (value: number) => value.toFixed(2);
const verdict = (ok: boolean) => (ok ? "met" : "**missed**");

function markdown(results: SetupResult[]): string {
  const m = machine();
  const lines = [
    `Run ${m.date} at ${m.commit}, on ${m.nproc} CPU (\`nproc\`), ${m.cpuModel}, Node ${m.node}; load generated in the benchmark` +
      ` process on the same machine, ${CONNECTIONS} connections, ${MEASURE_SECONDS} s per figure after a` +
      ` ${WARMUP_SECONDS} s warm-up.`,
    "",
    "| setup | scenario | req/s | p50 ms | p99 ms | non-2xx | server CPU per request | CPU cores: server / load generator / rest of machine |",
    "|---|---|---:|---:|---:|---:|---:|---:|",
  ];
  for (const r of results) {
    const rows = [r.baseline, r.exchange, r.introspection, r.paced, ...(r.burst ? [r.burst] : [])];
    for (const row of rows) {
      lines.push(
        `| ${row.setup} | ${row.scenario} | ${row.rps.toFixed(0)} | ${ms(row.p50)} | ${ms(row.p99)} | ${row.non2xx + row.errors} | ${cpuPerRequest(row)} | ${row.serverCores.toFixed(2)} / ${row.benchCores.toFixed(2)} / ${row.otherCores.toFixed(2)} |`,
      );
    }
  }
  // Baseline and introspection touch Redis only, so what else the machine did then was not Deputy's doing.
  const busiest = Math.max(
    ...results.flatMap((r) => [r.baseline, r.introspection]).map((row) => row.otherCores),
  );
  if (busiest > NOISY_CORES) {
    lines.push(
      "",
      `Warning: other work used up to ${busiest.toFixed(2)} cores of this machine during the run (Redis included);` +
        " absolute figures are understated and p99s inflated. Compare ratios, or re-run on a quiet machine.",
    );
  }
  lines.push("", "| setup | goal | measured | |", "|---|---|---:|---|");
  for (const r of results) {
    const exchangeVsBaseline = r.exchange.rps / r.baseline.rps;
    const introspectionVsExchange = r.introspection.rps / r.exchange.rps;
    const cost = (row: Measurement) => row.serverCores / row.rps;
    lines.push(
      `| ${r.setup} | exchange ≥ ${GOALS.exchangeVsBaseline}× client_credentials | ${ratio(exchangeVsBaseline)}× (by server CPU per request: ${ratio(cost(r.baseline) / cost(r.exchange))}×) | ${verdict(exchangeVsBaseline >= GOALS.exchangeVsBaseline)} |`,
      `| ${r.setup} | introspection ≥ ${GOALS.introspectionVsExchange}× exchange | ${ratio(introspectionVsExchange)}× (by server CPU per request: ${ratio(cost(r.exchange) / cost(r.introspection))}×) | ${verdict(introspectionVsExchange >= GOALS.introspectionVsExchange)} |`,
      `| ${r.setup} | exchange p99 ≤ ${GOALS.p99AtShareMs} ms at ${PEAK_SHARE * 100}% of peak (evenly spaced) | ${ms(r.paced.p99)} ms | ${verdict(r.paced.p99 <= GOALS.p99AtShareMs)} |`,
    );
    if (r.burst) {
      lines.push(
        `| ${r.setup} | same, autocannon overallRate (bursts each second) | ${ms(r.burst.p99)} ms | ${verdict(r.burst.p99 <= GOALS.p99AtShareMs)} |`,
      );
    }
  }
  return lines.join("\n");
}

async function main(): Promise<void> {
  cleanUpOnSignals();
  const profile = process.argv.includes("--profile");
  const started = Date.now();
  try {
    if (profile) {
      await profileRun();
    } else {
      const results = [await singlePglite(), await dualPostgres()];
      console.log(`\n${markdown(results)}\n`);
    }
  } finally {
    await cleanUp();
  }
  console.log(`finished in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  // Keep-alive sockets of fetch() would hold the process open for a few more seconds.
  if (failures.length) {
    console.error(`\nFAILED: requests that did not get a 2xx answer:\n- ${failures.join("\n- ")}`);
    process.exit(1);
  }
  process.exit(0);
}

main().catch(async (error: unknown) => {
  console.error("bench failed:", error instanceof Error ? (error.stack ?? error.message) : error);
  await cleanUp();
  process.exit(1);
});
