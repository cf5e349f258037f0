// Runtime policy over real HTTP, Redis and both databases: the default Cedar policy set, applying and
// refusing policy versions, velocity rules (exact under concurrency, shadow, containment), drift, human
// step-up on high-risk exchanges, and a policy change reaching every server process without a restart.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type Agent,
  createAgent,
  createPerson,
  createResource,
  delegate,
  evaluate,
  exchange,
  type Resource,
} from "../helpers/scenario.ts";
import { BACKENDS, startServer, type TestServer } from "../helpers/server.ts";

const tokenSubject = (token: string) => ({ type: "token", id: token });
const ask = (token: string, action: string) => ({
  subject: tokenSubject(token),
  resource: { type: "message", id: "inbox" },
  action: { name: action },
});

describe.each(BACKENDS)("runtime policy on %s", (backend) => {
  let server: TestServer;
  let person: { id: string; email: string };
  let mail: Resource;
  let files: Resource;

  beforeAll(async () => {
    server = await startServer(backend);
    person = await createPerson(server);
    mail = await createResource(server, "https://mail.example.com", [
      "mail.read",
      "mail.send",
      "mail.delete",
    ]);
    files = await createResource(server, "https://files.example.com", ["files.read", "files.write"]);
  });
  afterAll(async () => {
    await server?.close();
  });

  const grants = () => [
    { resource: mail.uri, scopes: ["mail.read", "mail.send", "mail.delete"] },
    { resource: files.uri, scopes: ["files.read", "files.write"] },
  ];

  /** A fresh agent with a delegation and a token for `resource` (scopes: everything low-risk delegated). */
  async function agentWithToken(resource: Resource, scopes: string[], extra: Record<string, unknown> = {}) {
    const agent = await createAgent(server, person.email, grants(), extra);
    const { delegation, subjectToken } = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: agent.client_id,
      grants: [mail, files].map(({ uri }) => ({
        resource: uri,
        scopes: scopes.filter((s) => uri.includes(s.split(".")[0] as string)),
      })),
    });
    const exchanged = await exchange(server, agent, {
      subject_token: subjectToken,
      resource: resource.uri,
      scope: scopes.filter((s) => resource.uri.includes(s.split(".")[0] as string)).join(" "),
    });
    expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
    return { agent, delegation, subjectToken, token: exchanged.body.access_token as string };
  }

  async function addRule(rule: Record<string, unknown>) {
    const created = await server.admin("POST", "/velocity-rules", rule);
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    return created.body;
  }

  it("applies the shipped default policy set as version 1 on first start", async () => {
    const listed = await server.admin("GET", "/policies");
    expect(listed.status).toBe(200);
    expect(listed.body.versions[0]).toMatchObject({ version: 1, created_by: "deputy" });
    const current = await server.admin("GET", "/policies/1");
    expect(current.body.policies).toEqual(["delegated-agents", "high-risk-needs-step-up"]);
    expect(current.body.text).toContain("// @source default.cedar");
    const events = await server.deputy.db.prisma.auditEvent.findMany({ where: { type: "policy_change" } });
    expect(events.some((e) => e.action === "policy.default" && e.policyVersion === "1")).toBe(true);
  });

  it("refuses an invalid policy set with located errors and stores nothing", async () => {
    const before = await server.admin("GET", "/policies");
    const bad = [
      {
        name: "bad.cedar",
        text: [
          "permit (principal is Agent, action, resource);",
          "",
          '@id("typo")',
          'forbid (principal, action == Action::"mail.snd", resource);',
          '@id("attribute-typo")',
          "forbid (principal, action, resource) when { context.drfit };",
        ].join("\n"),
      },
    ];
    const validated = await server.admin("POST", "/policies/validate", { sources: bad });
    expect(validated.status).toBe(200);
    expect(validated.body.valid).toBe(false);
    const messages = validated.body.errors
      .map((e: any) => `${e.location} ${e.policy} ${e.message}`)
      .join("\n");
    expect(messages).toMatch(/bad\.cedar:4:\d+ typo .*mail\.snd.*did you mean `Action::"mail\.send"`/);
    expect(messages).toMatch(/bad\.cedar:6:\d+ attribute-typo .*drfit/);

    const applied = await server.admin("POST", "/policies", { sources: bad });
    expect(applied.status).toBe(400);
    expect(applied.body.error).toBe("invalid_policy");
    expect(applied.body.error_description).toContain("bad.cedar:4");

    const syntax = await server.admin("POST", "/policies", {
      sources: [{ name: "x.cedar", text: "permit (principal, action, resource) when { oops" }],
    });
    expect(syntax.status).toBe(400);
    expect(syntax.body.error_description).toMatch(/x\.cedar:1:\d+/);
    const duplicate = await server.admin("POST", "/policies/validate", {
      sources: [
        {
          name: "d.cedar",
          text: '@id("a") permit (principal, action, resource);\n@id("a") permit (principal, action, resource);',
        },
      ],
    });
    expect(duplicate.body.errors[0].message).toContain('two policies have the id "a"');
    expect((await server.admin("GET", "/policies")).body.versions).toHaveLength(before.body.versions.length);
    expect(server.deputy.policy.store.current().version).toBe(before.body.in_force);
  });

  it("denies the 101st use of an action within a minute, naming the rule, in the answer and the audit trail", async () => {
    const rule = await addRule({
      name: `mail-send-burst-${backend}`,
      resource: mail.uri,
      action: "mail.send",
      limit: 100,
      window_seconds: 60,
    });
    const { token, delegation, agent, subjectToken } = await agentWithToken(mail, ["mail.read", "mail.send"]);
    for (let i = 1; i <= 100; i++) {
      const answer = await evaluate(server, mail, ask(token, "mail.send"));
      expect(answer.status).toBe(200);
      expect(answer.body.decision, `call ${i}: ${JSON.stringify(answer.body)}`).toBe(true);
    }
    for (let i = 101; i <= 103; i++) {
      const answer = await evaluate(server, mail, ask(token, "mail.send"));
      expect(answer.body.decision, `call ${i}`).toBe(false);
      expect(answer.body.context.reason).toEqual([`velocity:${rule.name}`]);
      expect(answer.body.context.reason_admin.en).toContain("100 times");
    }
    // Another action of the same agent is not limited by the rule.
    expect((await evaluate(server, mail, ask(token, "mail.read"))).body.decision).toBe(true);
    // Over the limit, the agent gets no fresh token for that action either (an exchange only checks the count).
    const fresh = await exchange(server, agent, {
      subject_token: subjectToken,
      resource: mail.uri,
      scope: "mail.send",
    });
    expect(fresh.body.error).toBe("access_denied");
    expect(fresh.body.error_description).toContain(`velocity rule ${rule.name}`);
    expect(
      (await exchange(server, agent, { subject_token: subjectToken, resource: mail.uri, scope: "mail.read" }))
        .status,
    ).toBe(200);

    const events = await server.deputy.db.prisma.auditEvent.findMany({
      where: { delegationId: delegation.id, type: "evaluation", scopesAsked: { has: "mail.send" } },
      orderBy: { seq: "asc" },
    });
    expect(events).toHaveLength(103);
    expect(events.slice(0, 100).every((e) => e.decision === "allow")).toBe(true);
    expect(events[100]).toMatchObject({
      decision: "deny",
      actor: mail.client_id,
      delegatedBy: person.email,
      agentChain: [agent.client_id],
      resource: mail.uri,
      policyVersion: String(server.deputy.policy.store.current().version),
    });
    expect(events[100]?.reason).toContain(`velocity rule ${rule.name}`);
    expect(events[0]?.details).toMatchObject({ decided_by: ["policy:delegated-agents"] });
    await server.admin("DELETE", `/velocity-rules/${rule.name}`);
  });

  it("counts exactly under concurrency: 150 simultaneous calls against a limit of 100 allow exactly 100", async () => {
    const rule = await addRule({
      name: `mail-delete-burst-${backend}`,
      resource: mail.uri,
      action: "mail.delete",
      limit: 100,
      window_seconds: 60,
    });
    const { token } = await agentWithToken(mail, ["mail.read", "mail.delete"]);
    const answers = await Promise.all(
      Array.from({ length: 150 }, () => evaluate(server, mail, ask(token, "mail.delete"))),
    );
    expect(answers.every((a) => a.status === 200)).toBe(true);
    expect(answers.filter((a) => a.body.decision === true)).toHaveLength(100);
    expect(answers.filter((a) => a.body.decision === false)).toHaveLength(50);
    await server.admin("DELETE", `/velocity-rules/${rule.name}`);
  });

  it("does not count calls that Cedar refuses: they leave the velocity allowance to allowed calls", async () => {
    const rule = await addRule({
      name: `mail-read-refused-${backend}`,
      resource: mail.uri,
      action: "mail.read",
      limit: 3,
      window_seconds: 60,
    });
    const { token } = await agentWithToken(mail, ["mail.read"]);
    const defaultSet = { name: "default.cedar", text: (await server.admin("GET", "/policies/1")).body.text };
    const locked = await server.admin("POST", "/policies", {
      sources: [
        defaultSet,
        {
          name: "locked.cedar",
          text: [
            '@id("locked-folder")',
            'forbid (principal, action, resource) when { context has target && context.target.id == "locked" };',
          ].join("\n"),
        },
      ],
    });
    expect(locked.status, JSON.stringify(locked.body)).toBe(201);
    try {
      const askLocked = { ...ask(token, "mail.read"), resource: { type: "message", id: "locked" } };
      for (let i = 0; i < 5; i++) {
        const refused = await evaluate(server, mail, askLocked);
        expect(refused.body.decision).toBe(false);
        expect(refused.body.context.reason).toEqual(["policy:locked-folder"]);
      }
      const answers = [];
      for (let i = 0; i < 4; i++) answers.push((await evaluate(server, mail, ask(token, "mail.read"))).body);
      expect(answers.map((answer) => answer.decision)).toEqual([true, true, true, false]);
      expect(answers[3].context.reason).toEqual([`velocity:${rule.name}`]);
    } finally {
      expect((await server.admin("POST", "/policies", { sources: [defaultSet] })).status).toBe(201);
      await server.admin("DELETE", `/velocity-rules/${rule.name}`);
    }
  });

  it("lets a shadow rule allow while recording would-deny events, and contains an agent that breaches a containing rule", async () => {
    const shadow = await addRule({
      name: `files-read-shadow-${backend}`,
      resource: files.uri,
      action: "files.read",
      limit: 2,
      window_seconds: 60,
      shadow: true,
    });
    const { token, delegation, agent } = await agentWithToken(files, ["files.read"]);
    const decisions = [];
    for (let i = 0; i < 4; i++)
      decisions.push((await evaluate(server, files, ask(token, "files.read"))).body.decision);
    expect(decisions).toEqual([true, true, true, true]);
    const wouldDeny = await server.deputy.db.prisma.auditEvent.findMany({
      where: { delegationId: delegation.id, action: "velocity.would_deny" },
    });
    expect(wouldDeny).toHaveLength(2);
    expect(wouldDeny[0]?.reason).toContain(shadow.name);
    await server.admin("DELETE", `/velocity-rules/${shadow.name}`);

    const containing = await addRule({
      name: `files-read-contain-${backend}`,
      resource: files.uri,
      action: "*",
      limit: 1,
      window_seconds: 60,
      contain_on_breach: true,
    });
    const second = await agentWithToken(files, ["files.read"]);
    expect((await evaluate(server, files, ask(second.token, "files.read"))).body.decision).toBe(true);
    const breach = await evaluate(server, files, ask(second.token, "files.read"));
    expect(breach.body.decision).toBe(false);
    expect(breach.body.context.reason).toEqual([`velocity:${containing.name}`]);
    const suspended = await server.admin("GET", `/agents/${second.agent.client_id}`);
    expect(suspended.body.status).toBe("suspended");
    expect(suspended.body.status_reason).toContain(containing.name);
    const contained = await server.deputy.db.prisma.auditEvent.findMany({
      where: { action: "velocity.contain", agentChain: { has: second.agent.client_id } },
    });
    expect(contained).toHaveLength(1);
    // The suspended agent can no longer exchange.
    const again = await exchange(server, second.agent, {
      subject_token: second.subjectToken,
      resource: files.uri,
    });
    expect(again.status).toBe(401);
    await server.admin("DELETE", `/velocity-rules/${containing.name}`);
    expect(agent.client_id).not.toBe(second.agent.client_id);
  });

  it("refuses a high-risk exchange until the person approves it, then allows it within the window", async () => {
    const agent: Agent = await createAgent(server, person.email, grants());
    const { delegation, subjectToken } = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: agent.client_id,
      grants: [{ resource: files.uri, scopes: ["files.read", "files.write"] }],
    });
    const refused = await exchange(server, agent, {
      subject_token: subjectToken,
      scope: "files.read files.write",
    });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toBe("access_denied");
    expect(refused.body.error_description).toContain("scope files.write");
    expect(refused.body.error_description).toContain(`${server.url}/backchannel`);
    expect(refused.body.error_description).toContain("policy:high-risk-needs-step-up");
    // Low-risk scopes of the same delegation are not held back: with no scope named, the default leaves out
    // the high-risk scope still waiting for approval instead of refusing.
    const defaulted = await exchange(server, agent, { subject_token: subjectToken });
    expect(defaulted.status, JSON.stringify(defaulted.body)).toBe(200);
    expect(defaulted.body.scope).toBe("files.read");

    // An approval that has already expired does not count.
    await server.deputy.policy.recordStepUpApproval(
      { actor: person.email },
      {
        personId: person.id,
        agentClientId: agent.client_id,
        resource: files.uri,
        scopes: ["files.write"],
        approvedAt: new Date(Date.now() - (server.deputy.config.stepUpWindowSeconds + 5) * 1000),
      },
    );
    expect(
      (await exchange(server, agent, { subject_token: subjectToken, scope: "files.write" })).status,
    ).toBe(400);

    await server.deputy.policy.recordStepUpApproval(
      { actor: person.email },
      { personId: person.id, agentClientId: agent.client_id, resource: files.uri, scopes: ["files.write"] },
    );
    const allowed = await exchange(server, agent, { subject_token: subjectToken });
    expect(allowed.status, JSON.stringify(allowed.body)).toBe(200);
    expect(allowed.body.scope).toBe("files.read files.write");

    const events = await server.deputy.db.prisma.auditEvent.findMany({
      where: { delegationId: delegation.id, action: "token.exchange" },
      orderBy: { seq: "asc" },
    });
    expect(events.map((e) => e.decision)).toEqual(["deny", "allow", "deny", "allow"]);
    expect(events[0]?.reason).toContain("access_denied");
    expect(events[0]?.reason).toContain("policy:high-risk-needs-step-up");
    expect(events[3]?.reason).toBe("decided by policy:delegated-agents");
    expect(
      events.every((e) => e.policyVersion === String(server.deputy.policy.store.current().version)),
    ).toBe(true);
    const approvals = await server.deputy.db.prisma.auditEvent.findMany({
      where: { action: "step_up.approve" },
    });
    expect(approvals.length).toBeGreaterThanOrEqual(2);
  });

  it("records an agent's first use of an action as drift, once, and lets policies require more of it", async () => {
    const { token, agent } = await agentWithToken(mail, ["mail.read", "mail.send"]);
    // The exchange itself was the agent's first use of mail.read and mail.send on mail.
    const driftEvents = () =>
      server.deputy.db.prisma.auditEvent.findMany({
        where: { action: "drift.first_use", agentChain: { has: agent.client_id } },
        orderBy: { seq: "asc" },
      });
    expect(
      (await driftEvents()).map((e) => `${e.type} ${e.scopesAsked} ${JSON.stringify(e.details)}`),
    ).toEqual(['drift mail.read {"during":"exchange"}', 'drift mail.send {"during":"exchange"}']);
    expect((await evaluate(server, mail, ask(token, "mail.read"))).body.decision).toBe(true);
    expect(await driftEvents()).toHaveLength(2);

    const previous = server.deputy.policy.store.current().version;
    const strict = await server.admin("POST", "/policies", {
      sources: [
        { name: "default.cedar", text: (await server.admin("GET", "/policies/1")).body.text },
        {
          name: "drift.cedar",
          text: [
            '@id("no-first-deletes")',
            '@reason("a first delete needs a review")',
            'forbid (principal, action == Action::"mail.delete", resource) when { context.drift };',
          ].join("\n"),
        },
      ],
    });
    expect(strict.status, JSON.stringify(strict.body)).toBe(201);
    expect(strict.body.version).toBe(previous + 1);
    // An exchange for mail.delete is a first use: refused by the new policy at once. Refused uses are not
    // recorded, so the next attempt is still a first use, and still refused.
    const agent2 = await createAgent(server, person.email, grants());
    const { subjectToken } = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: agent2.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.delete"] }],
    });
    for (let i = 0; i < 2; i++) {
      const refused = await exchange(server, agent2, { subject_token: subjectToken });
      expect(refused.body.error).toBe("access_denied");
      expect(refused.body.error_description).toContain(
        "policy no-first-deletes: a first delete needs a review",
      );
    }
    const events = await server.deputy.db.prisma.auditEvent.findMany({
      where: { action: "token.exchange", agentChain: { has: agent2.client_id } },
    });
    expect(events.map((e) => e.policyVersion)).toEqual([String(previous + 1), String(previous + 1)]);
    const restored = await server.admin("POST", "/policies", {
      sources: [{ name: "default.cedar", text: (await server.admin("GET", "/policies/1")).body.text }],
    });
    expect(restored.status).toBe(201);
    const allowed = await exchange(server, agent2, { subject_token: subjectToken });
    expect(allowed.status).toBe(200);
    expect(
      await server.deputy.db.prisma.auditEvent.count({
        where: { action: "drift.first_use", agentChain: { has: agent2.client_id } },
      }),
    ).toBe(1);
  });
});

describe("a policy change on a deployment of two server processes", () => {
  let first: TestServer;
  let second: TestServer;

  beforeAll(async () => {
    first = await startServer("postgresql");
    // The second process shares the first one's issuer, database and Redis prefix: one deployment, two processes.
    second = await startServer("pglite", {
      ISSUER: first.url,
      DATABASE_URL: first.env.DATABASE_URL as string,
      REDIS_PREFIX: first.env.REDIS_PREFIX as string,
    });
  });
  afterAll(async () => {
    await second?.close();
    await first?.close();
  });

  it("takes effect on both without a restart, and the audit shows the new version on the next decision", async () => {
    const person = await createPerson(first);
    const mail = await createResource(first, "https://mail.example.com", ["mail.read", "mail.send"]);
    const agent = await createAgent(first, person.email, [
      { resource: mail.uri, scopes: ["mail.read", "mail.send"] },
    ]);
    const { subjectToken } = await delegate(first, {
      personId: person.id,
      personEmail: person.email,
      agent: agent.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read", "mail.send"] }],
    });
    const token = (await exchange(first, agent, { subject_token: subjectToken })).body.access_token;
    const before = await evaluate(second, mail, ask(token, "mail.send"));
    expect(before.body).toMatchObject({ decision: true, context: { policy_version: 1 } });

    const applied = await first.admin("POST", "/policies", {
      sources: [
        {
          name: "no-send.cedar",
          text: [
            '@id("everyone")',
            "permit (principal is Agent, action, resource is ResourceServer);",
            '@id("no-sending")',
            '@reason("sending mail is paused")',
            'forbid (principal, action == Action::"mail.send", resource);',
          ].join("\n"),
        },
      ],
    });
    expect(applied.status, JSON.stringify(applied.body)).toBe(201);
    expect(applied.body).toMatchObject({ version: 2, in_force: true, policies: ["everyone", "no-sending"] });
    const changeEvent = await first.deputy.db.prisma.auditEvent.findFirst({
      where: { type: "policy_change", action: "policy.apply" },
    });
    expect(changeEvent).toMatchObject({ policyVersion: "2", actor: "deputy-admin" });

    // The other process switched on the invalidation message: no restart, no waiting for the periodic check.
    await expect.poll(() => second.deputy.policy.store.current().version, { timeout: 2000 }).toBe(2);
    const after = await evaluate(second, mail, ask(token, "mail.send"));
    expect(after.body).toMatchObject({
      decision: false,
      context: { reason: ["policy:no-sending"], policy_version: 2 },
    });
    expect(after.body.context.reason_admin.en).toContain("sending mail is paused");
    const exchanged = await exchange(second, agent, { subject_token: subjectToken, scope: "mail.send" });
    expect(exchanged.body.error).toBe("access_denied");
    const last = await first.deputy.db.prisma.auditEvent.findMany({
      where: { action: { in: ["access.evaluate", "token.exchange"] }, agentChain: { has: agent.client_id } },
      orderBy: { seq: "desc" },
      take: 2,
    });
    expect(last.map((e) => [e.type, e.decision, e.policyVersion])).toEqual([
      ["exchange", "deny", "2"],
      ["evaluation", "deny", "2"],
    ]);
    // Only mail.send is forbidden: the policy set is sliced per action, and mail.read is still permitted.
    expect((await evaluate(second, mail, ask(token, "mail.read"))).body.context).toMatchObject({
      reason: ["policy:everyone"],
      policy_version: 2,
    });
  });
});
