// No token reaches a client before its issuance is durable. A real server process (`node --import tsx
// src/main.ts`, its own data dir and database) is killed with SIGKILL while a few hundred token exchanges are in
// flight; afterwards every token any client received must have its lineage row and its audit event, and the
// hash chain must verify. Then the server starts again on the same data and the chain carries on.
import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, describe, expect, it } from "vitest";
import { createDeputy } from "../../src/app.ts";
import { verifyAuditTrail } from "../../src/audit/audit-verify.ts";
import { loadConfig } from "../../src/config.ts";
import { openDatabase } from "../../src/db/connect.ts";
import { tokenRef } from "../../src/delegation/token-ref.ts";
import { createLogger } from "../../src/logger.ts";
import { issueSubjectToken } from "../../src/oauth/issue-subject-token.ts";
import { basicAuth } from "../helpers/oauth.ts";
import { ACCESS_TOKEN, TOKEN_EXCHANGE } from "../helpers/scenario.ts";
import { BACKENDS, prepareEnvironment } from "../helpers/server.ts";

const REPO = path.resolve(import.meta.dirname, "../..");
const CONCURRENCY = 300;
const RESOURCE = "https://ledger.example.com";

const started: ChildProcess[] = [];
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const child of started)
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  for (const cleanup of cleanups) await cleanup();
});

async function seed(env: Record<string, string>) {
  const deputy = await createDeputy(loadConfig(env), createLogger("silent"));
  try {
    const context = { actor: "test" };
    const person = await deputy.people.create(context, {
      email: "durable@example.com",
      name: "Durable",
      password: "correct horse battery staple",
    });
    await deputy.resources.create(context, {
      uri: RESOURCE,
      name: "Ledger",
      scopes: [{ name: "ledger.read", description: "Read the ledger", risk: "low" }],
    });
    const agent = await deputy.agents.create(context, {
      name: "Bookkeeper",
      owner: person.email,
      purpose: "durability test",
      grants: [{ resource: RESOURCE, scopes: ["ledger.read"] }],
      auth: { method: "client_secret" },
    });
    const delegation = await deputy.delegations.create(context, {
      personId: person.id,
      agentClientId: agent.client_id,
      taskId: "close-the-books",
      taskDescription: "Close the books",
      scopes: ["ledger.read"],
      resources: [RESOURCE],
      endsAt: new Date(Date.now() + 3600_000),
    });
    const subject = await issueSubjectToken({ provider: deputy.provider, audit: deputy.audit }, context, {
      ...delegation,
      agentClientId: agent.client_id,
      personEmail: person.email,
    });
    return { agent: agent.client_id, secret: agent.client_secret ?? "", subjectToken: subject.access_token };
  } finally {
    await deputy.close();
  }
}

function startServer(env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  started.push(child);
  let output = "";
  child.stdout?.on("data", (chunk) => {
    output = (output + chunk).slice(-10_000);
  });
  child.stderr?.on("data", (chunk) => {
    output = (output + chunk).slice(-10_000);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  return { child, exited, output: () => output };
}

async function waitHealthy(url: string, server: ReturnType<typeof startServer>) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (server.child.exitCode !== null) throw new Error(`server exited during start-up:\n${server.output()}`);
    try {
      if ((await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2_000) })).ok) return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`server not healthy in time:\n${server.output()}`);
    await sleep(150);
  }
}

describe.each(BACKENDS)("kill -9 under load on %s", (backend) => {
  it("leaves no token a client received without its lineage and audit event", async () => {
    const prepared = await prepareEnvironment(backend, { LOG_LEVEL: "warn" });
    cleanups.push(prepared.cleanup);
    const env: Record<string, string> = { ...prepared.env, ISSUER: prepared.url };
    const fixture = await seed(env);
    const server = startServer(env);
    await waitHealthy(prepared.url, server);

    const body = new URLSearchParams({
      grant_type: TOKEN_EXCHANGE,
      subject_token: fixture.subjectToken,
      subject_token_type: ACCESS_TOKEN,
      resource: RESOURCE,
    }).toString();
    const headers = {
      authorization: basicAuth(fixture.agent, fixture.secret),
      "content-type": "application/x-www-form-urlencoded",
    };
    const received: string[] = [];
    let failedInFlight = 0;
    let refused = 0;
    let killed = false;
    const worker = async () => {
      while (!killed) {
        try {
          const response = await fetch(`${prepared.url}/token`, { method: "POST", headers, body });
          const result = (await response.json()) as { access_token?: string };
          if (response.status === 200 && result.access_token) received.push(result.access_token);
          else refused++;
        } catch {
          // The process died with this request in flight.
          failedInFlight++;
          return;
        }
      }
    };
    const loadStarted = Date.now();
    const workers = Array.from({ length: CONCURRENCY }, worker);
    while (received.length < 300 && Date.now() - loadStarted < 30_000) await sleep(20);
    killed = true;
    server.child.kill("SIGKILL");
    await server.exited;
    await Promise.all(workers);

    expect(received.length).toBeGreaterThanOrEqual(300);
    expect(refused).toBe(0);
    // Exchanges were in flight when the process died.
    expect(failedInFlight).toBeGreaterThan(0);

    // Opaque tokens: the value is the jti; the lineage and the trail hold its hash.
    const refs = received.map(tokenRef);
    const db = await openDatabase({ databaseUrl: env.DATABASE_URL, dataDir: prepared.dataDir });
    try {
      const lineage = await db.sql.query<{ jti: string }>(
        "SELECT jti FROM issued_tokens WHERE jti = ANY($1::text[])",
        [refs],
      );
      const audited = await db.sql.query<{ jti: string }>(
        `SELECT details->>'token_ref' AS jti FROM audit_events
          WHERE type = 'exchange' AND action = 'token.exchange' AND decision = 'allow' AND details->>'token_ref' = ANY($1::text[])`,
        [refs],
      );
      const missing = (rows: { jti: string }[]) => {
        const present = new Set(rows.map((row) => row.jti));
        return refs.filter((ref) => !present.has(ref));
      };
      expect(missing(lineage)).toEqual([]);
      expect(missing(audited)).toEqual([]);
      const report = await verifyAuditTrail(db.prisma, {
        archiveDir: path.join(prepared.dataDir, "audit-archive"),
      });
      expect(report.ok, JSON.stringify(report.first_bad)).toBe(true);
    } finally {
      await db.close();
    }

    // The same data serves again, and the chain carries on from where the killed process left it.
    const again = startServer(env);
    await waitHealthy(prepared.url, again);
    const response = await fetch(`${prepared.url}/token`, { method: "POST", headers, body });
    expect(response.status).toBe(200);
    again.child.kill("SIGTERM");
    await again.exited;
    const reopened = await openDatabase({ databaseUrl: env.DATABASE_URL, dataDir: prepared.dataDir });
    try {
      const report = await verifyAuditTrail(reopened.prisma, {
        archiveDir: path.join(prepared.dataDir, "audit-archive"),
      });
      expect(report.ok, JSON.stringify(report.first_bad)).toBe(true);
      expect(report.checked.events).toBeGreaterThan(received.length);
    } finally {
      await reopened.close();
    }
  });
});
