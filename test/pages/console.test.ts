// The admin console over real HTTP (see test/browser/ for Chromium): who may use it, its CSRF tokens, suspending
// and activating an agent and the emergency stop through the registry (delegations revoked, tokens inactive,
// audit events naming the admin), escaping, strict headers, and bad input shown as a page, never a 500.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SESSION_COOKIE } from "../../src/pages/cookies.ts";
import { csrfToken } from "../../src/pages/csrf.ts";
import { UiSessionStore } from "../../src/pages/ui-sessions.ts";
import { CookieClient, expectStrictPage, hiddenField, PASSWORD, signIn } from "../helpers/consent.ts";
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

const CONSOLE = "/console/agents";

describe("admin console (HTTP)", () => {
  let server: TestServer;
  let admin: { id: string; email: string };
  let person: { id: string; email: string };
  let mail: Resource;
  let counter = 0;

  beforeAll(async () => {
    server = await startServer();
    admin = await createAdmin();
    person = await createPerson(server, `console-person-${Date.now()}@example.com`);
    mail = await createResource(server, "https://mail.console.example", ["mail.read"]);
  });
  afterAll(async () => {
    await server?.close();
  });

  const prisma = () => server.deputy.db.prisma;

  async function createAdmin(name = "Console Admin") {
    const { status, body } = await server.admin("POST", "/people", {
      email: `admin-${++counter}-${Date.now()}@example.com`,
      name,
      password: PASSWORD,
      admin: true,
    });
    expect(status, JSON.stringify(body)).toBe(201);
    return body as { id: string; email: string };
  }

  const newAgent = (extra: Record<string, unknown> = {}) =>
    createAgent(server, person.email, [{ resource: mail.uri, scopes: ["mail.read"] }], extra);

  const agentId = async (agent: Agent) =>
    (await prisma().agent.findUniqueOrThrow({ where: { clientId: agent.client_id } })).id;

  const status = async (agent: Agent) =>
    (await prisma().agent.findUniqueOrThrow({ where: { clientId: agent.client_id } })).status;

  /** Signs in through /login on the way to the console; returns the client and the page it ends on. */
  async function signInToConsole(email: string) {
    const client = new CookieClient(server.url);
    const login = await client.follow(CONSOLE);
    expect(login.body).toContain("Sign in to Deputy");
    const page = await signIn(client, login.body, email);
    return { client, page };
  }

  async function consoleAs(email = admin.email) {
    const { client, page } = await signInToConsole(email);
    expect(page.status, page.body).toBe(200);
    return { client, page };
  }

  /** Posts the console form for `action`, with the token the page holds for it. */
  function post(client: CookieClient, page: string, action: string, form: Record<string, string> = {}) {
    return client.request(action, { form: { csrf: hiddenField(page, "csrf", action), ...form } });
  }

  /** A delegation to `agent` and a token exchanged from it, both working. */
  async function delegatedTokens(agent: Agent) {
    const root = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: agent.client_id,
      grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
    });
    const exchanged = await exchange(server, agent, { subject_token: root.subjectToken });
    expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
    expect((await introspect(server, mail, exchanged.body.access_token)).active).toBe(true);
    return { ...root, token: String(exchanged.body.access_token) };
  }

  it("lets only signed-in admins in: others sign in first, people who are not admins get 403", async () => {
    const agent = await newAgent();
    const id = await agentId(agent);
    const anonymous = new CookieClient(server.url);
    const page = await anonymous.request(CONSOLE);
    expect(page.status).toBe(303);
    expect(page.location).toBe(`${server.url}/login?return_to=${encodeURIComponent(CONSOLE)}`);
    for (const action of [`${CONSOLE}/${id}/suspend`, "/console/emergency-stop"]) {
      const refused = await anonymous.request(action, { form: { csrf: "x", reason: "no" } });
      expect(refused.status).toBe(403);
      expect(refused.body).toContain("Signed out");
    }

    const { client, page: denied } = await signInToConsole(person.email);
    expect(denied.status).toBe(403);
    expect(denied.body).toContain("Admins only");
    expect((await client.request("/delegations")).body).not.toContain(`href="${CONSOLE}"`);
    for (const action of [`${CONSOLE}/${id}/suspend`, "/console/emergency-stop/confirm"]) {
      const refused = await client.request(action, { form: { csrf: "x", reason: "no" } });
      expect(refused.status).toBe(403);
      expect(refused.body).toContain("Admins only");
    }

    const other = await createAdmin();
    const allowed = await consoleAs(other.email);
    expect(allowed.page.body).toContain(agent.client_id);
    expect(allowed.page.body).toContain(`href="${CONSOLE}" aria-current="page"`);
    // An admin no more is signed out at once (and, signed in again, refused).
    expect((await server.admin("PATCH", `/people/${other.id}`, { admin: false })).status).toBe(200);
    expect((await allowed.client.request(CONSOLE)).location).toBe(
      `${server.url}/login?return_to=${encodeURIComponent(CONSOLE)}`,
    );
    expect((await signInToConsole(other.email)).page.status).toBe(403);
    expect(await status(agent)).toBe("active");
  });

  it("refuses every console form without its own token of this session (403), changing nothing", async () => {
    const agent = await newAgent();
    const neighbour = await newAgent();
    const [id, neighbourId] = [await agentId(agent), await agentId(neighbour)];
    const { client, page } = await consoleAs();
    const other = await consoleAs(admin.email);
    const action = `${CONSOLE}/${id}/suspend`;
    for (const csrf of [
      undefined,
      "",
      "A".repeat(43),
      hiddenField(page.body, "csrf", `${CONSOLE}/${neighbourId}/suspend`),
      hiddenField(page.body, "csrf", "/console/emergency-stop"),
      hiddenField(page.body, "csrf", "/logout"),
      hiddenField(other.page.body, "csrf", action),
    ]) {
      const response = await client.request(action, {
        form: { ...(csrf === undefined ? {} : { csrf }), reason: "forged" },
      });
      expect(response.status).toBe(403);
      expect(response.body).toContain("Form expired");
    }
    // The emergency stop cannot skip its confirmation: the first form's token does not confirm.
    const skipped = await client.request("/console/emergency-stop/confirm", {
      form: { csrf: hiddenField(page.body, "csrf", "/console/emergency-stop"), reason: "skip" },
    });
    expect(skipped.status).toBe(403);
    // Changes are POST only.
    for (const path of [action, `${CONSOLE}/${id}/activate`, "/console/emergency-stop/confirm"]) {
      expect((await client.request(path)).status).toBe(405);
    }
    expect(await status(agent)).toBe("active");
    expect(await status(neighbour)).toBe("active");
    expect(
      await prisma().auditEvent.count({ where: { target: { in: [agent.client_id, neighbour.client_id] } } }),
    ).toBe(2); // agent.create, nothing since
  });

  it("suspends an agent: its delegations are revoked, its tokens inactive, the audit names the admin", async () => {
    const agent = await newAgent({ name: "Inbox sorter" });
    const id = await agentId(agent);
    const { delegation, subjectToken, token } = await delegatedTokens(agent);
    const { client, page } = await consoleAs();

    const suspended = await post(client, page.body, `${CONSOLE}/${id}/suspend`, {
      reason: "leaked client secret",
    });
    expect(suspended.status, suspended.body).toBe(303);
    expect(suspended.location).toBe(`${server.url}${CONSOLE}?done=suspended`);
    const after = await client.request(String(suspended.location));
    expect(after.body).toContain("Agent suspended.");
    const card = after.body.slice(after.body.indexOf("Inbox sorter"));
    expect(card).toContain('<span class="badge badge-suspended">suspended</span>');
    expect(card).toContain("leaked client secret");

    for (const revoked of [subjectToken, token]) {
      expect(await introspect(server, mail, revoked)).toEqual({ active: false });
    }
    expect((await prisma().delegation.findUniqueOrThrow({ where: { id: delegation.id } })).status).toBe(
      "revoked",
    );
    const refused = await exchange(server, agent, { subject_token: subjectToken });
    expect(refused.status).toBe(401);
    expect(refused.body.error).toBe("invalid_client");
    expect(
      await prisma().auditEvent.findFirstOrThrow({
        where: { action: "agent.suspend", target: agent.client_id },
      }),
    ).toMatchObject({ actor: admin.email, reason: "leaked client secret" });
    expect(
      await prisma().auditEvent.findFirstOrThrow({
        where: { type: "revocation", action: "revocation.suspension", target: agent.client_id },
      }),
    ).toMatchObject({
      actor: admin.email,
      reason: "leaked client secret",
      details: { trigger: "suspension", delegations: 1, tokens: 2 },
    });

    // Activate: the agent authenticates again; what it held stays revoked.
    const activated = await post(client, after.body, `${CONSOLE}/${id}/activate`);
    expect(activated.status, activated.body).toBe(303);
    expect(activated.location).toBe(`${server.url}${CONSOLE}?done=activated`);
    expect((await client.request(String(activated.location))).body).toContain("Agent activated.");
    expect(await status(agent)).toBe("active");
    expect(
      await prisma().auditEvent.findFirstOrThrow({
        where: { action: "agent.activate", target: agent.client_id },
      }),
    ).toMatchObject({ actor: admin.email });
    await delegatedTokens(agent);
    expect((await exchange(server, agent, { subject_token: subjectToken })).status).toBe(400);
  });

  it("shows bad input as a clear error on the page, never a 500", async () => {
    const agent = await newAgent();
    const id = await agentId(agent);
    const action = `${CONSOLE}/${id}/suspend`;
    const { client, page } = await consoleAs();
    const expectPage = (response: { status: number; body: string }, status: number, text: string) => {
      expect(response.status, response.body).toBe(status);
      expect(response.body).toContain(text);
      expect(response.body).not.toMatch(/at .*\.(ts|js):\d+/);
    };

    for (const [reason, text] of [
      [undefined, "Not suspended: give a reason"],
      ["   ", "Not suspended: give a reason"],
      ["stop\u0000now", "Not suspended: the reason must not contain control characters"],
      ["x".repeat(1001), "Not suspended: the reason is too long (at most 1000 characters)."],
    ] as const) {
      const form: Record<string, string> = { csrf: hiddenField(page.body, "csrf", action) };
      if (reason !== undefined) form.reason = reason;
      const response = await client.request(action, { form });
      expectPage(response, 400, text);
      expect(response.body).toContain(
        `id="reason-${id}" name="reason" type="text" required maxlength="1000" aria-invalid="true"`,
      );
    }
    expectPage(
      await post(client, page.body, action, { reason: "x".repeat(20_000) }),
      413,
      "The form sent was too large.",
    );
    expectPage(
      await client.request(action, { method: "POST", headers: { "content-type": "application/json" } }),
      415,
      "Not a form",
    );
    expectPage(
      await post(client, page.body, "/console/emergency-stop", { reason: "" }),
      400,
      "Nothing stopped: give a reason",
    );
    for (const bad of ["%00", agent.client_id, "not-an-id"]) {
      expectPage(
        await client.request(`${CONSOLE}/${bad}/suspend`, { form: { reason: "r" } }),
        404,
        "No such agent",
      );
    }
    // A well-formed id of no agent, with a valid token for it.
    const session = await new UiSessionStore(
      server.deputy.redis.redis,
      server.deputy.config.redisPrefix,
      60,
    ).find(client.cookies.get(SESSION_COOKIE));
    const unknown = randomUUID();
    expectPage(
      await client.request(`${CONSOLE}/${unknown}/suspend`, {
        form: { csrf: csrfToken(session?.csrfSecret as Buffer, `console:suspend:${unknown}`), reason: "r" },
      }),
      404,
      `Not suspended: agent ${unknown} does not exist.`,
    );
    // A page left open: suspending twice says so.
    expect((await post(client, page.body, action, { reason: "first" })).status).toBe(303);
    expectPage(
      await post(client, page.body, action, { reason: "second" }),
      409,
      "Not suspended: cannot suspend an agent that is suspended.",
    );
    expect(
      await prisma().auditEvent.count({ where: { action: "agent.suspend", target: agent.client_id } }),
    ).toBe(1);
  });

  it("sends the pages' strict headers and shows what agents and people are named as text", async () => {
    const [owner, coOwner] = await Promise.all(
      ["<b>Mallory</b>", "<i>Trudy</i>"].map((name, i) =>
        server.admin("POST", "/people", {
          email: `owner-${i}-${Date.now()}@example.com`,
          name,
          password: PASSWORD,
        }),
      ),
    );
    const agent = await createAgent(
      server,
      owner?.body.email,
      [{ resource: mail.uri, scopes: ["mail.read"] }],
      {
        name: "<img src=x onerror=alert(1)>",
        co_owners: [coOwner?.body.email],
      },
    );
    await server.admin("POST", `/agents/${agent.client_id}/suspend`, { reason: "<script>alert(2)</script>" });
    const { client, page } = await consoleAs();
    expect(page.body).toContain("&lt;img src=x onerror=alert(1)&gt;");
    expect(page.body).toContain("&lt;b&gt;Mallory&lt;/b&gt;");
    expect(page.body).toMatch(
      new RegExp(
        `<dt>Co-owners</dt>\\s*<dd>&lt;i&gt;Trudy&lt;/i&gt; <span class="muted">\\(${coOwner?.body.email}\\)`,
      ),
    );
    expect(page.body).toContain("&lt;script&gt;alert(2)&lt;/script&gt;");
    expect(page.body).not.toContain("<img src=x");
    expect(page.body).not.toContain("<b>Mallory");
    expect(page.body).not.toContain("<i>Trudy");
    const confirm = await post(client, page.body, "/console/emergency-stop", {
      reason: '"><script>alert(3)</script>',
    });
    expect(confirm.status).toBe(200);
    expect(confirm.body).toContain("&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt;");
    const denied = await signInToConsole(person.email);
    for (const response of [page, confirm, denied.page]) {
      expectStrictPage(response);
      expect(response.headers.get("content-security-policy")).toContain("form-action 'self';");
      expect(response.headers.get("cache-control")).toBe("no-store");
    }
  });

  // Last: it suspends every agent of this server.
  it("the emergency stop asks to confirm, then suspends every agent and revokes every delegation", async () => {
    const agents = [await newAgent(), await newAgent()];
    const held = await delegatedTokens(agents[0] as Agent);
    const { client, page } = await consoleAs();
    const reachable = await prisma().agent.count({ where: { status: { in: ["active", "pending"] } } });
    const confirm = await post(client, page.body, "/console/emergency-stop", { reason: "incident 7" });
    expect(confirm.status, confirm.body).toBe(200);
    expect(confirm.body).toContain("Suspend every agent?");
    expect(confirm.body).toContain(`<strong>${reachable}</strong> active or pending agents`);
    expect(confirm.body).toContain("incident 7");
    expect(await prisma().agent.count({ where: { status: "active" } })).toBe(reachable);

    const stopped = await post(client, confirm.body, "/console/emergency-stop/confirm", {
      reason: hiddenField(confirm.body, "reason"),
    });
    expect(stopped.status, stopped.body).toBe(303);
    expect(stopped.location).toBe(`${server.url}${CONSOLE}?done=stopped`);
    const after = await client.request(String(stopped.location));
    expect(after.body).toContain("Emergency stop done");
    expect(await prisma().agent.count({ where: { status: { in: ["active", "pending"] } } })).toBe(0);
    expect(await prisma().delegation.count({ where: { status: "active" } })).toBe(0);
    expect(await introspect(server, mail, held.token)).toEqual({ active: false });
    expect(
      await prisma().auditEvent.findFirstOrThrow({
        where: { action: "agent.suspend_all", reason: "incident 7" },
      }),
    ).toMatchObject({ actor: admin.email, details: { suspended: reachable } });
    expect(
      await prisma().auditEvent.findFirstOrThrow({
        where: { type: "revocation", target: "*", reason: "incident 7" },
      }),
    ).toMatchObject({ actor: admin.email, details: { trigger: "suspension" } });

    // Reversible per agent.
    const id = await agentId(agents[1] as Agent);
    expect((await post(client, after.body, `${CONSOLE}/${id}/activate`)).status).toBe(303);
    expect(await status(agents[1] as Agent)).toBe("active");
    expect(await status(agents[0] as Agent)).toBe("suspended");
  });
});
