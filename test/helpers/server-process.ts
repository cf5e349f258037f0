// Deputy as a process of its own (`node --import tsx src/main.ts`), for the tests that kill it, cut its
// connections or start a second one beside it: spawning and stopping it, a token-exchange fixture seeded through
// Deputy's services, a workload of exchanges and introspections that counts every answer by kind, and the check
// that every token a client received has its lineage row and audit event and that the chain verifies.
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { createDeputy } from "../../src/app.ts";
import { type VerifyReport, verifyAuditTrail } from "../../src/audit/audit-verify.ts";
import { loadConfig } from "../../src/config.ts";
import { openDatabase } from "../../src/db/connect.ts";
import { tokenRef } from "../../src/delegation/token-ref.ts";
import { createLogger } from "../../src/logger.ts";
import { issueSubjectToken } from "../../src/oauth/issue-subject-token.ts";
import { basicAuth } from "./oauth.ts";
import { ACCESS_TOKEN, TOKEN_EXCHANGE } from "./scenario.ts";

const REPO = path.resolve(import.meta.dirname, "../..");
const START_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 20_000;
export const RESOURCE = "https://ledger.example.com";

export interface ServerProcess {
  child: ChildProcess;
  url: string;
  /** The last 50,000 characters the process wrote (stdout and stderr). */
  output(): string;
  stdout(): string;
  stderr(): string;
  /** Resolves once the process has exited: its code, or the signal that ended it. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
}

const started: ServerProcess[] = [];

/** SIGKILLs every process spawned here that still runs (for afterAll). */
export async function killStarted(): Promise<void> {
  for (const proc of started) if (proc.running()) proc.child.kill("SIGKILL");
  await Promise.all(started.map((proc) => proc.exited));
}

/** Spawns a server with `env` (plus PATH and HOME); it serves at http://127.0.0.1:$PORT. */
export function spawnServer(env: Record<string, string>): ServerProcess {
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const kept = { output: "", stdout: "", stderr: "" };
  const keep = (stream: "stdout" | "stderr") => (chunk: Buffer) => {
    kept.output = (kept.output + chunk).slice(-50_000);
    kept[stream] = (kept[stream] + chunk).slice(-50_000);
  };
  child.stdout?.on("data", keep("stdout"));
  child.stderr?.on("data", keep("stderr"));
  const proc: ServerProcess = {
    child,
    url: `http://127.0.0.1:${env.PORT}`,
    output: () => kept.output,
    stdout: () => kept.stdout,
    stderr: () => kept.stderr,
    exited: new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal }))),
    running: () => child.exitCode === null && child.signalCode === null,
  };
  started.push(proc);
  return proc;
}

/** Spawns a server and waits until /healthz answers 200. */
export async function startHealthy(env: Record<string, string>): Promise<ServerProcess> {
  const proc = spawnServer(env);
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (!proc.running()) throw new Error(`server exited during start-up:\n${proc.output()}`);
    try {
      const response = await fetch(`${proc.url}/healthz`, { signal: AbortSignal.timeout(2_000) });
      if (response.status === 200) return proc;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`server not healthy in time:\n${proc.output()}`);
    await sleep(150);
  }
}

/** Spawns a server expected to stop by itself (a refused start) and waits, bounded, for its exit. */
export async function runToExit(env: Record<string, string>) {
  const proc = spawnServer(env);
  const { code } = await within(proc.exited, START_TIMEOUT_MS, `exit of a refused start:\n${proc.output()}`);
  return { code, stdout: proc.stdout(), stderr: proc.stderr() };
}

/** Sends `signal` and waits (bounded) for the exit. */
export async function stopServer(proc: ServerProcess, signal: NodeJS.Signals = "SIGTERM") {
  proc.child.kill(signal);
  return within(proc.exited, STOP_TIMEOUT_MS, `exit after ${signal}:\n${proc.output()}`);
}

/** Rejects after `ms` with `label`. */
export function within<T>(promise: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

export interface ExchangeFixture {
  agent: string;
  secret: string;
  subjectToken: string;
  /** The resource server's credentials, to introspect the exchanged tokens. */
  resource: { clientId: string; secret: string };
}

/** A person, a resource server, an agent and its delegation with a subject token, through Deputy's services. */
export async function seedExchangeFixture(env: Record<string, string>): Promise<ExchangeFixture> {
  const deputy = await createDeputy(loadConfig(env), createLogger("silent"));
  try {
    const context = { actor: "test" };
    const person = await deputy.people.create(context, {
      email: "faults@example.com",
      name: "Faults",
      password: "correct horse battery staple",
    });
    const resource = await deputy.resources.create(context, {
      uri: RESOURCE,
      name: "Ledger",
      scopes: [{ name: "ledger.read", description: "Read the ledger", risk: "low" }],
    });
    const agent = await deputy.agents.create(context, {
      name: "Bookkeeper",
      owner: person.email,
      purpose: "fault tests",
      grants: [{ resource: RESOURCE, scopes: ["ledger.read"] }],
      auth: { method: "client_secret" },
    });
    const delegation = await deputy.delegations.create(context, {
      personId: person.id,
      agentClientId: agent.client_id,
      taskId: "close-the-books",
      taskDescription: "Close the books",
      grants: [{ resource: RESOURCE, scopes: ["ledger.read"] }],
      endsAt: new Date(Date.now() + 3600_000),
    });
    const subject = await issueSubjectToken({ provider: deputy.provider, audit: deputy.audit }, context, {
      ...delegation,
      agentClientId: agent.client_id,
      personEmail: person.email,
    });
    return {
      agent: agent.client_id,
      secret: agent.client_secret ?? "",
      subjectToken: subject.access_token,
      resource: { clientId: resource.client_id, secret: resource.client_secret },
    };
  } finally {
    await deputy.close();
  }
}

/** One token exchange by the fixture's agent; the token when it got one. */
export async function exchangeOnce(url: string, fixture: ExchangeFixture): Promise<Answer> {
  return answer(
    await fetch(`${url}/token`, {
      method: "POST",
      headers: {
        authorization: basicAuth(fixture.agent, fixture.secret),
        "content-type": "application/x-www-form-urlencoded",
      },
      body: new URLSearchParams({
        grant_type: TOKEN_EXCHANGE,
        subject_token: fixture.subjectToken,
        subject_token_type: ACCESS_TOKEN,
        resource: RESOURCE,
      }).toString(),
    }),
  );
}

async function introspectOnce(url: string, fixture: ExchangeFixture, token: string): Promise<Answer> {
  return answer(
    await fetch(`${url}/token/introspection`, {
      method: "POST",
      headers: {
        authorization: basicAuth(fixture.resource.clientId, fixture.resource.secret),
        "content-type": "application/x-www-form-urlencoded",
      },
      body: new URLSearchParams({ token }).toString(),
    }),
  );
}

export interface Answer {
  status: number;
  /** `200`, or the status and the error code (`503 temporarily_unavailable`), or `… not JSON`. */
  kind: string;
  body: Record<string, unknown> | undefined;
}

async function answer(response: Response): Promise<Answer> {
  const text = await response.text();
  let body: Record<string, unknown> | undefined;
  try {
    body = JSON.parse(text);
  } catch {}
  const kind =
    response.status === 200
      ? "200"
      : body && typeof body.error === "string" && typeof body.error_description === "string"
        ? `${response.status} ${body.error}`
        : `${response.status} not JSON: ${text.slice(0, 200)}`;
  return { status: response.status, kind, body };
}

export interface Workload {
  /** Every access token a client received. */
  received: string[];
  /** Requests sent, by endpoint. */
  sent: { exchanges: number; introspections: number };
  /** Answers other than 200, by kind; `connection failed` when no answer came. */
  errors: Record<string, number>;
  /** Introspections of a received token that answered 200 but not active. */
  inactive: number;
  /** Ends the workload and resolves once every worker has stopped. */
  stop(): Promise<void>;
}

/**
 * `concurrency` clients exchanging tokens in a loop until stopped, each introspecting the token it got when
 * `introspect` is set. A client whose request gets no answer (the process died) stops when `stopOnFailure`.
 */
export function runExchangeLoad(
  url: string,
  fixture: ExchangeFixture,
  options: { concurrency: number; introspect?: boolean; stopOnFailure?: boolean },
): Workload {
  let stopped = false;
  const load: Workload = {
    received: [],
    sent: { exchanges: 0, introspections: 0 },
    errors: {},
    inactive: 0,
    async stop() {
      stopped = true;
      await Promise.all(workers);
    },
  };
  const count = (kind: string) => {
    load.errors[kind] = (load.errors[kind] ?? 0) + 1;
  };
  const client = async () => {
    while (!stopped) {
      try {
        load.sent.exchanges++;
        const exchanged = await exchangeOnce(url, fixture);
        const token = exchanged.body?.access_token;
        if (exchanged.status !== 200 || typeof token !== "string") {
          count(exchanged.kind);
          continue;
        }
        load.received.push(token);
        if (!options.introspect) continue;
        load.sent.introspections++;
        const introspected = await introspectOnce(url, fixture, token);
        if (introspected.status !== 200) count(introspected.kind);
        else if (introspected.body?.active !== true) load.inactive++;
      } catch {
        count("connection failed");
        if (options.stopOnFailure) return;
        await sleep(50);
      }
    }
  };
  const workers = Array.from({ length: options.concurrency }, client);
  return load;
}

export interface TrailCheck {
  checked: number;
  missingLineage: string[];
  missingAudit: string[];
  report: VerifyReport;
}

/**
 * Opens the server's database (after the server has stopped, for PGlite) and looks up every received token:
 * the lineage and the trail hold the SHA-256 reference of an opaque token, whose value is its id.
 */
export async function checkTrail(
  env: Record<string, string>,
  dataDir: string,
  tokens: string[],
): Promise<TrailCheck> {
  const refs = tokens.map(tokenRef);
  const db = await openDatabase({ databaseUrl: env.DATABASE_URL, dataDir });
  try {
    const lineage = await db.sql.query<{ jti: string }>(
      "SELECT jti FROM issued_tokens WHERE jti = ANY($1::text[])",
      [refs],
    );
    const audited = await db.sql.query<{ jti: string }>(
      `SELECT details->>'token_ref' AS jti FROM audit_events
        WHERE type = 'exchange' AND action = 'token.exchange' AND decision = 'allow'
          AND details->>'token_ref' = ANY($1::text[])`,
      [refs],
    );
    const missing = (rows: { jti: string }[]) => {
      const present = new Set(rows.map((row) => row.jti));
      return refs.filter((ref) => !present.has(ref));
    };
    const report = await verifyAuditTrail(db.prisma, { archiveDir: path.join(dataDir, "audit-archive") });
    return {
      checked: refs.length,
      missingLineage: missing(lineage),
      missingAudit: missing(audited),
      report,
    };
  } finally {
    await db.close();
  }
}
