// CIBA (poll mode) for headless agents, over real HTTP: the agent asks for a person by email, the person
// approves or denies on /approvals, and the agent's polling gets the subject token, access_denied or
// expired_token.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  agentTask,
  CIBA_GRANT,
  CookieClient,
  choices,
  createScenario,
  hiddenField,
  type Scenario,
  signIn,
} from "../helpers/consent.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import { createPerson, exchange } from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

describe("CIBA approvals", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  async function backchannel(s: Scenario, form: Record<string, string>, email = s.person.email) {
    return postForm(
      `${server.url}/backchannel`,
      {
        login_hint: email,
        scope: "openid calendar.read calendar.write",
        resource: s.calendar,
        binding_message: "W7-QX",
        authorization_details: JSON.stringify([agentTask()]),
        ...form,
      },
      { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
    );
  }

  async function poll(s: Scenario, authReqId: string) {
    return postForm(
      `${server.url}/token`,
      { grant_type: CIBA_GRANT, auth_req_id: authReqId },
      { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
    );
  }

  async function approvalsPage(email: string) {
    const client = new CookieClient(server.url);
    const login = await client.follow("/approvals");
    const page = await signIn(client, login.body, email);
    expect(page.status).toBe(200);
    return { client, page: page.body };
  }

  /** Answers the request `id` from the approvals page. */
  async function answer(
    client: CookieClient,
    page: string,
    id: string,
    form: Record<string, string | string[]>,
  ) {
    const action = `/approvals/${id}`;
    return client.request(action, { form: { csrf: hiddenField(page, "csrf", action), ...form } });
  }

  it("is advertised for agents, in poll mode", async () => {
    const discovery: any = await (await fetch(`${server.url}/.well-known/openid-configuration`)).json();
    expect(discovery.backchannel_authentication_endpoint).toBe(`${server.url}/backchannel`);
    expect(discovery.backchannel_token_delivery_modes_supported).toEqual(["poll"]);
    expect(discovery.grant_types_supported).toContain(CIBA_GRANT);
    expect(discovery.authorization_details_types_supported).toEqual(["agent_task"]);
    expect(discovery.code_challenge_methods_supported).toEqual(["S256"]);
  });

  it("approves: pending until the person answers, then a subject token the exchange accepts", async () => {
    const s = await createScenario(server);
    const task = agentTask({ task_id: "ciba-1", description: "Reschedule my 1:1s" });
    const started = await backchannel(s, { authorization_details: JSON.stringify([task]) });
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    expect(started.body.auth_req_id).toBeTruthy();
    expect(started.body.expires_in).toBeGreaterThan(0);
    expect((await poll(s, started.body.auth_req_id)).body.error).toBe("authorization_pending");

    const { client, page } = await approvalsPage(s.person.email);
    expect(page).toContain("W7-QX");
    expect(page).toContain("Reschedule my 1:1s");
    expect(page).toContain("The agent's claim");
    expect(page).toContain("ciba-1");
    expect(page).toMatch(
      /calendar\.write<\/code> <span class="muted">on [^<]+<\/span>\s*<strong class="risk">High risk/,
    );
    const request = await server.deputy.provider.BackchannelAuthenticationRequest.find(
      started.body.auth_req_id,
    );
    const id = String(request?.jti);
    // The person narrows: no calendar.write.
    const answered = await answer(client, page, id, {
      decision: "approve",
      scope: choices(s.calendar, "calendar.read"),
      duration: "900",
    });
    expect(answered.status).toBe(303);
    expect(answered.location).toContain("/approvals?done=approved");
    const after = await client.request(String(answered.location));
    expect(after.body).toContain("Approved.");
    expect(after.body).not.toContain("W7-QX");

    const token = await poll(s, started.body.auth_req_id);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(token.body).toMatchObject({ token_type: "Bearer", scope: "calendar.read" });
    expect(token.body.id_token).toBeTruthy();
    expect(token.body.refresh_token).toBeUndefined();
    expect(token.headers.get("pragma")).toBe("no-cache");
    expect(token.body.expires_in).toBeLessThanOrEqual(900);
    expect(token.body.authorization_details).toEqual([expect.objectContaining({ task_id: "ciba-1" })]);
    const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
      where: { taskId: "ciba-1" },
    });
    expect((await server.deputy.delegations.state(delegation.id))?.grants).toEqual([
      { resource: s.calendar, scopes: ["calendar.read"] },
    ]);
    const stored = await server.deputy.provider.AccessToken.find(token.body.access_token);
    expect(stored?.aud).toBe(server.url);
    expect(stored?.extra).toMatchObject({ delegation: { id: delegation.id } });

    const exchanged = await exchange(server, s.agent, {
      subject_token: token.body.access_token,
      resource: s.calendar,
    });
    expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
    expect(exchanged.body.scope).toBe("calendar.read");

    // The request is answered once: polling again and answering again both fail.
    expect((await poll(s, started.body.auth_req_id)).body.error).toBe("invalid_grant");
    expect(
      (await answer(client, page, id, { decision: "approve", scope: choices(s.calendar, "calendar.read") }))
        .status,
    ).toBe(404);
    const events = await server.deputy.db.prisma.auditEvent.findMany({ where: { taskId: "ciba-1" } });
    expect(events.map((event) => `${event.type}:${event.action}`)).toEqual(
      expect.arrayContaining([
        "ciba:ciba.request",
        "consent:delegation.create",
        "consent:subject_token.issue",
      ]),
    );
  });

  it("records an approval of high-risk scopes as the person's step-up", async () => {
    const s = await createScenario(server);
    const started = await backchannel(s, {});
    const { client, page } = await approvalsPage(s.person.email);
    const request = await server.deputy.provider.BackchannelAuthenticationRequest.find(
      started.body.auth_req_id,
    );
    const answered = await answer(client, page, String(request?.jti), {
      decision: "approve",
      scope: choices(s.calendar, "calendar.read", "calendar.write"),
    });
    expect(answered.status).toBe(303);
    const stepUps = await server.deputy.db.prisma.stepUpApproval.findMany({
      where: { agentClientId: s.agent.client_id },
    });
    expect(stepUps).toEqual([expect.objectContaining({ resource: s.calendar, scopes: ["calendar.write"] })]);
    const token = await poll(s, started.body.auth_req_id);
    const write = await exchange(server, s.agent, {
      subject_token: token.body.access_token,
      resource: s.calendar,
      scope: "calendar.write",
    });
    expect(write.status, JSON.stringify(write.body)).toBe(200);
  });

  it("denies: the agent's poll gets access_denied, and the refusal is audited", async () => {
    const s = await createScenario(server);
    const started = await backchannel(s, {
      authorization_details: JSON.stringify([agentTask({ task_id: "ciba-no" })]),
    });
    const { client, page } = await approvalsPage(s.person.email);
    const request = await server.deputy.provider.BackchannelAuthenticationRequest.find(
      started.body.auth_req_id,
    );
    const answered = await answer(client, page, String(request?.jti), { decision: "deny" });
    expect(answered.location).toContain("done=denied");
    const polled = await poll(s, started.body.auth_req_id);
    expect(polled.status).toBe(400);
    expect(polled.body.error).toBe("access_denied");
    const event = await server.deputy.db.prisma.auditEvent.findFirstOrThrow({
      where: { action: "delegation.deny", taskId: "ciba-no" },
    });
    expect(event).toMatchObject({
      type: "consent",
      delegatedBy: s.person.email,
      agentChain: [s.agent.client_id],
    });
    expect(await server.deputy.db.prisma.delegation.count({ where: { taskId: "ciba-no" } })).toBe(0);
  });

  it("answers expired_token once the request has expired, and no longer lists it", async () => {
    const s = await createScenario(server);
    const started = await backchannel(s, { requested_expiry: "1" });
    expect(started.body.expires_in).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 2100));
    const polled = await poll(s, started.body.auth_req_id);
    expect(polled.body.error).toBe("expired_token");
    const { page } = await approvalsPage(s.person.email);
    expect(page).toContain("No agent is waiting for your approval.");
  });

  it("refuses bad requests clearly", async () => {
    const s = await createScenario(server);
    const unknown = await backchannel(s, {}, `nobody-${Date.now()}@example.com`);
    expect(unknown.status).toBe(400);
    expect(unknown.body.error).toBe("unknown_user_id");
    const noTask = await backchannel(s, { authorization_details: "" });
    expect(noTask.body.error).toBe("invalid_request");
    const late = await backchannel(s, {
      authorization_details: JSON.stringify([
        agentTask({ ends_at: new Date(Date.now() - 1000).toISOString() }),
      ]),
    });
    expect(late.body.error).toBe("invalid_authorization_details");
    const binding = await backchannel(s, { binding_message: "x".repeat(65) });
    expect(binding.body.error).toBe("invalid_binding_message");
    const hintToken = await backchannel(s, { login_hint: "", login_hint_token: "abc" });
    expect(hintToken.body.error).toBe("invalid_request");
    const foreignScope = await backchannel(s, { scope: "openid mail.send" });
    expect(foreignScope.body.error).toBe("invalid_scope");
  });

  it("shows a request only to the person it names, and guards its form", async () => {
    const s = await createScenario(server);
    const started = await backchannel(s, {
      authorization_details: JSON.stringify([agentTask({ task_id: "ciba-own" })]),
    });
    const request = await server.deputy.provider.BackchannelAuthenticationRequest.find(
      started.body.auth_req_id,
    );
    const id = String(request?.jti);
    const stranger = await createPerson(server, `stranger-${Date.now()}@example.com`);
    const other = await approvalsPage(stranger.email);
    expect(other.page).not.toContain("ciba-own");
    const forged = await other.client.request(`/approvals/${id}`, {
      form: {
        csrf: hiddenField(other.page, "csrf", "/logout"),
        decision: "approve",
        scope: choices(s.calendar, "calendar.read"),
      },
    });
    expect(forged.status).toBe(403);

    const { client, page } = await approvalsPage(s.person.email);
    expect(page).toContain("ciba-own");
    const noToken = await client.request(`/approvals/${id}`, {
      form: { decision: "approve", scope: choices(s.calendar, "calendar.read") },
    });
    expect(noToken.status).toBe(403);
    expect((await poll(s, started.body.auth_req_id)).body.error).toBe("authorization_pending");
    const anonymous = await new CookieClient(server.url).request("/approvals");
    expect(anonymous.status).toBe(303);
    expect(anonymous.location).toContain("/login?return_to=%2Fapprovals");
  });
});
