// Narrowing an agent in the registry (max_depth lowered, scopes or a resource taken from its grants, a delegate
// taken from may_delegate_to) narrows what is live at once: its delegations are narrowed (or revoked when
// nothing is left), the tokens beyond the new bounds are revoked with everything exchanged from them, later
// exchanges are held to the new bounds, and all of it is audited. Widening an agent revokes nothing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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
import { BACKENDS, startServer, type TestServer } from "../helpers/server.ts";

describe.each(BACKENDS)("narrowing an agent, on %s", (backend) => {
  let server: TestServer;
  let person: { id: string; email: string };
  let mail: Resource;
  let calendar: Resource;

  beforeAll(async () => {
    server = await startServer(backend);
    person = await createPerson(server);
    mail = await createResource(server, "https://mail.example.com", ["mail.read", "mail.send"]);
    calendar = await createResource(server, "https://calendar.example.com", ["calendar.read"]);
  });
  afterAll(async () => {
    await server?.close();
  });

  const prisma = () => server.deputy.db.prisma;
  const allGrants = () => [
    { resource: mail.uri, scopes: ["mail.read", "mail.send"] },
    { resource: calendar.uri, scopes: ["calendar.read"] },
  ];

  /** planner (depth 3) → researcher (depth 2) → writer (depth 1), each granted everything. */
  async function chainOfAgents() {
    const writer = await createAgent(server, person.email, allGrants(), { max_depth: 1 });
    const researcher = await createAgent(server, person.email, allGrants(), {
      may_delegate_to: [writer.client_id],
      max_depth: 2,
    });
    const planner = await createAgent(server, person.email, allGrants(), {
      may_delegate_to: [researcher.client_id],
      max_depth: 3,
    });
    return { planner, researcher, writer };
  }

  const toPlanner = (planner: Agent, grants = [{ resource: mail.uri, scopes: ["mail.read"] }]) =>
    delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: planner.client_id,
      grants,
    });
  /** The (resource, scope) pairs a delegation holds now, in a stable order. */
  const pairsOf = async (delegationId: string) =>
    (
      await prisma().delegationScope.findMany({
        where: { delegationId },
        orderBy: [{ resource: "asc" }, { scope: "asc" }],
      })
    ).map(({ resource, scope }) => `${scope} on ${resource}`);

  async function exchanged(agent: Agent, form: Record<string, string>) {
    const response = await exchange(server, agent, form);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return String(response.body.access_token);
  }

  const update = async (agent: Agent, body: Record<string, unknown>) => {
    const response = await server.admin("PATCH", `/agents/${agent.client_id}`, body);
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return response.body;
  };
  const active = async (resource: Resource, token: string) =>
    (await introspect(server, resource, token)).active === true;
  const events = (where: Record<string, unknown>) =>
    prisma().auditEvent.findMany({ where, orderBy: { seq: "asc" } });

  it("lowering the delegate's max_depth to 1 revokes the sub-agents' tokens and stops the chain growing", async () => {
    const { planner, researcher, writer } = await chainOfAgents();
    const { delegation, subjectToken } = await toPlanner(planner);
    const own = await exchanged(planner, { subject_token: subjectToken });
    const hop = await exchanged(researcher, { subject_token: subjectToken });
    const hop2 = await exchanged(writer, { subject_token: hop });

    await update(planner, { max_depth: 1 });

    expect(await active(mail, hop)).toBe(false);
    expect(await active(mail, hop2)).toBe(false);
    expect(await active(mail, own)).toBe(true);
    const again = await exchange(server, researcher, { subject_token: subjectToken });
    expect(again.status).toBe(400);
    expect(again.body.error).toBe("invalid_request");
    expect(again.body.error_description).toMatch(/at most 1/);
    // The planner itself still acts for the person.
    await exchanged(planner, { subject_token: subjectToken });

    const row = await prisma().delegation.findUniqueOrThrow({ where: { id: delegation.id } });
    expect(row).toMatchObject({ status: "active", maxDepth: 1 });
    const [narrowed] = await events({ action: "delegation.narrow", delegationId: delegation.id });
    expect(narrowed).toMatchObject({ type: "admin_change", target: delegation.id });
    expect(narrowed?.before).toMatchObject({ max_depth: 3 });
    expect(narrowed?.after).toMatchObject({ max_depth: 1 });
    const revoked = await events({ action: "revocation.narrowing", delegationId: delegation.id });
    expect(revoked.length).toBeGreaterThan(0);
    expect(revoked.reduce((sum, event) => sum + Number((event.details as any).tokens), 0)).toBe(2);
  });

  it("lowering a sub-agent's max_depth revokes the tokens past it; it still acts itself", async () => {
    const { planner, researcher, writer } = await chainOfAgents();
    const { delegation, subjectToken } = await toPlanner(planner);
    const hop = await exchanged(researcher, { subject_token: subjectToken });
    const hop2 = await exchanged(writer, { subject_token: hop });

    await update(researcher, { max_depth: 1 });

    expect(await active(mail, hop2)).toBe(false);
    expect(await active(mail, hop)).toBe(true);
    // The token the researcher holds was minted when it could delegate: it no longer can.
    const further = await exchange(server, writer, { subject_token: hop });
    expect(further.status).toBe(400);
    expect(further.body.error_description).toMatch(/max_depth/);
    await exchanged(researcher, { subject_token: hop });
    // The delegation itself is the planner's: unchanged.
    const row = await prisma().delegation.findUniqueOrThrow({ where: { id: delegation.id } });
    expect(row).toMatchObject({ status: "active", maxDepth: 3 });
  });

  it("taking a scope and a resource from the delegate's grants narrows its delegation and revokes the tokens that carry them", async () => {
    const { planner, researcher } = await chainOfAgents();
    const { delegation, subjectToken } = await toPlanner(planner, allGrants());
    const reading = await exchanged(planner, {
      subject_token: subjectToken,
      resource: mail.uri,
      scope: "mail.read",
    });
    const sending = await exchanged(planner, {
      subject_token: subjectToken,
      resource: mail.uri,
      scope: "mail.read mail.send",
    });
    const viaResearcher = await exchanged(researcher, {
      subject_token: subjectToken,
      resource: mail.uri,
      scope: "mail.send",
    });
    const diary = await exchanged(researcher, { subject_token: subjectToken, resource: calendar.uri });

    await update(planner, { grants: [{ resource: mail.uri, scopes: ["mail.read"] }] });

    expect(await active(mail, reading)).toBe(true);
    expect(await active(mail, sending)).toBe(false);
    // The researcher may still send mail itself, but not under this delegation any more.
    expect(await active(mail, viaResearcher)).toBe(false);
    expect(await active(calendar, diary)).toBe(false);
    const row = await prisma().delegation.findUniqueOrThrow({ where: { id: delegation.id } });
    expect(row).toMatchObject({ status: "active" });
    expect(await pairsOf(delegation.id)).toEqual([`mail.read on ${mail.uri}`]);

    const send = await exchange(server, researcher, { subject_token: subjectToken, scope: "mail.send" });
    expect(send.status).toBe(400);
    expect(send.body.error).toBe("invalid_scope");
    const cal = await exchange(server, researcher, { subject_token: subjectToken, resource: calendar.uri });
    expect(cal.status).toBe(400);
    expect(cal.body.error).toBe("invalid_target");
    const defaulted = await exchange(server, researcher, { subject_token: subjectToken });
    expect(defaulted.status, JSON.stringify(defaulted.body)).toBe(200);
    expect(defaulted.body.scope).toBe("mail.read");

    const [narrowed] = await events({ action: "delegation.narrow", delegationId: delegation.id });
    expect(narrowed?.before).toMatchObject({
      grants: [
        { resource: calendar.uri, scopes: ["calendar.read"] },
        { resource: mail.uri, scopes: ["mail.read", "mail.send"] },
      ],
    });
    expect(narrowed?.after).toMatchObject({ grants: [{ resource: mail.uri, scopes: ["mail.read"] }] });
  });

  it("taking a scope from the delegate on one resource server leaves the same scope name delegated on another", async () => {
    const outbox = await createResource(server, "https://outbox.example.com", ["mail.send"]);
    const researcher = await createAgent(server, person.email, allGrants(), { max_depth: 2 });
    const planner = await createAgent(
      server,
      person.email,
      [...allGrants(), { resource: outbox.uri, scopes: ["mail.send"] }],
      { may_delegate_to: [researcher.client_id], max_depth: 3 },
    );
    const { delegation, subjectToken } = await toPlanner(planner, [
      { resource: mail.uri, scopes: ["mail.read", "mail.send"] },
      { resource: outbox.uri, scopes: ["mail.send"] },
    ]);
    const sending = await exchanged(researcher, {
      subject_token: subjectToken,
      resource: mail.uri,
      scope: "mail.send",
    });
    const queued = await exchanged(planner, { subject_token: subjectToken, resource: outbox.uri });

    // mail.send leaves the planner's grants on Mail only; Outbox's mail.send stays.
    await update(planner, {
      grants: [
        { resource: mail.uri, scopes: ["mail.read"] },
        { resource: calendar.uri, scopes: ["calendar.read"] },
        { resource: outbox.uri, scopes: ["mail.send"] },
      ],
    });

    expect(await pairsOf(delegation.id)).toEqual([`mail.read on ${mail.uri}`, `mail.send on ${outbox.uri}`]);
    // The researcher is still granted mail.send on Mail itself, but this delegation no longer gives it.
    expect(await active(mail, sending)).toBe(false);
    expect(await active(outbox, queued)).toBe(true);
    const send = await exchange(server, researcher, {
      subject_token: subjectToken,
      resource: mail.uri,
      scope: "mail.send",
    });
    expect(send.status).toBe(400);
    expect(send.body.error).toBe("invalid_scope");
    const again = await exchange(server, planner, { subject_token: subjectToken, resource: outbox.uri });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.scope).toBe("mail.send");
    const [narrowed] = await events({ action: "delegation.narrow", delegationId: delegation.id });
    expect(narrowed?.after).toMatchObject({
      grants: [
        { resource: mail.uri, scopes: ["mail.read"] },
        { resource: outbox.uri, scopes: ["mail.send"] },
      ],
    });
  });

  it("taking every grant from the delegate revokes its delegations", async () => {
    const { planner } = await chainOfAgents();
    const { delegation, subjectToken } = await toPlanner(planner);
    const token = await exchanged(planner, { subject_token: subjectToken });

    await update(planner, { grants: [] });

    expect(await active(mail, token)).toBe(false);
    const row = await prisma().delegation.findUniqueOrThrow({ where: { id: delegation.id } });
    expect(row.status).toBe("revoked");
    expect(row.endReason).toMatch(/^narrowing: /);
    const again = await exchange(server, planner, { subject_token: subjectToken });
    expect(again.status).toBe(400);
    expect(await events({ action: "revocation.narrowing", delegationId: delegation.id })).toHaveLength(1);
  });

  it("taking a resource from a sub-agent's grants revokes the tokens it holds there, and what was exchanged from them", async () => {
    const { planner, researcher, writer } = await chainOfAgents();
    const { delegation, subjectToken } = await toPlanner(planner, [
      { resource: mail.uri, scopes: ["mail.read"] },
      { resource: calendar.uri, scopes: ["calendar.read"] },
    ]);
    const diary = await exchanged(researcher, { subject_token: subjectToken, resource: calendar.uri });
    const diary2 = await exchanged(writer, { subject_token: diary });
    const letters = await exchanged(researcher, { subject_token: subjectToken, resource: mail.uri });
    const own = await exchanged(planner, { subject_token: subjectToken, resource: calendar.uri });

    await update(researcher, { grants: [{ resource: mail.uri, scopes: ["mail.read", "mail.send"] }] });

    expect(await active(calendar, diary)).toBe(false);
    expect(await active(calendar, diary2)).toBe(false);
    expect(await active(mail, letters)).toBe(true);
    expect(await active(calendar, own)).toBe(true);
    const row = await prisma().delegation.findUniqueOrThrow({ where: { id: delegation.id } });
    expect(row).toMatchObject({ status: "active" });
    expect(await pairsOf(delegation.id)).toEqual([
      `calendar.read on ${calendar.uri}`,
      `mail.read on ${mail.uri}`,
    ]);
  });

  it("taking a delegate from may_delegate_to revokes the tokens it was delegated", async () => {
    const { planner, researcher } = await chainOfAgents();
    const { subjectToken } = await toPlanner(planner);
    const hop = await exchanged(researcher, { subject_token: subjectToken });

    await update(planner, { may_delegate_to: [] });

    expect(await active(mail, hop)).toBe(false);
    // Its own token would otherwise let it carry on by exchanging that.
    expect((await exchange(server, researcher, { subject_token: hop })).status).toBe(400);
  });

  it("widening an agent, or changing what does not bound it, narrows and revokes nothing", async () => {
    const { planner, researcher } = await chainOfAgents();
    const { delegation, subjectToken } = await toPlanner(planner);
    const hop = await exchanged(researcher, { subject_token: subjectToken });
    const before = await prisma().auditEvent.count();

    await update(planner, { max_depth: 4, name: "Planner, renamed", grants: allGrants() });
    await update(researcher, { max_depth: 2 });

    expect(await active(mail, hop)).toBe(true);
    const row = await prisma().delegation.findUniqueOrThrow({ where: { id: delegation.id } });
    expect(row).toMatchObject({ status: "active", maxDepth: 3 });
    expect(await pairsOf(delegation.id)).toEqual([`mail.read on ${mail.uri}`]);
    const added = await prisma().auditEvent.findMany({ skip: before, orderBy: { seq: "asc" } });
    expect(added.map((event) => event.action)).toEqual(["agent.update", "agent.update"]);
  });
});
