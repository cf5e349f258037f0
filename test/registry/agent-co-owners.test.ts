// Co-owners of agents over real HTTP on both databases: set at creation and changed by PATCH, audited with
// before and after; hostile co-owners refused with 400, changing nothing; and offboarding, where an agent with
// another active owner is handed over and keeps authenticating while one without is suspended, needing an owner.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createAgent,
  createPerson,
  createResource,
  delegate,
  exchange,
  introspect,
  type Resource,
} from "../helpers/scenario.ts";
import { BACKENDS, startServer, type TestServer } from "../helpers/server.ts";

type Person = { id: string; email: string };

describe.each(BACKENDS)("agent co-owners on %s", (backend) => {
  let server: TestServer;
  let mail: Resource;

  beforeAll(async () => {
    server = await startServer(backend);
    mail = await createResource(server, "https://mail.co-owners.example", ["mail.read"]);
  });
  afterAll(async () => {
    await server?.close();
  });

  const prisma = () => server.deputy.db.prisma;
  const grants = () => [{ resource: mail.uri, scopes: ["mail.read"] }];
  const emails = (people: { email: string }[]) => people.map((person) => person.email);
  /** The co-owners' emails in an audit event's before or after. */
  const coOwnersIn = (view: unknown) => emails((view as { co_owners: Person[] }).co_owners);
  const auditOf = (clientId: string, action: string) =>
    prisma().auditEvent.findMany({ where: { target: clientId, action }, orderBy: { seq: "asc" } });
  const people = (count: number) => Promise.all(Array.from({ length: count }, () => createPerson(server)));
  const delegateMail = (person: Person, agent: string) =>
    delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
    });

  it("sets co-owners at creation and changes them by PATCH, audited with before and after", async () => {
    const [owner, ann, ben] = (await people(3)) as [Person, Person, Person];
    const agent = await createAgent(server, owner.email, grants(), { co_owners: [ann.email, ben.id] });
    const shown = await server.admin("GET", `/agents/${agent.client_id}`);
    expect(shown.body.owner.email).toBe(owner.email);
    expect(shown.body.co_owners).toEqual([
      { id: ann.id, email: ann.email, name: expect.any(String), status: "active" },
      { id: ben.id, email: ben.email, name: expect.any(String), status: "active" },
    ]);
    const [created] = await auditOf(agent.client_id, "agent.create");
    expect(coOwnersIn(created?.after)).toEqual([ann.email, ben.email]);

    const narrowed = await server.admin("PATCH", `/agents/${agent.client_id}`, {
      co_owners: [ben.email.toUpperCase()],
    });
    expect(narrowed.status, JSON.stringify(narrowed.body)).toBe(200);
    expect(emails(narrowed.body.co_owners)).toEqual([ben.email]);
    const [updated] = await auditOf(agent.client_id, "agent.update");
    expect(coOwnersIn(updated?.before)).toEqual([ann.email, ben.email]);
    expect(coOwnersIn(updated?.after)).toEqual([ben.email]);

    // A co-owner made primary owner stops being a co-owner.
    const promoted = await server.admin("PATCH", `/agents/${agent.client_id}`, { owner: ben.email });
    expect(promoted.status, JSON.stringify(promoted.body)).toBe(200);
    expect(promoted.body.owner.email).toBe(ben.email);
    expect(promoted.body.co_owners).toEqual([]);

    const cleared = await server.admin("PATCH", `/agents/${agent.client_id}`, {
      co_owners: [owner.email, ann.email],
    });
    expect(emails(cleared.body.co_owners)).toEqual([owner.email, ann.email]);
    expect(
      (await server.admin("PATCH", `/agents/${agent.client_id}`, { co_owners: [] })).body.co_owners,
    ).toEqual([]);
    expect(await auditOf(agent.client_id, "agent.update")).toHaveLength(4);
  });

  it("lists by owner the agents a person owns or co-owns, each once", async () => {
    const [owner, ann, ben] = (await people(3)) as [Person, Person, Person];
    const owned = await createAgent(server, ann.email, grants());
    const coOwned = await createAgent(server, owner.email, grants(), { co_owners: [ben.email, ann.email] });
    await createAgent(server, owner.email, grants(), { co_owners: [ben.email] });
    const listed = await server.admin("GET", `/agents?owner=${encodeURIComponent(ann.email.toUpperCase())}`);
    expect(listed.status, JSON.stringify(listed.body)).toBe(200);
    const clientIds = (listed.body.agents as { client_id: string }[]).map((agent) => agent.client_id);
    expect(clientIds).toEqual([owned.client_id, coOwned.client_id]);
    expect(listed.body.agents[1]).toEqual((await server.admin("GET", `/agents/${coOwned.client_id}`)).body);
    const suspended = await server.admin(
      "GET",
      `/agents?status=suspended&owner=${encodeURIComponent(ann.email)}`,
    );
    expect(suspended.body.agents).toEqual([]);
  });

  it("refuses hostile co-owners with 400, changing nothing", async () => {
    const [owner, ann, leaver] = (await people(3)) as [Person, Person, Person];
    expect((await server.admin("POST", `/people/${leaver.email}/offboard`, { reason: "left" })).status).toBe(
      200,
    );
    const agent = await createAgent(server, owner.email, grants(), { co_owners: [ann.email] });
    const before = (await server.admin("GET", `/agents/${agent.client_id}`)).body;
    const agents = await prisma().agent.count();
    const changes = await prisma().auditEvent.count({ where: { type: "admin_change" } });

    const cases: [unknown, RegExp][] = [
      [["nobody@co-owners.example"], /co-owner nobody@co-owners\.example is not a registered person/],
      [[leaver.email], /co-owner .+ is offboarded and cannot own agents/],
      [[owner.email.toUpperCase()], /co-owner .+ is the agent's primary owner/],
      [[owner.id], /co-owner .+ is the agent's primary owner/],
      [[ann.email, ann.email.toUpperCase()], /co-owner .+ is listed twice/],
      [[ann.email, ann.id], /co-owner .+ is listed twice/],
      [[`${ann.email}\u0000`], /co_owners\.0: must not contain control characters/],
      [["a\u0085@co-owners.example"], /co_owners\.0: must not contain control characters/],
      [Array.from({ length: 11 }, (_, i) => `p${i}@co-owners.example`), /co_owners: Too big/],
      [ann.email, /co_owners: Invalid input: expected array/],
      [[42], /co_owners\.0: Invalid input: expected string/],
      [[""], /co_owners\.0: Too small/],
    ];
    for (const [coOwners, message] of cases) {
      const label = JSON.stringify(coOwners);
      const created = await server.admin("POST", "/agents", {
        name: "Hostile",
        owner: owner.email,
        co_owners: coOwners,
        purpose: "testing",
        grants: grants(),
        auth: { method: "client_secret" },
      });
      const patched = await server.admin("PATCH", `/agents/${agent.client_id}`, { co_owners: coOwners });
      for (const response of [created, patched]) {
        expect(response.status, label).toBe(400);
        expect(response.body.error, label).toBe("invalid_request");
        expect(response.body.error_description, label).toMatch(message);
      }
    }
    expect((await server.admin("GET", `/agents/${agent.client_id}`)).body).toEqual(before);
    expect(await prisma().agent.count()).toBe(agents);
    expect(await prisma().auditEvent.count({ where: { type: "admin_change" } })).toBe(changes);
  });

  it("offboarding hands an agent with an active co-owner over; one without is suspended and needs an owner", async () => {
    const [leaver, heir, other, partner, colleague] = (await people(5)) as [
      Person,
      Person,
      Person,
      Person,
      Person,
    ];
    const handed = await createAgent(server, leaver.email, grants(), {
      co_owners: [heir.email, other.email],
    });
    const alone = await createAgent(server, leaver.email, grants());
    const shared = await createAgent(server, partner.email, grants(), {
      co_owners: [leaver.email, heir.email],
    });
    const fromLeaver = await delegateMail(leaver, handed.client_id);
    const fromColleague = await delegateMail(colleague, handed.client_id);
    const toAlone = await delegateMail(colleague, alone.client_id);
    const tokens = await Promise.all([
      exchange(server, handed, { subject_token: fromLeaver.subjectToken }),
      exchange(server, handed, { subject_token: fromColleague.subjectToken }),
      exchange(server, alone, { subject_token: toAlone.subjectToken }),
    ]);
    for (const token of tokens) expect(token.status, JSON.stringify(token.body)).toBe(200);
    const [leaversToken, colleaguesToken, alonesToken] = tokens.map((token) => token.body.access_token);

    const offboarded = await server.admin("POST", `/people/${leaver.email}/offboard`, { reason: "left" });
    expect(offboarded.status, JSON.stringify(offboarded.body)).toBe(200);
    expect(offboarded.body).toMatchObject({
      status: "offboarded",
      revocation: { delegations: 2, tokens: 4 },
      agents_suspended: [alone.client_id],
      agents_handed_over: [handed.client_id, shared.client_id],
    });

    // What the leaver granted is revoked; the handed-over agent keeps what others granted, and authenticates.
    expect(await introspect(server, mail, leaversToken)).toEqual({ active: false });
    expect((await introspect(server, mail, colleaguesToken)).active).toBe(true);
    const again = await exchange(server, handed, { subject_token: fromColleague.subjectToken });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect((await exchange(server, handed, { subject_token: fromLeaver.subjectToken })).status).toBe(400);
    const handedView = (await server.admin("GET", `/agents/${handed.client_id}`)).body;
    expect(handedView).toMatchObject({ status: "active", needs_owner: false, owner: { email: heir.email } });
    expect(emails(handedView.co_owners)).toEqual([other.email]);
    const sharedView = (await server.admin("GET", `/agents/${shared.client_id}`)).body;
    expect(sharedView).toMatchObject({ status: "active", owner: { email: partner.email } });
    expect(emails(sharedView.co_owners)).toEqual([heir.email]);

    // The agent with no other owner is suspended, needs an owner, and is refused.
    expect(await introspect(server, mail, alonesToken)).toEqual({ active: false });
    const refused = await exchange(server, alone, { subject_token: toAlone.subjectToken });
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe("invalid_client");
    expect((await server.admin("GET", `/agents/${alone.client_id}`)).body).toMatchObject({
      status: "suspended",
      needs_owner: true,
      owner: { email: leaver.email },
    });

    const [handover] = await auditOf(handed.client_id, "agent.owner_removed");
    expect(handover).toMatchObject({
      type: "admin_change",
      reason: `owner ${leaver.email} offboarded: left`,
      before: { owner: { email: leaver.email }, status: "active" },
      after: { owner: { email: heir.email }, status: "active" },
    });
    expect(coOwnersIn(handover?.before)).toEqual([heir.email, other.email]);
    expect(coOwnersIn(handover?.after)).toEqual([other.email]);
    const [removed] = await auditOf(shared.client_id, "agent.owner_removed");
    expect(coOwnersIn(removed?.before)).toEqual([leaver.email, heir.email]);
    expect(coOwnersIn(removed?.after)).toEqual([heir.email]);
    expect(await auditOf(alone.client_id, "agent.suspend")).toHaveLength(1);
  });
});
