// The foundation over real HTTP, on both databases: discovery, client_credentials, the admin API and its
// guards, the registry, and client authentication that follows agent and owner status.
import { generateKeyPairSync } from "node:crypto";
import { exportJWK, generateKeyPair } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { basicAuth, postForm } from "./helpers/oauth.ts";
import { ADMIN_SECRET, BACKENDS, startServer, type TestServer } from "./helpers/server.ts";

describe.each(BACKENDS)("foundation on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer(backend);
  });
  afterAll(async () => {
    await server?.close();
  });

  const owner = { email: "Owner@Example.com", name: "Olive Owner", password: "correct horse battery staple" };
  const resource = {
    uri: "https://calendar.example.com",
    name: "Calendar",
    scopes: [
      { name: "calendar.read", description: "Read your calendar" },
      { name: "calendar.write", description: "Change your calendar", risk: "high" },
    ],
  };

  async function createAgent(extra: Record<string, unknown> = {}) {
    const { status, body } = await server.admin("POST", "/agents", {
      name: "Scheduler",
      owner: owner.email,
      purpose: "Books meetings",
      grants: [{ resource: resource.uri, scopes: ["calendar.read"] }],
      auth: { method: "client_secret" },
      ...extra,
    });
    expect(status, JSON.stringify(body)).toBe(201);
    return body as { client_id: string; client_secret: string; id: string };
  }

  /** Authenticates at the introspection endpoint: 200 means the client authenticated. */
  async function authenticates(clientId: string, secret: string) {
    const { status, body } = await postForm(
      `${server.url}/token/introspection`,
      { token: "x" },
      {
        authorization: basicAuth(clientId, secret),
      },
    );
    return status === 200 ? "ok" : body.error;
  }

  it("publishes discovery at both well-known addresses", async () => {
    const openid: any = await (await fetch(`${server.url}/.well-known/openid-configuration`)).json();
    const oauth = await (await fetch(`${server.url}/.well-known/oauth-authorization-server`)).json();
    expect(oauth).toEqual(openid);
    expect(openid.issuer).toBe(server.url);
    expect(openid.grant_types_supported).toContain("client_credentials");
    expect(openid.introspection_endpoint).toBe(`${server.url}/token/introspection`);
    expect(openid.revocation_endpoint).toBe(`${server.url}/token/revocation`);
    expect(openid.pushed_authorization_request_endpoint).toBe(`${server.url}/request`);
    expect(openid.response_types_supported).toEqual(["code"]);
  });

  it("advertises exactly the grants and parameters that work", async () => {
    const openid: any = await (await fetch(`${server.url}/.well-known/openid-configuration`)).json();
    expect([...openid.grant_types_supported].sort()).toEqual([
      "authorization_code",
      "client_credentials",
      "urn:ietf:params:oauth:grant-type:token-exchange",
      "urn:openid:params:grant-type:ciba",
    ]);
    // Every user_code is refused at /backchannel.
    expect(openid.backchannel_user_code_parameter_supported).toBe(false);
    // No token Deputy issues could be used at a userinfo endpoint: there is none.
    expect(openid.userinfo_endpoint).toBeUndefined();
    expect((await fetch(`${server.url}/me`)).status).toBe(404);

    // The grant that is not advertised is not supported, for any client.
    const refresh = await postForm(
      `${server.url}/token`,
      { grant_type: "refresh_token", refresh_token: "x".repeat(43) },
      { authorization: basicAuth("deputy-admin", ADMIN_SECRET) },
    );
    expect(refresh.status).toBe(400);
    expect(refresh.body.error).toBe("unsupported_grant_type");
  });

  it("publishes one ES256 signing key and has no development login screen", async () => {
    const jwks: any = await (await fetch(`${server.url}/jwks`)).json();
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256", use: "sig" });
    expect(jwks.keys[0].d).toBeUndefined();
    const devLogin = await fetch(`${server.url}/interaction/abc`);
    expect(devLogin.status).toBe(404);
  });

  it("issues admin tokens by client_credentials and refuses a wrong secret", async () => {
    const good = await postForm(
      `${server.url}/token`,
      { grant_type: "client_credentials", scope: "deputy:admin" },
      {
        authorization: basicAuth("deputy-admin", ADMIN_SECRET),
      },
    );
    expect(good.status).toBe(200);
    expect(good.body).toMatchObject({ token_type: "Bearer", scope: "deputy:admin" });
    const bad = await postForm(
      `${server.url}/token`,
      { grant_type: "client_credentials", scope: "deputy:admin" },
      {
        authorization: basicAuth("deputy-admin", `${ADMIN_SECRET}x`),
      },
    );
    expect(bad.status).toBe(401);
    expect(bad.body.error).toBe("invalid_client");
  });

  it("guards the admin API: 401 without a valid token, 403 without deputy:admin", async () => {
    const none = await fetch(`${server.url}/admin/v1/people`);
    expect(none.status).toBe(401);
    expect(none.headers.get("www-authenticate")).toContain("Bearer");
    expect((await server.admin("GET", "/people", undefined, "garbage-token")).status).toBe(401);

    const unscoped = await postForm(
      `${server.url}/token`,
      { grant_type: "client_credentials" },
      {
        authorization: basicAuth("deputy-admin", ADMIN_SECRET),
      },
    );
    expect(unscoped.status).toBe(200);
    const forbidden = await server.admin("GET", "/people", undefined, unscoped.body.access_token);
    expect(forbidden.status).toBe(403);
    expect(forbidden.body.error).toBe("insufficient_scope");

    const revoked = await server.adminToken();
    await postForm(
      `${server.url}/token/revocation`,
      { token: revoked },
      {
        authorization: basicAuth("deputy-admin", ADMIN_SECRET),
      },
    );
    expect((await server.admin("GET", "/people", undefined, revoked)).status).toBe(401);
  });

  it("registers a person, a resource server and an agent, and audits each change", async () => {
    const person = await server.admin("POST", "/people", owner);
    expect(person.status).toBe(201);
    expect(person.body).toMatchObject({ email: "owner@example.com", status: "active", admin: false });
    expect(person.body.password).toBeUndefined();
    expect(JSON.stringify(person.body)).not.toContain("scrypt");

    const created = await server.admin("POST", "/resources", resource);
    expect(created.status).toBe(201);
    expect(created.body.client_id).toMatch(/^rs_/);
    expect(created.body.client_secret).toHaveLength(43);
    expect(created.body.scopes[1]).toMatchObject({ name: "calendar.write", risk: "high" });
    expect((await server.admin("GET", `/resources/${created.body.id}`)).body.client_secret).toBeUndefined();

    const agent = await createAgent({ max_depth: 2, blast_radius: "Can move meetings" });
    const shown = await server.admin("GET", `/agents/${agent.client_id}`);
    expect(shown.body).toMatchObject({
      status: "active",
      owner: { email: "owner@example.com" },
      grants: [{ resource: resource.uri, scopes: ["calendar.read"] }],
      max_depth: 2,
      blast_radius: "Can move meetings",
    });
    expect(new Date(shown.body.review_due_at).getTime()).toBeGreaterThan(Date.now() + 80 * 86_400_000);

    const events = await server.deputy.db.prisma.auditEvent.findMany({ where: { type: "admin_change" } });
    const actions = events.map((event) => event.action);
    expect(actions).toEqual(expect.arrayContaining(["person.create", "resource.create", "agent.create"]));
    const agentEvent = events.find((event) => event.action === "agent.create");
    expect(agentEvent).toMatchObject({ actor: "deputy-admin", target: agent.client_id });
    expect(agentEvent?.requestId).toBeTruthy();
    const trail = JSON.stringify(events.map(({ seq, ...event }) => event));
    expect(trail).not.toContain(agent.client_secret);
    expect(trail).not.toContain(owner.password);
  });

  it("lets only active agents with an active owner authenticate", async () => {
    const agent = await createAgent();
    expect(await authenticates(agent.client_id, agent.client_secret)).toBe("ok");
    expect(await authenticates(agent.client_id, "wrong")).toBe("invalid_client");

    const suspended = await server.admin("POST", `/agents/${agent.client_id}/suspend`, {
      reason: "leaked key",
    });
    expect(suspended.body).toMatchObject({ status: "suspended", status_reason: "leaked key" });
    expect(await authenticates(agent.client_id, agent.client_secret)).toBe("invalid_client");
    expect((await server.admin("POST", `/agents/${agent.client_id}/activate`, {})).body.status).toBe(
      "active",
    );
    expect(await authenticates(agent.client_id, agent.client_secret)).toBe("ok");

    await server.admin("POST", "/people", { ...owner, email: "leaver@example.com" });
    const leaversAgent = await createAgent({ owner: "leaver@example.com" });
    expect(await authenticates(leaversAgent.client_id, leaversAgent.client_secret)).toBe("ok");
    const offboarded = await server.admin("POST", "/people/leaver@example.com/offboard", { reason: "left" });
    expect(offboarded.body.status).toBe("offboarded");
    expect(await authenticates(leaversAgent.client_id, leaversAgent.client_secret)).toBe("invalid_client");

    expect(
      (await server.admin("POST", `/agents/${agent.client_id}/retire`, { reason: "done" })).body.status,
    ).toBe("retired");
    expect(await authenticates(agent.client_id, agent.client_secret)).toBe("invalid_client");
    const revive = await server.admin("POST", `/agents/${agent.client_id}/activate`, {});
    expect(revive.status).toBe(409);
    expect(revive.body.error).toBe("invalid_transition");
  });

  it("refuses hostile input with clear 4xx errors and changes nothing", async () => {
    const countsBefore = await counts();
    const cases: [string, string, unknown, number, string][] = [
      ["POST", "/people", { email: 42, name: [], password: {} }, 400, "invalid_request"],
      ["POST", "/people", { ...owner, email: "x@example.com", role: "root" }, 400, "invalid_request"],
      ["POST", "/people", { ...owner }, 409, "conflict"],
      ["POST", "/people", { ...owner, email: "OWNER@example.com" }, 409, "conflict"],
      ["POST", "/people", { ...owner, email: "'; DROP TABLE people; --" }, 400, "invalid_request"],
      [
        "POST",
        "/people",
        { ...owner, email: "short@example.com", password: "short" },
        400,
        "invalid_request",
      ],
      ["POST", "/people", "{not json", 400, "invalid_request"],
      ["POST", "/people", `{"email":"${"a".repeat(70_000)}"}`, 413, "invalid_request"],
      ["POST", "/resources", { ...resource }, 409, "conflict"],
      ["POST", "/resources", { ...resource, uri: "not a uri" }, 400, "invalid_request"],
      ["POST", "/resources", { ...resource, uri: "https://x.example.com/#frag" }, 400, "invalid_request"],
      [
        "POST",
        "/resources",
        { ...resource, uri: "https://y.example.com", scopes: [{ name: "has space", description: "d" }] },
        400,
        "invalid_request",
      ],
      [
        "POST",
        "/resources",
        { ...resource, uri: "https://z.example.com", token_ttl_seconds: 86400 },
        400,
        "invalid_request",
      ],
      [
        "POST",
        "/agents",
        {
          name: "A",
          owner: "nobody@example.com",
          purpose: "p",
          grants: [],
          auth: { method: "client_secret" },
        },
        400,
        "invalid_request",
      ],
      [
        "POST",
        "/agents",
        {
          name: "A",
          owner: owner.email,
          purpose: "p",
          grants: [{ resource: resource.uri, scopes: ["admin"] }],
          auth: { method: "client_secret" },
        },
        400,
        "invalid_request",
      ],
      [
        "POST",
        "/agents",
        {
          name: "A",
          owner: owner.email,
          purpose: "p",
          grants: [],
          auth: { method: "private_key_jwt", jwks: { keys: [{ kty: "EC", d: "secret" }] } },
        },
        400,
        "invalid_request",
      ],
      [
        "POST",
        "/agents",
        {
          name: "A",
          owner: owner.email,
          purpose: "p",
          grants: [],
          auth: { method: "client_secret" },
          redirect_uris: ["http://evil.example.com/cb"],
        },
        400,
        "invalid_request",
      ],
      [
        "POST",
        "/agents",
        {
          name: "A",
          owner: owner.email,
          purpose: "p",
          grants: [],
          auth: { method: "client_secret" },
          may_delegate_to: ["agt_missing"],
        },
        400,
        "invalid_request",
      ],
      ["POST", "/agents/agt_missing/suspend", { reason: "x" }, 404, "not_found"],
      ["POST", "/agents/agt_missing/suspend", {}, 400, "invalid_request"],
      ["GET", "/agents?status=evil", undefined, 400, "invalid_request"],
      ["GET", "/people/%27%20OR%201%3D1", undefined, 404, "not_found"],
    ];
    for (const [method, pathname, body, status, error] of cases) {
      const response = await server.admin(method, pathname, body);
      expect(response.status, `${method} ${pathname} ${String(JSON.stringify(body)).slice(0, 80)}`).toBe(
        status,
      );
      expect(response.body.error).toBe(error);
      expect(typeof response.body.error_description).toBe("string");
      expect(response.body.error_description).not.toMatch(/at .*\.ts:\d+/);
    }
    const wrongType = await fetch(`${server.url}/admin/v1/people`, {
      method: "POST",
      headers: { authorization: `Bearer ${await server.adminToken()}`, "content-type": "text/plain" },
      body: JSON.stringify({ ...owner, email: "plain@example.com" }),
    });
    expect(wrongType.status).toBe(415);
    expect(await counts()).toEqual(countsBefore);
  });

  it("refuses Deputy's own identifiers and other schemes as resource server URIs, however written", async () => {
    const issuer = new URL(server.url);
    const reserved = [
      server.url,
      `${server.url}/`,
      `${server.url}?x=1`,
      server.url.toUpperCase(),
      `${server.url}/token/introspection`,
      `${server.url}/admin/v1`,
      `${server.url}/./admin/../token`,
      `${server.url}/%74oken`,
      `http://someone@${issuer.host}/`,
      `http://2130706433:${issuer.port}/`,
      `http://127.0.0.1.:${issuer.port}`,
      "urn:deputy:admin",
      "URN:Deputy:admin",
      "urn:deputy:anything-else",
      "urn:%64eputy:admin",
    ];
    const schemes = [
      "javascript:alert(1)",
      "data:text/plain,x",
      "file:///etc/passwd",
      "ftp://files.example.com",
    ];
    const before = await counts();
    for (const uri of [...reserved, ...schemes]) {
      const { status, body } = await server.admin("POST", "/resources", { ...resource, uri });
      expect(status, `${uri} → ${JSON.stringify(body)}`).toBe(400);
      expect(body.error).toBe("invalid_request");
      expect(body.error_description).toMatch(
        reserved.includes(uri) ? /Deputy/ : /must be an https, http or urn URI/,
      );
    }
    expect(await counts()).toEqual(before);

    // Neighbours are not Deputy: another port on the same host, another URN namespace.
    for (const uri of [`http://127.0.0.1:${Number(issuer.port) + 1}`, "urn:example:deputy:admin"]) {
      const { status, body } = await server.admin("POST", "/resources", { ...resource, uri });
      expect(status, `${uri} → ${JSON.stringify(body)}`).toBe(201);
    }
  });

  it("registers an agent only with public keys that can verify its client assertions", async () => {
    const publicJwk = async (alg: string, options?: { crv: string }) =>
      exportJWK((await generateKeyPair(alg, options)).publicKey);
    const es256 = await publicJwk("ES256");
    const smallRsa = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ format: "jwk" });
    const refused: [unknown, RegExp][] = [
      [{ kty: "EC", x: "a", y: "b" }, /not a valid EC public key for ES256/],
      [{ kty: "EC", crv: "P-256", x: "a", y: "b" }, /not a valid EC public key/],
      [await publicJwk("ES384"), /not a valid EC public key for ES256/],
      [await publicJwk("ECDH-ES", { crv: "X25519" }), /not a valid OKP public key for EdDSA/],
      [{ ...es256, alg: "HS256" }, /has alg HS256: a EC key may use ES256/],
      [{ ...es256, alg: "none" }, /has alg none/],
      [{ ...es256, use: "enc" }, /not a signing key/],
      [smallRsa, /RSA key of 1024 bits: use at least 2048/],
      [{ kty: "RSA", n: "AQAB", e: "AQAB" }, /RSA key of 17 bits/],
    ];
    const keyOwner = { ...owner, email: "key-owner@example.com" };
    expect((await server.admin("POST", "/people", keyOwner)).status).toBe(201);
    const before = await counts();
    for (const [key, message] of refused) {
      const { status, body } = await server.admin("POST", "/agents", {
        name: "Keyed",
        owner: keyOwner.email,
        purpose: "p",
        grants: [],
        auth: { method: "private_key_jwt", jwks: { keys: [es256, key] } },
      });
      expect(status, JSON.stringify(key)).toBe(400);
      expect(body.error).toBe("invalid_request");
      expect(body.error_description).toMatch(/^auth\.jwks\.keys\[1\] /);
      expect(body.error_description).toMatch(message);
    }
    expect(await counts()).toEqual(before);

    const good = [es256, await publicJwk("EdDSA", { crv: "Ed25519" }), await publicJwk("PS256")];
    const { status, body } = await server.admin("POST", "/agents", {
      name: "Keyed",
      owner: keyOwner.email,
      purpose: "p",
      grants: [],
      auth: { method: "private_key_jwt", jwks: { keys: good.map((key) => ({ ...key, use: "sig" })) } },
    });
    expect(status, JSON.stringify(body)).toBe(201);
  });

  it("stores HTML and SQL in strings verbatim as data", async () => {
    const name = `<img src=x onerror=alert(1)>'); DROP TABLE agents; --`;
    const agent = await createAgent({ name, purpose: "<script>alert(1)</script>" });
    const shown = await server.admin("GET", `/agents/${agent.client_id}`);
    expect(shown.body.name).toBe(name);
    expect((await server.admin("GET", "/agents")).body.agents.length).toBeGreaterThan(1);
  });

  async function counts() {
    const { prisma } = server.deputy.db;
    return {
      people: await prisma.person.count(),
      resources: await prisma.resourceServer.count(),
      agents: await prisma.agent.count(),
    };
  }
});
