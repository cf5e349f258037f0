// The audit trail over real HTTP, on both databases: one event shape with the agent's reasoning as its
// unverified claim, a hash chain that stays total under concurrent writers (and two servers sharing
// PostgreSQL), verification that names the first altered / deleted / reordered event, the query API with its
// filters, cursor and counts, streamed NDJSON and CSV exports, and retention with archives and legal holds.

import { existsSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDeputy } from "../../src/app.ts";
import { AUDIT_ARCHIVE_JOB } from "../../src/audit/archive-job.ts";
import { AUDIT_ARCHIVE_EVERY_SECONDS } from "../../src/audit/audit-archive.ts";
import { AUDIT_FIELDS } from "../../src/audit/audit-event.ts";
import { parseFilter } from "../../src/audit/audit-query.ts";
import { verifyEventLines } from "../../src/audit/audit-verify.ts";
import { loadConfig } from "../../src/config.ts";
import { tokenRef } from "../../src/delegation/token-ref.ts";
import { createLogger } from "../../src/logger.ts";
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
import { BACKENDS, prepareEnvironment, startServer, type TestServer } from "../helpers/server.ts";

const DAY = 86_400_000;
const today = () => new Date().toISOString().slice(0, 10);
const dayOffset = (days: number) => new Date(Date.now() + days * DAY).toISOString().slice(0, 10);

describe.each(BACKENDS)("audit trail on %s", (backend) => {
  let server: TestServer;
  let sarah: { id: string; email: string };
  let bob: { id: string; email: string };
  let customers: Resource;
  let mail: Resource;
  let crm: Agent;
  let helper: Agent;
  /** Sarah's and Bob's delegations: the one id and task each of their events carries. */
  let sarahs: { id: string; taskId: string };
  let bobs: { id: string; taskId: string };

  beforeAll(async () => {
    server = await startServer(backend, { DEPUTY_AUDIT_HOT_DAYS: "30" });
    sarah = await createPerson(server, `sarah.${backend}@example.com`);
    bob = await createPerson(server);
    customers = await createResource(server, "https://customers.example.com", [
      "customers.read",
      "customers.write",
    ]);
    mail = await createResource(server, "https://mail.example.com", ["mail.read"]);
    helper = await createAgent(server, sarah.email, [
      { resource: customers.uri, scopes: ["customers.read"] },
    ]);
    crm = await createAgent(
      server,
      sarah.email,
      [
        { resource: customers.uri, scopes: ["customers.read", "customers.write"] },
        { resource: mail.uri, scopes: ["mail.read"] },
      ],
      { may_delegate_to: [helper.client_id], max_depth: 2 },
    );

    const forSarah = await delegate(server, {
      personId: sarah.id,
      personEmail: sarah.email,
      agent: crm.client_id,
      grants: [
        { resource: customers.uri, scopes: ["customers.read"] },
        { resource: mail.uri, scopes: ["mail.read"] },
      ],
      taskId: `renewals-${backend}`,
    });
    sarahs = { id: forSarah.delegation.id, taskId: `renewals-${backend}` };
    const first = await exchange(server, crm, {
      subject_token: forSarah.subjectToken,
      resource: customers.uri,
      reasoning: "Sarah asked for the renewal list of Q4 customers",
    });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    const second = await exchange(server, helper, { subject_token: first.body.access_token });
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    expect(
      (await exchange(server, crm, { subject_token: forSarah.subjectToken, resource: mail.uri })).status,
    ).toBe(200);
    const refused = await exchange(server, crm, {
      subject_token: forSarah.subjectToken,
      resource: customers.uri,
      scope: "customers.write",
    });
    expect(refused.status).toBe(400);

    const forBob = await delegate(server, {
      personId: bob.id,
      personEmail: bob.email,
      agent: crm.client_id,
      grants: [{ resource: customers.uri, scopes: ["customers.read"] }],
      taskId: `bobs-task-${backend}`,
    });
    bobs = { id: forBob.delegation.id, taskId: `bobs-task-${backend}` };
    expect((await exchange(server, crm, { subject_token: forBob.subjectToken })).status).toBe(200);
  });
  afterAll(async () => {
    await server?.close();
  });

  const query = (params: Record<string, string>) =>
    server.admin("GET", `/audit?${new URLSearchParams(params)}`);
  const sql = <T = Record<string, unknown>>(text: string, params?: unknown[]) =>
    server.deputy.db.sql.query<T>(text, params);
  const verify = async () => {
    const { status, body } = await server.admin("GET", "/audit/verify");
    expect(status, JSON.stringify(body)).toBe(200);
    return body;
  };

  it("keeps one total hash chain while many requests write at once", async () => {
    const { audit } = server.deputy;
    const writes = [
      ...Array.from({ length: 150 }, (_, i) =>
        audit.commit({ actor: "load" }, { action: "token.exchange", details: { i } }),
      ),
      ...Array.from({ length: 10 }, (_, i) =>
        audit.record({ actor: "load" }, { action: "agent.update", details: { i } }),
      ),
    ];
    await Promise.all(writes);
    // A change rolled back after its event was appended: the next append must not link to that event.
    await expect(
      server.deputy.db.prisma.$transaction(async (tx) => {
        await audit.record({ actor: "load" }, { action: "agent.owner_removed" }, tx);
        throw new Error("the change failed");
      }),
    ).rejects.toThrow("the change failed");
    await audit.commit({ actor: "load" }, { action: "token.exchange" });
    expect(await server.deputy.db.prisma.auditEvent.count({ where: { action: "agent.owner_removed" } })).toBe(
      0,
    );
    const rows = await sql<{ seq: string; prev_hash: string | null; hash: string | null }>(
      "SELECT seq::text AS seq, prev_hash, hash FROM audit_events ORDER BY audit_events.seq",
    );
    expect(rows.length).toBeGreaterThan(160);
    expect(rows[0]?.prev_hash).toBeNull();
    for (let i = 1; i < rows.length; i++) {
      expect(rows[i]?.hash).toMatch(/^[0-9a-f]{64}$/);
      expect(rows[i]?.prev_hash, `seq ${rows[i]?.seq}`).toBe(rows[i - 1]?.hash);
    }
    const report = await verify();
    expect(report).toMatchObject({ ok: true, checked: { events: rows.length, archives: 0 } });
    expect(report.head.seq).toBe(Number(rows.at(-1)?.seq));
  });

  it("records an exchange with both identities and the agent's reasoning as its unverified claim", async () => {
    // (Other exchange events, such as the policy's drift notices, carry other actions.)
    const { body } = await query({ agent: helper.client_id, action: "token.exchange" });
    expect(body.events).toHaveLength(1);
    expect(body.events[0]).toMatchObject({
      type: "exchange",
      action: "token.exchange",
      decision: "allow",
      delegated_by: sarah.email,
      agent_chain: [helper.client_id, crm.client_id],
      resource: customers.uri,
      scopes_granted: ["customers.read"],
      agent_claim: null,
    });
    const withClaim = (
      await query({ agent: crm.client_id, action: "token.exchange", resource: customers.uri })
    ).body.events;
    expect(withClaim.map((event: any) => event.agent_claim)).toContain(
      "Sarah asked for the renewal list of Q4 customers",
    );

    // Control characters are dropped, and a long claim is cut, visibly.
    const delegation = await delegate(server, {
      personId: sarah.id,
      personEmail: sarah.email,
      agent: crm.client_id,
      grants: [{ resource: customers.uri, scopes: ["customers.read"] }],
    });
    const long = `Because\u0000 \u0007I was asked.\n${"x".repeat(5000)}`;
    const done = await exchange(server, crm, { subject_token: delegation.subjectToken, reasoning: long });
    expect(done.status).toBe(200);
    const [event] = await server.deputy.db.prisma.auditEvent.findMany({
      where: { delegationId: delegation.delegation.id, type: "exchange" },
    });
    expect(event?.agentClaim?.startsWith("Because I was asked.\nxxx")).toBe(true);
    expect(event?.agentClaim?.length).toBe(2000);
    expect(event?.agentClaim?.endsWith("[truncated]")).toBe(true);
    // A reasoning parameter sent twice is refused like any other repeated parameter.
    const twice = await exchange(server, crm, {
      subject_token: delegation.subjectToken,
      reasoning: ["a", "b"],
    });
    expect(twice.status).toBe(400);
  });

  it("records introspection refusals, with both identities when the token is one Deputy issued", async () => {
    const { delegation, subjectToken } = await delegate(server, {
      personId: bob.id,
      personEmail: bob.email,
      agent: crm.client_id,
      grants: [{ resource: customers.uri, scopes: ["customers.read"] }],
    });
    const token = (await exchange(server, crm, { subject_token: subjectToken })).body.access_token;
    // Not meant for mail, and not a token at all: both refused.
    expect(await introspect(server, mail, token)).toEqual({ active: false });
    expect(await introspect(server, customers, "not-a-token-at-all")).toEqual({ active: false });
    const bad = await postForm(
      `${server.url}/token/introspection`,
      { token },
      { authorization: basicAuth(customers.client_id, "wrong") },
    );
    expect(bad.status).toBe(401);

    const deadline = Date.now() + 5_000;
    let events: any[] = [];
    while (events.length < 3 && Date.now() < deadline) {
      events = (await query({ type: "introspection", order: "desc", limit: "3" })).body.events.reverse();
      if (events.length < 3) await sleep(50);
    }
    expect(events).toHaveLength(3);
    // Refusals are recorded without holding the response: their order in the trail may differ.
    const by = (actor: string) => events.find((event) => event.actor === actor);
    expect(by(mail.client_id)).toMatchObject({
      action: "token.introspect",
      decision: "deny",
      delegated_by: bob.email,
      agent_chain: [crm.client_id],
      resource: customers.uri,
      delegation_id: delegation.id,
      details: { token_ref: tokenRef(token), expired: false, revoked: false },
    });
    expect(by(mail.client_id).reason).toMatch(/^inactive/);
    expect(by(customers.client_id)).toMatchObject({ delegated_by: null, agent_chain: [], details: null });
    expect(by("unauthenticated")).toMatchObject({
      decision: "deny",
      details: { claimed_client_id: customers.client_id },
    });
    expect(by("unauthenticated").reason).toMatch(/^invalid_client/);
  });

  it("records admin-API tokens before they leave, and refused client authentication, never the token", async () => {
    const since = (await query({ order: "desc", limit: "1" })).body.events[0].seq;
    const token = await server.adminToken();
    const wrong = await postForm(
      `${server.url}/token`,
      { grant_type: "client_credentials", scope: "deputy:admin" },
      { authorization: basicAuth("deputy-admin", "not-the-secret") },
    );
    expect(wrong.status).toBe(401);
    const deadline = Date.now() + 5_000;
    let events: any[] = [];
    while (events.length < 2 && Date.now() < deadline) {
      events = (await query({ type: "login", action: "client_credentials.issue" })).body.events.filter(
        (event: any) => event.seq > since,
      );
      if (events.length < 2) await sleep(50);
    }
    const allowed = events.find((event) => event.decision === "allow");
    expect(allowed).toMatchObject({ actor: "deputy-admin", scopes_granted: ["deputy:admin"] });
    const denied = events.find((event) => event.decision === "deny");
    expect(denied).toMatchObject({
      actor: "unauthenticated",
      details: { claimed_client_id: "deputy-admin" },
    });
    expect(denied.reason).toMatch(/^invalid_client/);
    const everything = JSON.stringify(await sql("SELECT * FROM audit_events"));
    expect(everything).not.toContain(token);
  });

  it("answers: customer data accessed by agents on behalf of Sarah in a time range", async () => {
    const { status, body } = await query({
      delegated_by: sarah.email.toUpperCase(),
      resource: "customers*",
      type: "exchange",
      from: dayOffset(-1),
      to: today(),
    });
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body.events.length).toBeGreaterThanOrEqual(4);
    for (const event of body.events) {
      expect(event.delegated_by).toBe(sarah.email);
      expect(event.resource).toBe(customers.uri);
      expect(Object.keys(event)).toEqual([...AUDIT_FIELDS]);
    }
    expect(body.events.map((e: any) => e.decision)).toContain("deny");
    expect(body.next_cursor).toBeNull();

    // The full URI, a wildcard in the middle, and one resource among several recorded on a delegation.
    expect(
      (await query({ delegated_by: sarah.email, resource: customers.uri, type: "exchange" })).body.events,
    ).toHaveLength(body.events.length);
    expect((await query({ resource: "https://cust*.example.com" })).body.events.length).toBeGreaterThan(0);
    const consent = await query({ delegated_by: sarah.email, resource: "mail.example.com", type: "consent" });
    expect(consent.body.events.length).toBeGreaterThan(0);
    expect(consent.body.events[0].resource).toContain(" ");
    // Nothing outside the range, and nobody else's.
    expect((await query({ delegated_by: sarah.email, from: dayOffset(1) })).body.events).toEqual([]);
    expect((await query({ delegated_by: sarah.email, to: dayOffset(-1) })).body.events).toEqual([]);
    const bobs = (await query({ delegated_by: bob.email, resource: "customers*", action: "token.exchange" }))
      .body.events;
    expect(bobs.length).toBeGreaterThan(0);
    for (const event of bobs) expect(event.agent_chain).toEqual([crm.client_id]);
  });

  it("filters by agent anywhere in the chain, action, decision and type", async () => {
    const asHelper = (await query({ agent: helper.client_id })).body.events;
    expect(asHelper.length).toBeGreaterThan(0);
    for (const event of asHelper) expect(event.agent_chain).toContain(helper.client_id);
    const inChain = (await query({ agent: crm.client_id, type: "exchange" })).body.events;
    expect(inChain.some((e: any) => e.agent_chain[0] === helper.client_id)).toBe(true);
    const denied = (await query({ decision: "deny", type: "exchange" })).body.events;
    expect(denied.length).toBeGreaterThan(0);
    for (const event of denied) expect(event.reason).toMatch(/invalid_scope/);
    const actions = (await query({ action: "subject_token.*" })).body.events;
    expect(actions.length).toBeGreaterThan(0);
    for (const event of actions) expect(event.action).toBe("subject_token.issue");
    const types = (await query({ type: "consent,admin_change", limit: "1000" })).body.events;
    expect(new Set(types.map((e: any) => e.type))).toEqual(new Set(["consent", "admin_change"]));
  });

  it("filters by delegation and by task: exactly that one's events, in queries, counts and exports", async () => {
    const seqs = async (column: string, value: string) =>
      (
        await sql<{ seq: string }>(`SELECT seq::text FROM audit_events WHERE ${column} = $1 ORDER BY seq`, [
          value,
        ])
      ).map((row) => Number(row.seq));
    for (const [param, column, mine, theirs] of [
      ["delegation_id", "delegation_id", sarahs.id, bobs.id],
      ["task_id", "task_id", sarahs.taskId, bobs.taskId],
    ] as const) {
      const { status, body } = await query({ [param]: mine, limit: "1000" });
      expect(status, JSON.stringify(body)).toBe(200);
      const expected = await seqs(column, mine);
      expect(expected.length).toBeGreaterThanOrEqual(4);
      expect(body.events.map((e: any) => e.seq)).toEqual(expected);
      for (const event of body.events) expect(event[param]).toBe(mine);
      expect(body.events.map((e: any) => e.action)).toContain("token.exchange");
      // Nobody else's: Bob's delegation has its own, disjoint events.
      const other = (await query({ [param]: theirs, limit: "1000" })).body.events;
      expect(other.map((e: any) => e.seq)).toEqual(await seqs(column, theirs));
      expect(other.length).toBeGreaterThan(0);
      for (const event of other) expect(event.delegated_by).toBe(bob.email);
      // Combined with the other filters, counted, and exported alike.
      const exchanges = (await query({ [param]: mine, type: "exchange" })).body.events;
      expect(exchanges.length).toBeGreaterThan(0);
      for (const event of exchanges) expect(event).toMatchObject({ [param]: mine, type: "exchange" });
      const stats = await query({ [param]: mine, stats_by: "delegated_by" });
      expect(stats.status, JSON.stringify(stats.body)).toBe(200);
      expect(stats.body.total).toBe(expected.length);
      expect(stats.body.groups).toEqual([{ delegated_by: sarah.email, count: expected.length }]);
      const exported = await fetch(
        `${server.url}/admin/v1/audit/export?${new URLSearchParams({ [param]: mine })}`,
        {
          headers: { authorization: `Bearer ${await server.adminToken()}` },
        },
      );
      expect(exported.status).toBe(200);
      const lines = (await exported.text()).trimEnd().split("\n");
      expect(lines.map((line) => JSON.parse(line).seq)).toEqual(expected);
    }
    expect((await query({ delegation_id: "00000000-0000-4000-8000-000000000000" })).body.events).toEqual([]);
    expect((await query({ task_id: sarahs.taskId.toUpperCase() })).body.events).toEqual([]);
  });

  it("counts by agent, action and resource", async () => {
    const { status, body } = await query({
      delegated_by: sarah.email,
      resource: "customers*",
      action: "token.exchange",
      stats_by: "agent,action,resource",
    });
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body.stats_by).toEqual(["agent", "action", "resource"]);
    const byAgent = Object.fromEntries(body.groups.map((g: any) => [g.agent, g.count]));
    expect(byAgent[helper.client_id]).toBe(1);
    expect(byAgent[crm.client_id]).toBeGreaterThanOrEqual(3);
    expect(body.total).toBe(body.groups.reduce((sum: number, g: any) => sum + g.count, 0));
    for (const group of body.groups)
      expect(group).toMatchObject({ action: "token.exchange", resource: customers.uri });
  });

  it("pages through results with an opaque cursor, in either order", async () => {
    const all = (await query({ type: "exchange,consent", limit: "1000" })).body.events.map((e: any) => e.seq);
    for (const order of ["asc", "desc"] as const) {
      const seen: number[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const params: Record<string, string> = { type: "exchange,consent", limit: "3", order };
        if (cursor) params.cursor = cursor;
        const { status, body } = await query(params);
        expect(status, JSON.stringify(body)).toBe(200);
        expect(body.events.length).toBeLessThanOrEqual(3);
        seen.push(...body.events.map((e: any) => e.seq));
        cursor = body.next_cursor;
        pages++;
      } while (cursor && pages < 100);
      expect(seen).toEqual(order === "asc" ? all : [...all].reverse());
    }
  });

  it.each([
    [{ from: "2026-13-01" }, /^from: "2026-13-01" is not a valid date; use YYYY-MM-DD/],
    [{ to: "2026-02-30" }, /^to: "2026-02-30" is not a valid date/],
    [{ from: "yesterday" }, /^from: "yesterday" is not a valid date/],
    [{ from: "2026-10-01T10:00:00" }, /^from: .* with a time zone/],
    [{ from: "2026-12-31", to: "2026-10-01" }, /^from \(2026-12-31\) must be before to \(2026-10-01\)/],
    [{ decision: "maybe" }, /^decision: must be allow or deny/],
    [{ type: "exchange,telepathy" }, /^type: unknown telepathy \(known: exchange, introspection/],
    [{ delegated_by: "sarah" }, /^delegated_by: "sarah" is not an email address/],
    [{ limit: "0" }, /^limit: a whole number from 1 to 1000/],
    [{ limit: "5000" }, /^limit: a whole number from 1 to 1000/],
    [{ cursor: "not-a-cursor" }, /^cursor: not a cursor this server returned/],
    [{ order: "sideways" }, /^order: asc/],
    [{ stats_by: "colour" }, /^stats_by: unknown colour \(known: agent, action, resource/],
    [{ stats_by: "agent", limit: "5" }, /^stats_by counts every match: drop limit/],
    [{ person: "sarah@example.com" }, /^unknown parameter person \(known: delegated_by, agent/],
    [{ agent: "" }, /^agent: must not be empty/],
    [{ delegation_id: "d".repeat(201) }, /^delegation_id: at most 200 characters/],
    [{ task_id: "t".repeat(201) }, /^task_id: at most 200 characters/],
    [{ task_id: "" }, /^task_id: must not be empty/],
  ])("refuses %o with 400 and says why", async (params, message) => {
    const { status, body } = await query(params as Record<string, string>);
    expect(status).toBe(400);
    expect(body.error).toBe("invalid_request");
    expect(body.error_description).toMatch(message);
  });

  it("refuses a delegation or task id with a control character, wherever the filter comes from", async () => {
    for (const hostile of [{ delegation_id: "a\u0000b" }, { task_id: "task\u0000" }] as Record<
      string,
      string
    >[])
      expect((await query(hostile)).status).toBe(400);
    // Over HTTP the query string is refused first (NUL and the rest never reach a handler); the filter refuses
    // them itself too.
    for (const [values, message] of [
      [{ delegation_id: "a\u0000b" }, "delegation_id: must not contain control characters"],
      [{ task_id: "task\u0000" }, "task_id: must not contain control characters"],
      [{ task_id: "t\u001b[31m" }, "task_id: must not contain control characters"],
    ] as const) {
      expect(() => parseFilter(values)).toThrow(message);
    }
    expect(parseFilter({ delegation_id: " d-1 ", task_id: "t-1" })).toEqual({
      delegationId: "d-1",
      taskId: "t-1",
    });
  });

  it("refuses a parameter given twice, and a cursor from the other order", async () => {
    const twice = await server.admin("GET", "/audit?agent=a&agent=b");
    expect(twice.status).toBe(400);
    expect(twice.body.error_description).toBe("agent: give it once");
    const { body } = await query({ limit: "1" });
    const mixed = await query({ limit: "1", order: "desc", cursor: body.next_cursor });
    expect(mixed.status).toBe(400);
    expect(mixed.body.error_description).toMatch(/order=asc/);
  });

  it("exports NDJSON and CSV as streams, with the documented fields and the same filters", async () => {
    const filter = { delegated_by: sarah.email, resource: "customers*", type: "exchange" };
    const expected = (await query(filter)).body.events;
    const token = await server.adminToken();
    const get = (params: Record<string, string>) =>
      fetch(`${server.url}/admin/v1/audit/export?${new URLSearchParams(params)}`, {
        headers: { authorization: `Bearer ${token}` },
      });

    const ndjson = await get({ ...filter, format: "ndjson" });
    expect(ndjson.status).toBe(200);
    expect(ndjson.headers.get("content-type")).toBe("application/x-ndjson; charset=utf-8");
    expect(ndjson.headers.get("transfer-encoding")).toBe("chunked");
    expect(ndjson.headers.get("content-disposition")).toMatch(
      /^attachment; filename="deputy-audit-.*\.ndjson"$/,
    );
    const lines = (await ndjson.text())
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(lines).toEqual(expected);

    const csv = await get({ ...filter, format: "csv" });
    expect(csv.headers.get("content-type")).toBe("text/csv; charset=utf-8");
    const rows = (await csv.text()).split("\r\n").filter(Boolean);
    expect(rows[0]).toBe(AUDIT_FIELDS.join(","));
    expect(rows).toHaveLength(expected.length + 1);
    expect(rows[1]).toContain(`,${sarah.email},`);
    expect(rows.join("\n")).toContain(`,${helper.client_id} ${crm.client_id},`);

    // The whole trail, exported, verifies on its own.
    const everything = await (await get({})).text();
    const offline = await verifyEventLines(Readable.from(everything.split("\n")));
    expect(offline).toMatchObject({ ok: true });
    expect(offline.events).toBe(everything.trimEnd().split("\n").length);

    const bad = await get({ format: "xml" });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).error_description).toBe("format: ndjson or csv");
    const badDate = await get({ from: "2026-99-01" });
    expect(badDate.status).toBe(400);
  });

  it("verify names the first altered, deleted or reordered event", async () => {
    expect(await verify()).toMatchObject({ ok: true });
    const rows = await sql<{ seq: string; id: string }>(
      "SELECT seq::text, id::text FROM audit_events ORDER BY seq",
    );
    const pick = (index: number) => rows[index] as { seq: string; id: string };
    const [a, b, c] = [pick(5), pick(9), pick(10)];
    await sql("CREATE TABLE audit_backup AS SELECT * FROM audit_events");
    const restore = async () => {
      await sql("DELETE FROM audit_events");
      await sql("INSERT INTO audit_events SELECT * FROM audit_backup");
      expect(await verify()).toMatchObject({ ok: true });
    };
    try {
      // Altered: one field of one row changed with raw SQL.
      await sql("UPDATE audit_events SET reason = 'nothing to see' WHERE seq = $1::bigint", [a.seq]);
      let report = await verify();
      expect(report).toMatchObject({
        ok: false,
        first_bad: { seq: Number(a.seq), id: a.id, location: "database" },
      });
      expect(report.first_bad.problem).toMatch(/altered/);
      await restore();

      // Deleted: the next event no longer follows the one before it.
      await sql("DELETE FROM audit_events WHERE seq = $1::bigint", [b.seq]);
      report = await verify();
      expect(report).toMatchObject({ ok: false, first_bad: { seq: Number(c.seq), id: c.id } });
      expect(report.first_bad.problem).toMatch(/does not follow the event before it .*deleted/);
      await restore();

      // Reordered: two rows' content (hashes included) swapped.
      const columns = (
        await sql<{ column_name: string }>(
          "SELECT column_name FROM information_schema.columns WHERE table_name = 'audit_events' AND column_name <> 'seq'",
        )
      ).map((row) => `"${row.column_name}"`);
      const assign = (from: string) =>
        `(${columns.join(", ")}) = (SELECT ${columns.join(", ")} FROM audit_backup WHERE seq = ${from}::bigint)`;
      await sql("UPDATE audit_events SET id = gen_random_uuid() WHERE seq = $1::bigint", [a.seq]);
      await sql(`UPDATE audit_events SET ${assign("$2")} WHERE seq = $1::bigint`, [b.seq, a.seq]);
      await sql(`UPDATE audit_events SET ${assign("$2")} WHERE seq = $1::bigint`, [a.seq, b.seq]);
      report = await verify();
      expect(report).toMatchObject({ ok: false, first_bad: { seq: Number(a.seq), id: b.id } });
      await restore();

      // Stripped: a hash removed is not mistaken for an event from before the chain.
      await sql("UPDATE audit_events SET hash = NULL WHERE seq = $1::bigint", [c.seq]);
      report = await verify();
      expect(report.first_bad).toMatchObject({
        seq: Number(c.seq),
        problem: expect.stringMatching(/no hash/),
      });
      await restore();

      // Truncated at the end: only an anchor noted earlier can tell.
      const head = (await verify()).head;
      await sql("DELETE FROM audit_events WHERE seq = $1::bigint", [head.seq]);
      expect(await verify()).toMatchObject({ ok: true });
      const anchored = await server.admin("GET", `/audit/verify?anchor=${head.seq}:${head.hash}`);
      expect(anchored.body).toMatchObject({
        ok: false,
        first_bad: { seq: head.seq, problem: expect.stringMatching(/removed from the end/) },
      });
      await restore();
      expect((await server.admin("GET", `/audit/verify?anchor=${head.seq}:${head.hash}`)).body.ok).toBe(true);
      expect((await server.admin("GET", "/audit/verify?anchor=5")).status).toBe(400);
    } finally {
      await sql("DROP TABLE IF EXISTS audit_backup");
    }
  });

  it("archives old events to gzip NDJSON with a manifest, verifies across them, and obeys legal holds", async () => {
    const { auditTrail, db } = server.deputy;
    const later = new Date(Date.now() + 31 * DAY);
    await Promise.all(
      Array.from({ length: 150 }, (_, i) =>
        server.deputy.audit.commit({ actor: "old" }, { action: "token.exchange", details: { i } }),
      ),
    );
    const countBefore = await db.prisma.auditEvent.count();

    const hold = await server.admin("POST", "/audit/holds", { reason: "Litigation 2026-17" });
    expect(hold.status, JSON.stringify(hold.body)).toBe(201);
    expect(hold.body).toMatchObject({
      reason: "Litigation 2026-17",
      active: true,
      created_by: "deputy-admin",
    });
    const held = await auditTrail.archive(undefined, { now: later });
    expect(held).toMatchObject({ held_by: [{ id: hold.body.id }], archives: [], archived_events: 0 });
    expect(await db.prisma.auditEvent.count()).toBe(countBefore + 1);
    expect(existsSync(auditTrail.settings.archiveDir)).toBe(false);
    expect((await server.admin("POST", "/audit/archive")).body.held_by).toHaveLength(1);

    const released = await server.admin("POST", `/audit/holds/${hold.body.id}/release`);
    expect(released.body).toMatchObject({ active: false, released_at: expect.any(String) });
    expect((await server.admin("POST", `/audit/holds/${hold.body.id}/release`)).status).toBe(409);
    expect(
      (await server.admin("POST", "/audit/holds/00000000-0000-0000-0000-000000000000/release")).status,
    ).toBe(404);
    const holdEvents = (await query({ action: "audit.hold.*" })).body.events;
    expect(holdEvents.map((e: any) => e.action)).toEqual(["audit.hold.place", "audit.hold.release"]);

    const toArchive = await db.prisma.auditEvent.count();
    const result = await auditTrail.archive(undefined, { now: later, eventsPerFile: 100 });
    expect(result.held_by).toEqual([]);
    expect(result.archived_events).toBe(toArchive);
    expect(result.archives.length).toBe(Math.ceil(toArchive / 100));
    // Only what the run itself wrote (one audit.archive event per file) is left.
    const left = await db.prisma.auditEvent.findMany({ orderBy: { seq: "asc" } });
    expect(left.map((e) => e.action)).toEqual(result.archives.map(() => "audit.archive"));

    const dir = auditTrail.settings.archiveDir;
    const manifest = JSON.parse(readFileSync(path.join(dir, "manifest.json"), "utf8"));
    expect(manifest.archives).toEqual(result.archives);
    const files = readdirSync(dir).filter((name) => name.endsWith(".ndjson.gz"));
    expect(files.sort()).toEqual(result.archives.map((a) => a.file).sort());
    const firstFile = gunzipSync(readFileSync(path.join(dir, result.archives[0]?.file ?? "")))
      .toString()
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(firstFile).toHaveLength(100);
    expect(Object.keys(firstFile[0])).toEqual([...AUDIT_FIELDS]);
    expect(firstFile[0].prev_hash).toBe(result.archives[0]?.first_prev_hash);
    expect(firstFile.at(-1).hash).toBe(result.archives[0]?.last_hash);

    // The chain runs on from the last archive into the database, also for events written afterwards.
    await server.deputy.audit.commit({ actor: "after" }, { action: "token.exchange" });
    let report = await verify();
    expect(report).toMatchObject({
      ok: true,
      checked: { archives: result.archives.length, archived_events: toArchive, events: left.length + 1 },
    });
    // Queries read the archives too.
    const sarahs = await query({ delegated_by: sarah.email, from: dayOffset(-1) });
    expect(sarahs.body.events.length).toBeGreaterThan(0);
    const listed = await server.admin("GET", "/audit/archives");
    expect(listed.body).toMatchObject({
      archives: result.archives,
      settings: { hot_days: 30, archive_dir: dir },
    });

    // An archive file altered, or missing, is named.
    const victim = path.join(dir, result.archives[1]?.file ?? "");
    const original = readFileSync(victim);
    writeFileSync(victim, Buffer.concat([original, Buffer.from([0])]));
    report = await verify();
    expect(report).toMatchObject({
      ok: false,
      first_bad: { seq: result.archives[1]?.from_seq, location: `archive ${result.archives[1]?.file}` },
    });
    expect(report.first_bad.problem).toMatch(/altered: its sha-256/);
    renameSync(victim, `${victim}.away`);
    expect((await verify()).first_bad.problem).toMatch(/missing/);
    renameSync(`${victim}.away`, victim);
    writeFileSync(victim, original);
    expect((await verify()).ok).toBe(true);

    // The first event after the archives removed: the chain no longer continues from them.
    const [firstHot] = left;
    await db.prisma.auditEvent.delete({ where: { seq: firstHot?.seq } });
    report = await verify();
    expect(report.first_bad).toMatchObject({ seq: Number(left[1]?.seq), location: "database" });
  });

  it("answers the auditor's question from archived and hot events alike: pages, counts and exports", async () => {
    const question = { delegated_by: sarah.email, resource: "customers*", from: dayOffset(-1), to: today() };
    const exchangesForSarah = async (count: number) => {
      const { subjectToken } = await delegate(server, {
        personId: sarah.id,
        personEmail: sarah.email,
        agent: crm.client_id,
        grants: [{ resource: customers.uri, scopes: ["customers.read"] }],
      });
      for (let i = 0; i < count; i++)
        expect((await exchange(server, crm, { subject_token: subjectToken })).status).toBe(200);
    };
    await exchangesForSarah(2);
    const soonArchived = (await query({ ...question, limit: "1000" })).body.events;
    expect(soonArchived.length).toBeGreaterThan(4);
    // Every kind of condition, answered from the database now and from the archive files below.
    const filters: Record<string, string>[] = [
      { agent: crm.client_id, action: "token.*", decision: "allow" },
      { resource: "https://CUST*.example.com", type: "exchange,consent" },
      { delegated_by: sarah.email, resource: "mail.example.com", to: today() },
      { delegation_id: sarahs.id },
      { task_id: sarahs.taskId, type: "exchange" },
    ];
    const answered = async () =>
      Promise.all(filters.map(async (filter) => (await query({ ...filter, limit: "1000" })).body.events));
    const fromDatabase = await answered();
    for (const events of fromDatabase) expect(events.length).toBeGreaterThan(0);
    const run = await server.deputy.auditTrail.archive(undefined, {
      now: new Date(Date.now() + 31 * DAY),
      eventsPerFile: 3,
    });
    expect(run.archives.length).toBeGreaterThan(1);
    await exchangesForSarah(3);
    const hot = await sql<{ seq: string }>(
      `SELECT seq::text FROM audit_events WHERE delegated_by = $1 AND $2 = ANY(string_to_array(resource, ' '))
        ORDER BY seq`,
      [sarah.email, customers.uri],
    );
    expect(hot.length).toBeGreaterThanOrEqual(3);
    const expected = [...soonArchived.map((e: any) => e.seq), ...hot.map((row) => Number(row.seq))];

    // Pages of 3, in either order, cross from the archives into the database (and back).
    let events: any[] = [];
    for (const order of ["asc", "desc"] as const) {
      const seen: any[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const params: Record<string, string> = { ...question, limit: "3", order };
        if (cursor) params.cursor = cursor;
        const { status, body } = await query(params);
        expect(status, JSON.stringify(body)).toBe(200);
        seen.push(...body.events);
        cursor = body.next_cursor;
        pages++;
      } while (cursor && pages < 100);
      expect(seen.map((e) => e.seq)).toEqual(order === "asc" ? expected : [...expected].reverse());
      if (order === "asc") events = seen;
    }
    expect(events.slice(0, soonArchived.length)).toEqual(soonArchived);
    const fromArchives = await answered();
    fromDatabase.forEach((before, i) => {
      expect(fromArchives[i]?.slice(0, before.length), JSON.stringify(filters[i])).toEqual(before);
    });
    // A delegation's and a task's events, all archived now, are still exactly theirs, and counted.
    expect(
      await sql("SELECT 1 FROM audit_events WHERE delegation_id = $1 OR task_id = $2", [
        sarahs.id,
        sarahs.taskId,
      ]),
    ).toEqual([]);
    expect(fromArchives[3]).toEqual(fromDatabase[3]);
    expect(fromArchives[4]).toEqual(fromDatabase[4]);
    for (const [filter, answer] of [
      [filters[3], fromArchives[3]],
      [filters[4], fromArchives[4]],
    ] as const) {
      const counted = await query({ ...filter, stats_by: "type" });
      expect(counted.status, JSON.stringify(counted.body)).toBe(200);
      expect(counted.body.total).toBe(answer?.length);
    }
    for (const event of events) expect(Object.keys(event)).toEqual([...AUDIT_FIELDS]);

    // Counts include the archived events.
    const stats = await query({ ...question, stats_by: "agent,action,resource" });
    expect(stats.status, JSON.stringify(stats.body)).toBe(200);
    expect(stats.body.total).toBe(expected.length);
    const counted = new Map<string, number>();
    for (const e of events) {
      const key = JSON.stringify([e.agent_chain[0] ?? null, e.action, e.resource]);
      counted.set(key, (counted.get(key) ?? 0) + 1);
    }
    expect(
      Object.fromEntries(
        stats.body.groups.map((g: any) => [JSON.stringify([g.agent, g.action, g.resource]), g.count]),
      ),
    ).toEqual(Object.fromEntries(counted));

    // So does the export.
    const exported = await fetch(`${server.url}/admin/v1/audit/export?${new URLSearchParams(question)}`, {
      headers: { authorization: `Bearer ${await server.adminToken()}` },
    });
    expect(exported.status).toBe(200);
    const lines = (await exported.text()).trimEnd().split("\n");
    expect(lines.map((line) => JSON.parse(line))).toEqual(events);
  });

  it("refuses to answer from an archive file that is missing or altered, naming it", async () => {
    const question = { delegated_by: sarah.email, resource: "customers*", from: dayOffset(-1), to: today() };
    const [first] = (await query(question)).body.events;
    const { archives } = (await server.admin("GET", "/audit/archives")).body;
    const archive = archives.find((a: any) => a.from_seq <= first.seq && first.seq <= a.to_seq);
    expect(archive).toBeDefined();
    const file = path.join(server.deputy.auditTrail.settings.archiveDir, archive.file);
    const original = readFileSync(file);
    const refused = async (problem: RegExp) => {
      for (const params of [question, { ...question, stats_by: "agent" }]) {
        const { status, body } = await query(params);
        expect(status, JSON.stringify(body)).toBe(500);
        expect(body.error).toBe("archive_integrity");
        expect(body.error_description).toContain(`audit archive ${archive.file}`);
        expect(body.error_description).toMatch(problem);
      }
      const exported = await fetch(`${server.url}/admin/v1/audit/export?${new URLSearchParams(question)}`, {
        headers: { authorization: `Bearer ${await server.adminToken()}` },
      });
      expect(exported.status).toBe(500);
    };
    try {
      writeFileSync(file, Buffer.concat([original, Buffer.from([0])]));
      await refused(/was altered: its sha-256 is not the one recorded/);
      renameSync(file, `${file}.away`);
      await refused(/is missing from /);
    } finally {
      if (existsSync(`${file}.away`)) renameSync(`${file}.away`, file);
      writeFileSync(file, original);
    }
    expect((await query(question)).body.events[0]).toEqual(first);
  });
});

describe("audit retention as a BullMQ job", () => {
  it("is scheduled hourly next to the revocation sweep, and runs", async () => {
    const server = await startServer("pglite", { DEPUTY_AUDIT_HOT_DAYS: "0" });
    try {
      const { queue } = server.deputy.jobs;
      const deadline = Date.now() + 10_000;
      let scheduler = await queue.getJobScheduler(AUDIT_ARCHIVE_JOB);
      while (!scheduler && Date.now() < deadline) {
        await sleep(100);
        scheduler = await queue.getJobScheduler(AUDIT_ARCHIVE_JOB);
      }
      expect(scheduler).toMatchObject({ every: AUDIT_ARCHIVE_EVERY_SECONDS * 1000, name: AUDIT_ARCHIVE_JOB });

      // A run now: with DEPUTY_AUDIT_HOT_DAYS=0 everything written before it is archived (the scheduler's
      // own first run may have taken some already), and only the runs' own audit.archive events stay.
      const job = await queue.add(AUDIT_ARCHIVE_JOB, {});
      const until = Date.now() + 20_000;
      while ((await job.getState()) !== "completed" && Date.now() < until) {
        expect(await job.getState()).not.toBe("failed");
        await sleep(50);
      }
      const done = await queue.getJob(String(job.id));
      expect(done?.returnvalue).toMatchObject({
        held_by: [],
        archives: [expect.objectContaining({ file: expect.any(String) })],
      });
      const left = await server.deputy.db.prisma.auditEvent.findMany({ select: { action: true } });
      expect(new Set(left.map((event) => event.action))).toEqual(new Set(["audit.archive"]));
      const report = await server.deputy.auditTrail.verify();
      expect(report.ok, JSON.stringify(report)).toBe(true);
    } finally {
      await server.close();
    }
  });
});

describe("audit trail shared by two servers on one PostgreSQL database", () => {
  it("stays one total chain when both append at once", async () => {
    const prepared = await prepareEnvironment("postgresql");
    const log = createLogger("silent");
    // One after the other: the first start migrates the database and creates the bootstrap admin.
    const one = await createDeputy(loadConfig(prepared.env), log);
    const two = await createDeputy(
      loadConfig({ ...prepared.env, REDIS_PREFIX: `${prepared.env.REDIS_PREFIX}two:` }),
      log,
    );
    try {
      // Lineage rows for half the events, as token issuance writes them (the lineage insert takes the chain lock).
      const context = { actor: "test" };
      const person = await one.people.create(context, {
        email: "two-servers@example.com",
        name: "Two",
        password: "correct horse battery staple",
      });
      await one.resources.create(context, {
        uri: "https://two.example.com",
        name: "Two",
        scopes: [{ name: "two.read", description: "Read", risk: "low" }],
      });
      const agent = await one.agents.create(context, {
        name: "Two",
        owner: person.email,
        purpose: "test",
        grants: [{ resource: "https://two.example.com", scopes: ["two.read"] }],
        auth: { method: "client_secret" },
      });
      const delegation = await one.delegations.create(context, {
        personId: person.id,
        agentClientId: agent.client_id,
        grants: [{ resource: "https://two.example.com", scopes: ["two.read"] }],
        endsAt: new Date(Date.now() + 3600_000),
      });
      const lineage = (name: string, i: number) =>
        i % 2
          ? {}
          : {
              issuedTokens: [
                {
                  jti: `${name}-${i}`,
                  delegationId: delegation.id,
                  clientId: agent.client_id,
                  actorChain: [agent.client_id],
                  scopes: ["two.read"],
                  depth: 1,
                  format: "opaque" as const,
                  expiresAt: new Date(Date.now() + 60_000),
                },
              ],
            };
      const load = (deputy: typeof one, name: string) => [
        ...Array.from({ length: 300 }, (_, i) =>
          deputy.audit.commit(
            { actor: name },
            { action: "token.exchange", details: { i } },
            lineage(name, i),
          ),
        ),
        ...Array.from({ length: 20 }, (_, i) =>
          deputy.audit.record({ actor: name }, { action: "agent.update", details: { i } }),
        ),
      ];
      await Promise.all([...load(one, "one"), ...load(two, "two")]);
      const report = await one.auditTrail.verify();
      expect(report.ok, JSON.stringify(report.first_bad)).toBe(true);
      const counts = await one.db.sql.query<{ actor: string; n: string }>(
        "SELECT actor, count(*)::text AS n FROM audit_events WHERE actor IN ('one', 'two') GROUP BY actor ORDER BY actor",
      );
      expect(counts).toEqual([
        { actor: "one", n: "320" },
        { actor: "two", n: "320" },
      ]);
      expect(await one.db.prisma.issuedToken.count({ where: { delegationId: delegation.id } })).toBe(300);
    } finally {
      await one.close();
      await two.close();
      await prepared.cleanup();
    }
  });
});

describe("auditing cannot be switched off by configuration", () => {
  it("audits every exchange even with the removed DEPUTY_BENCH_AUDIT_OFF=1 set", async () => {
    const server = await startServer("pglite", { DEPUTY_BENCH_AUDIT_OFF: "1" });
    try {
      const person = await createPerson(server);
      const resource = await createResource(server, "https://bench.example.com", ["bench.read"]);
      const agent = await createAgent(server, person.email, [
        { resource: resource.uri, scopes: ["bench.read"] },
      ]);
      const { delegation, subjectToken } = await delegate(server, {
        personId: person.id,
        personEmail: person.email,
        agent: agent.client_id,
        grants: [{ resource: resource.uri, scopes: ["bench.read"] }],
      });
      expect((await exchange(server, agent, { subject_token: subjectToken })).status).toBe(200);
      const { prisma } = server.deputy.db;
      expect(await prisma.issuedToken.count({ where: { delegationId: delegation.id } })).toBe(2);
      expect(await prisma.auditEvent.count({ where: { type: "exchange" } })).toBe(1);
      expect(loadConfig({}).audit).toMatchObject({ hotDays: 90 });
      expect(loadConfig({ DEPUTY_DATA_DIR: "/srv/deputy" }).audit.archiveDir).toBe(
        "/srv/deputy/audit-archive",
      );
    } finally {
      await server.close();
    }
  });
});
