// People approve delegation in the browser, over real HTTP (no browser here; see test/browser/ for Chromium):
// the authorization request and its checks, sign-in and its throttling, the consent page, approval and denial,
// the subject token the agent gets, my delegations and revocation, and the security properties of every form.

import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { tokenRef } from "../../src/delegation/token-ref.ts";
import {
  agentTask,
  authorizeUrl,
  CookieClient,
  choices,
  codeFrom,
  createScenario,
  expectStrictPage,
  formAction,
  hiddenField,
  PASSWORD,
  pkce,
  REDIRECT_URI,
  redeemCode,
  type Scenario,
  signIn,
  toConsent as startConsent,
} from "../helpers/consent.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import { createPerson, exchange } from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

describe("people approve delegation (HTTP)", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer();
  });
  afterAll(async () => {
    await server?.close();
  });

  const toConsent = (s: Scenario, options: Parameters<typeof authorizeUrl>[2] = {}) =>
    startConsent(server, s, options);

  async function answer(
    client: CookieClient,
    page: string,
    form: Record<string, string | string[]>,
    options: { follow?: boolean } = {},
  ) {
    const action = formAction(page);
    const body = { csrf: hiddenField(page, "csrf", action), ...form };
    return options.follow === false
      ? client.request(action, { form: body })
      : client.follow(action, { form: body });
  }

  const approveAll = (s: Scenario) => ({
    decision: "approve",
    scope: choices(s.calendar, "calendar.read", "calendar.write"),
    duration: "asked",
  });

  /** The redirect the agent receives for a request that is refused before any page. */
  async function refusal(url: string) {
    const response = await new CookieClient(server.url).follow(url);
    expect(response.status).toBe(303);
    const location = new URL(String(response.location));
    expect(location.origin + location.pathname).toBe(REDIRECT_URI);
    return Object.fromEntries(location.searchParams);
  }

  describe("the authorization request", () => {
    it("requires PKCE with S256 for every agent", async () => {
      const s = await createScenario(server);
      expect(await refusal(authorizeUrl(server, s.agent, { details: [agentTask()] }))).toMatchObject({
        error: "invalid_request",
        error_description: expect.stringContaining("PKCE"),
      });
      const plain = await refusal(
        authorizeUrl(server, s.agent, {
          details: [agentTask()],
          extra: { code_challenge: "x".repeat(43), code_challenge_method: "plain" },
        }),
      );
      expect(plain.error).toBe("invalid_request");
    });

    it("refuses a task that has ended or would outlast the longest delegation, and an unnamed task", async () => {
      const s = await createScenario(server);
      const { challenge } = pkce();
      const past = agentTask({ ends_at: new Date(Date.now() - 60_000).toISOString() });
      expect(await refusal(authorizeUrl(server, s.agent, { challenge, details: [past] }))).toMatchObject({
        error: "invalid_authorization_details",
        error_description: expect.stringContaining("past"),
      });
      const tooLong = agentTask({ ends_at: new Date(Date.now() + 9 * 3600_000).toISOString() });
      expect((await refusal(authorizeUrl(server, s.agent, { challenge, details: [tooLong] }))).error).toBe(
        "invalid_authorization_details",
      );
      const malformed = agentTask({ ends_at: "next tuesday", extra: "field" });
      expect((await refusal(authorizeUrl(server, s.agent, { challenge, details: [malformed] }))).error).toBe(
        "invalid_authorization_details",
      );
      const two = [agentTask(), agentTask()];
      expect((await refusal(authorizeUrl(server, s.agent, { challenge, details: two }))).error).toBe(
        "invalid_authorization_details",
      );
      expect(await refusal(authorizeUrl(server, s.agent, { challenge }))).toMatchObject({
        error: "invalid_request",
        error_description: expect.stringContaining("name the task"),
      });
      const unknownScope = await refusal(
        authorizeUrl(server, s.agent, {
          challenge,
          details: [agentTask()],
          scope: "calendar.read mail.send",
        }),
      );
      expect(unknownScope.error).toBe("invalid_scope");
    });

    it("accepts the request pushed first (PAR), and defaults the resource to the agent's registered ones", async () => {
      const s = await createScenario(server);
      const { verifier, challenge } = pkce();
      const pushed = await postForm(
        `${server.url}/request`,
        {
          client_id: s.agent.client_id,
          response_type: "code",
          redirect_uri: REDIRECT_URI,
          scope: "calendar.read",
          code_challenge: challenge,
          code_challenge_method: "S256",
          authorization_details: JSON.stringify([agentTask({ task_id: "par-task" })]),
        },
        { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
      );
      expect(pushed.status, JSON.stringify(pushed.body)).toBe(201);
      const client = new CookieClient(server.url);
      const authorize = `${server.url}/auth?client_id=${s.agent.client_id}&request_uri=${encodeURIComponent(pushed.body.request_uri)}`;
      const login = await client.follow(authorize);
      // RFC 9126 §4: one-time use. Used again, while the first use is still waiting for the person, it is refused.
      expect(await refusal(authorize)).toMatchObject({
        error: "invalid_request_uri",
        error_description: expect.stringContaining("already used"),
      });
      const consent = await signIn(client, login.body, s.person.email);
      expect(consent.body).toContain("par-task");
      expect(consent.body).toContain(s.calendar);
      const done = await answer(client, consent.body, {
        decision: "approve",
        scope: choices(s.calendar, "calendar.read"),
      });
      const token = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
      expect(token.status).toBe(200);
      const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
        where: { taskId: "par-task" },
      });
      expect((await server.deputy.delegations.state(delegation.id))?.grants).toEqual([
        { resource: s.calendar, scopes: ["calendar.read"] },
      ]);

      const badPush = await postForm(
        `${server.url}/request`,
        {
          client_id: s.agent.client_id,
          response_type: "code",
          redirect_uri: REDIRECT_URI,
          scope: "calendar.read",
          code_challenge: challenge,
          code_challenge_method: "S256",
          authorization_details: JSON.stringify([agentTask({ ends_at: "2000-01-01T00:00:00Z" })]),
        },
        { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
      );
      expect(badPush.status).toBe(400);
      expect(badPush.body.error).toBe("invalid_authorization_details");
    });

    it("lets exactly one of concurrent uses of a pushed request_uri through", async () => {
      const s = await createScenario(server);
      const pushed = await postForm(
        `${server.url}/request`,
        {
          client_id: s.agent.client_id,
          response_type: "code",
          redirect_uri: REDIRECT_URI,
          scope: "calendar.read",
          code_challenge: pkce().challenge,
          code_challenge_method: "S256",
          authorization_details: JSON.stringify([agentTask()]),
        },
        { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
      );
      expect(pushed.status, JSON.stringify(pushed.body)).toBe(201);
      const authorize = `${server.url}/auth?client_id=${s.agent.client_id}&request_uri=${encodeURIComponent(pushed.body.request_uri)}`;
      const answers = await Promise.all(
        Array.from({ length: 8 }, () => new CookieClient(server.url).request(authorize)),
      );
      const opened = answers.filter((a) => a.location?.startsWith(`${server.url}/interaction/`));
      const refused = answers.filter(
        (a) => new URL(String(a.location)).searchParams.get("error") === "invalid_request_uri",
      );
      expect(opened).toHaveLength(1);
      expect(refused).toHaveLength(7);
    });

    it("accepts Deputy itself as the resource: the delegation covers the agent's servers for those scopes", async () => {
      const s = await createScenario(server);
      const { client, consent, verifier } = await toConsent(s, {
        resource: server.url,
        scope: "calendar.read",
        details: [agentTask({ task_id: "issuer-resource" })],
      });
      const done = await answer(client, consent.body, {
        decision: "approve",
        scope: choices(s.calendar, "calendar.read"),
      });
      const token = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
      expect(token.status, JSON.stringify(token.body)).toBe(200);
      const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
        where: { taskId: "issuer-resource" },
      });
      expect((await server.deputy.delegations.state(delegation.id))?.grants).toEqual([
        { resource: s.calendar, scopes: ["calendar.read"] },
      ]);
      const exchanged = await exchange(server, s.agent, {
        subject_token: token.body.access_token,
        resource: s.calendar,
      });
      expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
    });

    it("lets an agent registered for it ask untasked: said plainly, and capped at the untasked length", async () => {
      const s = await createScenario(server, { allow_untasked: true });
      const { client, consent, verifier } = await toConsent(s, { details: undefined });
      expect(consent.body).toContain("This agent did not name a task");
      expect(consent.body).toContain("at most 1 h");
      expect(consent.body).not.toContain("The agent's claim");
      const done = await answer(client, consent.body, approveAll(s));
      const token = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
      expect(token.status).toBe(200);
      expect(token.body.expires_in).toBeLessThanOrEqual(3600);
      expect(token.body.authorization_details).toBeUndefined();
      const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
        where: { agent: { clientId: s.agent.client_id } },
      });
      expect(delegation.taskId).toBeNull();
      expect(delegation.endsAt.getTime()).toBeLessThanOrEqual(Date.now() + 3600_000);
    });
  });

  describe("sign-in", () => {
    it("gives one generic message for a wrong password, an unknown email and an offboarded person", async () => {
      const s = await createScenario(server);
      const leaver = await createPerson(server, `leaver-${Date.now()}@example.com`);
      await server.admin("POST", `/people/${leaver.email}/offboard`, { reason: "left" });
      const pages = [];
      for (const [email, password] of [
        [s.person.email, "wrong password entirely"],
        [`nobody-${Date.now()}@example.com`, PASSWORD],
        [leaver.email, PASSWORD],
      ] as const) {
        const client = new CookieClient(server.url);
        const login = await client.request("/login");
        const failed = await signIn(client, login.body, email, password);
        expect(failed.status).toBe(401);
        expect(client.cookies.has("deputy_session")).toBe(false);
        pages.push(failed.body.match(/<p class="error"[^>]*>([^<]*)</)?.[1]);
      }
      expect(pages[0]).toBe("That email and password do not match an account that can sign in.");
      expect(new Set(pages).size).toBe(1);
      const events = await server.deputy.db.prisma.auditEvent.findMany({
        where: { action: "login.failure" },
      });
      expect(events.map((event) => event.reason)).toEqual(
        expect.arrayContaining(["wrong password", "unknown account", "person is offboarded"]),
      );
    });

    it("throttles an account after repeated failures, even for the right password, then signs in and out", async () => {
      const s = await createScenario(server);
      const client = new CookieClient(server.url);
      let page = (await client.request("/login")).body;
      for (let attempt = 0; attempt < 5; attempt++) {
        const failed = await signIn(client, page, s.person.email, "not the password");
        expect(failed.status).toBe(401);
        page = failed.body;
      }
      const refused = await signIn(client, page, s.person.email, PASSWORD);
      expect(refused.status).toBe(429);
      expect(refused.body).toContain("Too many attempts. Try again later.");
      expect(client.cookies.has("deputy_session")).toBe(false);

      // Another account from the same address is not locked by this one (the per-address limit is higher).
      const other = await createPerson(server, `other-${Date.now()}@example.com`);
      const fresh = new CookieClient(server.url);
      const signedIn = await signIn(fresh, (await fresh.request("/login")).body, other.email);
      expect(signedIn.status).toBe(200);
      expect(signedIn.body).toContain("My delegations");

      // Sign out: the session is gone server-side, so the old cookie no longer works.
      const sessionCookie = String(fresh.cookies.get("deputy_session"));
      const logout = await fresh.request("/logout", {
        form: { csrf: hiddenField(signedIn.body, "csrf", "/logout") },
      });
      expect(logout.status).toBe(303);
      const replayed = new CookieClient(server.url);
      replayed.cookies.set("deputy_session", sessionCookie);
      const after = await replayed.request("/delegations");
      expect(after.status).toBe(303);
      expect(after.location).toContain("/login");
    });

    it("signs an offboarded person out at once", async () => {
      const person = await createPerson(server, `soon-gone-${Date.now()}@example.com`);
      const client = new CookieClient(server.url);
      const page = await signIn(client, (await client.request("/login")).body, person.email);
      expect(page.body).toContain("My delegations");
      await server.admin("POST", `/people/${person.email}/offboard`, { reason: "left" });
      const after = await client.request("/delegations");
      expect(after.status).toBe(303);
      expect(after.location).toContain("/login");
    });
  });

  describe("consent", () => {
    it("shows the agent, owner, purpose, registration, resource, scopes with risk, task as a claim, end and sub-agents", async () => {
      const s = await createScenario(server, {
        purpose: "Books meetings for the team",
        blast_radius: "Can move meetings",
      });
      const task = agentTask({ task_id: "offsite-42", description: "Plan the offsite in Lisbon" });
      const { consent } = await toConsent(s, { details: [task] });
      const page = consent.body;
      const agent = await server.admin("GET", `/agents/${s.agent.client_id}`);
      const helper = await server.admin("GET", `/agents/${s.helper.client_id}`);
      expect(page).toContain(`${agent.body.name} asks to act for you`);
      expect(page).toContain(s.person.email);
      expect(page).toContain("Books meetings for the team");
      expect(page).toContain('class="badge badge-active">active');
      expect(page).toContain("Can move meetings");
      expect(page).toContain(s.calendar);
      expect(page).toContain("Scope calendar.read");
      expect(page).toMatch(
        /calendar\.write<\/code> <span class="muted">on [^<]+<\/span>\s*<strong class="risk">High risk/,
      );
      expect(page).not.toMatch(/calendar\.read<\/code>\s*<strong class="risk">/);
      expect(page).toContain("The agent's claim");
      expect(page).toContain("Plan the offsite in Lisbon");
      expect(page).toContain("offsite-42");
      expect(page).toContain(`datetime="${new Date(String(task.ends_at)).toISOString()}"`);
      expect(page).toMatch(/in (1 h 59 min|2 h)/);
      expect(page).toContain(helper.body.name);
      expect(page).toContain("At most 2 agents deep");
    });

    it("approves: a delegation, an audit event, and a subject token the exchange accepts", async () => {
      const s = await createScenario(server);
      const task = agentTask({ task_id: "approve-1" });
      const { client, consent, verifier } = await toConsent(s, { details: [task] });
      const done = await answer(client, consent.body, approveAll(s));
      expect(done.location).toContain(`${REDIRECT_URI}?code=`);
      expect(new URL(String(done.location)).searchParams.get("state")).toBe("s1");
      const token = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
      expect(token.status).toBe(200);
      expect(token.body).toMatchObject({ token_type: "Bearer", scope: "calendar.read calendar.write" });
      expect(token.body.refresh_token).toBeUndefined();
      // RFC 6749 §5.1.
      expect(token.headers.get("cache-control")).toBe("no-store");
      expect(token.headers.get("pragma")).toBe("no-cache");
      expect(token.body.access_token).not.toContain(".");
      expect(token.body.authorization_details).toEqual([
        expect.objectContaining({ type: "agent_task", task_id: "approve-1" }),
      ]);

      const prisma = server.deputy.db.prisma;
      const delegation = await prisma.delegation.findFirstOrThrow({
        where: { taskId: "approve-1" },
        include: { person: true, agent: true },
      });
      expect(delegation).toMatchObject({
        status: "active",
        taskDescription: task.description,
        maxDepth: 2,
      });
      expect((await server.deputy.delegations.state(delegation.id))?.grants).toEqual([
        { resource: s.calendar, scopes: ["calendar.read", "calendar.write"] },
      ]);
      expect(delegation.person.email).toBe(s.person.email);
      expect(delegation.agent.clientId).toBe(s.agent.client_id);
      expect(delegation.grantId).toBeTruthy();
      expect(Math.abs(delegation.endsAt.getTime() - new Date(String(task.ends_at)).getTime())).toBeLessThan(
        1000,
      );

      const stored = await server.deputy.provider.AccessToken.find(token.body.access_token);
      expect(stored?.aud).toBe(server.url);
      expect(stored?.grantId).toBe(delegation.grantId);
      expect(Number(stored?.exp)).toBeLessThanOrEqual(Math.ceil(delegation.endsAt.getTime() / 1000));
      expect(stored?.extra).toMatchObject({
        act: { sub: s.agent.client_id },
        delegation: { id: delegation.id, task_id: "approve-1", depth: 1, max_depth: 2 },
        may_act: { client_ids: [s.helper.client_id] },
      });
      const lineage = await prisma.issuedToken.findUniqueOrThrow({
        where: { jti: tokenRef(String(stored?.jti)) },
      });
      expect(lineage).toMatchObject({
        delegationId: delegation.id,
        depth: 1,
        actorChain: [s.agent.client_id],
      });

      const consentEvent = await prisma.auditEvent.findFirstOrThrow({
        where: { type: "consent", action: "delegation.create", delegationId: delegation.id },
      });
      expect(consentEvent).toMatchObject({
        decision: "allow",
        actor: s.person.email,
        delegatedBy: s.person.email,
        agentChain: [s.agent.client_id],
        taskId: "approve-1",
      });

      const exchanged = await exchange(server, s.agent, {
        subject_token: token.body.access_token,
        resource: s.calendar,
        scope: "calendar.read",
      });
      expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
      const hop = await exchange(server, s.helper, {
        subject_token: exchanged.body.access_token,
        resource: s.calendar,
      });
      expect(hop.status, JSON.stringify(hop.body)).toBe(200);

      // The code is single-use, and no refresh token can be had.
      const again = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
      expect(again.body.error).toBe("invalid_grant");
    });

    it("narrows: an unticked scope and a shorter length make a smaller delegation", async () => {
      const s = await createScenario(server);
      const { client, consent, verifier } = await toConsent(s, {
        details: [agentTask({ task_id: "narrow-1" })],
      });
      const done = await answer(client, consent.body, {
        decision: "approve",
        scope: choices(s.calendar, "calendar.read"),
        duration: "900",
      });
      const token = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
      expect(token.body.scope).toBe("calendar.read");
      expect(token.body.expires_in).toBeLessThanOrEqual(900);
      const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
        where: { taskId: "narrow-1" },
      });
      expect((await server.deputy.delegations.state(delegation.id))?.grants).toEqual([
        { resource: s.calendar, scopes: ["calendar.read"] },
      ]);
      expect(delegation.endsAt.getTime()).toBeLessThanOrEqual(Date.now() + 900_000);
      expect(token.body.authorization_details[0].ends_at).toBe(delegation.endsAt.toISOString());
      const wider = await exchange(server, s.agent, {
        subject_token: token.body.access_token,
        resource: s.calendar,
        scope: "calendar.write",
      });
      expect(wider.body.error).toBe("invalid_scope");
    });

    it("refuses to approve nothing, or a scope that was not asked for, and lets the person try again", async () => {
      const s = await createScenario(server);
      const { client, consent } = await toConsent(s, { scope: "calendar.read" });
      const none = await answer(client, consent.body, { decision: "approve", duration: "asked" });
      expect(none.status).toBe(400);
      expect(none.body).toContain("Tick at least one permission");
      const extra = await answer(client, consent.body, {
        decision: "approve",
        scope: choices(s.calendar, "calendar.read", "calendar.write"),
      });
      expect(extra.status).toBe(400);
      const junk = await answer(client, consent.body, {
        decision: "approve",
        scope: choices(s.calendar, "calendar.read"),
        duration: "-5",
      });
      expect(junk.status).toBe(400);
      expect(junk.body).not.toMatch(/at .*\.ts:\d+/);
      const ok = await answer(client, consent.body, {
        decision: "approve",
        scope: choices(s.calendar, "calendar.read"),
      });
      expect(ok.location).toContain("code=");
    });

    it("denies: access_denied to the agent, an audit event, no delegation", async () => {
      const s = await createScenario(server);
      const { client, consent } = await toConsent(s, { details: [agentTask({ task_id: "deny-1" })] });
      const done = await answer(client, consent.body, { decision: "deny" });
      const location = new URL(String(done.location));
      expect(location.origin + location.pathname).toBe(REDIRECT_URI);
      expect(location.searchParams.get("error")).toBe("access_denied");
      expect(location.searchParams.get("state")).toBe("s1");
      const prisma = server.deputy.db.prisma;
      expect(await prisma.delegation.count({ where: { taskId: "deny-1" } })).toBe(0);
      const event = await prisma.auditEvent.findFirstOrThrow({
        where: { action: "delegation.deny", taskId: "deny-1" },
      });
      expect(event).toMatchObject({
        type: "consent",
        decision: "deny",
        delegatedBy: s.person.email,
        agentChain: [s.agent.client_id],
      });
    });

    it("asks again for every request: an earlier approval is never reused, and prompt=none cannot skip it", async () => {
      const s = await createScenario(server);
      const { client, consent } = await toConsent(s);
      await answer(client, consent.body, approveAll(s));
      const { challenge } = pkce();
      const second = await client.follow(
        authorizeUrl(server, s.agent, { challenge, details: [agentTask()] }),
      );
      expect(second.status).toBe(200);
      expect(second.body).toContain("asks to act for you");
      const silent = await client.follow(
        authorizeUrl(server, s.agent, { challenge, details: [agentTask()], extra: { prompt: "none" } }),
      );
      expect(new URL(String(silent.location)).searchParams.get("error")).toBe("consent_required");
    });
  });

  describe("security of the forms", () => {
    it("refuses every form without its CSRF token, or with another's (403)", async () => {
      const s = await createScenario(server);
      const { client, consent, action } = await toConsent(s);
      const token = hiddenField(consent.body, "csrf", action);
      for (const csrf of [undefined, "", "A".repeat(43), hiddenField(consent.body, "csrf", "/logout")]) {
        const response = await client.request(action, {
          form: {
            ...(csrf === undefined ? {} : { csrf }),
            decision: "approve",
            scope: choices(s.calendar, "calendar.read"),
          },
        });
        expect(response.status).toBe(403);
        expect(response.body).toContain("Form expired");
      }
      // A token from another browser's session does not work here either.
      const other = await toConsent(s);
      const stolen = await client.request(action, {
        form: {
          csrf: hiddenField(other.consent.body, "csrf", other.action),
          decision: "approve",
          scope: choices(s.calendar, "calendar.read"),
        },
      });
      expect(stolen.status).toBe(403);
      expect(
        await server.deputy.db.prisma.delegation.count({ where: { agent: { clientId: s.agent.client_id } } }),
      ).toBe(0);
      expect((await client.request(action, { form: { csrf: token, decision: "deny" } })).status).toBe(303);

      const anonymous = new CookieClient(server.url);
      await anonymous.request("/login");
      expect(
        (await anonymous.request("/login", { form: { email: s.person.email, password: PASSWORD } })).status,
      ).toBe(403);
      const noNonce = new CookieClient(server.url);
      const loginPage = await new CookieClient(server.url).request("/login");
      expect(
        (
          await noNonce.request("/login", {
            form: { csrf: hiddenField(loginPage.body, "csrf"), email: s.person.email, password: PASSWORD },
          })
        ).status,
      ).toBe(403);

      const home = await client.request("/delegations");
      expect((await client.request("/logout", { form: {} })).status).toBe(403);
      expect(
        (await client.request("/approvals/abcdefghijklmnop", { form: { decision: "deny" } })).status,
      ).toBe(403);
      expect(
        (
          await client.request("/delegations/00000000-0000-0000-0000-000000000000/revoke", {
            form: { csrf: "x" },
          })
        ).status,
      ).toBe(403);
      expect(home.status).toBe(200);
    });

    it("cannot be replayed or answered twice, nor answered from another browser", async () => {
      const s = await createScenario(server);
      const { client, consent, action, verifier } = await toConsent(s, {
        details: [agentTask({ task_id: "replay-1" })],
      });
      const form = { csrf: hiddenField(consent.body, "csrf", action), ...approveAll(s) };
      const first = await client.request(action, { form });
      expect(first.status).toBe(303);
      const twice = await client.request(action, { form });
      expect(twice.status).toBe(409);
      const resumed = await client.follow(String(first.location));
      const token = await redeemCode(server, s.agent, codeFrom(resumed.location), verifier);
      expect(token.status).toBe(200);
      const replay = await client.request(action, { form });
      expect(replay.status).toBe(404);
      expect(await server.deputy.db.prisma.delegation.count({ where: { taskId: "replay-1" } })).toBe(1);

      // Someone else, signed in in their own browser, cannot answer this person's request.
      const victim = await toConsent(s, { details: [agentTask({ task_id: "foreign-1" })] });
      const attacker = new CookieClient(server.url);
      const mallory = await createPerson(server, `mallory-${Date.now()}@example.com`);
      await signIn(attacker, (await attacker.request("/login")).body, mallory.email);
      const foreign = await attacker.request(victim.action, {
        form: { csrf: hiddenField(victim.consent.body, "csrf", victim.action), ...approveAll(s) },
      });
      expect(foreign.status).toBe(404);
      expect(await server.deputy.db.prisma.delegation.count({ where: { taskId: "foreign-1" } })).toBe(0);
    });

    it("binds each answer to its own interaction: one agent's form cannot approve another agent's request", async () => {
      const first = await createScenario(server);
      const second = await createScenario(server);
      const client = new CookieClient(server.url);
      const { challenge } = pkce();
      const login = await client.follow(
        authorizeUrl(server, first.agent, { challenge, details: [agentTask({ task_id: "mine-1" })] }),
      );
      const mine = await signIn(client, login.body, first.person.email);
      // The same person, same browser, a second agent's request.
      await server.admin("PATCH", `/agents/${second.agent.client_id}`, { owner: first.person.email });
      const theirs = await client.follow(
        authorizeUrl(server, second.agent, { challenge, details: [agentTask({ task_id: "theirs-1" })] }),
      );
      expect(theirs.body).toContain("theirs-1");
      const mineAction = formAction(mine.body);
      const theirsAction = formAction(theirs.body);
      expect(theirsAction).not.toBe(mineAction);
      const crossed = await client.request(theirsAction, {
        form: { csrf: hiddenField(mine.body, "csrf", mineAction), ...approveAll(first) },
      });
      expect(crossed.status).toBe(403);
      expect(await server.deputy.db.prisma.delegation.count({ where: { taskId: "theirs-1" } })).toBe(0);
    });

    it("sends a strict CSP, no framing and no script on every page, and escapes what agents write", async () => {
      const s = await createScenario(server, {
        name: "<img src=x onerror=alert(1)>",
        purpose: "<script>alert(2)</script>",
      });
      const { client, consent } = await toConsent(s, {
        details: [agentTask({ description: '"><script>alert(3)</script>', task_id: "<b>x</b>" })],
      });
      expect(consent.body).toContain("&lt;img src=x onerror=alert(1)&gt;");
      expect(consent.body).toContain("&lt;script&gt;alert(2)&lt;/script&gt;");
      expect(consent.body).toContain("&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt;");
      expect(consent.body).not.toContain("<img src=x");
      expect(consent.body).not.toContain("<b>x</b>");
      const pages = [
        consent,
        await client.request("/delegations"),
        await client.request("/approvals"),
        await new CookieClient(server.url).request("/login"),
        await client.request("/interaction/not-a-real-interaction-id"),
      ];
      for (const page of pages) expectStrictPage(page);
      // The consent page's form may end at the agent's redirect URI; other pages only at Deputy.
      expect(consent.headers.get("content-security-policy")).toContain(
        "form-action 'self' https://agent.example",
      );
      const css = await fetch(`${server.url}/static/deputy.css`);
      expect(css.headers.get("content-type")).toContain("text/css");
    });

    it("sets session cookies HttpOnly and SameSite=Lax (Secure only under an https issuer)", async () => {
      const s = await createScenario(server);
      const client = new CookieClient(server.url);
      const login = await client.request("/login");
      const nonce = login.headers.getSetCookie().find((cookie) => cookie.startsWith("deputy_login="));
      expect(nonce).toMatch(/HttpOnly/);
      expect(nonce).toMatch(/SameSite=Lax/);
      const response = await client.request("/login", {
        form: { csrf: hiddenField(login.body, "csrf"), email: s.person.email, password: PASSWORD },
      });
      const session = response.headers.getSetCookie().find((cookie) => cookie.startsWith("deputy_session="));
      expect(session).toMatch(/; HttpOnly/);
      expect(session).toMatch(/; SameSite=Lax/);
      expect(session).not.toMatch(/Secure/);
    });

    it("marks cookies Secure when the issuer is https, and throttles failures per client address", async () => {
      const other = await startServer("pglite", {
        ISSUER: "https://deputy.example",
        DEPUTY_LOGIN_MAX_FAILURES_PER_ADDRESS: "3",
      });
      try {
        const client = new CookieClient(other.url);
        let page = await client.request("/login");
        const nonce = page.headers.getSetCookie().find((cookie) => cookie.startsWith("deputy_login="));
        expect(nonce).toMatch(/; HttpOnly; SameSite=Lax; Secure$/);
        // Three failures on three different accounts from one address, then even a good sign-in is refused.
        for (let attempt = 0; attempt < 3; attempt++) {
          const failed = await signIn(client, page.body, `guess${attempt}@example.com`, "guessing");
          expect(failed.status).toBe(401);
          page = failed;
        }
        const person = await createPerson(other, `address-${Date.now()}@example.com`);
        const refused = await signIn(client, page.body, person.email);
        expect(refused.status).toBe(429);
        expect(refused.body).toContain("Too many attempts. Try again later.");
      } finally {
        await other.close();
      }
    });

    it("shows bad input as a clear page, never a stack trace", async () => {
      const client = new CookieClient(server.url);
      for (const [url, status] of [
        ["/interaction/abc", 404],
        ["/interaction/%00%ff", 404],
        ["/nope/../approvals", 303],
      ] as const) {
        const response = await client.request(url);
        expect(response.status).toBe(status);
        expect(response.body).not.toMatch(/at .*\.(ts|js):\d+/);
      }
      const huge = await client.request("/login", { form: { csrf: "x", email: "a".repeat(20_000) } });
      expect(huge.status).toBe(413);
      const json = await client.request("/login", {
        method: "POST",
        headers: { "content-type": "application/json" },
      });
      expect(json.status).toBe(415);
      const badAuth = await fetch(`${server.url}/auth?client_id=nobody&response_type=code`, {
        headers: { accept: "text/html" },
      });
      expect(badAuth.status).toBe(400);
      expect(await badAuth.text()).toContain("request cannot be processed");
    });
  });

  describe("my delegations", () => {
    it("lists active delegations with the sub-agents acting under them, and revokes one at once", async () => {
      const s = await createScenario(server);
      const { client, consent, verifier } = await toConsent(s, {
        details: [agentTask({ task_id: "mine-listed", description: "Book the venue" })],
      });
      const done = await answer(client, consent.body, approveAll(s));
      const token = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
      const first = await exchange(server, s.agent, {
        subject_token: token.body.access_token,
        resource: s.calendar,
        scope: "calendar.read",
      });
      expect(first.status, JSON.stringify(first.body)).toBe(200);
      const hop = await exchange(server, s.helper, {
        subject_token: first.body.access_token,
        resource: s.calendar,
      });
      expect(hop.status, JSON.stringify(hop.body)).toBe(200);

      const page = await client.request("/delegations");
      expect(page.status).toBe(200);
      const agent = (await server.admin("GET", `/agents/${s.agent.client_id}`)).body;
      const helper = (await server.admin("GET", `/agents/${s.helper.client_id}`)).body;
      expect(page.body).toContain("Book the venue");
      expect(page.body).toContain("mine-listed");
      expect(page.body).toContain("<code>calendar.write</code>");
      expect(page.body).toContain(`${agent.name} → ${helper.name}`);

      const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
        where: { taskId: "mine-listed" },
      });
      const action = `/delegations/${delegation.id}/revoke`;
      // Without a session the form's token is not enough: nothing is revoked.
      const anonymous = await new CookieClient(server.url).request(action, {
        form: { csrf: hiddenField(page.body, "csrf", action) },
      });
      expect(anonymous.status).toBe(403);
      expect(anonymous.body).toContain("Sign in again to revoke a delegation.");
      expect(
        (await server.deputy.db.prisma.delegation.findUniqueOrThrow({ where: { id: delegation.id } })).status,
      ).toBe("active");
      const revoked = await client.request(action, {
        form: { csrf: hiddenField(page.body, "csrf", action) },
      });
      expect(revoked.status).toBe(303);
      const after = await server.deputy.db.prisma.delegation.findUniqueOrThrow({
        where: { id: delegation.id },
      });
      expect(after.status).toBe("revoked");
      expect(after.endReason).toContain("revoked by the person");
      expect(after.endedAt).toBeTruthy();
      const event = await server.deputy.db.prisma.auditEvent.findFirstOrThrow({
        where: { type: "revocation", delegationId: delegation.id },
      });
      expect(event).toMatchObject({
        delegatedBy: s.person.email,
        agentChain: [s.agent.client_id],
        taskId: "mine-listed",
      });

      const refused = await exchange(server, s.agent, {
        subject_token: token.body.access_token,
        resource: s.calendar,
        scope: "calendar.read",
      });
      expect(refused.status).toBe(400);
      expect(refused.body.error).toBe("invalid_request");
      expect(await server.deputy.provider.AccessToken.find(first.body.access_token)).toBeUndefined();
      expect((await client.request("/delegations")).body).not.toContain("mine-listed");

      // Another person cannot revoke it (nor see it), and revoking twice is a clear 404.
      const again = await client.request(action, { form: { csrf: hiddenField(page.body, "csrf", action) } });
      expect(again.status).toBe(404);
    });

    it("lets the person end a task from my delegations, through POST /tasks/{id}/complete with the session", async () => {
      const s = await createScenario(server);
      const { client, consent, verifier } = await toConsent(s, {
        details: [agentTask({ task_id: "done-by-person", description: "Send the invites" })],
      });
      const done = await answer(client, consent.body, approveAll(s));
      const token = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
      const page = await client.request("/delegations");
      const action = "/tasks/done-by-person/complete";
      expect(page.body).toContain(`action="${action}"`);

      // Without the form's CSRF token the session is not enough, and nothing ends.
      const forged = await client.request(action, { form: { csrf: "forged" } });
      expect(forged.status).toBe(403);
      const stillActive = await server.deputy.db.prisma.delegation.findFirstOrThrow({
        where: { taskId: "done-by-person" },
      });
      expect(stillActive.status).toBe("active");

      const completed = await client.request(action, {
        form: { csrf: hiddenField(page.body, "csrf", action) },
      });
      expect(completed.status).toBe(303);
      expect(completed.location).toBe(`${server.url}/delegations?done=completed`);
      const ended = await server.deputy.db.prisma.delegation.findFirstOrThrow({
        where: { taskId: "done-by-person" },
      });
      expect(ended.status).not.toBe("active");
      const refused = await exchange(server, s.agent, {
        subject_token: token.body.access_token,
        resource: s.calendar,
      });
      expect(refused.status).toBe(400);
    });
  });
});
