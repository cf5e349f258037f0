// Several processes: two real servers (`node --import tsx src/main.ts`, DEPUTY_WORKERS=off) and one `deputy worker`
// process, sharing a PostgreSQL database created here and the shared Redis under a prefix of their own. A
// revocation made through one server is seen by the other at once; delayed task ends run in the worker process.
// Every process started here is stopped (by PID) in afterAll.
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDeputy, type Deputy } from "../../src/app.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { issueSubjectToken } from "../../src/oauth/issue-subject-token.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import { ACCESS_TOKEN, TOKEN_EXCHANGE } from "../helpers/scenario.ts";
import { ADMIN_SECRET, createPostgresDatabase, freePort } from "../helpers/server.ts";
import { until } from "../helpers/until.ts";

const REPO = path.resolve(import.meta.dirname, "../..");
const START_TIMEOUT_MS = 60_000;

interface Proc {
  child: ChildProcess;
  output: string;
  exited: Promise<number | null>;
}

const started: Proc[] = [];

function run(args: string[], env: Record<string, string>): Proc {
  const child = spawn(process.execPath, args, {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const proc: Proc = {
    child,
    output: "",
    exited: new Promise((resolve) => child.once("exit", (code) => resolve(code))),
  };
  const keep = (chunk: Buffer) => {
    proc.output = (proc.output + chunk.toString()).slice(-50_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  started.push(proc);
  return proc;
}

async function healthy(proc: Proc, url: string): Promise<void> {
  await until(
    "a healthy server",
    async () => {
      if (proc.child.exitCode !== null) throw new Error(`server exited:\n${proc.output}`);
      try {
        return (await fetch(`${url}/healthz`)).ok ? true : undefined;
      } catch {
        return undefined;
      }
    },
    START_TIMEOUT_MS,
  );
}

describe("two server processes and a worker process sharing PostgreSQL and Redis", () => {
  let dropDatabase: () => Promise<void>;
  let dataDir: string;
  let seeder: Deputy;
  const urls: string[] = [];
  let env: Record<string, string>;
  let person: { id: string; email: string };
  let mail: { client_id: string; client_secret: string };
  let planner: { client_id: string; client_secret: string };
  let researcher: { client_id: string; client_secret: string };

  beforeAll(async () => {
    const database = await createPostgresDatabase();
    dropDatabase = database.drop;
    dataDir = mkdtempSync(path.join(tmpdir(), "deputy-procs-"));
    const ports = [await freePort(), await freePort()];
    env = {
      NODE_ENV: "test",
      HOST: "127.0.0.1",
      DATABASE_URL: database.url,
      REDIS_PREFIX: `deputy-test:${randomBytes(6).toString("hex")}:`,
      ISSUER: `http://127.0.0.1:${ports[0]}`,
      DEPUTY_BOOTSTRAP_ADMIN_SECRET: ADMIN_SECRET,
      DEPUTY_DATA_DIR: dataDir,
      DEPUTY_WORKERS: "off",
      LOG_LEVEL: "info",
    };
    // Seeding in this process, through Deputy's own services (it also schedules task-end jobs, as a server does).
    seeder = await createDeputy(
      loadConfig({ ...env, PORT: "0", LOG_LEVEL: "silent" }),
      createLogger("silent"),
    );
    const context = { actor: "test" };
    person = await seeder.people.create(context, {
      email: "ada@example.com",
      name: "Ada",
      password: "correct horse battery staple",
    });
    mail = await seeder.resources.create(context, {
      uri: "https://mail.example.com",
      name: "Mail",
      scopes: [{ name: "mail.read", description: "Read mail", risk: "low" }],
    });
    const agent = (name: string, extra: Record<string, unknown> = {}) =>
      seeder.agents.create(context, {
        name,
        owner: person.email,
        purpose: "testing",
        grants: [{ resource: "https://mail.example.com", scopes: ["mail.read"] }],
        auth: { method: "client_secret" },
        ...extra,
      }) as Promise<{ client_id: string; client_secret: string }>;
    researcher = await agent("Researcher");
    planner = await agent("Planner", { may_delegate_to: [researcher.client_id], max_depth: 2 });

    const servers = ports.map((port) =>
      run(["--import", "tsx", "src/main.ts"], { ...env, PORT: String(port) }),
    );
    urls.push(...ports.map((port) => `http://127.0.0.1:${port}`));
    await Promise.all(servers.map((proc, i) => healthy(proc, urls[i] as string)));
    const worker = run(["bin/deputy.js", "worker"], env);
    await until("the worker process", async () => {
      if (worker.child.exitCode !== null) throw new Error(`worker exited:\n${worker.output}`);
      return worker.output.includes("deputy worker is running") ? true : undefined;
    });
  });

  afterAll(async () => {
    for (const proc of started) {
      if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill("SIGTERM");
    }
    await Promise.race([Promise.all(started.map((proc) => proc.exited)), sleep(15_000)]);
    for (const proc of started)
      if (proc.child.pid && proc.child.exitCode === null) proc.child.kill("SIGKILL");
    await seeder?.close();
    await dropDatabase?.();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const a = () => urls[0] as string;
  const b = () => urls[1] as string;
  const auth = (client: { client_id: string; client_secret: string }) => ({
    authorization: basicAuth(client.client_id, client.client_secret),
  });
  const exchangeAt = (url: string, agent: typeof planner, subjectToken: string) =>
    postForm(
      `${url}/token`,
      { grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN },
      auth(agent),
    );
  const introspectAt = async (url: string, token: string) =>
    (await postForm(`${url}/token/introspection`, { token }, auth(mail))).body;
  async function adminAt(url: string, method: string, pathname: string, body?: unknown) {
    const token = await postForm(
      `${url}/token`,
      { grant_type: "client_credentials", scope: "deputy:admin" },
      { authorization: basicAuth("deputy-admin", ADMIN_SECRET) },
    );
    const response = await fetch(`${url}/admin/v1${pathname}`, {
      method,
      headers: { authorization: `Bearer ${token.body.access_token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as any };
  }
  async function delegation(agent: typeof planner, endsInSeconds = 3600) {
    const row = await seeder.delegations.create(
      { actor: person.email },
      {
        personId: person.id,
        agentClientId: agent.client_id,
        taskId: `task-${randomBytes(4).toString("hex")}`,
        taskDescription: "Sort the inbox",
        grants: [{ resource: "https://mail.example.com", scopes: ["mail.read"] }],
        endsAt: new Date(Date.now() + endsInSeconds * 1000),
      },
    );
    const subject = await issueSubjectToken(
      { provider: seeder.provider, audit: seeder.audit },
      { actor: person.email },
      { ...row, agentClientId: agent.client_id, personEmail: person.email },
    );
    return { row, subjectToken: subject.access_token };
  }

  it("a task completed through one server is refused by the other at once", async () => {
    const { row, subjectToken } = await delegation(planner);
    const t1 = await exchangeAt(a(), planner, subjectToken);
    expect(t1.status, JSON.stringify(t1.body)).toBe(200);
    const t2 = await exchangeAt(b(), researcher, t1.body.access_token);
    expect(t2.status, JSON.stringify(t2.body)).toBe(200);
    // Server B has the delegation's state cached now.
    expect((await introspectAt(b(), t1.body.access_token)).active).toBe(true);
    expect((await introspectAt(b(), t2.body.access_token)).active).toBe(true);

    const done = await postForm(`${a()}/tasks/${row.taskId}/complete`, {}, auth(planner));
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    expect(done.body.revoked).toEqual({ delegations: 1, tokens: 3 });
    for (const url of [b(), a()]) {
      expect(await introspectAt(url, t1.body.access_token)).toEqual({ active: false });
      expect(await introspectAt(url, t2.body.access_token)).toEqual({ active: false });
    }
    const again = await exchangeAt(b(), planner, subjectToken);
    expect(again.status).toBe(400);
    // Completing again through the other server is the same answer.
    const twice = await postForm(`${b()}/tasks/${row.taskId}/complete`, {}, auth(planner));
    expect(twice.body).toMatchObject({ status: "ended", revoked: { delegations: 0, tokens: 0 } });
  });

  it("an agent suspended through one server is refused by the other at once, and its chains are revoked", async () => {
    const own = await delegation(researcher);
    const chained = await delegation(planner);
    const hop = await exchangeAt(a(), planner, chained.subjectToken);
    const researcherOnA = await exchangeAt(a(), researcher, own.subjectToken);
    const chainOnA = await exchangeAt(a(), researcher, hop.body.access_token);
    for (const response of [hop, researcherOnA, chainOnA]) expect(response.status).toBe(200);

    const suspended = await adminAt(b(), "POST", `/agents/${researcher.client_id}/suspend`, {
      reason: "incident",
    });
    expect(suspended.status, JSON.stringify(suspended.body)).toBe(200);
    expect(suspended.body.revocation).toMatchObject({ trigger: "suspension", delegations: 2 });
    // Server A had the agent cached as an active client: the published invalidation reached it.
    const refused = await exchangeAt(a(), researcher, own.subjectToken);
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe("invalid_client");
    for (const token of [
      hop.body.access_token,
      researcherOnA.body.access_token,
      chainOnA.body.access_token,
    ]) {
      expect(await introspectAt(a(), token)).toEqual({ active: false });
    }
    expect((await adminAt(a(), "POST", `/agents/${researcher.client_id}/activate`, {})).status).toBe(200);
  });

  it("the `deputy worker` process ends tasks at their end time (the servers run no workers)", async () => {
    const { row, subjectToken } = await delegation(planner, 3);
    const token = await exchangeAt(b(), planner, subjectToken);
    expect(token.status).toBe(200);
    const ended = await until("the task-end job in the worker process", async () => {
      const found = await seeder.db.prisma.delegation.findUniqueOrThrow({ where: { id: row.id } });
      return found.status === "active" ? undefined : found;
    });
    expect(ended).toMatchObject({ status: "ended", endReason: "task_end: its end time passed" });
    expect(await introspectAt(a(), token.body.access_token)).toEqual({ active: false });
    expect(await seeder.provider.AccessToken.find(token.body.access_token)).toBeUndefined();
    const event = await seeder.db.prisma.auditEvent.findFirstOrThrow({
      where: { type: "revocation", delegationId: row.id },
    });
    expect(event).toMatchObject({ actor: "deputy:task-end", details: { trigger: "task_end", tokens: 2 } });
  });

  it("`deputy worker` refuses to start without DATABASE_URL, saying why", async () => {
    const { DATABASE_URL: _unused, ...withoutDatabase } = env;
    const proc = run(["bin/deputy.js", "worker"], withoutDatabase);
    const code = await Promise.race([proc.exited, sleep(30_000).then(() => "timeout")]);
    expect(code, proc.output).toBe(1);
    const lines = proc.output
      .trim()
      .split("\n")
      .filter((line) => !line.startsWith("oidc-provider WARNING"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^deputy: deputy worker needs DATABASE_URL/);
    expect(lines[0]).toContain("PGlite");
  });
});
