// Human step-up end to end over HTTP: an exchange for a high-risk scope is refused with advice to ask the
// person through CIBA; the agent does, the person approves on /approvals, and the same exchange then succeeds.
import { afterAll, beforeAll, expect, it } from "vitest";
import {
  agentTask,
  CIBA_GRANT,
  CookieClient,
  choices,
  createScenario,
  hiddenField,
  signIn,
} from "../helpers/consent.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import { delegate, exchange } from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

let server: TestServer;

beforeAll(async () => {
  server = await startServer();
});
afterAll(async () => {
  await server?.close();
});

it("refuses a high-risk exchange until the person approves it through CIBA", async () => {
  const s = await createScenario(server);
  const { delegation, subjectToken } = await delegate(server, {
    personId: s.person.id,
    personEmail: s.person.email,
    agent: s.agent.client_id,
    grants: [{ resource: s.calendar, scopes: ["calendar.read", "calendar.write"] }],
  });

  const refused = await exchange(server, s.agent, { subject_token: subjectToken, scope: "calendar.write" });
  expect(refused.status).toBe(400);
  expect(refused.body.error).toBe("access_denied");
  expect(refused.body.error_description).toContain(`scope calendar.write on ${s.calendar} is high risk`);
  expect(refused.body.error_description).toContain(`start a CIBA request at ${server.url}/backchannel`);

  // The agent does what the refusal says.
  const started = await postForm(
    `${server.url}/backchannel`,
    {
      login_hint: s.person.email,
      scope: "openid calendar.write",
      resource: s.calendar,
      binding_message: "STEP-UP",
      authorization_details: JSON.stringify([agentTask({ description: "Move the offsite to Friday" })]),
    },
    { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
  );
  expect(started.status, JSON.stringify(started.body)).toBe(200);
  // Still refused while the person has not answered.
  expect(
    (await exchange(server, s.agent, { subject_token: subjectToken, scope: "calendar.write" })).status,
  ).toBe(400);

  const client = new CookieClient(server.url);
  const login = await client.follow("/approvals");
  const page = (await signIn(client, login.body, s.person.email)).body;
  expect(page).toContain("STEP-UP");
  const request = await server.deputy.provider.BackchannelAuthenticationRequest.find(
    started.body.auth_req_id,
  );
  const action = `/approvals/${request?.jti}`;
  const answered = await client.request(action, {
    form: {
      csrf: hiddenField(page, "csrf", action),
      decision: "approve",
      scope: choices(s.calendar, "calendar.write"),
    },
  });
  expect(answered.status).toBe(303);
  const polled = await postForm(
    `${server.url}/token`,
    { grant_type: CIBA_GRANT, auth_req_id: started.body.auth_req_id },
    { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
  );
  expect(polled.status, JSON.stringify(polled.body)).toBe(200);

  // The approval is the person's step-up: the original delegation's exchange now passes.
  const allowed = await exchange(server, s.agent, { subject_token: subjectToken, scope: "calendar.write" });
  expect(allowed.status, JSON.stringify(allowed.body)).toBe(200);
  expect(allowed.body.scope).toBe("calendar.write");

  const approvals = await server.deputy.db.prisma.stepUpApproval.findMany({
    where: { personId: s.person.id, agentClientId: s.agent.client_id },
  });
  expect(approvals).toHaveLength(1);
  expect(approvals[0]).toMatchObject({ resource: s.calendar, scopes: ["calendar.write"] });
  const expires = approvals[0]?.expiresAt.getTime() ?? 0;
  const approved = approvals[0]?.approvedAt.getTime() ?? 0;
  expect(expires - approved).toBe(server.deputy.config.stepUpWindowSeconds * 1000);

  const events = await server.deputy.db.prisma.auditEvent.findMany({
    where: { delegationId: delegation.id, action: "token.exchange" },
    orderBy: { seq: "asc" },
  });
  expect(events.map((e) => e.decision)).toEqual(["deny", "deny", "allow"]);
  expect(events[0]?.reason).toContain("policy:high-risk-needs-step-up");
  // A denial grants nothing; the allowed exchange, what it granted.
  expect(events.map((e) => [e.scopesAsked, e.scopesGranted])).toEqual([
    [["calendar.write"], []],
    [["calendar.write"], []],
    [["calendar.write"], ["calendar.write"]],
  ]);
  expect(
    await server.deputy.db.prisma.auditEvent.count({
      where: { action: "step_up.approve", agentChain: { has: s.agent.client_id } },
    }),
  ).toBe(1);
});
