// Text with NUL and other control characters at every place where request input reaches the database: admin API
// bodies, path segments and query parameters, the login form, CIBA's login_hint, task completion and the AuthZEN
// endpoints. PostgreSQL and PGlite refuse NUL in text, so any of these reaching a query answered 500; each must be
// a 4xx in its endpoint's error format and change nothing. Also: methods the admin API does not route are refused
// after authentication, in its JSON error shape.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { agentTask, CIBA_GRANT, CookieClient, signIn } from "../helpers/consent.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import {
  type Agent,
  createAgent,
  createPerson,
  createResource,
  delegate,
  exchange,
  type Resource,
} from "../helpers/scenario.ts";
import { BACKENDS, startServer, type TestServer } from "../helpers/server.ts";

const NUL = "\u0000";

describe.each(BACKENDS)("hostile text on %s", (backend) => {
  let server: TestServer;
  let person: { id: string; email: string };
  let files: Resource;
  let agent: Agent;
  let delegationId: string;
  let taskId: string;
  let accessToken: string;

  beforeAll(async () => {
    server = await startServer(backend);
    person = await createPerson(server, "hostile@example.com");
    files = await createResource(server, "https://files.example.com", ["files.read"]);
    agent = await createAgent(server, person.email, [{ resource: files.uri, scopes: ["files.read"] }]);
    const root = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: agent.client_id,
      grants: [{ resource: files.uri, scopes: ["files.read"] }],
    });
    delegationId = root.delegation.id;
    taskId = String(root.delegation.taskId);
    const exchanged = await exchange(server, agent, {
      subject_token: root.subjectToken,
      resource: files.uri,
    });
    accessToken = exchanged.body.access_token;
    expect(accessToken).toBeTruthy();
  });
  afterAll(async () => {
    await server?.close();
  });

  /** Every row a refused request could have touched. */
  async function snapshot() {
    const { prisma } = server.deputy.db;
    const byId = { orderBy: { id: "asc" as const } };
    return {
      people: await prisma.person.findMany(byId),
      agents: await prisma.agent.findMany({ ...byId, include: { scopeGrants: true } }),
      resources: await prisma.resourceServer.findMany({ ...byId, include: { scopes: true } }),
      delegations: await prisma.delegation.findMany(byId),
      tokens: await prisma.issuedToken.findMany({ orderBy: { jti: "asc" } }),
      holds: await prisma.legalHold.findMany(byId),
      policies: await prisma.policyVersion.count(),
      velocityRules: await prisma.velocityRule.findMany(byId),
      auditEvents: await prisma.auditEvent.count(),
    };
  }

  async function expectAdminRefusals(cases: [string, string, unknown?][], status: number, error: string) {
    const before = await snapshot();
    const answers = [];
    for (const [method, pathname, body] of cases) {
      const { status: got, body: answer } = await server.admin(method, pathname, body);
      answers.push(`${method} ${pathname} ${JSON.stringify(body) ?? ""} -> ${got} ${answer?.error}`);
      if (got === status) expect(typeof answer.error_description).toBe("string");
    }
    expect(answers).toEqual(
      cases.map(([m, p, b]) => `${m} ${p} ${JSON.stringify(b) ?? ""} -> ${status} ${error}`),
    );
    expect(await snapshot()).toEqual(before);
  }

  describe("admin API", () => {
    const newPerson = { email: "new@example.com", name: "New", password: "correct horse battery staple" };
    const newResource = {
      uri: "https://new.example.com",
      name: "New",
      scopes: [{ name: "new.read", description: "Read" }],
    };
    const newAgent = () => ({
      name: "New agent",
      owner: person.email,
      purpose: "Testing",
      grants: [{ resource: files.uri, scopes: ["files.read"] }],
      auth: { method: "client_secret" },
    });

    const keyAuth = (extra: Record<string, unknown>) => ({
      method: "private_key_jwt",
      jwks: { keys: [{ kty: "EC", crv: "P-256", x: "x", y: "y", ...extra }] },
    });

    it("refuses control characters in any body field with 400 invalid_request, changing nothing", async () => {
      await expectAdminRefusals(
        [
          ["POST", "/people", { ...newPerson, email: `new${NUL}@example.com` }],
          ["POST", "/people", { ...newPerson, name: `New${NUL}` }],
          ["POST", "/people", { ...newPerson, name: "New\nline" }],
          ["POST", "/people", { ...newPerson, password: `correct horse${NUL}battery staple` }],
          ["PATCH", `/people/${person.id}`, { name: `Renamed${NUL}` }],
          ["POST", `/people/${person.id}/offboard`, { reason: `gone${NUL}` }],
          ["POST", "/resources", { ...newResource, uri: `https://new.example.com/${NUL}` }],
          ["POST", "/resources", { ...newResource, uri: "https://new.example.com/%00" }],
          ["POST", "/resources", { ...newResource, name: `New${NUL}` }],
          ["POST", "/resources", { ...newResource, scopes: [{ name: "new.read", description: `R${NUL}` }] }],
          ["PATCH", `/resources/${files.client_id}`, { name: `Files${NUL}` }],
          ["POST", "/agents", { ...newAgent(), name: NUL }],
          ["POST", "/agents", { ...newAgent(), owner: `${person.email}${NUL}` }],
          ["POST", "/agents", { ...newAgent(), purpose: `Testing${NUL}` }],
          ["POST", "/agents", { ...newAgent(), blast_radius: `Files${NUL}` }],
          ["POST", "/agents", { ...newAgent(), may_delegate_to: [`${agent.client_id}${NUL}`] }],
          ["POST", "/agents", { ...newAgent(), redirect_uris: [`https://agent.example/cb${NUL}`] }],
          ["POST", "/agents", { ...newAgent(), redirect_uris: ["https://agent.example/cb%00"] }],
          [
            "POST",
            "/agents",
            { ...newAgent(), grants: [{ resource: `${files.uri}${NUL}`, scopes: ["files.read"] }] },
          ],
          ["POST", "/agents", { ...newAgent(), auth: keyAuth({ kid: `k${NUL}` }) }],
          ["POST", "/agents", { ...newAgent(), auth: keyAuth({ [`x5t${NUL}`]: "t" }) }],
          ["POST", "/agents", { ...newAgent(), auth: keyAuth({ key_ops: [`verify${NUL}`] }) }],
          ["POST", "/agents", { ...newAgent(), auth: keyAuth({ ext: { nested: NUL } }) }],
          ["PATCH", `/agents/${agent.client_id}`, { owner: `${person.email}${NUL}` }],
          ["PATCH", `/agents/${agent.client_id}`, { may_delegate_to: [NUL] }],
          ["POST", `/agents/${agent.client_id}/suspend`, { reason: `r${NUL}` }],
          ["POST", "/agents/suspend-all", { reason: `stop${NUL}` }],
          ["POST", `/delegations/${delegationId}/revoke`, { reason: `r${NUL}` }],
          ["POST", "/audit/holds", { reason: `hold${NUL}` }],
          ["POST", "/policies", { sources: [{ name: `p${NUL}`, text: "" }] }],
          [
            "POST",
            "/policies",
            { sources: [{ name: "p", text: `permit(principal, action, resource);${NUL}` }] },
          ],
        ],
        400,
        "invalid_request",
      );
    });

    it("keeps tabs and line breaks in free-text fields", async () => {
      const created = await server.admin("POST", "/agents", {
        ...newAgent(),
        purpose: "Reads files.\n\tOnly the shared ones.",
        blast_radius: "Shared files\r\nnothing else",
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      expect(created.body.purpose).toBe("Reads files.\n\tOnly the shared ones.");
      const retired = await server.admin("POST", `/agents/${created.body.client_id}/retire`, {
        reason: "Done.\nNo longer needed.",
      });
      expect(retired.status, JSON.stringify(retired.body)).toBe(200);
    });

    it("refuses control characters in path segments and query parameters with 400 invalid_request", async () => {
      await expectAdminRefusals(
        [
          ["GET", "/people/%00"],
          ["GET", "/people/hostile%00%40example.com"],
          ["GET", "/people/hostile%01%40example.com"],
          ["PATCH", "/people/hostile%00%40example.com", { name: "Renamed" }],
          ["POST", "/people/%00/offboard", { reason: "gone" }],
          ["GET", `/agents/${agent.client_id}%00`],
          ["PATCH", `/agents/${agent.client_id}%00`, { name: "Renamed" }],
          ["POST", `/agents/${agent.client_id}%00/suspend`, { reason: "stop" }],
          ["POST", "/agents/%00/review"],
          ["GET", "/agents?owner=%00"],
          ["GET", `/agents?owner=${encodeURIComponent(person.email)}%00`],
          ["GET", "/resources/%00"],
          ["GET", `/resources/${files.client_id}%00`],
          ["GET", `/resources/${encodeURIComponent(files.uri)}%00`],
          ["PATCH", "/resources/%00", { name: "Renamed" }],
          ["POST", "/resources/%00/rotate-secret"],
          ["GET", "/delegations?person=%00"],
          ["GET", "/delegations?agent=%00"],
          ["GET", "/delegations?task=%00"],
          ["GET", "/delegations/%00"],
          ["POST", "/delegations/%00/revoke", { reason: "r" }],
          ["DELETE", "/velocity-rules/%00"],
          ["POST", "/audit/holds/%00/release", {}],
          ["POST", "/jobs/%00/retry"],
          ["GET", "/audit?agent=%00"],
          ["GET", "/agents?st%00atus=active"],
        ],
        400,
        "invalid_request",
      );
    });

    it("answers methods it does not route with JSON errors, and only after authentication", async () => {
      const call = (method: string, pathname: string, token?: string) =>
        fetch(`${server.url}/admin/v1${pathname}`, {
          method,
          headers: token ? { authorization: `Bearer ${token}` } : {},
        });
      const token = await server.adminToken();
      const answers = [];
      for (const [method, pathname, auth] of [
        ["PUT", "/people", false],
        ["PROPFIND", "/people", false],
        ["OPTIONS", "/people", false],
        ["GET", "/no-such-thing", false],
        ["PUT", "/people", true],
        ["DELETE", `/agents/${agent.client_id}`, true],
        ["PROPFIND", "/people", true],
        ["GET", "/no-such-thing", true],
        ["GET", "", true],
      ] as const) {
        const response = await call(method, pathname, auth ? token : undefined);
        const body = JSON.parse(await response.text());
        expect(Object.keys(body).sort(), `${method} ${pathname}`).toEqual(["error", "error_description"]);
        expect(response.headers.get("content-type")).toContain("application/json");
        answers.push(
          `${method} ${pathname} ${response.status} ${body.error} ${response.headers.get("allow")}`,
        );
      }
      expect(answers).toEqual([
        "PUT /people 401 invalid_token null",
        "PROPFIND /people 401 invalid_token null",
        "OPTIONS /people 401 invalid_token null",
        "GET /no-such-thing 401 invalid_token null",
        "PUT /people 405 method_not_allowed HEAD, GET, POST",
        `DELETE /agents/${agent.client_id} 405 method_not_allowed HEAD, GET, PATCH`,
        "PROPFIND /people 501 not_implemented null",
        "GET /no-such-thing 404 not_found null",
        "GET  404 not_found null",
      ]);
      const options = await call("OPTIONS", "/people", token);
      expect(options.status).toBe(204);
      expect(options.headers.get("allow")).toBe("HEAD, GET, POST");
    });
  });

  describe("people's pages and CIBA", () => {
    it("answers a login with control characters in the email with the generic failure", async () => {
      const before = await snapshot();
      for (const email of [`${person.email}${NUL}`, `${NUL}`, `host\u0001ile@example.com`]) {
        const client = new CookieClient(server.url);
        const login = await client.request("/login");
        const answer = await signIn(client, login.body, email);
        expect(answer.status, JSON.stringify(email)).toBe(401);
        expect(answer.body).toContain("That email and password do not match an account that can sign in.");
        expect(client.cookies.has("deputy_session")).toBe(false);
      }
      // Each attempt is audited as a failed sign-in; nothing else changes.
      expect(await snapshot()).toEqual({ ...before, auditEvents: before.auditEvents + 3 });
    });

    it("answers a CIBA login_hint with control characters as unknown_user_id", async () => {
      const before = await snapshot();
      for (const hint of [`${person.email}${NUL}`, NUL, `${person.email}\u0007`]) {
        const answer = await postForm(
          `${server.url}/backchannel`,
          {
            login_hint: hint,
            scope: "openid files.read",
            resource: files.uri,
            authorization_details: JSON.stringify([agentTask()]),
          },
          { authorization: basicAuth(agent.client_id, agent.client_secret) },
        );
        expect(`${answer.status} ${answer.body.error}`, JSON.stringify(hint)).toBe("400 unknown_user_id");
      }
      const polled = await postForm(
        `${server.url}/token`,
        { grant_type: CIBA_GRANT, auth_req_id: `x${NUL}` },
        { authorization: basicAuth(agent.client_id, agent.client_secret) },
      );
      expect(polled.status).toBe(400);
      expect(await snapshot()).toEqual(before);
    });
  });

  describe("task completion and AuthZEN", () => {
    it("refuses a task id or credentials with control characters with a 4xx JSON error", async () => {
      const before = await snapshot();
      const agentAuth = { authorization: basicAuth(agent.client_id, agent.client_secret) };
      const attempts: [string, Record<string, string>, Record<string, string>, string][] = [
        ["/tasks/%00/complete", {}, agentAuth, "400 invalid_request"],
        [`/tasks/${encodeURIComponent(taskId)}%00/complete`, {}, agentAuth, "400 invalid_request"],
        ["/tasks/%ED%A0%80/complete", {}, agentAuth, "404 not_found"],
        ["/tasks/%ZZ/complete", {}, agentAuth, "404 not_found"],
        [`/tasks/${"x".repeat(201)}/complete`, {}, agentAuth, "400 invalid_request"],
        [
          `/tasks/${encodeURIComponent(taskId)}/complete`,
          { client_id: `${agent.client_id}${NUL}`, client_secret: agent.client_secret },
          {},
          "401 invalid_client",
        ],
        [
          `/tasks/${encodeURIComponent(taskId)}/complete`,
          {},
          { authorization: basicAuth(`${agent.client_id}${NUL}`, agent.client_secret) },
          "401 invalid_client",
        ],
      ];
      for (const [path, form, headers, expected] of attempts) {
        const answer = await postForm(`${server.url}${path}`, form, headers);
        expect(`${answer.status} ${answer.body.error}`, path).toBe(expected);
      }
      expect(await snapshot()).toEqual(before);
    });

    it("refuses AuthZEN requests with control characters in the strings it reads with 400 invalid_request", async () => {
      const evaluate = async (body: unknown, path = "/access/v1/evaluation") => {
        const response = await fetch(`${server.url}${path}`, {
          method: "POST",
          headers: {
            authorization: basicAuth(files.client_id, files.client_secret),
            "content-type": "application/json",
          },
          body: JSON.stringify(body),
        });
        return { status: response.status, body: (await response.json()) as any };
      };
      const valid = {
        subject: { type: "token", id: accessToken },
        resource: { type: "folder", id: "shared" },
        action: { name: "files.read" },
      };
      const allowed = await evaluate(valid);
      expect(allowed.body.decision, JSON.stringify(allowed.body)).toBe(true);
      const before = await snapshot();
      const hostile = [
        { ...valid, subject: { type: "token", id: `${accessToken}${NUL}` } },
        { ...valid, subject: { type: `token${NUL}`, id: accessToken } },
        { ...valid, subject: { ...valid.subject, properties: { ip_address: `10.0.0.1${NUL}` } } },
        { ...valid, resource: { type: "folder", id: `shared${NUL}` } },
        { ...valid, resource: { type: `folder${NUL}`, id: "shared" } },
        { ...valid, action: { name: `files.read${NUL}` } },
      ];
      for (const body of hostile) {
        const answer = await evaluate(body);
        expect(`${answer.status} ${answer.body.error}`, JSON.stringify(body)).toBe("400 invalid_request");
        const batch = await evaluate({ evaluations: [body] }, "/access/v1/evaluations");
        expect(`${batch.status} ${batch.body.error}`, JSON.stringify(body)).toBe("400 invalid_request");
      }
      expect(await snapshot()).toEqual(before);
    });
  });
});
