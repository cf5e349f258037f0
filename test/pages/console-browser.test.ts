// The admin console in a real browser (headless Chromium, see chromium.ts): an admin signs in, suspends an agent
// with the keyboard and sees its status change, and runs the emergency stop through its confirmation. Names are
// shown as text and nothing runs. The console's screenshot is docs/console.png (UPDATE_SCREENSHOTS=1).
import path from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { launchChromium, screenshotDir, signInOnPage } from "../helpers/chromium.ts";
import { PASSWORD } from "../helpers/consent.ts";
import { createAgent, delegate, exchange } from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

const shots = screenshotDir();

describe("admin console (Chromium)", () => {
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

  async function newPerson(name: string, admin = false) {
    const email = `${name.split(" ")[0]?.toLowerCase()}@example.com`;
    const { body } = await server.admin("POST", "/people", { email, name, password: PASSWORD, admin });
    return body as { id: string; email: string };
  }

  /** A calendar resource server; the grants of an agent that reads it. */
  async function newCalendar(uri: string) {
    await server.admin("POST", "/resources", {
      uri,
      name: "Team Calendar",
      scopes: [{ name: "calendar.read", description: "See your events" }],
    });
    return [{ resource: uri, scopes: ["calendar.read"] }];
  }

  /** A fresh browser profile, signed in as `email` on the way to the console; dialogs are recorded. */
  async function consoleAs(
    email: string,
  ): Promise<{ page: Page; dialogs: string[]; close(): Promise<void> }> {
    const context = await browser.newContext({ viewport: { width: 900, height: 900 } });
    const page = await context.newPage();
    const dialogs: string[] = [];
    page.on("dialog", async (dialog) => {
      dialogs.push(dialog.message());
      await dialog.dismiss();
    });
    await page.goto(`${server.url}/console/agents`);
    await signInOnPage(page, email);
    await page.getByRole("heading", { name: "Agents", level: 1 }).waitFor();
    return { page, dialogs, close: () => context.close() };
  }

  it("an admin suspends an agent from the console and sees its status change", async () => {
    const admin = await newPerson("Ada Lovelace", true);
    const owner = await newPerson("Grace Hopper");
    const leaver = await newPerson("Alan Turing");
    const calendar = "https://calendar.example.com";
    const grants = await newCalendar(calendar);
    const planner = await createAgent(server, owner.email, grants, { name: "Offsite Planner" });
    await createAgent(server, owner.email, grants, { name: "Venue Finder" });
    await createAgent(server, owner.email, grants, { name: "Expense Reporter", status: "pending" });
    await createAgent(server, leaver.email, grants, { name: "Travel Booker" });
    await server.admin("POST", `/people/${leaver.id}/offboard`, { reason: "left the company" });
    const { subjectToken } = await delegate(server, {
      personId: owner.id,
      personEmail: owner.email,
      agent: planner.client_id,
      grants: [{ resource: calendar, scopes: ["calendar.read"] }],
    });

    const { page, dialogs, close } = await consoleAs(admin.email);
    const card = (name: string) => page.locator("article", { hasText: name });
    await expect
      .poll(() => card("Travel Booker").textContent(), { timeout: 15_000 })
      .toContain("needs owner");
    await expect.poll(() => card("Expense Reporter").textContent(), { timeout: 15_000 }).toContain("pending");
    await card("Offsite Planner").getByLabel("Reason").fill("Invited the wrong team to the offsite");
    await card("Offsite Planner").getByLabel("Reason").press("Enter");
    await page.getByText("Agent suspended.").waitFor();
    await expect.poll(() => card("Offsite Planner").locator(".badge").textContent()).toBe("suspended");
    await expect
      .poll(() => card("Offsite Planner").textContent())
      .toContain("Invited the wrong team to the offsite");
    await card("Offsite Planner").getByRole("button", { name: "Activate" }).waitFor();
    await page.screenshot({ path: path.join(shots.dir, "console.png"), fullPage: true });

    const refused = await exchange(server, planner, { subject_token: subjectToken });
    expect(refused.body.error).toBe("invalid_client");
    const event = await server.deputy.db.prisma.auditEvent.findFirstOrThrow({
      where: { action: "agent.suspend", target: planner.client_id },
    });
    expect(event).toMatchObject({ actor: admin.email, reason: "Invited the wrong team to the offsite" });
    expect(dialogs).toEqual([]);
    await close();
  });

  it("shows an agent named like markup as text, and stops every agent only once confirmed", async () => {
    const admin = await newPerson("Margaret Hamilton", true);
    const owner = await newPerson("Katherine Johnson");
    await createAgent(server, owner.email, await newCalendar("https://calendar.example.org"), {
      name: "<img src=x onerror=alert(1)>",
    });
    const { page, dialogs, close } = await consoleAs(admin.email);
    const heading = page.locator("article h3", { hasText: "<img src=x" });
    await expect.poll(() => heading.textContent()).toContain("<img src=x onerror=alert(1)>");
    expect(await page.locator("main img").count()).toBe(0);

    const stopReason = page.locator("section", { hasText: "Emergency stop" }).getByLabel("Reason");
    const active = () => server.deputy.db.prisma.agent.count({ where: { status: "active" } });
    expect(await active()).toBeGreaterThan(0);
    await stopReason.fill("incident 9");
    await page.getByRole("button", { name: "Emergency stop…" }).click();
    await page.getByRole("heading", { name: "Suspend every agent?" }).waitFor();
    await page.getByRole("link", { name: "Cancel" }).click();
    await page.getByRole("heading", { name: "Agents", level: 1 }).waitFor();
    expect(await active()).toBeGreaterThan(0);

    await stopReason.fill("incident 9");
    await page.getByRole("button", { name: "Emergency stop…" }).click();
    await page.getByRole("button", { name: "Yes, suspend every agent" }).click();
    await page.getByText("Emergency stop done").waitFor();
    expect(await active()).toBe(0);
    expect(await page.getByRole("button", { name: "Suspend" }).count()).toBe(0);
    expect(dialogs).toEqual([]);
    await close();
  });
});
