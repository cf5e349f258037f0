// Revocation over real HTTP, Redis and both databases: task completion by the agent (HTTP Basic and
// private_key_jwt), the delayed task-end job, RFC 7009 subtree cascades, suspension (and the emergency stop),
// offboarding, admin revocation, the recheck of exchanges in flight, and failed jobs made visible.
import { randomUUID } from "node:crypto";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { issueSubjectToken } from "../../src/oauth/issue-subject-token.ts";
import { runDeputy } from "../helpers/cli.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import {
  type Agent,
  createAgent,
  createChain,
  createPerson,
  createResource,
  delegate,
  exchange,
  introspect,
  type Resource,
} from "../helpers/scenario.ts";
import { BACKENDS, startServer, type TestServer } from "../helpers/server.ts";
import { until } from "../helpers/until.ts";

/** Runs the `deputy` CLI against `server`; resolves with its exit code and output. */
function cli(server: TestServer, args: string[]) {
  return runDeputy(server.url, args);
}

describe.each(BACKENDS)("revocation on %s", (backend) => {
  let server: TestServer;
  let person: { id: string; email: string };
  let mail: Resource;
  let reports: Resource;
  let planner: Agent;
  let researcher: Agent;
  let summarizer: Agent;
  let outsider: Agent;

  beforeAll(async () => {
    server = await startServer(backend);
    person = await createPerson(server);
    mail = await createResource(server, "https://mail.example.com", ["mail.read", "mail.send"]);
    reports = await createResource(server, "https://reports.example.com", ["reports.read"], {
      token_format: "jwt",
    });
    const grants = [
      { resource: mail.uri, scopes: ["mail.read", "mail.send"] },
      { resource: reports.uri, scopes: ["reports.read"] },
    ];
    [planner, researcher, summarizer] = (await createChain(server, person.email, grants, [
      { maxDepth: 3 },
      { maxDepth: 2 },
      { maxDepth: 1 },
    ])) as [Agent, Agent, Agent];
    outsider = await createAgent(server, person.email, grants);
  });
  afterAll(async () => {
    await server?.close();
  });

  const prisma = () => server.deputy.db.prisma;

  const rootDelegation = (extra: Partial<Parameters<typeof delegate>[1]> = {}) =>
    delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: planner.client_id,
      grants: [
        { resource: mail.uri, scopes: ["mail.read", "mail.send"] },
        { resource: reports.uri, scopes: ["reports.read"] },
      ],
      ...extra,
    });

  /** subject → planner (opaque, mail) → researcher → summarizer, and planner → JWT for reports. */
  async function chain(extra: Partial<Parameters<typeof delegate>[1]> = {}) {
    const root = await rootDelegation(extra);
    const ok = (response: { status: number; body: any }) => {
      expect(response.status, JSON.stringify(response.body)).toBe(200);
      return String(response.body.access_token);
    };
    const t1 = ok(await exchange(server, planner, { subject_token: root.subjectToken, resource: mail.uri }));
    const t2 = ok(await exchange(server, researcher, { subject_token: t1 }));
    const t3 = ok(await exchange(server, summarizer, { subject_token: t2 }));
    const jwt = ok(
      await exchange(server, planner, { subject_token: root.subjectToken, resource: reports.uri }),
    );
    return { ...root, t1, t2, t3, jwt };
  }

  const complete = (taskId: string, headers: Record<string, string>, form: Record<string, string> = {}) =>
    postForm(`${server.url}/tasks/${encodeURIComponent(taskId)}/complete`, form, headers);
  const as = (agent: Agent) => ({ authorization: basicAuth(agent.client_id, agent.client_secret) });
  const inRedis = async (token: string) => Boolean(await server.deputy.provider.AccessToken.find(token));
  const revocationEvents = (delegationId: string) =>
    prisma().auditEvent.findMany({ where: { type: "revocation", delegationId }, orderBy: { seq: "asc" } });

  it("ends a task its agent completes: the whole subtree, in the lineage, in Redis and in the audit trail", async () => {
    const { delegation, subjectToken, t1, t2, t3, jwt } = await chain();
    for (const token of [t1, t2, t3]) expect((await introspect(server, mail, token)).active).toBe(true);

    const done = await complete(delegation.taskId ?? "", as(planner));
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    expect(done.headers.get("cache-control")).toContain("no-store");
    expect(done.body).toMatchObject({
      task_id: delegation.taskId,
      status: "ended",
      revoked: { delegations: 1, tokens: 5 },
      delegations: [
        { id: delegation.id, status: "ended", end_reason: "task_end: the agent completed the task" },
      ],
    });

    for (const token of [t1, t2, t3]) {
      expect(await introspect(server, mail, token)).toEqual({ active: false });
      expect(await inRedis(token)).toBe(false);
    }
    expect(await inRedis(subjectToken)).toBe(false);
    const lineage = await prisma().issuedToken.findMany({ where: { delegationId: delegation.id } });
    expect(lineage).toHaveLength(5);
    expect(lineage.every((row) => row.revokedAt !== null)).toBe(true);
    const row = await prisma().delegation.findUniqueOrThrow({ where: { id: delegation.id } });
    expect(row).toMatchObject({ status: "ended", endReason: "task_end: the agent completed the task" });
    expect(row.endedAt).toBeInstanceOf(Date);

    // No new exchange from any of it: opaque subject, opaque mid-chain, or the JWT (found revoked in the lineage).
    for (const [agent, token] of [
      [planner, subjectToken],
      [summarizer, t2],
      [researcher, jwt],
    ] as const) {
      const refused = await exchange(server, agent, { subject_token: token });
      expect(refused.status, JSON.stringify(refused.body)).toBe(400);
      expect(refused.body.error).toBe("invalid_request");
    }

    // Completing again is not an error, and reaches (and audits) nothing new.
    const again = await complete(delegation.taskId ?? "", as(planner));
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ status: "ended", revoked: { delegations: 0, tokens: 0 } });
    const events = await revocationEvents(delegation.id);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({
      action: "revocation.task_end",
      actor: planner.client_id,
      target: delegation.taskId,
      delegatedBy: person.email,
      agentChain: [planner.client_id],
      details: { trigger: "task_end", outcome: "ended", delegations: 1, tokens: 5 },
    });
  });

  it("authenticates the agent with private_key_jwt, once per assertion", async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256");
    const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "ES256", use: "sig" };
    const keyed = await createAgent(server, person.email, [{ resource: mail.uri, scopes: ["mail.read"] }], {
      auth: { method: "private_key_jwt", jwks: { keys: [jwk] } },
    });
    const { delegation } = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: keyed.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
    });
    const assertion = (audience: string) =>
      new SignJWT({})
        .setProtectedHeader({ alg: "ES256", kid: "k1" })
        .setIssuer(keyed.client_id)
        .setSubject(keyed.client_id)
        .setAudience(audience)
        .setJti(randomUUID())
        .setIssuedAt()
        .setExpirationTime("1m")
        .sign(privateKey);
    const form = (value: string) => ({
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      client_assertion: value,
    });
    const taskId = delegation.taskId ?? "";

    const wrongAudience = await complete(taskId, {}, form(await assertion("https://elsewhere.example.com")));
    expect(wrongAudience.status).toBe(401);
    expect(wrongAudience.body.error).toBe("invalid_client");

    const signed = await assertion(server.url);
    const done = await complete(taskId, {}, form(signed));
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    expect(done.body.revoked.delegations).toBe(1);

    const replay = await complete(taskId, {}, form(signed));
    expect(replay.status).toBe(401);
    expect(replay.body).toMatchObject({ error: "invalid_client" });
    expect(replay.body.error_description).toContain("already been used");
  });

  it("refuses other agents, sub-agents in the chain, unknown tasks and bad credentials", async () => {
    const { delegation, t1 } = await chain();
    const taskId = delegation.taskId ?? "";

    // Someone else's task and no task at all get the same answer: task ids cannot be probed.
    const other = await complete(taskId, as(outsider));
    expect(other.status).toBe(404);
    expect(other.body.error).toBe("not_found");
    const subAgent = await complete(taskId, as(researcher));
    expect(subAgent.status).toBe(404);
    const unknownId = `no-such-task-${randomUUID()}`;
    const unknown = await complete(unknownId, as(outsider));
    expect(unknown.status).toBe(404);
    expect(unknown.body.error_description.replace(unknownId, "ID")).toBe(
      other.body.error_description.replace(taskId, "ID"),
    );
    const wrongMethod = await fetch(`${server.url}/tasks/${encodeURIComponent(taskId)}/complete`);
    expect(wrongMethod.status).toBe(405);
    expect(await wrongMethod.json()).toMatchObject({ error: "method_not_allowed" });

    const anonymous = await complete(taskId, {});
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toMatch(/^Basic /);
    const wrongSecret = await complete(taskId, { authorization: basicAuth(planner.client_id, "wrong") });
    expect(wrongSecret.status).toBe(401);
    expect(wrongSecret.body.error).toBe("invalid_client");
    const resourceServer = await complete(taskId, {
      authorization: basicAuth(mail.client_id, mail.client_secret),
    });
    expect(resourceServer.status).toBe(401);
    const twoMethods = await complete(taskId, as(planner), {
      client_id: planner.client_id,
      client_secret: planner.client_secret,
    });
    expect(twoMethods.status).toBe(400);

    // Nothing was ended by any of these.
    expect((await introspect(server, mail, t1)).active).toBe(true);
    expect(await revocationEvents(delegation.id)).toEqual([]);
    // client_secret_post is accepted like at the token endpoint.
    const posted = await complete(
      taskId,
      {},
      { client_id: planner.client_id, client_secret: planner.client_secret },
    );
    expect(posted.status, JSON.stringify(posted.body)).toBe(200);
  });

  it("ends a delegation at its end time through the delayed task-end job", async () => {
    const { delegation, t1, t3 } = await chain({ endsInSeconds: 3 });
    const ended = await until("the task-end job", async () => {
      const row = await prisma().delegation.findUnique({ where: { id: delegation.id } });
      return row?.status === "active" ? undefined : row;
    });
    expect(ended).toMatchObject({ status: "ended", endReason: "task_end: its end time passed" });
    expect(ended?.endedAt?.getTime()).toBeGreaterThanOrEqual(delegation.endsAt.getTime() - 1_000);
    for (const token of [t1, t3]) {
      expect(await introspect(server, mail, token)).toEqual({ active: false });
      expect(await inRedis(token)).toBe(false);
    }
    const events = await revocationEvents(delegation.id);
    expect(events.map((event) => [event.action, event.actor])).toEqual([
      ["revocation.task_end", "deputy:task-end"],
    ]);
  });

  it("RFC 7009: revoking a token revokes its subtree; revoking a subject token revokes the delegation", async () => {
    const { delegation, subjectToken, t1, t2, t3 } = await chain();
    const sibling = await exchange(server, planner, { subject_token: subjectToken, resource: mail.uri });
    const revoke = (agent: Agent, token: string) =>
      postForm(`${server.url}/token/revocation`, { token }, as(agent));

    expect((await revoke(researcher, t2)).status).toBe(200);
    expect(await introspect(server, mail, t2)).toEqual({ active: false });
    expect(await introspect(server, mail, t3)).toEqual({ active: false });
    expect((await introspect(server, mail, t1)).active).toBe(true);
    expect((await introspect(server, mail, sibling.body.access_token)).active).toBe(true);
    expect((await exchange(server, summarizer, { subject_token: t2 })).status).toBe(400);
    expect((await prisma().delegation.findUniqueOrThrow({ where: { id: delegation.id } })).status).toBe(
      "active",
    );
    const [subtree] = await revocationEvents(delegation.id);
    expect(subtree).toMatchObject({
      action: "revocation.rfc7009",
      actor: researcher.client_id,
      details: {
        trigger: "rfc7009",
        delegations: 0,
        tokens: 2,
        subtree: { held_by: researcher.client_id, depth: 2 },
      },
    });
    expect(
      JSON.stringify(subtree, (_key, value) => (typeof value === "bigint" ? String(value) : value)),
    ).not.toContain(t2);

    expect((await revoke(planner, subjectToken)).status).toBe(200);
    expect(await introspect(server, mail, t1)).toEqual({ active: false });
    expect(await introspect(server, mail, sibling.body.access_token)).toEqual({ active: false });
    const row = await prisma().delegation.findUniqueOrThrow({ where: { id: delegation.id } });
    expect(row.status).toBe("revoked");
    expect(row.endReason).toContain("rfc7009");
    const events = await revocationEvents(delegation.id);
    expect(events.map((event) => event.details)).toMatchObject([
      { trigger: "rfc7009", tokens: 2 },
      { trigger: "rfc7009", delegations: 1, tokens: 4 },
    ]);
  });

  it("revokes tokens minted by exchanges in flight during a revocation (the recheck job)", async () => {
    const { delegation } = await rootDelegation();
    const done = await complete(delegation.taskId ?? "", as(planner));
    expect(done.status).toBe(200);
    // What an exchange that had loaded its subject token before the revocation would commit after it.
    const late = await issueSubjectToken(
      { provider: server.deputy.provider, audit: server.deputy.audit },
      { actor: "test" },
      { ...delegation, agentClientId: planner.client_id, personEmail: person.email },
    );
    expect(await inRedis(late.access_token)).toBe(true);
    await until("the recheck", async () => ((await inRedis(late.access_token)) ? undefined : true), 15_000);
    const rows = await prisma().issuedToken.findMany({ where: { delegationId: delegation.id } });
    expect(rows.every((row) => row.revokedAt !== null)).toBe(true);
    const events = await revocationEvents(delegation.id);
    expect(events.at(-1)).toMatchObject({ actor: "deputy:recheck", details: { recheck: true, tokens: 1 } });
  });

  it("suspending an agent revokes every delegation it holds or acts in, and refuses it at once", async () => {
    const direct = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: researcher.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
    });
    const inChain = await chain();
    const untouched = await rootDelegation();
    const control = await exchange(server, planner, {
      subject_token: untouched.subjectToken,
      resource: mail.uri,
    });
    const before = await exchange(server, researcher, { subject_token: direct.subjectToken });
    expect(before.status).toBe(200);

    const suspended = await server.admin("POST", `/agents/${researcher.client_id}/suspend`, {
      reason: "prompt injection suspected",
    });
    expect(suspended.status, JSON.stringify(suspended.body)).toBe(200);
    expect(suspended.body).toMatchObject({
      status: "suspended",
      revocation: { trigger: "suspension", delegations: 2 },
    });
    expect(suspended.body.revocation.delegation_ids.sort()).toEqual(
      [direct.delegation.id, inChain.delegation.id].sort(),
    );
    for (const token of [before.body.access_token, inChain.t1, inChain.t2, inChain.t3]) {
      expect(await introspect(server, mail, token)).toEqual({ active: false });
    }
    expect((await introspect(server, mail, control.body.access_token)).active).toBe(true);
    const refused = await exchange(server, researcher, { subject_token: direct.subjectToken });
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe("invalid_client");
    // Two delegations: a summary event with the counts, then one event for each delegation (its person and task).
    const summary = await prisma().auditEvent.findFirstOrThrow({
      where: {
        type: "revocation",
        action: "revocation.suspension",
        target: researcher.client_id,
        delegationId: null,
      },
    });
    expect(summary).toMatchObject({
      reason: "prompt injection suspected",
      details: { trigger: "suspension", delegations: 2, tokens: 7 },
    });
    const seqs: bigint[] = [];
    for (const [id, tokens] of [
      [direct.delegation.id, 2],
      [inChain.delegation.id, 5],
    ] as const) {
      const events = await revocationEvents(id);
      expect(events).toHaveLength(1);
      expect(events[0]).toMatchObject({
        delegatedBy: person.email,
        taskDescription: "Plan the offsite",
        details: { revocation_id: (summary.details as { revocation_id: string }).revocation_id, tokens },
      });
      seqs.push(events[0]?.seq ?? 0n);
    }
    expect(seqs.sort((a, b) => (a < b ? -1 : 1))).toEqual([summary.seq + 1n, summary.seq + 2n]);

    // Reversible: the agent authenticates again (its old delegations stay revoked).
    expect((await server.admin("POST", `/agents/${researcher.client_id}/activate`, {})).status).toBe(200);
    const fresh = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: researcher.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
    });
    expect((await exchange(server, researcher, { subject_token: fresh.subjectToken })).status).toBe(200);
    expect((await exchange(server, researcher, { subject_token: direct.subjectToken })).status).toBe(400);
  });

  it("offboarding revokes what the person granted and suspends their agents, marked needs_owner", async () => {
    const leaver = await createPerson(server);
    const leaversAgent = await createAgent(server, leaver.email, [
      { resource: mail.uri, scopes: ["mail.read"] },
    ]);
    const granted = await delegate(server, {
      personId: leaver.id,
      personEmail: leaver.email,
      agent: planner.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
    });
    const toTheirAgent = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: leaversAgent.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
    });
    const control = await rootDelegation();
    const tokens = await Promise.all([
      exchange(server, planner, { subject_token: granted.subjectToken }),
      exchange(server, leaversAgent, { subject_token: toTheirAgent.subjectToken }),
      exchange(server, planner, { subject_token: control.subjectToken, resource: mail.uri }),
    ]);
    for (const token of tokens) expect(token.status).toBe(200);

    const offboarded = await server.admin("POST", `/people/${leaver.email}/offboard`, { reason: "left" });
    expect(offboarded.status, JSON.stringify(offboarded.body)).toBe(200);
    expect(offboarded.body).toMatchObject({
      status: "offboarded",
      revocation: { delegations: 2, tokens: 4 },
      agents_suspended: [leaversAgent.client_id],
      agents_handed_over: [],
    });
    expect(await introspect(server, mail, tokens[0]?.body.access_token)).toEqual({ active: false });
    expect(await introspect(server, mail, tokens[1]?.body.access_token)).toEqual({ active: false });
    expect((await introspect(server, mail, tokens[2]?.body.access_token)).active).toBe(true);
    const agent = await server.admin("GET", `/agents/${leaversAgent.client_id}`);
    expect(agent.body).toMatchObject({ status: "suspended", needs_owner: true });
    expect(agent.body.status_reason).toContain(leaver.email);
    for (const id of [granted.delegation.id, toTheirAgent.delegation.id]) {
      const [event] = await revocationEvents(id);
      expect(event).toMatchObject({
        action: "revocation.offboarding",
        reason: "left",
        details: { delegations: 1 },
      });
    }
  });

  it("lets an admin revoke a delegation (API and CLI) and list delegations", async () => {
    const first = await chain();
    const byApi = await server.admin("POST", `/delegations/${first.delegation.id}/revoke`, {
      reason: "audit finding",
    });
    expect(byApi.status, JSON.stringify(byApi.body)).toBe(200);
    expect(byApi.body).toMatchObject({
      status: "revoked",
      end_reason: "admin: audit finding",
      revocation: { trigger: "admin", delegations: 1, tokens: 5 },
    });
    expect(await introspect(server, mail, first.t3)).toEqual({ active: false });
    expect((await server.admin("POST", `/delegations/${randomUUID()}/revoke`, { reason: "x" })).status).toBe(
      404,
    );
    expect((await server.admin("POST", "/delegations/nope/revoke", { reason: "x" })).status).toBe(404);

    const second = await rootDelegation();
    const run = await cli(server, [
      "--json",
      "delegations",
      "revoke",
      second.delegation.id,
      "--reason",
      "cli",
    ]);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ status: "revoked", revocation: { trigger: "admin" } });
    const listed = await server.admin("GET", `/delegations?status=revoked&agent=${planner.client_id}`);
    expect(listed.body.delegations.map((d: { id: string }) => d.id)).toEqual(
      expect.arrayContaining([first.delegation.id, second.delegation.id]),
    );
  });

  it("makes failed jobs visible with their error (API and CLI), and retries them", async () => {
    const jobs = server.deputy.jobs;
    await jobs.queue.add(
      "task-end",
      { delegationId: "not-a-delegation" },
      { jobId: `bad-${randomUUID()}`, attempts: 2, backoff: { type: "exponential", delay: 50 } },
    );
    const failed = await until("the job to fail twice", async () => {
      const list = await server.admin("GET", "/jobs/failed");
      return list.body.jobs.find(
        (job: { about: { delegation_id?: string } }) => job.about.delegation_id === "not-a-delegation",
      );
    });
    expect(failed).toMatchObject({ name: "task-end", attempts: 2 });
    expect(failed.error.length).toBeGreaterThan(0);
    expect(failed.failed_at).toMatch(/^\d{4}-/);

    const run = await cli(server, ["--json", "jobs", "failed"]);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout).jobs.map((job: { id: string }) => job.id)).toContain(failed.id);

    const retried = await server.admin("POST", `/jobs/${failed.id}/retry`, {});
    expect(retried.status).toBe(200);
    expect((await server.admin("POST", "/jobs/no-such-job/retry", {})).status).toBe(404);
    expect((await server.admin("GET", "/jobs/failed?limit=0")).status).toBe(400);
  });

  // Last: it suspends every agent of this server.
  it("the emergency stop suspends every agent and revokes every delegation; agents come back one by one", async () => {
    const { t1, t3 } = await chain();
    const run = await cli(server, ["--json", "agents", "suspend", "--all", "--reason", "incident 42"]);
    expect(run.code, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout);
    expect(result.suspended).toBeGreaterThanOrEqual(4);
    expect(result.client_ids).toEqual(expect.arrayContaining([planner.client_id, summarizer.client_id]));
    expect(result.revocation).toMatchObject({ trigger: "suspension" });
    expect(await prisma().delegation.count({ where: { status: "active" } })).toBe(0);
    expect(await prisma().agent.count({ where: { status: { in: ["active", "pending"] } } })).toBe(0);
    for (const token of [t1, t3]) expect(await introspect(server, mail, token)).toEqual({ active: false });
    expect((await exchange(server, planner, { subject_token: t1 })).status).toBe(401);
    const audited = await prisma().auditEvent.findFirst({
      where: { action: "agent.suspend_all", reason: "incident 42" },
    });
    expect(audited?.details).toMatchObject({ suspended: result.suspended });

    const usage = await cli(server, ["agents", "suspend", planner.client_id, "--all", "--reason", "x"]);
    expect(usage.code).toBe(1);
    expect((await cli(server, ["agents", "activate", planner.client_id])).code).toBe(0);
    const fresh = await rootDelegation();
    expect(
      (await exchange(server, planner, { subject_token: fresh.subjectToken, resource: mail.uri })).status,
    ).toBe(200);
    expect((await server.admin("GET", `/agents/${summarizer.client_id}`)).body.status).toBe("suspended");
  });
});
