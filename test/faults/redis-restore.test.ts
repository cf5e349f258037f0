// Redis restarted or restored in the middle of a workload: afterwards no revoked or ended token is active, at
// introspection or exchange, before any sweep (the sweep runs hourly here), and the server recovers without a
// restart. Four faults, each while exchanges and introspections run without pause: an RDB snapshot saved, tokens
// revoked (RFC 7009 on a sub-agent's token, a task completed, an agent narrowed), then Redis restarted on the
// snapshot; the same snapshot loaded in place (connections kept: processes cannot notice, they must already
// know); a restart with persistence; a restart without it. On PostgreSQL a second server instance shares the
// database and Redis, and every check is made on both. Redis here is a PRIVATE redis-server on a free port,
// started and stopped by PID; nothing else uses it.
import { type ChildProcess, spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDeputy, type Deputy } from "../../src/app.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";
import { issueSubjectToken } from "../../src/oauth/issue-subject-token.ts";
import { createRedisAdapterFactory } from "../../src/redis/redis-adapter.ts";
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

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** A private redis-server that can be stopped and started again on the same port and directory. */
class PrivateRedis {
  readonly dir = mkdtempSync(path.join(tmpdir(), "deputy-redis-restore-"));
  port = 0;
  #process: ChildProcess | undefined;
  #client: Redis | undefined;

  get client(): Redis {
    if (!this.#client) throw new Error("redis-server is not running");
    return this.#client;
  }

  get dump(): string {
    return path.join(this.dir, "dump.rdb");
  }

  async start(): Promise<void> {
    this.port ||= await freePort();
    this.#process = spawn(
      "redis-server",
      [
        ...["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir],
        ...["--save", "", "--appendonly", "no", "--enable-debug-command", "local"],
      ],
      { stdio: "ignore" },
    );
    const client = new Redis({
      port: this.port,
      host: "127.0.0.1",
      lazyConnect: true,
      maxRetriesPerRequest: 1,
    });
    client.on("error", () => {});
    await until("the private redis-server", async () => {
      if (client.status !== "ready") await client.connect();
      return (await client.ping()) === "PONG" ? true : undefined;
    });
    this.#client = client;
  }

  /** SHUTDOWN, saving the dataset to dump.rdb first or not, and waits for the process to exit. */
  async stop(save: boolean): Promise<void> {
    const child = this.#process;
    if (!child) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    await this.client.call("SHUTDOWN", save ? "SAVE" : "NOSAVE").catch(() => {});
    await Promise.race([exited, sleep(10_000)]);
    if (child.exitCode === null && child.signalCode === null && child.pid) process.kill(child.pid, "SIGKILL");
    this.#client?.disconnect();
    this.#client = undefined;
    this.#process = undefined;
  }

  kill(): void {
    this.#client?.disconnect();
    if (this.#process?.pid && this.#process.exitCode === null) process.kill(this.#process.pid, "SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A server the checks talk to over HTTP. */
interface Target {
  name: string;
  url: string;
}

interface Figures {
  requests: number;
  /** 5xx answers and failed connections, by phase. */
  errors: { before: number; during: number; after: number };
  tokensChecked: number;
  wronglyActive: string[];
}

describe.each(BACKENDS)("Redis restarted or restored mid-workload, on %s", (backend) => {
  const redis = new PrivateRedis();
  let server: TestServer;
  /** On PostgreSQL: a second server instance on the same database and Redis. */
  let second: { deputy: Deputy; http: Server; url: string } | undefined;
  let targets: Target[];
  let person: { id: string; email: string };
  let mail: Resource;
  const totals: Figures = {
    requests: 0,
    errors: { before: 0, during: 0, after: 0 },
    tokensChecked: 0,
    wronglyActive: [],
  };

  beforeAll(async () => {
    await redis.start();
    server = await startServer(backend, {
      REDIS_URL: `redis://127.0.0.1:${redis.port}`,
      // No sweep during the test (the first runs at start): nothing may depend on it.
      DEPUTY_SWEEP_SECONDS: "3600",
    });
    targets = [{ name: "server", url: server.url }];
    if (backend === "postgresql") {
      const port = await freePort();
      const deputy = await createDeputy(
        loadConfig({ ...server.env, PORT: String(port) }),
        createLogger("silent"),
      );
      const http = createServer(deputy.app.callback());
      await new Promise<void>((resolve) => http.listen(port, "127.0.0.1", resolve));
      second = { deputy, http, url: `http://127.0.0.1:${port}` };
      targets.push({ name: "second server", url: second.url });
    }
    person = await createPerson(server);
    mail = await createResource(server, "https://mail.example.com", ["mail.read"]);
  }, 120_000);

  afterAll(async () => {
    if (second) {
      await new Promise((resolve) => second?.http.close(resolve));
      second.http.closeAllConnections();
      await second.deputy.close();
    }
    await server?.close();
    redis.kill();
    console.log(
      `[redis-restore, ${backend}] requests ${totals.requests}; errors before/during/after the faults ` +
        `${totals.errors.before}/${totals.errors.during}/${totals.errors.after}; tokens checked ` +
        `${totals.tokensChecked}; wrongly active ${totals.wronglyActive.length}`,
    );
  });

  const as = (agent: Agent) => ({ authorization: basicAuth(agent.client_id, agent.client_secret) });
  const at = (target: Target) => ({ url: target.url }) as TestServer;
  /** Whether the token is stored in Redis, read directly (past Deputy's revocation list). */
  async function inRedis(token: string): Promise<boolean> {
    const RedisAdapter = createRedisAdapterFactory(redis.client, {
      prefix: oidcKeyPrefix(server.env.REDIS_PREFIX as string),
    });
    return Boolean(await new RedisAdapter("AccessToken").find(token));
  }

  /** planner → researcher → writer, each allowed mail.read. */
  async function agents() {
    const grants = [{ resource: mail.uri, scopes: ["mail.read"] }];
    const writer = await createAgent(server, person.email, grants, { max_depth: 1 });
    const researcher = await createAgent(server, person.email, grants, {
      may_delegate_to: [writer.client_id],
      max_depth: 2,
    });
    const planner = await createAgent(server, person.email, grants, {
      may_delegate_to: [researcher.client_id],
      max_depth: 3,
    });
    return { planner, researcher, writer };
  }
  const toPlanner = (planner: Agent) =>
    delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: planner.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
    });
  async function exchanged(agent: Agent, subjectToken: string): Promise<string> {
    const response = await exchange(server, agent, { subject_token: subjectToken });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return String(response.body.access_token);
  }

  /**
   * Exchanges and introspections without pause on every server, for one delegation of the planner's; when its
   * subject token is gone (Redis lost it) the agent asks again, as an agent would.
   */
  function startWorkload(planner: Agent, delegation: Awaited<ReturnType<typeof toPlanner>>) {
    let phase: keyof Figures["errors"] = "before";
    let running = true;
    let subjectToken = delegation.subjectToken;
    const minted: string[] = [];
    const note = (status: number) => {
      totals.requests++;
      if (status >= 500 || status === 0) totals.errors[phase]++;
    };
    const loop = async (target: Target) => {
      while (running) {
        const response = await exchange(at(target), planner, { subject_token: subjectToken }).catch(() => ({
          status: 0,
          body: {} as Record<string, string>,
        }));
        note(response.status);
        if (response.status === 200) {
          minted.push(response.body.access_token as string);
          const seen = await postForm(
            `${target.url}/token/introspection`,
            { token: response.body.access_token as string },
            as(mail),
          ).catch(() => ({ status: 0 }));
          note(seen.status);
        } else if (response.status === 400 && phase !== "during") {
          subjectToken = await issueSubjectToken(
            { provider: server.deputy.provider, audit: server.deputy.audit },
            { actor: person.email },
            { ...delegation.delegation, agentClientId: planner.client_id, personEmail: person.email },
          )
            .then((issued) => issued.access_token)
            .catch(() => subjectToken);
        } else {
          await sleep(50);
        }
      }
    };
    const loops = Promise.all(targets.map(loop));
    return {
      minted,
      set phase(value: keyof Figures["errors"]) {
        phase = value;
      },
      subjectTokens: () => [delegation.subjectToken, subjectToken],
      async stop() {
        running = false;
        await loops;
      },
    };
  }

  /** Each token must be inactive at introspection and refused at exchange, on every server. */
  async function expectInactive(tokens: { token: string; holder: Agent }[]) {
    for (const { token, holder } of tokens) {
      for (const target of targets) {
        totals.tokensChecked++;
        const seen = await introspect(at(target), mail, token);
        const again = await exchange(at(target), holder, { subject_token: token });
        if (seen.active !== false || again.status === 200)
          totals.wronglyActive.push(`${target.name}: ${token}`);
      }
    }
  }

  /** The server answers again: a fresh subject token exchanges and introspects on every server. */
  async function expectRecovered(planner: Agent) {
    const fresh = await until("a fresh delegation after the fault", () => toPlanner(planner));
    for (const target of targets) {
      const token = await until(`an exchange at the ${target.name}`, async () => {
        const response = await exchange(at(target), planner, { subject_token: fresh.subjectToken });
        return response.status === 200 ? String(response.body.access_token) : undefined;
      });
      expect((await introspect(at(target), mail, token)).active).toBe(true);
    }
    return fresh;
  }

  /** Ends the workload's task while it still runs; then every token it ever got must be inactive. */
  async function endWorkload(planner: Agent, workload: ReturnType<typeof startWorkload>, taskId: string) {
    await sleep(300);
    const done = await postForm(`${server.url}/tasks/${taskId}/complete`, {}, as(planner));
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    await workload.stop();
    expect(workload.minted.length).toBeGreaterThan(5);
    await expectInactive(
      [...workload.minted, ...workload.subjectTokens()].map((token) => ({ token, holder: planner })),
    );
  }

  /**
   * Tokens revoked three ways after `snapshot()`; `restore()` brings the snapshot back; then none of them may
   * work, while tokens never revoked still do.
   */
  async function revokedAcrossRestore(snapshot: () => Promise<void>, restore: () => Promise<void>) {
    const { planner, researcher, writer } = await agents();
    const steady = await toPlanner(planner);
    const pruned = await toPlanner(planner);
    const ending = await toPlanner(planner);
    const narrowed = await toPlanner(planner);
    const kept = await exchanged(planner, pruned.subjectToken);
    const hop = await exchanged(researcher, pruned.subjectToken);
    const hop2 = await exchanged(writer, hop);
    const ended = [
      await exchanged(planner, ending.subjectToken),
      await exchanged(researcher, ending.subjectToken),
    ];
    const near = await exchanged(researcher, narrowed.subjectToken);
    const far = await exchanged(writer, near);

    const workload = startWorkload(planner, steady);
    await sleep(300);
    await snapshot();
    // RFC 7009 on the researcher's token (its delegation stays active), a task completed, an agent narrowed.
    const secondTarget = targets[targets.length - 1] as Target;
    const revoked = await postForm(`${secondTarget.url}/token/revocation`, { token: hop }, as(researcher));
    expect(revoked.status).toBe(200);
    const done = await postForm(`${server.url}/tasks/${ending.delegation.taskId}/complete`, {}, as(planner));
    expect(done.status).toBe(200);
    expect((await server.admin("PATCH", `/agents/${researcher.client_id}`, { max_depth: 1 })).status).toBe(
      200,
    );
    for (const token of [hop, hop2, far, ...ended]) expect(await inRedis(token)).toBe(false);

    workload.phase = "during";
    await restore();
    // The snapshot brought them back.
    for (const token of [hop, hop2, far, ...ended]) expect(await inRedis(token)).toBe(true);
    await expectRecovered(planner);
    workload.phase = "after";
    await expectInactive([
      { token: hop, holder: researcher },
      { token: hop2, holder: writer },
      { token: far, holder: writer },
      { token: ending.subjectToken, holder: planner },
      { token: ended[0] as string, holder: planner },
      { token: ended[1] as string, holder: researcher },
    ]);
    for (const target of targets) {
      expect((await introspect(at(target), mail, kept)).active).toBe(true);
      expect((await introspect(at(target), mail, near)).active).toBe(true);
    }
    await endWorkload(planner, workload, steady.delegation.taskId as string);
  }

  it("a snapshot restored by restarting Redis on it", async () => {
    await revokedAcrossRestore(
      async () => {
        await redis.client.call("SAVE");
        copyFileSync(redis.dump, `${redis.dump}.snapshot`);
      },
      async () => {
        await redis.stop(false);
        copyFileSync(`${redis.dump}.snapshot`, redis.dump);
        await redis.start();
      },
    );
    expect(totals.wronglyActive).toEqual([]);
  });

  it("a snapshot loaded in place, connections kept (DEBUG RELOAD)", async () => {
    await revokedAcrossRestore(
      async () => void (await redis.client.call("SAVE")),
      async () => void (await redis.client.call("DEBUG", "RELOAD", "NOSAVE")),
    );
    expect(totals.wronglyActive).toEqual([]);
  });

  it("a restart with persistence keeps what is live and nothing revoked", async () => {
    const { planner, researcher, writer } = await agents();
    const steady = await toPlanner(planner);
    const pruned = await toPlanner(planner);
    const kept = await exchanged(planner, pruned.subjectToken);
    const hop = await exchanged(researcher, pruned.subjectToken);
    const hop2 = await exchanged(writer, hop);
    const workload = startWorkload(planner, steady);
    await sleep(300);
    expect((await postForm(`${server.url}/token/revocation`, { token: hop }, as(researcher))).status).toBe(
      200,
    );

    workload.phase = "during";
    await redis.stop(true);
    await redis.start();
    expect(await inRedis(kept)).toBe(true);
    await expectRecovered(planner);
    workload.phase = "after";
    await expectInactive([
      { token: hop, holder: researcher },
      { token: hop2, holder: writer },
    ]);
    for (const target of targets) expect((await introspect(at(target), mail, kept)).active).toBe(true);
    await endWorkload(planner, workload, steady.delegation.taskId as string);
    expect(totals.wronglyActive).toEqual([]);
  });

  it("a restart without persistence: everything in Redis is gone, the server carries on", async () => {
    const { planner, researcher } = await agents();
    const steady = await toPlanner(planner);
    const ending = await toPlanner(planner);
    const ended = await exchanged(researcher, ending.subjectToken);
    const workload = startWorkload(planner, steady);
    await sleep(300);
    expect(
      (await postForm(`${server.url}/tasks/${ending.delegation.taskId}/complete`, {}, as(planner))).status,
    ).toBe(200);

    workload.phase = "during";
    await redis.stop(false);
    rmSync(redis.dump, { force: true });
    await redis.start();
    expect(await redis.client.dbsize()).toBe(0);
    const fresh = await expectRecovered(planner);
    workload.phase = "after";
    await expectInactive([
      { token: ending.subjectToken, holder: planner },
      { token: ended, holder: researcher },
    ]);
    // Revocation works again, on every server: RFC 7009 through one, seen by all.
    const hop = await exchanged(researcher, fresh.subjectToken);
    const lastTarget = targets[targets.length - 1] as Target;
    expect(
      (await postForm(`${lastTarget.url}/token/revocation`, { token: hop }, as(researcher))).status,
    ).toBe(200);
    await expectInactive([{ token: hop, holder: researcher }]);
    await endWorkload(planner, workload, steady.delegation.taskId as string);
    expect(totals.wronglyActive).toEqual([]);
    expect(totals.errors.after).toBe(0);
  });
});
