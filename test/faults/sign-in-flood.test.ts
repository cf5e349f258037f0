// Sign-in floods against a real server: concurrent attempts cannot pass the throttle's limits, whether aimed at
// one account or spread over many from one address. Each attempt is counted before its password is checked, so
// at most the limits' worth of passwords are checked (the audit trail has one login.failure or login.success per
// check) and every other attempt is refused (429) without one.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CookieClient, hiddenField, PASSWORD } from "../helpers/consent.ts";
import { createPerson } from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

const MAX_FAILURES = 5;
const MAX_PER_ADDRESS = 20;
const FLOOD = 41;

describe("sign-in flood", () => {
  let server: TestServer;
  beforeAll(async () => {
    // Behind a (simulated) proxy, so each test is its own client address; the limits are the defaults.
    server = await startServer("pglite", { TRUST_PROXY: "on" });
    expect(server.deputy.config.login).toMatchObject({
      maxFailures: MAX_FAILURES,
      maxFailuresPerAddress: MAX_PER_ADDRESS,
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  /** A browser at `address` on the login page: its form's CSRF token (bound to its nonce cookie). */
  async function browserAt(address: string) {
    const client = new CookieClient(server.url, {
      upstream: server.url,
      headers: { "x-forwarded-for": address },
    });
    const csrf = hiddenField((await client.request("/login")).body, "csrf");
    const attempt = (email: string, password: string) =>
      client.request("/login", { form: { csrf, email, password, return_to: "/delegations" } });
    return { client, attempt };
  }

  /** How many events of `action` the audit trail holds for the actors `actor` accepts. */
  async function events(action: string, actor: (name: string) => boolean): Promise<number> {
    const { status, body } = await server.admin("GET", `/audit?action=${action}&limit=1000`);
    expect(status, JSON.stringify(body)).toBe(200);
    return body.events.filter((event: { actor: string }) => actor(event.actor)).length;
  }

  /** How many answers had each status. */
  function tally(statuses: number[]): Record<number, number> {
    const counts: Record<number, number> = {};
    for (const status of statuses) counts[status] = (counts[status] ?? 0) + 1;
    return counts;
  }

  it(`checks at most ${MAX_FAILURES} of ${FLOOD} concurrent attempts on one account; the right password, last, is refused`, async () => {
    const person = await createPerson(server, `flooded-${Date.now()}@example.com`);
    const { client, attempt } = await browserAt("203.0.113.41");
    // 40 wrong passwords and the right one, all in flight together; the right one is sent last.
    const answers = await Promise.all([
      ...Array.from({ length: FLOOD - 1 }, (_, i) => attempt(person.email, `wrong guess ${i}`)),
      attempt(person.email, PASSWORD),
    ]);
    const statuses = answers.map((answer) => answer.status);
    const counts = tally(statuses);
    console.log(`sign-in flood, one account: ${FLOOD} attempts → ${JSON.stringify(counts)}`);
    expect(Object.keys(counts).sort()).toEqual(["401", "429"]);
    expect(counts[401]).toBe(MAX_FAILURES);
    expect(counts[429]).toBe(FLOOD - MAX_FAILURES);
    expect(statuses.at(-1)).toBe(429);
    expect(client.cookies.has("deputy_session")).toBe(false);
    // Passwords checked: one audit event each. The rest were refused before any check.
    expect(await events("login.failure", (a) => a === person.email)).toBe(MAX_FAILURES);
    expect(await events("login.success", (a) => a === person.email)).toBe(0);
    expect(await events("login.throttled", (a) => a === person.email)).toBe(FLOOD - MAX_FAILURES);

    // The account stays locked for the right password, from anywhere.
    const elsewhere = await browserAt("203.0.113.42");
    expect((await elsewhere.attempt(person.email, PASSWORD)).status).toBe(429);
  });

  it(`checks at most ${MAX_PER_ADDRESS} of ${FLOOD} concurrent attempts from one address on many accounts`, async () => {
    const prefix = `spread-${Date.now()}-`;
    const { attempt } = await browserAt("203.0.113.43");
    const answers = await Promise.all(
      Array.from({ length: FLOOD }, (_, i) => attempt(`${prefix}${i}@example.com`, "guessing")),
    );
    const counts = tally(answers.map((answer) => answer.status));
    console.log(`sign-in flood, one address: ${FLOOD} attempts → ${JSON.stringify(counts)}`);
    expect(counts).toEqual({ 401: MAX_PER_ADDRESS, 429: FLOOD - MAX_PER_ADDRESS });
    expect(await events("login.failure", (a) => a.startsWith(prefix))).toBe(MAX_PER_ADDRESS);
    expect(await events("login.throttled", (a) => a.startsWith(prefix))).toBe(FLOOD - MAX_PER_ADDRESS);

    // Another address is not held back, and a success there clears the account without touching this address.
    const person = await createPerson(server, `${prefix}real@example.com`);
    expect((await attempt(person.email, PASSWORD)).status).toBe(429);
    const other = await browserAt("203.0.113.44");
    expect((await other.attempt(person.email, PASSWORD)).status).toBe(303);
  });
});
