// The AuthZEN Authorization API 1.0 endpoints over real HTTP: metadata, resource-server authentication,
// token subjects introspected in-process (opaque and JWT), batch semantics, and bad input answered with 4xx
// JSON, never a 5xx.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { basicAuth } from "../helpers/oauth.ts";
import {
  type Agent,
  createAgent,
  createPerson,
  createResource,
  delegate,
  exchange,
  type Resource,
} from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

let server: TestServer;
let mail: Resource;
let reports: Resource;
let agent: Agent;
let opaque: string;
let jwt: string;

async function post(path: string, body: string, headers: Record<string, string>) {
  const response = await fetch(`${server.url}${path}`, { method: "POST", headers, body });
  const text = await response.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: response.status, body: json, text, headers: response.headers };
}

const asMail = (body: unknown, path = "/access/v1/evaluation", resource: Resource = mail) =>
  post(path, JSON.stringify(body), {
    authorization: basicAuth(resource.client_id, resource.client_secret),
    "content-type": "application/json",
  });

const ask = (token: string, action: string) => ({
  subject: { type: "token", id: token },
  resource: { type: "mailbox", id: "inbox" },
  action: { name: action },
});

beforeAll(async () => {
  server = await startServer("pglite");
  const person = await createPerson(server);
  mail = await createResource(server, "https://mail.example.com", ["mail.read", "mail.send", "mail.archive"]);
  reports = await createResource(server, "https://reports.example.com", ["reports.read"], {
    token_format: "jwt",
  });
  agent = await createAgent(server, person.email, [
    { resource: mail.uri, scopes: ["mail.read", "mail.send", "mail.archive"] },
    { resource: reports.uri, scopes: ["reports.read"] },
  ]);
  const { subjectToken } = await delegate(server, {
    personId: person.id,
    personEmail: person.email,
    agent: agent.client_id,
    grants: [
      { resource: mail.uri, scopes: ["mail.read", "mail.send"] },
      { resource: reports.uri, scopes: ["reports.read"] },
    ],
  });
  opaque = (await exchange(server, agent, { subject_token: subjectToken, resource: mail.uri })).body
    .access_token;
  jwt = (await exchange(server, agent, { subject_token: subjectToken, resource: reports.uri })).body
    .access_token;
  expect(opaque).toBeTruthy();
  expect(jwt.split(".")).toHaveLength(3);
});
afterAll(async () => {
  await server?.close();
});

describe("AuthZEN metadata and authentication", () => {
  it("publishes the PDP metadata", async () => {
    const response = await fetch(`${server.url}/.well-known/authzen-configuration`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({
      policy_decision_point: server.url,
      access_evaluation_endpoint: `${server.url}/access/v1/evaluation`,
      access_evaluations_endpoint: `${server.url}/access/v1/evaluations`,
    });
  });

  it("answers 401 to missing, wrong or non-resource-server credentials", async () => {
    const body = JSON.stringify(ask(opaque, "mail.read"));
    const json = { "content-type": "application/json" };
    const attempts: Record<string, string>[] = [
      {},
      { authorization: basicAuth(mail.client_id, "wrong") },
      { authorization: basicAuth("rs_unknown", mail.client_secret) },
      { authorization: basicAuth(agent.client_id, agent.client_secret) },
      { authorization: basicAuth("deputy-admin", "test-admin-secret-that-is-long-enough-0123456789") },
      { authorization: `Bearer ${opaque}` },
      { authorization: "Basic !!!" },
      { authorization: `Basic ${Buffer.from(`${mail.client_id}\u0000:x`).toString("base64")}` },
      { authorization: `Basic ${Buffer.from("%ZZ:%ZZ").toString("base64")}` },
    ];
    for (const headers of attempts) {
      const answer = await post("/access/v1/evaluation", body, { ...json, ...headers });
      expect(answer.status, JSON.stringify(headers)).toBe(401);
      expect(answer.body.error).toBe("invalid_client");
      expect(answer.headers.get("www-authenticate")).toContain("Basic");
    }
    const batch = await post("/access/v1/evaluations", body, json);
    expect(batch.status).toBe(401);
  });
});

describe("AuthZEN access evaluation", () => {
  it("decides for an opaque token the agent presented, with reasons and the policy version", async () => {
    const answer = await asMail(ask(opaque, "mail.read"));
    expect(answer.status).toBe(200);
    expect(answer.headers.get("cache-control")).toBe("no-store");
    expect(answer.body).toEqual({
      decision: true,
      context: {
        reason: ["policy:delegated-agents"],
        reason_admin: { en: "allowed by policy:delegated-agents" },
        policy_version: 1,
      },
    });
  });

  it("decides for a JWT access token, verified locally", async () => {
    const answer = await asMail(ask(jwt, "reports.read"), "/access/v1/evaluation", reports);
    expect(answer.body.decision).toBe(true);
    // A JWT for another audience is not a subject this resource server may ask about.
    const foreign = await asMail(ask(jwt, "mail.read"));
    expect(foreign.body).toMatchObject({ decision: false, context: { reason: ["token_inactive"] } });
  });

  it("refuses tokens that are not active for the asking resource server, actions it does not define and scopes the token lacks", async () => {
    const cases: [string, string, string][] = [
      ["garbage", "mail.read", "token_inactive"],
      [`${opaque}x`, "mail.read", "token_inactive"],
      [opaque, "mail.fly", "unknown_action"],
      [opaque, "mail.archive", "scope_not_granted"],
    ];
    for (const [token, action, reason] of cases) {
      const answer = await asMail(ask(token, action));
      expect(answer.status).toBe(200);
      expect(answer.body, `${action} ${reason}`).toMatchObject({
        decision: false,
        context: { reason: [reason] },
      });
    }
    // The mail token, asked about by another resource server, is inactive for it.
    const other = await asMail(ask(opaque, "reports.read"), "/access/v1/evaluation", reports);
    expect(other.body.context.reason).toEqual(["token_inactive"]);
    const denials = await server.deputy.db.prisma.auditEvent.findMany({
      where: { type: "evaluation", decision: "deny" },
    });
    expect(denials.map((e) => e.reason?.split(":")[0]).sort()).toEqual(
      expect.arrayContaining(["token_inactive", "unknown_action", "scope_not_granted"]),
    );
  });

  it("answers bad input with 4xx JSON, never a 5xx", async () => {
    const auth = { authorization: basicAuth(mail.client_id, mail.client_secret) };
    const json = { ...auth, "content-type": "application/json" };
    const bodies: [string, Record<string, string>, number][] = [
      ["{", json, 400],
      ["[]", json, 400],
      ["null", json, 400],
      ['"text"', json, 400],
      ["{}", json, 400],
      [JSON.stringify({ subject: { type: "token" }, resource: {}, action: {} }), json, 400],
      [JSON.stringify({ ...ask(opaque, "mail.read"), action: { name: 7 } }), json, 400],
      [JSON.stringify({ ...ask(opaque, "mail.read"), subject: { type: "user", id: "alice" } }), json, 400],
      [JSON.stringify({ ...ask(opaque, "mail.read"), context: [] }), json, 400],
      [JSON.stringify({ ...ask("x".repeat(9000), "mail.read") }), json, 400],
      ["", json, 400],
      [JSON.stringify(ask(opaque, "mail.read")), { ...auth, "content-type": "text/plain" }, 415],
      [JSON.stringify({ pad: "x".repeat(300_000) }), json, 413],
    ];
    for (const [body, headers, status] of bodies) {
      for (const path of ["/access/v1/evaluation", "/access/v1/evaluations"]) {
        const answer = await post(path, body, headers);
        if (path.endsWith("evaluations") && body === "{}") continue;
        expect(answer.status, `${path} ${body.slice(0, 80)}`).toBe(status);
        expect(answer.body?.error, body.slice(0, 80)).toBeTruthy();
        expect(answer.text).not.toMatch(/\bat .*\.ts:\d+/);
      }
    }
    const batch = await asMail({ evaluations: "no" }, "/access/v1/evaluations");
    expect(batch.status).toBe(400);
    const tooMany = await asMail(
      { ...ask(opaque, "mail.read"), evaluations: Array.from({ length: 101 }, () => ({})) },
      "/access/v1/evaluations",
    );
    expect(tooMany.status).toBe(400);
    const semantic = await asMail(
      { ...ask(opaque, "mail.read"), evaluations: [{}], options: { evaluations_semantic: "sometimes" } },
      "/access/v1/evaluations",
    );
    expect(semantic.status).toBe(400);
    const wrongMethod = await fetch(`${server.url}/access/v1/evaluation`, {
      headers: { authorization: basicAuth(mail.client_id, mail.client_secret) },
    });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get("allow")).toBe("POST");
    expect(await wrongMethod.json()).toMatchObject({ error: "method_not_allowed" });
    const unknownMethod = await fetch(`${server.url}/access/v1/evaluation`, { method: "PROPFIND" });
    expect(unknownMethod.status).toBe(501);
    expect(await unknownMethod.json()).toMatchObject({ error: "not_implemented" });
  });
});

describe("AuthZEN access evaluations (batch)", () => {
  const items = [
    { action: { name: "mail.read" } },
    { action: { name: "mail.archive" } },
    { action: { name: "mail.send" } },
  ];
  const batch = (semantic?: string) => ({
    subject: { type: "token", id: opaque },
    resource: { type: "mailbox", id: "inbox" },
    evaluations: items,
    ...(semantic ? { options: { evaluations_semantic: semantic } } : {}),
  });

  it("executes all by default, in order, with top-level members as defaults", async () => {
    const answer = await asMail(batch(), "/access/v1/evaluations");
    expect(answer.status).toBe(200);
    expect(answer.body.evaluations.map((e: any) => e.decision)).toEqual([true, false, true]);
    expect(answer.body.evaluations[1].context.reason).toEqual(["scope_not_granted"]);
    expect(answer.body.decision).toBeUndefined();
  });

  it("stops at the first deny or the first permit when asked to", async () => {
    const deny = await asMail(batch("deny_on_first_deny"), "/access/v1/evaluations");
    expect(deny.body.evaluations.map((e: any) => e.decision)).toEqual([true, false]);
    const permit = await asMail(batch("permit_on_first_permit"), "/access/v1/evaluations");
    expect(permit.body.evaluations.map((e: any) => e.decision)).toEqual([true]);
  });

  it("lets an item override the defaults, and reports an item it cannot evaluate as its own error", async () => {
    const answer = await asMail(
      {
        subject: { type: "token", id: opaque },
        action: { name: "mail.read" },
        evaluations: [
          { resource: { type: "mailbox", id: "inbox" } },
          {
            resource: { type: "mailbox", id: "inbox" },
            subject: { type: "token", id: "revoked-or-unknown" },
          },
          { resource: { type: "mailbox", id: "inbox" }, subject: { type: "user", id: "alice" } },
          { action: { name: "mail.read" } },
        ],
      },
      "/access/v1/evaluations",
    );
    expect(answer.status).toBe(200);
    const [ok, inactive, unsupported, incomplete] = answer.body.evaluations;
    expect(ok.decision).toBe(true);
    expect(inactive).toMatchObject({ decision: false, context: { reason: ["token_inactive"] } });
    expect(unsupported).toMatchObject({ decision: false, context: { error: { status: 400 } } });
    expect(incomplete.context.error.message).toContain("resource");
  });

  it("treats a request without evaluations as a single evaluation", async () => {
    const answer = await asMail(ask(opaque, "mail.send"), "/access/v1/evaluations");
    expect(answer.body).toMatchObject({ decision: true, context: { policy_version: 1 } });
  });

  it("audits every decision of a batch", async () => {
    const before = await server.deputy.db.prisma.auditEvent.count({ where: { type: "evaluation" } });
    await asMail(batch(), "/access/v1/evaluations");
    const after = await server.deputy.db.prisma.auditEvent.count({ where: { type: "evaluation" } });
    expect(after - before).toBe(3);
  });
});
