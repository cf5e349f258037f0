// What every event carries, over real HTTP on both databases: the task (id and description) wherever it is known,
// one revocation event per delegation a revocation reaches (so filtering by person finds an offboarding), the
// request's id and address on RFC 7009 revocations, and the policy version on every decision, refusals made
// before the policy was asked included. The new field keeps older events, exports and archives verifiable.
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AUDIT_FIELDS } from "../../src/audit/audit-event.ts";
import { verifyEventLines } from "../../src/audit/audit-verify.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
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

// What the scenario helper's delegations say their task is.
const TASK = "Plan the offsite";

describe.each(BACKENDS)("audit event shape on %s", (backend) => {
  let server: TestServer;
  let person: { id: string; email: string };
  let mail: Resource;
  let agent: Agent;
  let inForce: string;

  beforeAll(async () => {
    server = await startServer(backend);
    person = await createPerson(server);
    mail = await createResource(server, "https://mail.example.com", ["mail.read", "mail.send"]);
    agent = await createAgent(server, person.email, [
      { resource: mail.uri, scopes: ["mail.read", "mail.send"] },
    ]);
    inForce = String((await server.admin("GET", "/policies")).body.in_force);
  });
  afterAll(async () => {
    await server?.close();
  });

  const query = async (params: Record<string, string>) => {
    const { status, body } = await server.admin(
      "GET",
      `/audit?${new URLSearchParams({ limit: "1000", ...params })}`,
    );
    expect(status, JSON.stringify(body)).toBe(200);
    return body.events as any[];
  };
  const delegateTo = (who: { id: string; email: string }, taskId: string) =>
    delegate(server, {
      personId: who.id,
      personEmail: who.email,
      agent: agent.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
      taskId,
    });
  const ask = (token: string, action: string) =>
    evaluate(server, mail, {
      subject: { type: "token", id: token },
      resource: { type: "mailbox", id: "inbox" },
      action: { name: action },
    });
  const exportText = async (params: Record<string, string>) => {
    const token = await server.adminToken();
    const response = await fetch(`${server.url}/admin/v1/audit/export?${new URLSearchParams(params)}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(response.status).toBe(200);
    return response.text();
  };

  it("records the task's description wherever the task is known, and exports it as a field of its own", async () => {
    const { delegation, subjectToken } = await delegateTo(person, "shape-task");
    const allowed = await exchange(server, agent, { subject_token: subjectToken });
    expect(allowed.status, JSON.stringify(allowed.body)).toBe(200);
    // Refused once the delegation is known: a scope outside it.
    expect((await exchange(server, agent, { subject_token: subjectToken, scope: "mail.send" })).status).toBe(
      400,
    );
    expect((await ask(allowed.body.access_token, "mail.read")).body.decision).toBe(true);
    const notGranted = await ask(allowed.body.access_token, "mail.send");
    expect(notGranted.body).toMatchObject({ decision: false, context: { reason: ["scope_not_granted"] } });
    const revoked = await server.admin("POST", `/delegations/${delegation.id}/revoke`, { reason: "done" });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);

    const events = (await query({ delegated_by: person.email })).filter((e) => e.task_id === "shape-task");
    expect(events.map((e) => `${e.action}:${e.decision}`).sort()).toEqual(
      [
        "access.evaluate:allow",
        "access.evaluate:deny",
        "delegation.create:allow",
        // The policy's note of the agent's first use of mail.read here.
        "drift.first_use:null",
        "revocation.admin:allow",
        "subject_token.issue:allow",
        "token.exchange:allow",
        "token.exchange:deny",
      ].sort(),
    );
    for (const event of events) {
      expect(event.task_description, event.action).toBe(TASK);
      expect(Object.keys(event)).toEqual([...AUDIT_FIELDS]);
    }

    const filter = { delegated_by: person.email, action: "token.exchange" };
    const lines = (await exportText({ ...filter, format: "ndjson" }))
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(lines.length).toBeGreaterThanOrEqual(2);
    for (const line of lines) expect(line.task_description).toBe(TASK);
    const [header, ...rows] = (await exportText({ ...filter, format: "csv" })).split("\r\n").filter(Boolean);
    const column = header?.split(",").indexOf("task_description") ?? -1;
    expect(column).toBe(AUDIT_FIELDS.indexOf("task_description"));
    for (const row of rows) expect(row.split(",")[column]).toBe(TASK);
    expect((await server.admin("GET", "/audit/verify")).body).toMatchObject({ ok: true });
  });

  it("keeps events without a task description verifiable as they were, and detects one added afterwards", async () => {
    const lines = (await exportText({ format: "ndjson" })).trimEnd().split("\n");
    // As archives and exports written before the field existed have them: without the key.
    const older = lines.map((line) => {
      const { task_description, ...rest } = JSON.parse(line);
      return JSON.stringify(task_description === null ? rest : { ...rest, task_description });
    });
    expect(older.some((line) => !line.includes('"task_description"'))).toBe(true);
    expect(await verifyEventLines(Readable.from(older))).toMatchObject({ ok: true, events: lines.length });

    const index = lines.findIndex((line) => JSON.parse(line).task_description === null);
    const victim = JSON.parse(lines[index] ?? "");
    const tampered = lines.map((line, i) =>
      i === index ? JSON.stringify({ ...victim, task_description: TASK }) : line,
    );
    const report = await verifyEventLines(Readable.from(tampered));
    expect(report).toMatchObject({ ok: false, first_bad: { seq: victim.seq } });
  });

  it("finds, by person, every delegation an offboarding revoked: one event each, after a summary with the counts", async () => {
    const leaver = await createPerson(server);
    const first = await delegateTo(leaver, "leaver-1");
    const second = await delegateTo(leaver, "leaver-2");
    for (const { subjectToken } of [first, second])
      expect((await exchange(server, agent, { subject_token: subjectToken })).status).toBe(200);

    const offboarded = await server.admin("POST", `/people/${leaver.email}/offboard`, { reason: "left" });
    expect(offboarded.status, JSON.stringify(offboarded.body)).toBe(200);
    expect(offboarded.body.revocation).toMatchObject({ delegations: 2, tokens: 4 });

    const mine = await query({ delegated_by: leaver.email, type: "revocation" });
    expect(mine.map((e) => e.delegation_id).sort()).toEqual(
      [first.delegation.id, second.delegation.id].sort(),
    );
    for (const event of mine) {
      expect(event).toMatchObject({
        action: "revocation.offboarding",
        reason: "left",
        agent_chain: [agent.client_id],
        resource: mail.uri,
        task_description: TASK,
        details: { trigger: "offboarding", outcome: "revoked", tokens: 2 },
      });
      expect(event.task_id).toBe(event.delegation_id === first.delegation.id ? "leaver-1" : "leaver-2");
    }
    const [summary, ...others] = (await query({ action: "revocation.offboarding" })).filter(
      (e) => e.details.revocation_id === mine[0].details.revocation_id,
    );
    expect(summary).toMatchObject({
      delegated_by: null,
      delegation_id: null,
      details: { delegations: 2, tokens: 4 },
    });
    expect(others.map((e) => e.seq)).toEqual(mine.map((e) => e.seq));
    expect(summary.seq).toBe(mine[0].seq - 1);
    // By delegation, too.
    const byDelegation = await server.deputy.db.prisma.auditEvent.findMany({
      where: { type: "revocation", delegationId: second.delegation.id },
    });
    expect(byDelegation).toHaveLength(1);
    expect((await server.admin("GET", "/audit/verify")).body).toMatchObject({ ok: true });
  });

  it("records the request id and client address of an RFC 7009 revocation", async () => {
    const { subjectToken } = await delegateTo(person, "rfc7009-task");
    const token = (await exchange(server, agent, { subject_token: subjectToken })).body.access_token;
    const requestId = `rfc7009-${backend}`;
    const revoked = await postForm(
      `${server.url}/token/revocation`,
      { token },
      { authorization: basicAuth(agent.client_id, agent.client_secret), "x-request-id": requestId },
    );
    expect(revoked.status).toBe(200);
    const [event] = await query({ action: "revocation.rfc7009", delegated_by: person.email });
    expect(event).toMatchObject({
      actor: agent.client_id,
      request_id: requestId,
      task_id: "rfc7009-task",
      task_description: TASK,
    });
    expect(event.client_address).toMatch(/127\.0\.0\.1$/);
  });

  it("records the policy version in force on decisions refused before the policy was asked", async () => {
    const garbage = await exchange(server, agent, { subject_token: "not-a-token-at-all" });
    expect(garbage.status).toBe(400);
    const { subjectToken } = await delegateTo(person, "version-task");
    const outside = await exchange(server, agent, { subject_token: subjectToken, scope: "mail.send" });
    expect(outside.body.error).toBe("invalid_scope");
    const inactive = await ask("not-a-token-at-all", "mail.read");
    expect(inactive.body).toMatchObject({ decision: false, context: { reason: ["token_inactive"] } });

    const refusals = await query({ decision: "deny", type: "exchange,evaluation" });
    expect(refusals.map((e) => e.reason.split(":")[0])).toEqual(
      expect.arrayContaining([garbage.body.error, "invalid_scope", "token_inactive", "scope_not_granted"]),
    );
    for (const event of refusals) expect(event.policy_version, event.reason).toBe(inForce);
    // And allowed decisions, as before.
    for (const event of await query({ decision: "allow", type: "exchange,evaluation" }))
      expect(event.policy_version, event.action).toBe(inForce);
  });
});
