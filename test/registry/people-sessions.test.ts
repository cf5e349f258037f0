// A change to a person that must sign them out does, over real HTTP: after an admin sets a new password, removes
// their admin rights or offboards them, every session they had — on Deputy's pages and inside an agent's request
// — meets the sign-in page (or, for the task route, the agent's 401) instead of going on for its 8 hours.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { csrfToken } from "../../src/pages/csrf.ts";
import { UiSessionStore } from "../../src/pages/ui-sessions.ts";
import {
  agentTask,
  authorizeUrl,
  CookieClient,
  createScenario,
  PASSWORD,
  pkce,
  type Scenario,
  signIn,
} from "../helpers/consent.ts";
import { BACKENDS, startServer, type TestServer } from "../helpers/server.ts";

const NEW_PASSWORD = "a different horse entirely";

describe.each(BACKENDS)("people's sessions end with their password or rights, on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer(backend);
  });
  afterAll(async () => {
    await server?.close();
  });

  /** A browser signed in at /login as `email`, on `page`. */
  async function signedInAt(email: string, page = "/delegations", password = PASSWORD) {
    const client = new CookieClient(server.url);
    const login = await client.follow(page);
    const landed = await signIn(client, login.body, email, password);
    expect(landed.status, landed.body).toBe(200);
    expect(client.cookies.has("deputy_session")).toBe(true);
    return client;
  }

  /** A browser inside an agent's request: signed in there, on the consent page (an oidc-provider session too). */
  async function atConsent(s: Scenario, client = new CookieClient(server.url)) {
    const login = await client.follow(authorizeUrl(server, s.agent, authorization(s)));
    const consent = await signIn(client, login.body, s.person.email);
    expect(consent.body).toContain("asks to act for you");
    return client;
  }

  const authorization = (s: Scenario) => ({
    challenge: pkce().challenge,
    details: [agentTask()],
    resource: s.calendar,
  });

  /** Where a page sends this browser: the page itself (200), or the sign-in page. */
  async function visit(client: CookieClient, page: string) {
    const answer = await client.request(page);
    return answer.status === 303 ? String(answer.location).replace(server.url, "") : answer.status;
  }

  /** POST /tasks/{id}/complete as the signed-in person (the session's CSRF token for it). */
  async function completeTask(client: CookieClient, taskId: string, csrfSecret: Buffer) {
    return client.request(`/tasks/${taskId}/complete`, {
      form: { csrf: csrfToken(csrfSecret, `complete-task:${taskId}`) },
    });
  }

  const sessionOf = (client: CookieClient) =>
    new UiSessionStore(server.deputy.redis.redis, server.deputy.config.redisPrefix, 60).find(
      client.cookies.get("deputy_session"),
    );

  it("a new password ends every session: pages, the agent's request and the task route", async () => {
    const s = await createScenario(server);
    const pages = await signedInAt(s.person.email);
    const approvals = await signedInAt(s.person.email, "/approvals");
    const agentRequest = await atConsent(s);
    const secret = (await sessionOf(pages))?.csrfSecret as Buffer;
    expect(await visit(pages, "/delegations")).toBe(200);
    expect(await visit(approvals, "/approvals")).toBe(200);

    const changed = await server.admin("PATCH", `/people/${s.person.id}`, { password: NEW_PASSWORD });
    expect(changed.status, JSON.stringify(changed.body)).toBe(200);

    expect(await visit(pages, "/delegations")).toBe("/login?return_to=%2Fdelegations");
    expect(await visit(approvals, "/approvals")).toBe("/login?return_to=%2Fapprovals");
    // The agent's next request in that browser asks the person to sign in again, not to consent.
    const again = await agentRequest.follow(authorizeUrl(server, s.agent, authorization(s)));
    expect(again.status).toBe(200);
    expect(again.body).toContain("Sign in to Deputy");
    expect(again.body).not.toContain("asks to act for you");
    // Without a session the task route takes the agent's path: no client credentials, 401.
    const task = await completeTask(pages, "some-task", secret);
    expect(task.status, task.body).toBe(401);
    expect(JSON.parse(task.body).error).toBe("invalid_client");

    // The old password no longer signs in; the new one does.
    const login = new CookieClient(server.url);
    const refused = await signIn(login, (await login.request("/login")).body, s.person.email);
    expect(refused.status).toBe(401);
    await signedInAt(s.person.email, "/delegations", NEW_PASSWORD);
  });

  it("removing admin rights ends the admin's sessions; other changes end none", async () => {
    const s = await createScenario(server);
    const promoted = await server.admin("PATCH", `/people/${s.person.id}`, { admin: true });
    expect(promoted.status).toBe(200);
    const adminBrowser = await signedInAt(s.person.email, "/console/agents");
    expect(await visit(adminBrowser, "/console/agents")).toBe(200);

    // A new name, or admin rights granted again, ends nothing.
    for (const change of [{ name: "Renamed" }, { admin: true }]) {
      expect((await server.admin("PATCH", `/people/${s.person.id}`, change)).status).toBe(200);
      expect(await visit(adminBrowser, "/console/agents")).toBe(200);
    }

    expect((await server.admin("PATCH", `/people/${s.person.id}`, { admin: false })).status).toBe(200);
    // Signed out (not merely refused the console, 403): the session itself is gone.
    expect(await visit(adminBrowser, "/console/agents")).toBe("/login?return_to=%2Fconsole%2Fagents");
    expect(await visit(adminBrowser, "/delegations")).toBe("/login?return_to=%2Fdelegations");
    expect(await sessionOf(adminBrowser)).toBeUndefined();
  });

  it("offboarding ends the person's sessions at once, in Redis too", async () => {
    const s = await createScenario(server);
    const pages = await signedInAt(s.person.email);
    const offboarded = await server.admin("POST", `/people/${s.person.id}/offboard`, { reason: "left" });
    expect(offboarded.status, JSON.stringify(offboarded.body)).toBe(200);
    expect(await sessionOf(pages)).toBeUndefined();
    expect(await visit(pages, "/delegations")).toBe("/login?return_to=%2Fdelegations");
  });
});
