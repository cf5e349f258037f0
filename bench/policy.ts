// Policy decision benchmark: AuthZEN evaluations (POST /access/v1/evaluation, a token subject introspected
// in-process, 50 Cedar policies, one velocity rule counted in Redis, an audit event per decision) against one
// started server process, then two sharing PostgreSQL and Redis (the goal is for 2 cores), with the
// token-exchange baseline measured in the same run on the same servers.
// For each: throughput and p50/p99 at fixed concurrency (closed loop), then p99 at 70% of that peak (open loop).
// Loopback only, bounded in time; everything created is removed at the end, also on failure or Ctrl-C.
//
//   npm run bench              (runs bench/run.ts, then this)
//   npx tsx bench/policy.ts    (this alone; BENCH_SECONDS=N to change the measuring time)
// Measurement aids: BENCH_ONLY=evaluation skips the baseline; BENCH_AUDIT_OFF=1 prices decisions without their
// audit writes; BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=DIR" profiles the server process.
import os from "node:os";
import { createDeputy } from "../src/app.ts";
import { loadConfig } from "../src/config.ts";
import { createLogger } from "../src/logger.ts";
import { issueSubjectToken } from "../src/oauth/issue-subject-token.ts";
import {
  AUDIT_OFF_ENTRY,
  cleanUp,
  cleanUpOnSignals,
  cpuSeconds,
  createDatabase,
  freePort,
  redisPrefix,
  type ServerProcess,
  send,
  serverEnv,
  startServer,
  tempDir,
} from "./harness.ts";
import { closedLoop, combine, type LoadResult, openLoop, type Target } from "./load.ts";

const CONNECTIONS = 16;
const WARMUP_SECONDS = 3;
const MEASURE_SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const PEAK_SHARE = 0.7;
const POLICIES = 50;
const GOALS = { decisionsPerSecond: 3000, p99AtShareMs: 10 };
const RESOURCE = "https://calendar.policy-bench.example";
const ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token";
const FORM = "application/x-www-form-urlencoded";

const basic = (id: string, secret: string) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;

/** 50 policies: the two defaults and 48 more that every decision evaluates but none of which refuses it. */
function policySet(): string {
  const lines = [
    '@id("delegated-agents")',
    "permit (principal is Agent, action, resource is ResourceServer);",
    '@id("high-risk-needs-step-up") @advice("step_up")',
    'forbid (principal, action, resource) when { context.kind == "exchange" && context.risk == "high" && !context.step_up };',
  ];
  for (let i = 0; i < POLICIES - 2; i++) {
    switch (i % 4) {
      case 0:
        lines.push(
          `@id("no-deep-chains-${i}")`,
          `forbid (principal, action, resource) when { context.risk == "high" && context.chain_depth > ${2 + (i % 3)} };`,
        );
        break;
      case 1:
        lines.push(
          `@id("office-hours-${i}")`,
          `forbid (principal, action == Action::"calendar.write", resource) when { context.time.hour < 0 || context.time.hour > ${23 + i} };`,
        );
        break;
      case 2:
        lines.push(
          `@id("drift-${i}")`,
          `forbid (principal, action, resource == ResourceServer::"https://other-${i}.example") when { context.drift && !context.step_up };`,
        );
        break;
      default:
        lines.push(
          `@id("velocity-${i}")`,
          `forbid (principal, action, resource) when { context.velocity_count > ${1_000_000 + i} && principal.owner.email like "*@blocked-${i}.example" };`,
        );
    }
  }
  return `${lines.join("\n")}\n`;
}

interface Fixture {
  agent: { clientId: string; secret: string };
  resource: { clientId: string; secret: string };
  subjectToken: string;
}

async function seed(env: Record<string, string>): Promise<Fixture> {
  const deputy = await createDeputy(loadConfig(env), createLogger("warn"));
  try {
    const context = { actor: "bench" };
    const person = await deputy.people.create(context, {
      email: "policy-bench@example.com",
      name: "Policy Bench",
      password: "policy bench password 0123",
    });
    const resource = await deputy.resources.create(context, {
      uri: RESOURCE,
      name: "Calendar (policy bench)",
      scopes: [
        { name: "calendar.read", description: "Read", risk: "low" },
        { name: "calendar.write", description: "Write", risk: "high" },
      ],
    });
    const agent = await deputy.agents.create(context, {
      name: "Policy bench agent",
      owner: person.email,
      purpose: "benchmark",
      grants: [{ resource: RESOURCE, scopes: ["calendar.read", "calendar.write"] }],
      auth: { method: "client_secret" },
    });
    const applied = await deputy.policy.store.apply(context, [{ name: "bench.cedar", text: policySet() }]);
    if (applied.policies.length !== POLICIES)
      throw new Error(`expected ${POLICIES} policies, got ${applied.policies.length}`);
    await deputy.policy.velocity.add(context, {
      name: "calendar-read-per-minute",
      resource: RESOURCE,
      action: "calendar.read",
      limit: 10_000_000,
      window_seconds: 60,
    });
    const delegation = await deputy.delegations.create(
      { actor: person.email },
      {
        personId: person.id,
        agentClientId: agent.client_id,
        taskId: "policy-bench",
        taskDescription: "Benchmark policy decisions",
        grants: [{ resource: RESOURCE, scopes: ["calendar.read", "calendar.write"] }],
        endsAt: new Date(Date.now() + 2 * 3600_000),
      },
    );
    const subject = await issueSubjectToken(
      { provider: deputy.provider, audit: deputy.audit },
      { actor: person.email },
      { ...delegation, agentClientId: agent.client_id, personEmail: person.email },
    );
    return {
      agent: { clientId: agent.client_id, secret: agent.client_secret as string },
      resource: { clientId: resource.client_id, secret: resource.client_secret },
      subjectToken: subject.access_token,
    };
  } finally {
    await deputy.close();
  }
}

const exchangeTarget = (base: string, fixture: Fixture): Target => ({
  base,
  path: "/token",
  headers: { "content-type": FORM, authorization: basic(fixture.agent.clientId, fixture.agent.secret) },
  body: new URLSearchParams({
    grant_type: "urn:ietf:params:oauth:grant-type:token-exchange",
    subject_token: fixture.subjectToken,
    subject_token_type: ACCESS_TOKEN,
    resource: RESOURCE,
    scope: "calendar.read",
  }).toString(),
});

const evaluationTarget = (base: string, fixture: Fixture, token: string): Target => ({
  base,
  path: "/access/v1/evaluation",
  headers: {
    "content-type": "application/json",
    authorization: basic(fixture.resource.clientId, fixture.resource.secret),
  },
  body: JSON.stringify({
    subject: { type: "token", id: token },
    resource: { type: "calendar", id: "team" },
    action: { name: "calendar.read" },
  }),
});

interface Row {
  setup: string;
  scenario: string;
  peak: LoadResult & { serverCores: number };
  paced: LoadResult & { serverCores: number };
}

/** Runs a load and the CPU all server processes used meanwhile, in cores. */
async function measure(servers: ServerProcess[], run: () => Promise<LoadResult>) {
  const cpu = () => servers.reduce((sum, server) => sum + cpuSeconds(server.child.pid), 0);
  const before = cpu();
  const started = Date.now();
  const result = await run();
  const serverCores = (cpu() - before) / ((Date.now() - started) / 1000);
  return { ...result, serverCores };
}

/** Peak at fixed concurrency (split evenly over the servers), then 70% of that peak, evenly spaced. */
async function scenario(
  setup: string,
  name: string,
  servers: ServerProcess[],
  targets: Target[],
): Promise<Row> {
  await closedLoop(targets, { connections: CONNECTIONS, seconds: WARMUP_SECONDS });
  const peak = await measure(servers, () =>
    closedLoop(targets, { connections: CONNECTIONS, seconds: MEASURE_SECONDS }),
  );
  const rate = Math.max(1, Math.floor(peak.rps * PEAK_SHARE));
  const paced = await measure(servers, async () =>
    combine(
      await Promise.all(
        targets.map((target) =>
          openLoop(target, {
            rate: rate / targets.length,
            seconds: MEASURE_SECONDS,
            maxSockets: (CONNECTIONS * 4) / targets.length,
          }),
        ),
      ),
    ),
  );
  const line = (label: string, r: LoadResult & { serverCores: number }) =>
    `  ${`${name} ${label}`.padEnd(34)} ${r.rps.toFixed(0).padStart(6)}/s  p50 ${r.p50.toFixed(2).padStart(6)} ms  ` +
    `p99 ${r.p99.toFixed(2).padStart(6)} ms  non-2xx ${r.non2xx}  errors ${r.errors}  server CPU ${r.serverCores.toFixed(2)} (${(r.rps / Math.max(r.serverCores, 0.01)).toFixed(0)}/s per core)`;
  console.log(line(`(${CONNECTIONS} connections)`, peak));
  console.log(line(`(${rate}/s = 70% of peak)`, paced));
  return { setup, scenario: name, peak, paced };
}

/** `count` server processes sharing one PostgreSQL database and one Redis prefix, seeded before they start. */
async function startSetup(count: number) {
  const databaseUrl = await createDatabase();
  const prefix = redisPrefix();
  const ports = await Promise.all(Array.from({ length: count }, () => freePort()));
  const issuer = `http://127.0.0.1:${ports[0]}`;
  const envs = ports.map((port) => serverEnv({ port, issuer, dataDir: tempDir(), prefix, databaseUrl }));
  // Measurement only: BENCH_AUDIT_OFF=1 prices the decision path without its audit writes.
  const entry = process.env.BENCH_AUDIT_OFF === "1" ? AUDIT_OFF_ENTRY : undefined;
  const fixture = await seed(envs[0] as Record<string, string>);
  const servers: ServerProcess[] = [];
  for (const env of envs) {
    // The harness adds BENCH_NODE_FLAGS to every server it starts.
    const server = await startServer(env, [], { entry });
    servers.push(server);
    running.push(server);
  }
  return { fixture, servers, urls: servers.map((server) => server.url) };
}

async function runSetup(count: number): Promise<Row[]> {
  const setup = `${count} process${count > 1 ? "es" : ""}, PostgreSQL`;
  console.log(`\n## ${setup}`);
  const { fixture, servers, urls } = await startSetup(count);
  // A token exchanged on one process is evaluated on every one: they share the database and Redis.
  const exchanged = await send(exchangeTarget(urls[0] as string, fixture));
  if (exchanged.status !== 200) throw new Error(`token exchange failed: ${JSON.stringify(exchanged.body)}`);
  const token = String(exchanged.body.access_token);
  const evaluations = urls.map((url) => evaluationTarget(url, fixture, token));
  for (const evaluation of evaluations) {
    const probe = await send(evaluation);
    if (probe.status !== 200 || probe.body.decision !== true)
      throw new Error(`evaluation was not allowed: ${probe.status} ${JSON.stringify(probe.body)}`);
    if (probe.body.context.policy_version !== 2) throw new Error("the 50-policy set is not in force");
  }
  const rows =
    process.env.BENCH_ONLY === "evaluation"
      ? [await scenario(setup, "evaluation", servers, evaluations)]
      : [
          await scenario(
            setup,
            "exchange (baseline)",
            servers,
            urls.map((url) => exchangeTarget(url, fixture)),
          ),
          await scenario(setup, "evaluation", servers, evaluations),
        ];
  const after = await send(evaluations[0] as Target);
  if (after.body.decision !== true)
    throw new Error(`an evaluation was refused after the run: ${JSON.stringify(after.body)}`);
  for (const server of servers) await server.stop();
  running = running.filter((server) => !servers.includes(server));
  return rows;
}

async function main(): Promise<void> {
  cleanUpOnSignals();
  console.log(
    `Policy decision benchmark — ${new Date().toISOString()} — ${os.cpus().length} × ${os.cpus()[0]?.model?.trim()}, ` +
      `Node ${process.version}, PostgreSQL + Redis on loopback`,
  );
  if (process.env.BENCH_AUDIT_OFF === "1")
    console.log("  BENCH_AUDIT_OFF=1: decisions and exchanges write NO audit events (measurement only)");
  const rows: Row[] = [];
  for (const count of [1, 2]) rows.push(...(await runSetup(count)));

  console.log(
    "\n| setup | scenario | peak /s | p50 ms | p99 ms | @70%: /s | p50 ms | p99 ms | server CPU (cores) |",
  );
  console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const row of rows) {
    const { peak, paced } = row;
    console.log(
      `| ${row.setup} | ${row.scenario} | ${peak.rps.toFixed(0)} | ${peak.p50.toFixed(2)} | ${peak.p99.toFixed(2)} | ` +
        `${paced.rps.toFixed(0)} | ${paced.p50.toFixed(2)} | ${paced.p99.toFixed(2)} | ${peak.serverCores.toFixed(2)} |`,
    );
  }
  const failures: string[] = [];
  for (const setup of new Set(rows.map((row) => row.setup))) {
    const decisions = rows.find((row) => row.setup === setup && row.scenario === "evaluation") as Row;
    const exchange = rows.find((row) => row.setup === setup && row.scenario !== "evaluation");
    console.log(
      `\n  ${setup}: evaluations vs exchange: ${exchange ? (decisions.peak.rps / exchange.peak.rps).toFixed(2) : "-"}×; ` +
        `goal ≥ ${GOALS.decisionsPerSecond}/s: ${decisions.peak.rps >= GOALS.decisionsPerSecond ? "met" : "NOT met"}; ` +
        `p99 at 70% ≤ ${GOALS.p99AtShareMs} ms: ${decisions.paced.p99 <= GOALS.p99AtShareMs ? "met" : "NOT met"}`,
    );
  }
  for (const row of rows) {
    if ([row.peak, row.paced].some((r) => r.non2xx || r.errors))
      failures.push(`${row.setup}, ${row.scenario}: failed requests`);
  }
  if (failures.length) {
    console.error(failures.join("\n"));
    process.exitCode = 1;
  }
}

let running: ServerProcess[] = [];

main()
  .catch((error: unknown) => {
    console.error(
      "policy benchmark failed:",
      error instanceof Error ? (process.env.BENCH_DEBUG ? error.stack : error.message) : error,
    );
    for (const server of running)
      console.error(
        `server output (last lines):\n${server
          .stderr()
          .split("\n")
          .slice(process.env.BENCH_DEBUG ? -400 : -30)
          .join("\n")}`,
      );
    process.exitCode = 1;
  })
  .finally(async () => {
    await cleanUp();
  });
