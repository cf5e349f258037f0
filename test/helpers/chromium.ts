// What the browser tests share: headless Chromium (Debian's /usr/bin/chromium driven by playwright-core) that
// reaches nothing beyond this machine, where screenshots go, and signing in on Deputy's login page.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { expect } from "vitest";
import { PASSWORD } from "./consent.ts";

const CHROMIUM = "/usr/bin/chromium";
const FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // No DNS lookups leave the machine: every name but the loopback address is unresolvable.
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
];

/** playwright-core launches with --headless and a fresh temporary --user-data-dir of its own. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
}

/**
 * Where screenshots of the pages go: docs/ with UPDATE_SCREENSHOTS=1, else a temporary directory that `cleanup`
 * removes (so a test run leaves the work tree clean).
 */
export function screenshotDir(): { dir: string; cleanup(): void } {
  if (process.env.UPDATE_SCREENSHOTS)
    return { dir: path.resolve(import.meta.dirname, "../../docs"), cleanup: () => {} };
  const dir = mkdtempSync(path.join(tmpdir(), "deputy-shots-"));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Fills in and sends the sign-in form the page shows (or is about to show). */
export async function signInOnPage(page: Page, email: string): Promise<void> {
  await expect.poll(() => page.title(), { timeout: 15_000 }).toContain("Sign in");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
}
