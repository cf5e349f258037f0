// Several hundred malformed RFC 8693 token-exchange requests, generated from a fixed seed, thrown at POST /token
// over real HTTP: missing, duplicated and garbage parameters, forged and foreign tokens, wrong token types,
// huge values, control characters, wrong content types and methods, bad resources, bad credentials, bad DPoP
// proofs (the corpus: test/helpers/malformed-exchange.ts). Every answer must be an OAuth error from the RFC
// 6749/8693/9449 set with a description (or, for wrong methods, oidc-provider's plain 404), never a 5xx, never a
// stack trace; the server must still work afterwards.
import { randomUUID } from "node:crypto";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  b64url,
  CASES,
  type Case,
  type Fixture,
  generate,
  problems,
  Rng,
  SEED,
  send,
} from "../helpers/malformed-exchange.ts";
import { postForm } from "../helpers/oauth.ts";
import {
  ACCESS_TOKEN,
  type Agent,
  createAgent,
  createPerson,
  createResource,
  delegate,
  exchange,
  introspect,
  type Resource,
  TOKEN_EXCHANGE,
} from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

describe("malformed token-exchange requests", () => {
  let server: TestServer;
  let calendar: Resource;
  let mail: Resource;
  let agentA: Agent;
  let agentB: Agent;
  let suspended: Agent;
  let subjectA: string;
  let person: { id: string; email: string };
  const serverErrors: string[] = [];

  /** Tokens and strings a malicious or confused caller might send as a subject or actor token. */
  const foreign: Record<string, string> = {};
  /** DPoP headers that are all wrong in one way or another. */
  const badProofs: string[] = [];

  beforeAll(async () => {
    server = await startServer();
    server.deputy.provider.on("server_error", (_ctx: unknown, error: unknown) => {
      serverErrors.push(String(error));
    });
    person = await createPerson(server);
    calendar = await createResource(server, "https://calendar.example.com", [
      "calendar.read",
      "calendar.write",
    ]);
    mail = await createResource(server, "https://mail.example.com", ["mail.read"], { token_format: "jwt" });
    agentA = await createAgent(server, person.email, [{ resource: calendar.uri, scopes: ["calendar.read"] }]);
    agentB = await createAgent(server, person.email, [
      { resource: calendar.uri, scopes: ["calendar.read"] },
      { resource: mail.uri, scopes: ["mail.read"] },
    ]);
    suspended = await createAgent(server, person.email, [
      { resource: calendar.uri, scopes: ["calendar.read"] },
    ]);
    const common = { personId: person.id, personEmail: person.email };
    ({ subjectToken: subjectA } = await delegate(server, {
      ...common,
      agent: agentA.client_id,
      grants: [{ resource: calendar.uri, scopes: ["calendar.read"] }],
    }));
    const { subjectToken: subjectB } = await delegate(server, {
      ...common,
      agent: agentB.client_id,
      grants: [
        { resource: calendar.uri, scopes: ["calendar.read"] },
        { resource: mail.uri, scopes: ["mail.read"] },
      ],
    });
    await delegate(server, {
      ...common,
      agent: suspended.client_id,
      grants: [{ resource: calendar.uri, scopes: ["calendar.read"] }],
    });
    const suspension = await server.admin("POST", `/agents/${suspended.client_id}/suspend`, {
      reason: "testing",
    });
    expect(suspension.status, JSON.stringify(suspension.body)).toBe(200);

    const opaqueB = await exchange(server, agentB, { subject_token: subjectB, resource: calendar.uri });
    const jwtB = await exchange(server, agentB, { subject_token: subjectB, resource: mail.uri });
    const ownA = await exchange(server, agentA, { subject_token: subjectA });
    for (const r of [opaqueB, jwtB, ownA]) expect(r.status, JSON.stringify(r.body)).toBe(200);
    const jwt: string = jwtB.body.access_token;
    expect(jwt.split(".")).toHaveLength(3);
    const [jwtHeader, jwtPayload, jwtSignature] = jwt.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(jwtPayload, "base64url").toString());
    const kid = JSON.parse(Buffer.from(jwtHeader, "base64url").toString()).kid;

    // A JWT that looks exactly like Deputy's (same kid, typ, issuer, claims for agent A), signed by another key.
    const stranger = await generateKeyPair("ES256");
    const strangerJwt = await new SignJWT({ ...claims, client_id: agentA.client_id, aud: calendar.uri })
      .setProtectedHeader({ alg: "ES256", typ: "at+jwt", kid })
      .sign(stranger.privateKey);
    const unsigned = (payload: unknown) => `${b64url({ alg: "none", typ: "at+jwt" })}.${b64url(payload)}.`;
    Object.assign(foreign, {
      "admin client_credentials token": await server.adminToken(),
      "agent B's subject token": subjectB,
      "agent B's exchanged opaque token": opaqueB.body.access_token,
      "agent B's exchanged JWT": jwt,
      "agent A's own exchanged token, one character changed": `${ownA.body.access_token.slice(0, -1)}${ownA.body.access_token.endsWith("A") ? "B" : "A"}`,
      "agent A's subject token, truncated": subjectA.slice(0, -3),
      "agent A's subject token, upper-cased": subjectA.toUpperCase(),
      "agent A's subject token with a trailing space": `${subjectA} `,
      "JWT signed by another key with Deputy's kid": strangerJwt,
      "Deputy's JWT with its claims changed to agent A": `${jwtHeader}.${b64url({ ...claims, client_id: agentA.client_id })}.${jwtSignature}`,
      "Deputy's JWT with a flipped signature": `${jwtHeader}.${jwtPayload}.${jwtSignature.slice(0, 10)}${jwtSignature[10] === "A" ? "B" : "A"}${jwtSignature.slice(11)}`,
      "Deputy's JWT without its signature": `${jwtHeader}.${jwtPayload}.`,
      "alg none JWT with agent A's claims": unsigned({ ...claims, client_id: agentA.client_id }),
      "alg none JWT, empty payload": unsigned({}),
      "HS256 JWT with Deputy's kid": `${b64url({ alg: "HS256", typ: "at+jwt", kid })}.${jwtPayload}.${b64url("x".repeat(32))}`,
      "JWT with a 6 KB payload": `${jwtHeader}.${b64url({ ...claims, pad: "p".repeat(6000) })}.${jwtSignature}`,
      "JWT with a 20 KB payload": `${jwtHeader}.${b64url({ ...claims, pad: "p".repeat(20_000) })}.${jwtSignature}`,
      "JWT with a 60 KB payload": `${jwtHeader}.${b64url({ ...claims, pad: "p".repeat(60_000) })}.${jwtSignature}`,
      "JWT whose payload is not JSON": `${jwtHeader}.${b64url("not json")}.${jwtSignature}`,
      "JWT with crit header": `${b64url({ alg: "ES256", kid, crit: ["x"], x: 1 })}.${jwtPayload}.${jwtSignature}`,
      "agent A's client secret": agentA.client_secret,
      "resource server's client secret": calendar.client_secret,
      "agent A's client id": agentA.client_id,
      ["__proto__"]: "__proto__",
      constructor: "constructor",
    });

    // DPoP proofs, each wrong in one way (RFC 9449 §4.3).
    const key = await generateKeyPair("ES256", { extractable: true });
    const jwk: JWK = await exportJWK(key.publicKey);
    const privateJwk: JWK = await exportJWK(key.privateKey);
    const other = await generateKeyPair("ES256");
    const now = Math.floor(Date.now() / 1000);
    const proof = (
      payload: Record<string, unknown>,
      header: Record<string, unknown> = {},
      signer = key.privateKey,
    ) =>
      new SignJWT({ jti: randomUUID(), htm: "POST", htu: `${server.url}/token`, iat: now, ...payload })
        .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk, ...header } as never)
        .sign(signer);
    badProofs.push(
      await proof({ htu: `${server.url}/token/introspection` }),
      await proof({ htu: "https://elsewhere.example/token" }),
      await proof({ htm: "GET" }),
      await proof({ iat: now - 3600 }),
      await proof({ iat: now + 3600 }),
      await proof({ jti: undefined }),
      await proof({}, { typ: "JWT" }),
      await proof({}, { jwk: privateJwk }),
      await proof({}, {}, other.privateKey),
      `${b64url({ alg: "none", typ: "dpop+jwt", jwk })}.${b64url({ jti: "x", htm: "POST", htu: `${server.url}/token`, iat: now })}.`,
      "garbage",
      "a.b.c",
      subjectA,
      "x".repeat(4000),
    );
  });

  afterAll(async () => {
    await server?.close();
  });

  it(`answers ${CASES} malformed requests with OAuth errors, never a 5xx or a stack trace`, async () => {
    const fixture: Fixture = {
      server,
      calendar,
      mail,
      agentA,
      agentB,
      suspended,
      subjectA,
      person,
      foreign,
      badProofs,
    };
    const cases = generate(new Rng(SEED), fixture);
    expect(cases.length).toBeGreaterThanOrEqual(400);
    const failures: string[] = [];
    const statuses = new Map<string, number>();
    let next = 0;
    const worker = async () => {
      while (next < cases.length) {
        const c = cases[next++] as Case;
        let found: string[];
        let status = "no answer";
        try {
          const response = await send(server.url, c);
          status = String(response.status);
          found = problems(c, response);
          if (found.length) found.push(`answer: ${response.status} ${response.text.slice(0, 200)}`);
        } catch (error) {
          found = [`request failed: ${String(error)}`];
        }
        statuses.set(status, (statuses.get(status) ?? 0) + 1);
        if (found.length)
          failures.push(`#${c.id} [${c.category}] ${c.note.slice(0, 160)}: ${found.join("; ")}`);
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));
    expect(failures).toEqual([]);
    expect(serverErrors).toEqual([]);
    // The corpus really was malformed: almost everything was refused, and nothing crashed the connection.
    expect(statuses.get("no answer") ?? 0).toBe(0);
    expect((statuses.get("400") ?? 0) + (statuses.get("401") ?? 0)).toBeGreaterThan(CASES * 0.8);
  });

  it("still serves a valid exchange afterwards", async () => {
    const response = await exchange(server, agentA, { subject_token: subjectA, scope: "calendar.read" });
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    expect(response.body).toMatchObject({
      issued_token_type: ACCESS_TOKEN,
      token_type: "Bearer",
      scope: "calendar.read",
    });
    const introspection = await introspect(server, calendar, response.body.access_token);
    expect(introspection).toMatchObject({ active: true, client_id: agentA.client_id, aud: calendar.uri });
    expect(serverErrors).toEqual([]);
  });

  // PostgreSQL cannot store or compare text containing NUL: the client lookup must refuse such a client_id
  // itself (src/oauth/client-store.ts), at every endpoint that authenticates clients.
  it("refuses a client_id containing a NUL byte as invalid_client, not with a 500", async () => {
    const withNul = `${agentA.client_id}\u0000`;
    const requests = [
      postForm(`${server.url}/token`, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: subjectA,
        subject_token_type: ACCESS_TOKEN,
        client_id: withNul,
        client_secret: agentA.client_secret,
      }),
      postForm(`${server.url}/token`, {
        grant_type: TOKEN_EXCHANGE,
        subject_token: subjectA,
        subject_token_type: ACCESS_TOKEN,
        client_id: withNul,
      }),
      postForm(`${server.url}/token/introspection`, { token: "x", client_id: withNul, client_secret: "x" }),
      postForm(`${server.url}/token/revocation`, { token: "x", client_id: withNul, client_secret: "x" }),
    ];
    const answers = (await Promise.all(requests)).map((r) => `${r.status} ${r.body?.error}`);
    expect(answers).toEqual([
      "401 invalid_client",
      "401 invalid_client",
      "401 invalid_client",
      "401 invalid_client",
    ]);
  });
});
