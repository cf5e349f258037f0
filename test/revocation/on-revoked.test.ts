// RevocationService.onRevoked: the extension point for whatever must hear of a revocation (shared signals,
// caches). A listener hears, after commit, the delegations reached with their person and agent, and the tokens
// revoked by reference and resource — for a whole delegation and for an RFC 7009 subtree alike — and a listener
// that fails changes nothing for the revocation.
import { decodeJwt } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenRef } from "../../src/delegation/token-ref.ts";
import type { RevocationReached } from "../../src/revocation/revocations.ts";
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
import { startServer, type TestServer } from "../helpers/server.ts";

describe("RevocationService.onRevoked", () => {
  let server: TestServer;
  let person: { id: string; email: string };
  let mail: Resource;
  let reports: Resource;
  let agent: Agent;
  const heard: RevocationReached[] = [];

  beforeAll(async () => {
    server = await startServer();
    server.deputy.revocation.revocations.onRevoked((reached) => {
      heard.push(reached);
    });
    server.deputy.revocation.revocations.onRevoked(() => {
      throw new Error("a listener that fails");
    });
    person = await createPerson(server);
    mail = await createResource(server, "https://mail.example.com", ["mail.read"]);
    reports = await createResource(server, "https://reports.example.com", ["reports.read"], {
      token_format: "jwt",
    });
    agent = await createAgent(server, person.email, [
      { resource: mail.uri, scopes: ["mail.read"] },
      { resource: reports.uri, scopes: ["reports.read"] },
    ]);
  });
  afterAll(async () => {
    await server?.close();
  });

  const delegation = () =>
    delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: agent.client_id,
      grants: [
        { resource: mail.uri, scopes: ["mail.read"] },
        { resource: reports.uri, scopes: ["reports.read"] },
      ],
    });

  it("tells the delegation, its person and agent, and every token revoked, after an admin's revocation", async () => {
    const { delegation: row, subjectToken } = await delegation();
    const opaque = await exchange(server, agent, { subject_token: subjectToken, resource: mail.uri });
    const jwt = await exchange(server, agent, { subject_token: subjectToken, resource: reports.uri });
    expect([opaque.status, jwt.status]).toEqual([200, 200]);
    heard.length = 0;
    const revoked = await server.admin("POST", `/delegations/${row.id}/revoke`, { reason: "done with it" });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    // The revocation is answered, and applied, even though one listener threw.
    expect(await introspect(server, mail, opaque.body.access_token)).toEqual({ active: false });
    expect(heard).toHaveLength(1);
    const [reached] = heard as [RevocationReached];
    expect(reached.cause).toMatchObject({ trigger: "admin", reason: "done with it" });
    expect(reached.delegations).toEqual([
      { id: row.id, personId: person.id, agentClientId: agent.client_id, resources: [mail.uri, reports.uri] },
    ]);
    const refs = reached.tokens.map((token) => token.ref).sort();
    expect(refs).toEqual(
      [
        tokenRef(subjectToken),
        tokenRef(opaque.body.access_token),
        tokenRef(String(decodeJwt(jwt.body.access_token).jti)),
      ].sort(),
    );
    expect(reached.tokens.map((token) => token.resource).sort()).toEqual(
      [mail.uri, reports.uri, null].sort(),
    );
    // Revoking again reaches nothing new, so nobody is told again.
    await server.admin("POST", `/delegations/${row.id}/revoke`, { reason: "again" });
    expect(heard).toHaveLength(1);
  });

  it("tells the tokens of a subtree an agent revoked (RFC 7009), its delegation left active", async () => {
    const { subjectToken } = await delegation();
    const opaque = await exchange(server, agent, { subject_token: subjectToken, resource: mail.uri });
    heard.length = 0;
    const answer = await postForm(
      `${server.url}/token/revocation`,
      { token: opaque.body.access_token },
      { authorization: basicAuth(agent.client_id, agent.client_secret) },
    );
    expect(answer.status).toBe(200);
    expect(heard).toHaveLength(1);
    expect(heard[0]?.delegations).toEqual([]);
    expect(heard[0]?.tokens).toEqual([
      { ref: tokenRef(opaque.body.access_token), delegationId: expect.any(String), resource: mail.uri },
    ]);
  });
});
