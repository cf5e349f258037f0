// RFC 8693 delegation exchange over real HTTP: person → agent → sub-agent → sub-sub-agent, and every way a
// hop can be refused, each of which must land in the audit table.
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import {
  ACCESS_TOKEN,
  type Agent,
  createAgent,
  createChain,
  createPerson,
  createResource,
  delegate,
  exchange,
  introspect,
  type Resource,
  TOKEN_EXCHANGE,
} from "../helpers/scenario.ts";
import { ADMIN_SECRET, BACKENDS, startServer, type TestServer } from "../helpers/server.ts";

describe.each(BACKENDS)("token exchange on %s", (backend) => {
  let server: TestServer;
  let person: { id: string; email: string };
  let mail: Resource;
  let files: Resource;
  let reports: Resource;
  let planner: Agent;
  let researcher: Agent;
  let summarizer: Agent;
  let formatter: Agent;
  let outsider: Agent;

  beforeAll(async () => {
    server = await startServer(backend);
    person = await createPerson(server);
    mail = await createResource(server, "https://mail.example.com", ["mail.read", "mail.send"]);
    files = await createResource(server, "https://files.example.com", ["files.read", "files.write"]);
    reports = await createResource(server, "https://reports.example.com", ["reports.read"], {
      token_format: "jwt",
      token_ttl_seconds: 120,
    });
    const everything = [
      { resource: mail.uri, scopes: ["mail.read", "mail.send"] },
      { resource: files.uri, scopes: ["files.read", "files.write"] },
      { resource: reports.uri, scopes: ["reports.read"] },
    ];
    [planner, researcher, summarizer, formatter] = (await createChain(server, person.email, everything, [
      { maxDepth: 3 },
      {
        maxDepth: 3,
        grants: [
          { resource: mail.uri, scopes: ["mail.read"] },
          { resource: reports.uri, scopes: ["reports.read"] },
        ],
      },
      { maxDepth: 2 },
      { maxDepth: 1 },
    ])) as [Agent, Agent, Agent, Agent];
    outsider = await createAgent(server, person.email, everything);
  });
  afterAll(async () => {
    await server?.close();
  });

  const rootDelegation = (extra: Partial<Parameters<typeof delegate>[1]> = {}) =>
    delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: planner.client_id,
      grants: [
        { resource: mail.uri, scopes: ["mail.read", "mail.send"] },
        { resource: files.uri, scopes: ["files.read"] },
        { resource: reports.uri, scopes: ["reports.read"] },
      ],
      ...extra,
    });

  async function auditFor(delegationId: string) {
    return server.deputy.db.prisma.auditEvent.findMany({
      where: { delegationId, type: "exchange" },
      orderBy: { seq: "asc" },
    });
  }

  it("carries person, chain, resource and narrowed scope through three hops", async () => {
    const { delegation, subjectToken } = await rootDelegation();

    const first = await exchange(server, planner, { subject_token: subjectToken, resource: mail.uri });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toMatchObject({
      issued_token_type: ACCESS_TOKEN,
      token_type: "Bearer",
      scope: "mail.read mail.send",
    });
    expect(first.body.expires_in).toBeLessThanOrEqual(300);
    expect(first.headers.get("cache-control")).toContain("no-store");

    const second = await exchange(server, researcher, { subject_token: first.body.access_token });
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    expect(second.body.scope).toBe("mail.read");

    const third = await exchange(server, summarizer, {
      subject_token: second.body.access_token,
      scope: "mail.read",
    });
    expect(third.status, JSON.stringify(third.body)).toBe(200);

    const seen = await introspect(server, mail, third.body.access_token);
    expect(seen).toMatchObject({
      active: true,
      sub: person.id,
      client_id: summarizer.client_id,
      aud: mail.uri,
      scope: "mail.read",
      act: { sub: summarizer.client_id, act: { sub: researcher.client_id, act: { sub: planner.client_id } } },
      delegation: { id: delegation.id, task_id: delegation.taskId, task: "Plan the offsite", depth: 3 },
    });
    expect(seen.exp).toBeLessThanOrEqual(Math.floor(delegation.endsAt.getTime() / 1000));

    const fourth = await exchange(server, formatter, { subject_token: third.body.access_token });
    expect(fourth.status).toBe(400);
    expect(fourth.body).toMatchObject({ error: "invalid_request" });
    expect(fourth.body.error_description).toMatch(/4 agents long.*at most 3/);

    const lineage = await server.deputy.db.prisma.issuedToken.findMany({
      where: { delegationId: delegation.id },
      orderBy: { depth: "asc" },
    });
    expect(lineage.map((row) => row.actorChain.length)).toEqual([1, 1, 2, 3]);
    const [root, hop1, hop2, hop3] = lineage;
    expect(hop1?.parentJti).toBe(root?.jti);
    expect(hop2?.parentJti).toBe(hop1?.jti);
    expect(hop3?.parentJti).toBe(hop2?.jti);

    const events = await auditFor(delegation.id);
    expect(events.map((event) => event.decision)).toEqual(["allow", "allow", "allow", "deny"]);
    expect(events[3]).toMatchObject({
      delegatedBy: person.email,
      agentChain: [formatter.client_id, summarizer.client_id, researcher.client_id, planner.client_id],
      taskId: delegation.taskId,
      resource: mail.uri,
    });
    expect(events[3]?.reason).toContain("invalid_request");
    expect(events[0]?.scopesGranted).toEqual(["mail.read", "mail.send"]);
    // Refused after its scope was narrowed (the chain was too deep): it asked, and was granted nothing.
    expect(events[3]?.scopesGranted).toEqual([]);
  });

  it("refuses a widened scope, a foreign resource, another agent's token and a spliced actor token", async () => {
    const { delegation, subjectToken } = await rootDelegation();
    const forMail = await exchange(server, planner, {
      subject_token: subjectToken,
      resource: mail.uri,
      scope: "mail.read",
    });
    expect(forMail.status).toBe(200);

    const widened = await exchange(server, researcher, {
      subject_token: forMail.body.access_token,
      scope: "mail.read mail.send",
    });
    expect(widened.status).toBe(400);
    expect(widened.body.error).toBe("invalid_scope");
    expect(widened.body.error_description).toContain("mail.send");

    const notDelegated = await exchange(server, planner, {
      subject_token: subjectToken,
      resource: "https://bank.example.com",
    });
    expect(notDelegated.status).toBe(400);
    expect(notDelegated.body.error).toBe("invalid_target");

    const moved = await exchange(server, researcher, {
      subject_token: forMail.body.access_token,
      resource: reports.uri,
    });
    expect(moved.status).toBe(400);
    expect(moved.body.error).toBe("invalid_target");

    const stolen = await exchange(server, outsider, { subject_token: subjectToken, resource: mail.uri });
    expect(stolen.status).toBe(400);
    expect(stolen.body.error).toBe("invalid_request");
    expect(stolen.body.error_description).toContain(outsider.client_id);

    const outsiderOwn = await rootDelegation({ agent: outsider.client_id });
    const outsiderToken = await exchange(server, outsider, {
      subject_token: outsiderOwn.subjectToken,
      resource: mail.uri,
    });
    const spliced = await exchange(server, planner, {
      subject_token: subjectToken,
      resource: mail.uri,
      actor_token: outsiderToken.body.access_token,
      actor_token_type: ACCESS_TOKEN,
    });
    expect(spliced.status).toBe(400);
    expect(spliced.body.error).toBe("invalid_request");
    expect(spliced.body.error_description).toContain("actor_token");

    const ownActor = await exchange(server, planner, {
      subject_token: subjectToken,
      resource: mail.uri,
      actor_token: forMail.body.access_token,
      actor_token_type: ACCESS_TOKEN,
    });
    expect(ownActor.status, JSON.stringify(ownActor.body)).toBe(200);

    const events = await auditFor(delegation.id);
    const denials = events
      .filter((event) => event.decision === "deny")
      .map((event) => event.reason?.split(":")[0]);
    expect(denials).toEqual([
      "invalid_scope",
      "invalid_target",
      "invalid_target",
      "invalid_request",
      "invalid_request",
    ]);
  });

  it("refuses requested_token_type other than an access token, and bad subject token types", async () => {
    const { subjectToken } = await rootDelegation();
    const refresh = await exchange(server, planner, {
      subject_token: subjectToken,
      resource: mail.uri,
      requested_token_type: "urn:ietf:params:oauth:token-type:refresh_token",
    });
    expect(refresh.status).toBe(400);
    expect(refresh.body.error).toBe("invalid_request");
    const idToken = await exchange(server, planner, {
      subject_token: subjectToken,
      subject_token_type: "urn:ietf:params:oauth:token-type:id_token",
    });
    expect(idToken.body.error).toBe("invalid_request");
  });

  it("mints RFC 9068 JWTs for resource servers that ask for them, bound like opaque tokens", async () => {
    const { delegation, subjectToken } = await rootDelegation();
    const jwtToken = await exchange(server, planner, { subject_token: subjectToken, resource: reports.uri });
    expect(jwtToken.status, JSON.stringify(jwtToken.body)).toBe(200);
    expect(decodeProtectedHeader(jwtToken.body.access_token)).toMatchObject({ typ: "at+jwt", alg: "ES256" });
    const { payload } = await jwtVerify(
      jwtToken.body.access_token,
      createRemoteJWKSet(new URL(`${server.url}/jwks`)),
      {
        issuer: server.url,
        audience: reports.uri,
        typ: "at+jwt",
      },
    );
    expect(payload).toMatchObject({
      sub: person.id,
      client_id: planner.client_id,
      scope: "reports.read",
      act: { sub: planner.client_id },
      delegation: { id: delegation.id, task_id: delegation.taskId, depth: 1 },
    });
    expect(typeof payload.jti).toBe("string");
    expect(Number(payload.exp) - Number(payload.iat)).toBeLessThanOrEqual(120);

    // A JWT can itself be the subject token of the next hop.
    const hop = await exchange(server, researcher, { subject_token: jwtToken.body.access_token });
    expect(hop.status, JSON.stringify(hop.body)).toBe(200);
    expect(decodeJwt(hop.body.access_token).act).toEqual({
      sub: researcher.client_id,
      act: { sub: planner.client_id },
    });
  });

  it("stops exchanges and introspection once the delegation is revoked or the person leaves", async () => {
    const { delegation, subjectToken } = await rootDelegation();
    const token = await exchange(server, planner, { subject_token: subjectToken, resource: mail.uri });
    expect((await introspect(server, mail, token.body.access_token)).active).toBe(true);

    await server.deputy.db.prisma.delegation.update({
      where: { id: delegation.id },
      data: { status: "revoked" },
    });
    await server.deputy.bus.publish("delegation", delegation.id);
    expect(await introspect(server, mail, token.body.access_token)).toEqual({ active: false });
    const refused = await exchange(server, planner, { subject_token: subjectToken, resource: mail.uri });
    expect(refused.status).toBe(400);
    expect(refused.body.error_description).toContain("revoked");

    const leaver = await createPerson(server);
    const leaversAgent = await createAgent(server, person.email, [
      { resource: mail.uri, scopes: ["mail.read"] },
    ]);
    const leaving = await delegate(server, {
      personId: leaver.id,
      personEmail: leaver.email,
      agent: leaversAgent.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
    });
    const before = await exchange(server, leaversAgent, { subject_token: leaving.subjectToken });
    expect(before.status).toBe(200);
    await server.admin("POST", `/people/${leaver.email}/offboard`, { reason: "left the company" });
    const after = await exchange(server, leaversAgent, { subject_token: leaving.subjectToken });
    expect(after.status).toBe(400);
    expect(after.body.error_description).toContain("no longer active");
    expect(await introspect(server, mail, before.body.access_token)).toEqual({ active: false });
  });

  it("gives each exchanged token a grant that expires with it; revocation still removes grants and tokens", async () => {
    const { delegation, subjectToken } = await rootDelegation();
    const opaque = await exchange(server, planner, { subject_token: subjectToken, resource: mail.uri });
    const jwt = await exchange(server, planner, { subject_token: subjectToken, resource: reports.uri });
    expect([opaque.status, jwt.status]).toEqual([200, 200]);
    const { prisma } = server.deputy.db;
    const rows = await prisma.issuedToken.findMany({ where: { delegationId: delegation.id } });
    const grantOf = (resource?: string) => rows.find((row) => row.resource === resource)?.grantId as string;
    const redis = server.deputy.redis.redis;
    const grantKey = (grantId: string) => `${server.deputy.config.redisPrefix}oidc:Grant:${grantId}`;
    const ttl = (grantId: string) => redis.ttl(grantKey(grantId));

    for (const [resource, answer] of [
      [mail.uri, opaque],
      [reports.uri, jwt],
    ] as const) {
      const seconds = await ttl(grantOf(resource));
      expect(seconds, resource).toBeGreaterThan(0);
      expect(seconds, resource).toBeLessThanOrEqual(answer.body.expires_in + 1);
    }
    // The subject token's grant lives as long as its delegation (an hour here), not as long as a token.
    const subjectGrant = rows.find((row) => row.parentJti === null)?.grantId as string;
    expect(await ttl(subjectGrant)).toBeGreaterThan(3000);

    const revoked = await server.admin("POST", `/delegations/${delegation.id}/revoke`, { reason: "done" });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    for (const grantId of [grantOf(mail.uri), grantOf(reports.uri), subjectGrant]) {
      expect(await redis.exists(grantKey(grantId))).toBe(0);
    }
    expect(await introspect(server, mail, opaque.body.access_token)).toEqual({ active: false });
  });

  it("caps lifetime at the delegation's end", async () => {
    const { subjectToken } = await rootDelegation({ endsInSeconds: 30 });
    const token = await exchange(server, planner, { subject_token: subjectToken, resource: mail.uri });
    expect(token.status).toBe(200);
    expect(token.body.expires_in).toBeLessThanOrEqual(30);
  });

  it("lets a resource server introspect only tokens meant for it, and only the token's agent revoke it", async () => {
    const { subjectToken } = await rootDelegation();
    const token = await exchange(server, planner, { subject_token: subjectToken, resource: mail.uri });
    expect(await introspect(server, files, token.body.access_token)).toEqual({ active: false });
    expect(await introspect(server, mail, subjectToken)).toEqual({ active: false });
    expect(await introspect(server, mail, "garbage")).toEqual({ active: false });

    const byOther = await postForm(
      `${server.url}/token/revocation`,
      { token: token.body.access_token },
      {
        authorization: basicAuth(outsider.client_id, outsider.client_secret),
      },
    );
    expect(byOther.status).toBe(400);
    expect((await introspect(server, mail, token.body.access_token)).active).toBe(true);

    const byOwner = await postForm(
      `${server.url}/token/revocation`,
      { token: token.body.access_token },
      {
        authorization: basicAuth(planner.client_id, planner.client_secret),
      },
    );
    expect(byOwner.status).toBe(200);
    expect(await introspect(server, mail, token.body.access_token)).toEqual({ active: false });
  });

  it("refuses authenticated clients a grant they may not use with unauthorized_client (RFC 6749 §5.2)", async () => {
    const { subjectToken } = await rootDelegation();
    const asks: [string, string, Record<string, string>, string][] = [
      // [client id, secret, form, endpoint]
      [
        mail.client_id,
        mail.client_secret,
        { grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN },
        "token",
      ],
      [
        "deputy-admin",
        ADMIN_SECRET,
        { grant_type: TOKEN_EXCHANGE, subject_token: subjectToken, subject_token_type: ACCESS_TOKEN },
        "token",
      ],
      [planner.client_id, planner.client_secret, { grant_type: "client_credentials" }, "token"],
      // The planner has no redirect URIs: it is not registered for the authorization code flow.
      [
        planner.client_id,
        planner.client_secret,
        {
          grant_type: "authorization_code",
          code: "x".repeat(43),
          redirect_uri: "https://agent.example/cb",
          code_verifier: "v".repeat(43),
        },
        "token",
      ],
      [mail.client_id, mail.client_secret, { grant_type: "client_credentials" }, "token"],
      [
        mail.client_id,
        mail.client_secret,
        { login_hint: person.email, scope: "openid mail.read" },
        "backchannel",
      ],
    ];
    for (const [clientId, secret, form, endpoint] of asks) {
      const refused = await postForm(`${server.url}/${endpoint}`, form, {
        authorization: basicAuth(clientId, secret),
      });
      const label = `${clientId} ${form.grant_type ?? endpoint}: ${JSON.stringify(refused.body)}`;
      expect(refused.status, label).toBe(400);
      expect(refused.body.error, label).toBe("unauthorized_client");
      expect(refused.body.error_description, label).toContain(`${clientId} may not use`);
    }
    // Client authentication comes first: with a wrong secret the answer is still invalid_client.
    const wrongSecret = await postForm(
      `${server.url}/token`,
      { grant_type: "client_credentials" },
      { authorization: basicAuth(planner.client_id, "wrong") },
    );
    expect(wrongSecret.status).toBe(401);
    expect(wrongSecret.body.error).toBe("invalid_client");
    // The refused client-credentials request is audited with the answer the client got.
    const audited = () =>
      server.deputy.db.prisma.auditEvent.findFirst({
        where: { action: "client_credentials.issue", actor: planner.client_id, decision: "deny" },
      });
    await expect.poll(async () => (await audited())?.reason).toMatch(/^unauthorized_client: /);
  });

  it("answers every token request, granted or refused, with Cache-Control: no-store and Pragma: no-cache", async () => {
    const { subjectToken } = await rootDelegation();
    const answers = [
      await exchange(server, planner, { subject_token: subjectToken, resource: mail.uri }),
      await exchange(server, planner, { subject_token: "garbage", resource: mail.uri }),
      await postForm(
        `${server.url}/token`,
        { grant_type: "client_credentials", scope: "deputy:admin" },
        { authorization: basicAuth("deputy-admin", ADMIN_SECRET) },
      ),
      await postForm(
        `${server.url}/token`,
        { grant_type: "client_credentials" },
        { authorization: basicAuth(planner.client_id, planner.client_secret) },
      ),
    ];
    expect(answers.map((answer) => answer.status)).toEqual([200, 400, 200, 400]);
    for (const answer of answers) {
      expect(answer.headers.get("cache-control")).toBe("no-store");
      expect(answer.headers.get("pragma")).toBe("no-cache");
    }
  });
});
