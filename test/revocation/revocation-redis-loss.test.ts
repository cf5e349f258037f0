// Truth lives in the database: losing Redis (FLUSHALL in the middle of a workload) or getting an older Redis back
// (a snapshot restored with DEBUG RELOAD) must never make a revoked or ended token usable again, and task-end jobs
// lost with Redis are honoured anyway. Runs against a PRIVATE redis-server started here on a free port (nothing
// kept on disk but the one snapshot this test asks for), with the sweep every second; it is stopped by its PID.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { issueSubjectToken } from "../../src/oauth/issue-subject-token.ts";
import { createRedisAdapterFactory } from "../../src/redis/redis-adapter.ts";
import { taskEndJobId } from "../../src/revocation/jobs.ts";
import { oidcKeyPrefix } from "../../src/revocation/token-store.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import {
  type Agent,
  createAgent,
  createPerson,
  createResource,
  delegate,
  exchange,
  introspect,
  type Resource,
} from "../helpers/scenario.ts";
import { BACKENDS, freePort, startServer, type TestServer } from "../helpers/server.ts";
import { until } from "../helpers/until.ts";

describe.each(BACKENDS)("losing Redis, on %s", (backend) => {
  let redisProcess: ChildProcess | undefined;
  let redisDir: string;
  let redis: Redis;
  let server: TestServer;
  let person: { id: string; email: string };
  let mail: Resource;
  let planner: Agent;
  let researcher: Agent;

  beforeAll(async () => {
    redisDir = mkdtempSync(path.join(tmpdir(), "deputy-redis-loss-"));
    const port = await freePort();
    redisProcess = spawn(
      "redis-server",
      [
        ...["--port", String(port), "--bind", "127.0.0.1", "--dir", redisDir],
        ...["--save", "", "--appendonly", "no", "--enable-debug-command", "local"],
      ],
      { stdio: "ignore" },
    );
    redis = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 1 });
    redis.on("error", () => {});
    await until("the private redis-server", async () => {
      try {
        if (redis.status !== "ready") await redis.connect();
        return (await redis.ping()) === "PONG" ? true : undefined;
      } catch {
        return undefined;
      }
    });
    server = await startServer(backend, {
      REDIS_URL: `redis://127.0.0.1:${port}`,
      DEPUTY_SWEEP_SECONDS: "1",
    });
    person = await createPerson(server);
    mail = await createResource(server, "https://mail.example.com", ["mail.read"]);
    const grants = [{ resource: mail.uri, scopes: ["mail.read"] }];
    researcher = await createAgent(server, person.email, grants);
    planner = await createAgent(server, person.email, grants, {
      may_delegate_to: [researcher.client_id],
      max_depth: 2,
    });
  });

  afterAll(async () => {
    await server?.close();
    redis?.disconnect();
    if (redisProcess?.pid && redisProcess.exitCode === null) process.kill(redisProcess.pid, "SIGKILL");
    rmSync(redisDir, { recursive: true, force: true });
  });

  const prisma = () => server.deputy.db.prisma;
  /** Whether Redis holds the token, read directly (oidc-provider's reads honour the revocation list). */
  const inRedis = async (token: string) => {
    const RedisAdapter = createRedisAdapterFactory(redis, {
      prefix: oidcKeyPrefix(server.env.REDIS_PREFIX ?? ""),
    });
    return Boolean(await new RedisAdapter("AccessToken").find(token));
  };
  const as = (agent: Agent) => ({ authorization: basicAuth(agent.client_id, agent.client_secret) });
  const delegation = (endsInSeconds = 3600) =>
    delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: planner.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
      endsInSeconds,
    });
  /** A new subject token for a delegation that is still active: what an agent gets by asking again. */
  const subjectTokenFor = async (row: Awaited<ReturnType<typeof delegation>>["delegation"]) =>
    (
      await issueSubjectToken(
        { provider: server.deputy.provider, audit: server.deputy.audit },
        { actor: person.email },
        { ...row, agentClientId: planner.client_id, personEmail: person.email },
      )
    ).access_token;
  async function twoHops(subjectToken: string) {
    const t1 = await exchange(server, planner, { subject_token: subjectToken });
    expect(t1.status, JSON.stringify(t1.body)).toBe(200);
    const t2 = await exchange(server, researcher, { subject_token: t1.body.access_token });
    expect(t2.status, JSON.stringify(t2.body)).toBe(200);
    return [String(t1.body.access_token), String(t2.body.access_token)] as const;
  }

  it("a flush in the middle of a workload: nothing revoked or ended comes back, lost task-end jobs are honoured", async () => {
    const steady = await delegation();
    const ending = await delegation(8);
    const overdue = await delegation();
    const completed = await delegation();
    const completedTokens = await twoHops(completed.subjectToken);
    const done = await postForm(
      `${server.url}/tasks/${completed.delegation.taskId}/complete`,
      {},
      as(planner),
    );
    expect(done.status).toBe(200);

    // The workload: exchanges and introspections without pause, before, during and after the flush.
    let steadyToken = steady.subjectToken;
    let running = true;
    const statuses: number[] = [];
    const workloadTokens: string[] = [];
    const workload = (async () => {
      while (running) {
        const exchanged = await exchange(server, planner, { subject_token: steadyToken });
        statuses.push(exchanged.status);
        if (exchanged.body.access_token) workloadTokens.push(exchanged.body.access_token);
        const seen = await postForm(
          `${server.url}/token/introspection`,
          { token: exchanged.body.access_token ?? "none" },
          { authorization: basicAuth(mail.client_id, mail.client_secret) },
        );
        statuses.push(seen.status);
      }
    })();
    await sleep(300);

    const jobs = server.deputy.jobs;
    expect(await jobs.queue.getJob(taskEndJobId(ending.delegation.id))).toBeTruthy();
    await redis.flushall();
    expect(await jobs.queue.getJob(taskEndJobId(ending.delegation.id))).toBeFalsy();

    // Agents ask again for what is still active; the completed task stays ended.
    steadyToken = await subjectTokenFor(steady.delegation);
    const endingTokens = await twoHops(await subjectTokenFor(ending.delegation));
    expect((await exchange(server, planner, { subject_token: completed.subjectToken })).status).toBe(400);
    for (const token of completedTokens)
      expect(await introspect(server, mail, token)).toEqual({ active: false });

    // A delegation whose end time has passed while its job was lost: the sweep ends it.
    await jobs.queue.remove(taskEndJobId(overdue.delegation.id));
    await prisma().delegation.update({
      where: { id: overdue.delegation.id },
      data: { endsAt: new Date(Date.now() - 1_000) },
    });
    const swept = await until("the sweep to end the overdue delegation", async () => {
      const row = await prisma().delegation.findUniqueOrThrow({ where: { id: overdue.delegation.id } });
      return row.status === "active" ? undefined : row;
    });
    expect(swept).toMatchObject({
      status: "ended",
      endReason: "sweep: its end time passed (ended by the sweep)",
    });

    // The delegation whose task-end job was flushed ends on time all the same (the sweep re-arms the job, or
    // ends it itself), with every token it had.
    const ended = await until("the flushed task end", async () => {
      const row = await prisma().delegation.findUniqueOrThrow({ where: { id: ending.delegation.id } });
      return row.status === "active" ? undefined : row;
    });
    expect(ended.status).toBe("ended");
    expect(ended.endedAt?.getTime() ?? 0).toBeLessThan(ending.delegation.endsAt.getTime() + 3_000);
    for (const token of endingTokens) {
      expect(await introspect(server, mail, token)).toEqual({ active: false });
      expect(await inRedis(token)).toBe(false);
    }

    // The steady task ends while the workload still runs: every token it ever got, before or after the
    // flush, is inactive from then on, and no new one is issued.
    const issuedBefore = workloadTokens.length;
    const steadyDone = await postForm(
      `${server.url}/tasks/${steady.delegation.taskId}/complete`,
      {},
      as(planner),
    );
    expect(steadyDone.status).toBe(200);
    const issuedAtCompletion = workloadTokens.length;
    await sleep(300);
    running = false;
    await workload;
    expect(issuedBefore).toBeGreaterThan(5);
    // At most the one exchange in flight when the task completed may have been answered after it.
    expect(workloadTokens.length - issuedAtCompletion).toBeLessThanOrEqual(1);
    const stillActive = [];
    for (const token of [...workloadTokens, steady.subjectToken, steadyToken]) {
      if ((await introspect(server, mail, token)).active !== false) stillActive.push(token);
    }
    expect(stillActive).toEqual([]);
    expect(statuses.filter((status) => status >= 500)).toEqual([]);
    expect(statuses.filter((status) => status === 200).length).toBeGreaterThan(10);
  });

  it("an older snapshot brings revoked tokens back into Redis; they never work again and the sweep removes them", async () => {
    const completed = await delegation();
    const completedTokens = await twoHops(completed.subjectToken);
    const pruned = await delegation();
    const prunedTokens = await twoHops(pruned.subjectToken);
    const control = await delegation();
    const controlTokens = await twoHops(control.subjectToken);

    await redis.call("SAVE");
    expect(
      (await postForm(`${server.url}/tasks/${completed.delegation.taskId}/complete`, {}, as(planner))).status,
    ).toBe(200);
    // RFC 7009 on the first hop: it and the token exchanged from it are revoked; the delegation stays active.
    expect(
      (await postForm(`${server.url}/token/revocation`, { token: prunedTokens[0] }, as(planner))).status,
    ).toBe(200);
    const revoked = [completed.subjectToken, ...completedTokens, ...prunedTokens];
    for (const token of revoked) expect(await inRedis(token)).toBe(false);

    // Redis comes back from the snapshot taken before the revocations.
    await redis.call("DEBUG", "RELOAD", "NOSAVE");
    expect(await inRedis(prunedTokens[1])).toBe(true);
    expect(await inRedis(completedTokens[1])).toBe(true);
    // Back in Redis, yet revoked: the delegation's state refuses the completed task's, the revocation list the
    // pruned subtree (whose delegation is still active).
    for (const token of [...completedTokens, ...prunedTokens]) {
      expect(await introspect(server, mail, token)).toEqual({ active: false });
    }

    await until("the sweep to destroy the resurrected tokens", async () => {
      const present = await Promise.all(revoked.map(inRedis));
      return present.some(Boolean) ? undefined : true;
    });
    for (const token of [...completedTokens, ...prunedTokens]) {
      expect(await introspect(server, mail, token)).toEqual({ active: false });
    }
    expect((await exchange(server, researcher, { subject_token: prunedTokens[0] })).status).toBe(400);
    for (const token of controlTokens) expect((await introspect(server, mail, token)).active).toBe(true);
    const sweeps = await prisma().auditEvent.findMany({
      where: { action: "revocation.sweep", delegationId: null },
    });
    const destroyed = sweeps.reduce(
      (sum, event) =>
        sum + Number((event.details as { redis_tokens_destroyed?: number }).redis_tokens_destroyed ?? 0),
      0,
    );
    expect(destroyed).toBeGreaterThanOrEqual(revoked.length);
  });

  it("after a restore, tokens of a revoked delegation are inactive at once, before any sweep (fail closed)", async () => {
    const completed = await delegation();
    const [t1] = await twoHops(completed.subjectToken);
    await redis.call("SAVE");
    expect(
      (await postForm(`${server.url}/tasks/${completed.delegation.taskId}/complete`, {}, as(planner))).status,
    ).toBe(200);
    await redis.call("DEBUG", "RELOAD", "NOSAVE");
    expect(await inRedis(t1)).toBe(true);
    // Introspection consults the delegation's state, so the resurrected token is refused without waiting.
    expect(await introspect(server, mail, t1)).toEqual({ active: false });
    expect((await exchange(server, researcher, { subject_token: t1 })).status).toBe(400);
  });
});
