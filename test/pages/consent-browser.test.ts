// People approve delegation in a real browser: headless Chromium (Debian's /usr/bin/chromium) driven by
// playwright-core. The agent's side is played by the test (PKCE, code redemption, CIBA polling, token
// exchange); its redirect URI is answered by an intercepted route, so nothing leaves the machine.
import { mkdirSync } from "node:fs";
import path from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium, screenshotDir, signInOnPage } from "../helpers/chromium.ts";
import {
  agentTask,
  authorizeUrl,
  CIBA_GRANT,
  codeFrom,
  createScenario,
  PASSWORD,
  pkce,
  REDIRECT_URI,
  redeemCode,
  type Scenario,
} from "../helpers/consent.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import { createAgent, exchange } from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

// Screenshots of the consent and approvals pages (docs/ with UPDATE_SCREENSHOTS=1).
const shots = screenshotDir();
const SHOTS = shots.dir;

describe("people approve delegation (Chromium)", () => {
  let server: TestServer;
  let browser: Browser;

  beforeAll(async () => {
    [server, browser] = await Promise.all([startServer(), launchChromium()]);
  });
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    shots.cleanup();
  });

  /** A fresh browser profile whose requests to the agent's redirect URI are answered locally. */
  async function newContext(): Promise<{ context: BrowserContext; page: Page; dialogs: string[] }> {
    const context = await browser.newContext({ viewport: { width: 900, height: 900 } });
    const agentOrigin = new URL(REDIRECT_URI).origin;
    await context.route(
      (url) => url.origin === agentOrigin,
      (route) => route.fulfill({ status: 200, contentType: "text/html", body: "<p>Back at the agent.</p>" }),
    );
    const page = await context.newPage();
    const dialogs: string[] = [];
    page.on("dialog", async (dialog) => {
      dialogs.push(dialog.message());
      await dialog.dismiss();
    });
    return { context, page, dialogs };
  }

  /** The agent starts an authorization with PKCE and a task; the person signs in; the page shows consent. */
  async function toConsent(page: Page, s: Scenario, task = agentTask()) {
    const { verifier, challenge } = pkce();
    await page.goto(authorizeUrl(server, s.agent, { challenge, details: [task], resource: s.calendar }));
    await signInOnPage(page, s.person.email);
    await page.getByRole("button", { name: "Approve" }).waitFor();
    return { verifier, task };
  }

  /** Clicks (or presses) and returns the URL the browser is sent to at the agent. */
  async function agentCallback(page: Page, act: () => Promise<void>): Promise<URL> {
    const [request] = await Promise.all([
      page.waitForRequest((request) => request.url().startsWith(REDIRECT_URI)),
      act(),
    ]);
    return new URL(request.url());
  }

  /** A scenario with names a person would see (for the screenshots). */
  async function namedScenario(): Promise<Scenario> {
    const n = `${Date.now()}${Math.floor(Math.random() * 1000)}`;
    const person = await server.admin("POST", "/people", {
      email: `ada-${n}@example.com`,
      name: "Ada Lovelace",
      password: PASSWORD,
    });
    const owner = await server.admin("POST", "/people", {
      email: `grace-${n}@example.com`,
      name: "Grace Hopper",
      password: PASSWORD,
    });
    const calendar = `https://calendar-${n}.example.com`;
    await server.admin("POST", "/resources", {
      uri: calendar,
      name: "Team Calendar",
      scopes: [
        { name: "calendar.read", description: "See your events and when you are free" },
        { name: "calendar.write", description: "Create, move and cancel your events", risk: "high" },
      ],
    });
    const helper = await createAgent(
      server,
      owner.body.email,
      [{ resource: calendar, scopes: ["calendar.read"] }],
      {
        name: "Venue Finder",
        purpose: "Finds and compares venues",
      },
    );
    const agent = await createAgent(
      server,
      owner.body.email,
      [{ resource: calendar, scopes: ["calendar.read", "calendar.write"] }],
      {
        name: "Offsite Planner",
        purpose: "Plans team offsites: finds dates, books rooms and sends invitations",
        blast_radius: "Could create or cancel events in your calendar",
        redirect_uris: [REDIRECT_URI],
        may_delegate_to: [helper.client_id],
        max_depth: 2,
      },
    );
    return { person: person.body, calendar, agent, helper };
  }

  it("approves end to end: the agent's code becomes a subject token that a real exchange accepts", async () => {
    const s = await namedScenario();
    const { context, page, dialogs } = await newContext();
    const { verifier } = await toConsent(
      page,
      s,
      agentTask({
        task_id: "offsite-2027",
        description: "Plan the team offsite in Lisbon for the week of 8 March",
      }),
    );
    await expect
      .poll(() => page.title(), { timeout: 15_000 })
      .toContain("Offsite Planner asks to act for you");
    const main = page.locator("main");
    for (const text of [
      "Offsite Planner",
      "Grace Hopper",
      "Plans team offsites",
      "active",
      "Team Calendar",
      s.calendar,
      "Create, move and cancel your events",
      "High risk",
      "The agent's claim",
      "Plan the team offsite in Lisbon",
      "offsite-2027",
      "Venue Finder",
      "At most 2 agents deep",
    ]) {
      await expect.poll(() => main.textContent(), { timeout: 15_000 }).toContain(text);
    }
    await expect
      .poll(() => page.getByLabel(/Create, move and cancel your events/).isChecked(), { timeout: 15_000 })
      .toBe(true);
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: path.join(SHOTS, "consent.png"), fullPage: true });

    const callback = await agentCallback(page, () => page.getByRole("button", { name: "Approve" }).click());
    expect(callback.searchParams.get("state")).toBe("s1");
    const token = await redeemCode(server, s.agent, codeFrom(callback.href), verifier);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(token.body.refresh_token).toBeUndefined();
    const exchanged = await exchange(server, s.agent, {
      subject_token: token.body.access_token,
      resource: s.calendar,
      scope: "calendar.read",
    });
    expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
    expect(dialogs).toEqual([]);
    await context.close();
  });

  it("denies with the keyboard: the agent gets access_denied", async () => {
    const s = await createScenario(server);
    const { context, page } = await newContext();
    await toConsent(page, s, agentTask({ task_id: "browser-deny" }));
    await page.getByRole("button", { name: "Deny" }).focus();
    const callback = await agentCallback(page, () => page.keyboard.press("Enter"));
    expect(callback.searchParams.get("error")).toBe("access_denied");
    expect(await server.deputy.db.prisma.delegation.count({ where: { taskId: "browser-deny" } })).toBe(0);
    await context.close();
  });

  it("narrows at consent: an unticked scope and a shorter length give a smaller delegation", async () => {
    const s = await createScenario(server);
    const { context, page } = await newContext();
    const { verifier } = await toConsent(page, s, agentTask({ task_id: "browser-narrow" }));
    await page.getByLabel(/Scope calendar.write/).uncheck();
    await page.getByLabel("Length").selectOption("1800");
    const callback = await agentCallback(page, () => page.getByRole("button", { name: "Approve" }).click());
    const token = await redeemCode(server, s.agent, codeFrom(callback.href), verifier);
    expect(token.body.scope).toBe("calendar.read");
    const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
      where: { taskId: "browser-narrow" },
    });
    expect((await server.deputy.delegations.state(delegation.id))?.grants).toEqual([
      { resource: s.calendar, scopes: ["calendar.read"] },
    ]);
    expect(delegation.endsAt.getTime()).toBeLessThanOrEqual(Date.now() + 1800_000);
    expect(delegation.endsAt.getTime()).toBeGreaterThan(Date.now() + 1700_000);
    await context.close();
  });

  it("shows one labelled checkbox per resource and scope: unticking mail.send on Mail removes exactly that pair", async () => {
    const n = `${Date.now()}${Math.floor(Math.random() * 1000)}`;
    const person = await server.admin("POST", "/people", {
      email: `pairs-${n}@example.com`,
      name: "Pat",
      password: PASSWORD,
    });
    const mail = `https://mail-${n}.example.com`;
    const outbox = `https://outbox-${n}.example.com`;
    await server.admin("POST", "/resources", {
      uri: mail,
      name: "Company Mail",
      scopes: [{ name: "mail.send", description: "Send mail as you", risk: "high" }],
    });
    await server.admin("POST", "/resources", {
      uri: outbox,
      name: "Team Outbox",
      scopes: [{ name: "mail.send", description: "Queue mail for review", risk: "low" }],
    });
    const agent = await createAgent(
      server,
      person.body.email,
      [
        { resource: mail, scopes: ["mail.send"] },
        { resource: outbox, scopes: ["mail.send"] },
      ],
      { name: "Mailer", redirect_uris: [REDIRECT_URI] },
    );
    const { context, page } = await newContext();
    const { verifier, challenge } = pkce();
    await page.goto(
      authorizeUrl(server, agent, {
        challenge,
        scope: "mail.send",
        resource: [mail, outbox],
        details: [agentTask({ task_id: "browser-pairs" })],
      }),
    );
    await signInOnPage(page, person.body.email);
    await page.getByRole("button", { name: "Approve" }).waitFor();

    // Two checkboxes, each named by its scope and its resource server.
    const boxes = page.getByRole("checkbox");
    await expect.poll(() => boxes.count(), { timeout: 15_000 }).toBe(2);
    const onMail = page.getByRole("checkbox", { name: /mail\.send on Company Mail/ });
    const onOutbox = page.getByRole("checkbox", { name: /mail\.send on Team Outbox/ });
    expect(await onMail.count()).toBe(1);
    expect(await onOutbox.count()).toBe(1);
    expect(await onMail.isChecked()).toBe(true);
    expect(await onOutbox.isChecked()).toBe(true);
    await onMail.uncheck();
    expect(await onMail.isChecked()).toBe(false);
    expect(await onOutbox.isChecked()).toBe(true);

    const callback = await agentCallback(page, () => page.getByRole("button", { name: "Approve" }).click());
    const token = await redeemCode(server, agent, codeFrom(callback.href), verifier);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
      where: { taskId: "browser-pairs" },
    });
    expect((await server.deputy.delegations.state(delegation.id))?.grants).toEqual([
      { resource: outbox, scopes: ["mail.send"] },
    ]);
    const refused = await exchange(server, agent, {
      subject_token: token.body.access_token,
      resource: mail,
      scope: "mail.send",
    });
    expect(refused.body.error).toBe("invalid_target");
    const allowed = await exchange(server, agent, {
      subject_token: token.body.access_token,
      resource: outbox,
      scope: "mail.send",
    });
    expect(allowed.status, JSON.stringify(allowed.body)).toBe(200);

    // My delegations says the same: mail.send on Team Outbox, nothing on Company Mail.
    await page.goto(`${server.url}/delegations`);
    const card = page.locator("article", { hasText: "browser-pairs" });
    await expect
      .poll(() => card.locator(".grants").textContent(), { timeout: 15_000 })
      .toMatch(/Team Outbox[\s\S]*mail\.send/);
    expect(await card.locator(".grants").textContent()).not.toContain("Company Mail");
    await context.close();
  });

  it("approves a CIBA request on /approvals; the polling agent gets a working subject token", async () => {
    const s = await namedScenario();
    const started = await postForm(
      `${server.url}/backchannel`,
      {
        login_hint: s.person.email,
        scope: "openid calendar.read calendar.write",
        resource: s.calendar,
        binding_message: "LISBON-42",
        authorization_details: JSON.stringify([
          agentTask({ task_id: "ciba-browser", description: "Book meeting rooms for the offsite" }),
        ]),
      },
      { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
    );
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    const poll = () =>
      postForm(
        `${server.url}/token`,
        { grant_type: CIBA_GRANT, auth_req_id: started.body.auth_req_id },
        { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
      );
    expect((await poll()).body.error).toBe("authorization_pending");

    const { context, page } = await newContext();
    await page.goto(`${server.url}/approvals`);
    await signInOnPage(page, s.person.email);
    await page.getByRole("heading", { name: "Offsite Planner asks to act for you" }).waitFor();
    const main = page.locator("main");
    for (const text of [
      "LISBON-42",
      "Book meeting rooms for the offsite",
      "ciba-browser",
      "The agent's claim",
    ]) {
      await expect.poll(() => main.textContent(), { timeout: 15_000 }).toContain(text);
    }
    await page.screenshot({ path: path.join(SHOTS, "approvals.png"), fullPage: true });
    await page.getByRole("button", { name: "Approve" }).click();
    await page.getByText("Approved.").waitFor();

    const token = await poll();
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    const exchanged = await exchange(server, s.agent, {
      subject_token: token.body.access_token,
      resource: s.calendar,
      scope: "calendar.read",
    });
    expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
    await context.close();
  });

  it("shows an agent named like markup as text: nothing runs", async () => {
    const s = await createScenario(server, { name: "<img src=x onerror=alert(1)>" });
    const { context, page, dialogs } = await newContext();
    await toConsent(page, s, agentTask({ description: "<script>alert(2)</script>" }));
    await expect
      .poll(() => page.locator("h1").textContent(), { timeout: 15_000 })
      .toBe("<img src=x onerror=alert(1)> asks to act for you");
    await expect
      .poll(() => page.locator(".claim-text").textContent(), { timeout: 15_000 })
      .toBe("<script>alert(2)</script>");
    expect(await page.locator("main img").count()).toBe(0);
    expect(await page.locator("main script").count()).toBe(0);
    await page.waitForTimeout(200);
    expect(dialogs).toEqual([]);
    await context.close();
  });

  it("revokes from my delegations: the exchange of that subject token is refused at once", async () => {
    const s = await createScenario(server);
    const { context, page } = await newContext();
    const { verifier } = await toConsent(
      page,
      s,
      agentTask({ task_id: "browser-revoke", description: "Sort out the quarterly review" }),
    );
    const callback = await agentCallback(page, () => page.getByRole("button", { name: "Approve" }).click());
    const token = await redeemCode(server, s.agent, codeFrom(callback.href), verifier);
    const before = await exchange(server, s.agent, {
      subject_token: token.body.access_token,
      resource: s.calendar,
      scope: "calendar.read",
    });
    expect(before.status).toBe(200);

    await page.goto(`${server.url}/delegations`);
    const card = page.locator("article", { hasText: "browser-revoke" });
    await expect
      .poll(() => card.textContent(), { timeout: 15_000 })
      .toContain("Sort out the quarterly review");
    await card.getByRole("button", { name: "Revoke" }).click();
    await page.getByText("Revoked.").waitFor();
    expect(await page.locator("main").textContent()).not.toContain("browser-revoke");

    const after = await exchange(server, s.agent, {
      subject_token: token.body.access_token,
      resource: s.calendar,
      scope: "calendar.read",
    });
    expect(after.status).toBe(400);
    expect(after.body.error).toBe("invalid_request");
    await context.close();
  });
});
