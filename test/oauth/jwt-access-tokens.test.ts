// RFC 9068 JWT access tokens at /token/introspection (RFC 7662) and /token/revocation (RFC 7009), over real HTTP
// and both databases. oidc-provider does not store JWTs; Deputy answers for them by signature, lineage and
// delegation, exactly as it does for opaque tokens.
import { randomUUID } from "node:crypto";
import {
  calculateJwkThumbprint,
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWTPayload,
  SignJWT,
} from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenRef } from "../../src/delegation/token-ref.ts";
import { loadSigningKeys } from "../../src/oauth/signing-keys.ts";
import { basicAuth, dpopProof, postForm } from "../helpers/oauth.ts";
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

const b64url = (value: unknown) =>
  Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

describe.each(BACKENDS)("JWT access tokens at introspection and revocation on %s", (backend) => {
  let server: TestServer;
  let person: { id: string; email: string };
  let mail: Resource;
  let reports: Resource;
  let planner: Agent;
  let researcher: Agent;
  let outsider: Agent;

  beforeAll(async () => {
    server = await startServer(backend);
    person = await createPerson(server);
    mail = await createResource(server, "https://mail.example.com", ["mail.read"]);
    reports = await createResource(server, "https://reports.example.com", ["reports.read"], {
      token_format: "jwt",
    });
    const grants = [
      { resource: mail.uri, scopes: ["mail.read"] },
      { resource: reports.uri, scopes: ["reports.read"] },
    ];
    [planner, researcher] = (await createChain(server, person.email, grants, [
      { maxDepth: 2 },
      { maxDepth: 1 },
    ])) as [Agent, Agent];
    outsider = await createAgent(server, person.email, grants);
  });
  afterAll(async () => {
    await server?.close();
  });

  const ok = (response: { status: number; body: any }) => {
    expect(response.status, JSON.stringify(response.body)).toBe(200);
    return String(response.body.access_token);
  };
  const as = (agent: Agent) => ({ authorization: basicAuth(agent.client_id, agent.client_secret) });
  const revoke = (agent: Agent, token: string) =>
    postForm(`${server.url}/token/revocation`, { token }, as(agent));
  const lineage = (token: string) =>
    server.deputy.db.prisma.issuedToken.findUniqueOrThrow({
      where: { jti: tokenRef(String(decodeJwt(token).jti)) },
    });

  /** A delegation (from `delegator`) to the planner, the planner's JWT for reports, and the researcher's JWT exchanged from it. */
  async function jwtChain(delegator = person) {
    const root = await delegate(server, {
      personId: delegator.id,
      personEmail: delegator.email,
      agent: planner.client_id,
      grants: [
        { resource: mail.uri, scopes: ["mail.read"] },
        { resource: reports.uri, scopes: ["reports.read"] },
      ],
    });
    const jwt = ok(
      await exchange(server, planner, { subject_token: root.subjectToken, resource: reports.uri }),
    );
    const child = ok(await exchange(server, researcher, { subject_token: jwt }));
    expect(decodeProtectedHeader(child).typ).toBe("at+jwt");
    return { ...root, jwt, child };
  }

  it("answers an active JWT with its claims, in the shape of an opaque token's answer", async () => {
    const { delegation, subjectToken, jwt } = await jwtChain();
    const claims = decodeJwt(jwt);
    const response = await postForm(
      `${server.url}/token/introspection`,
      { token: jwt },
      {
        authorization: basicAuth(reports.client_id, reports.client_secret),
      },
    );
    expect(response.headers.get("cache-control")).toContain("no-store");
    const answer = response.body;
    expect(answer).toEqual({
      active: true,
      sub: person.id,
      client_id: planner.client_id,
      scope: "reports.read",
      aud: reports.uri,
      iss: server.url,
      exp: claims.exp,
      iat: claims.iat,
      jti: claims.jti,
      token_type: "Bearer",
      act: { sub: planner.client_id },
      delegation: { ...(claims.delegation as object), id: delegation.id, depth: 1 },
      may_act: { client_ids: [researcher.client_id] },
    });
    // An opaque token's jti is the token itself, so its answer leaves it out; everything else is alike.
    const opaque = ok(await exchange(server, planner, { subject_token: subjectToken, resource: mail.uri }));
    const opaqueAnswer = await introspect(server, mail, opaque);
    expect(Object.keys(answer).sort()).toEqual([...Object.keys(opaqueAnswer), "jti"].sort());
  });

  it("answers a DPoP-bound JWT with its key's thumbprint", async () => {
    const { subjectToken } = await jwtChain();
    const key = await generateKeyPair("ES256", { extractable: true });
    const proof = await dpopProof(`${server.url}/token`, key);
    const bound = ok(
      await exchange(
        server,
        planner,
        { subject_token: subjectToken, resource: reports.uri },
        { dpop: proof },
      ),
    );
    expect(await introspect(server, reports, bound)).toMatchObject({
      active: true,
      token_type: "DPoP",
      cnf: { jkt: await calculateJwkThumbprint(await exportJWK(key.publicKey)) },
    });
  });

  it("answers only {active: false} to a resource server outside the audience, and to an agent", async () => {
    const { delegation, jwt } = await jwtChain();
    expect(await introspect(server, mail, jwt)).toEqual({ active: false });
    // The refusal is audited as any other: the audit sees Deputy's answer, not oidc-provider's refusal of JWTs.
    const refusal = await until(
      "the introspection refusal's audit event",
      () =>
        server.deputy.db.prisma.auditEvent.findFirst({
          where: { type: "introspection", actor: mail.client_id, delegationId: delegation.id },
        }),
      5_000,
    );
    expect(refusal.reason).toMatch(/^inactive/);
    expect(refusal.details).toMatchObject({
      token_ref: tokenRef(String(decodeJwt(jwt).jti)),
      revoked: false,
    });
    const byAgent = await postForm(`${server.url}/token/introspection`, { token: jwt }, as(planner));
    expect(byAgent.status).toBe(200);
    expect(byAgent.body).toEqual({ active: false });
    const unauthenticated = await postForm(`${server.url}/token/introspection`, {
      token: jwt,
      client_id: reports.client_id,
    });
    expect(unauthenticated.body.error).toBe("invalid_client");
  });

  it("answers {active: false} for expired, tampered, foreign, unknown and non-access-token JWTs", async () => {
    const { jwt } = await jwtChain();
    const claims = decodeJwt(jwt);
    const { kid } = decodeProtectedHeader(jwt);
    const [header, payload, signature] = jwt.split(".");
    const deputyJwk = (await loadSigningKeys(server.deputy.db.prisma)).find((key) => key.kid === kid);
    const deputyKey = await importJWK(deputyJwk ?? {}, "ES256");
    const stranger = await generateKeyPair("ES256");
    const sign = (body: JWTPayload, typ = "at+jwt", key: Parameters<SignJWT["sign"]>[0] = deputyKey) =>
      new SignJWT(body).setProtectedHeader({ alg: "ES256", typ, kid }).sign(key);
    const now = Math.floor(Date.now() / 1000);

    // Signed again with Deputy's key, the same claims are active: each case below fails for its one reason.
    expect((await introspect(server, reports, await sign(claims))).active).toBe(true);
    const cases: Record<string, string> = {
      expired: await sign({ ...claims, iat: now - 600, exp: now - 300 }),
      "claims changed after signing": `${header}.${b64url({ ...claims, scope: "reports.read reports.write" })}.${signature}`,
      "signature flipped": `${header}.${payload}.${signature?.startsWith("A") ? "B" : "A"}${signature?.slice(1)}`,
      "another issuer": await sign({ ...claims, iss: "https://other.example.com" }),
      "signed by another key with Deputy's kid": await sign(claims, "at+jwt", stranger.privateKey),
      "not an access token (typ JWT)": await sign(claims, "JWT"),
      "never issued (no lineage)": await sign({ ...claims, jti: randomUUID() }),
      "alg none": `${b64url({ alg: "none", typ: "at+jwt" })}.${payload}.`,
      "not JSON": `${header}.${b64url("not json")}.${signature}`,
    };
    for (const [name, token] of Object.entries(cases)) {
      const answer = await postForm(
        `${server.url}/token/introspection`,
        { token },
        {
          authorization: basicAuth(reports.client_id, reports.client_secret),
        },
      );
      expect([name, answer.status, answer.body]).toEqual([name, 200, { active: false }]);
    }
  });

  it("fails closed: a JWT whose delegation is revoked, or whose person left, is inactive", async () => {
    const { delegation, jwt } = await jwtChain();
    // Only the delegation changes (no lineage is marked), as when revocation has not reached the tokens yet.
    await server.deputy.db.prisma.delegation.update({
      where: { id: delegation.id },
      data: { status: "revoked" },
    });
    await server.deputy.bus.publish("delegation", delegation.id);
    expect(await introspect(server, reports, jwt)).toEqual({ active: false });

    const leaver = await createPerson(server);
    const { jwt: leaversJwt } = await jwtChain(leaver);
    expect((await introspect(server, reports, leaversJwt)).active).toBe(true);
    await server.deputy.db.prisma.person.update({ where: { id: leaver.id }, data: { status: "offboarded" } });
    await server.deputy.bus.publish("client", planner.client_id);
    expect(await introspect(server, reports, leaversJwt)).toEqual({ active: false });
  });

  it("RFC 7009: the agent a JWT was issued to revokes it and every token exchanged from it", async () => {
    const { delegation, subjectToken, jwt, child } = await jwtChain();
    const sibling = ok(
      await exchange(server, planner, { subject_token: subjectToken, resource: reports.uri }),
    );

    const revoked = await revoke(planner, jwt);
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    expect(await introspect(server, reports, jwt)).toEqual({ active: false });
    expect(await introspect(server, reports, child)).toEqual({ active: false });
    expect((await lineage(jwt)).revokedAt).not.toBeNull();
    expect((await lineage(child)).revokedAt).not.toBeNull();
    const again = await exchange(server, researcher, { subject_token: jwt });
    expect(again.status).toBe(400);
    expect(again.body.error).toBe("invalid_request");
    // Only the subtree: the delegation and the token's sibling stay usable.
    expect((await introspect(server, reports, sibling)).active).toBe(true);
    const events = await server.deputy.db.prisma.auditEvent.findMany({
      where: { type: "revocation", delegationId: delegation.id },
    });
    expect(events).toMatchObject([
      { action: "revocation.rfc7009", actor: planner.client_id, details: { tokens: 2, delegations: 0 } },
    ]);
    // Revoking it again, or a JWT that is not Deputy's, changes nothing and answers 200 (RFC 7009 §2.2).
    expect((await revoke(planner, jwt)).status).toBe(200);
    expect((await revoke(planner, `${jwt.split(".").slice(0, 2).join(".")}.AAAA`)).status).toBe(200);
  });

  it("RFC 7009: another agent cannot revoke a JWT, and nothing changes", async () => {
    const { jwt, child } = await jwtChain();
    for (const agent of [outsider, researcher]) {
      const refused = await revoke(agent, jwt);
      expect(refused.status).toBe(400);
      expect(refused.body.error).toBe("unauthorized_client");
    }
    expect((await introspect(server, reports, jwt)).active).toBe(true);
    expect((await introspect(server, reports, child)).active).toBe(true);
    expect((await lineage(jwt)).revokedAt).toBeNull();
    expect((await exchange(server, researcher, { subject_token: jwt })).status).toBe(200);
  });
});
