// Behind a TLS-terminating reverse proxy (TRUST_PROXY), over real HTTP: the proxy is simulated by sending each
// request to the server with the X-Forwarded-* headers a proxy adds. With it on, URLs, DPoP checks and cookies
// follow the https the clients use, and the forwarded address is the one throttled and audited; with it off, the
// headers are ignored, so a client cannot claim another address.
import { randomUUID } from "node:crypto";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.ts";
import {
  agentTask,
  authorizeUrl,
  CookieClient,
  choices,
  codeFrom,
  createScenario,
  formAction,
  hiddenField,
  PASSWORD,
  pkce,
  REDIRECT_URI,
  signIn,
} from "../helpers/consent.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import { createPerson } from "../helpers/scenario.ts";
import { ADMIN_SECRET, startServer, type TestServer } from "../helpers/server.ts";

const PUBLIC = "https://deputy.example";

/** What a TLS-terminating proxy for PUBLIC sends on, for a client at `address` (appended to `claimed`). */
function forwarded(address: string, claimed?: string): Record<string, string> {
  return {
    "x-forwarded-proto": "https",
    "x-forwarded-host": "deputy.example",
    "x-forwarded-for": claimed ? `${claimed}, ${address}` : address,
  };
}

/** A browser at `address`, reaching the server through the proxy. */
const browserAt = (server: TestServer, address: string, claimed?: string) =>
  new CookieClient(PUBLIC, { upstream: server.url, headers: forwarded(address, claimed) });

/** The client addresses the audit trail recorded for one action by one actor, oldest first. */
async function addresses(server: TestServer, action: string, actor: string): Promise<string[]> {
  const { status, body } = await server.admin("GET", `/audit?action=${action}&limit=1000`);
  expect(status, JSON.stringify(body)).toBe(200);
  return body.events
    .filter((event: { actor: string }) => event.actor === actor)
    .map((event: { client_address: string }) => event.client_address);
}

/** Fails `times` sign-ins at /login with unknown accounts; returns the page to try the next one on. */
async function failSignIns(client: CookieClient, times: number, prefix: string): Promise<string> {
  let page = (await client.request("/login")).body;
  for (let attempt = 0; attempt < times; attempt++) {
    const failed = await signIn(client, page, `${prefix}${attempt}@example.com`, "guessing");
    expect(failed.status).toBe(401);
    page = failed.body;
  }
  return page;
}

it("refuses a TRUST_PROXY that is neither on, off nor a number of proxies, naming it", () => {
  expect(() => loadConfig({ TRUST_PROXY: "maybe" })).toThrow(/invalid configuration: TRUST_PROXY: /);
  expect(loadConfig({ TRUST_PROXY: "on" }).trustedProxies).toBe(1);
  expect(loadConfig({ TRUST_PROXY: "2" }).trustedProxies).toBe(2);
  expect(loadConfig({}).trustedProxies).toBe(0);
});

describe("TRUST_PROXY=on behind an https issuer", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer("pglite", {
      ISSUER: PUBLIC,
      TRUST_PROXY: "on",
      DEPUTY_LOGIN_MAX_FAILURES_PER_ADDRESS: "2",
    });
  });
  afterAll(async () => {
    await server?.close();
  });

  it("lists https endpoints in discovery", async () => {
    const response = await fetch(`${server.url}/.well-known/openid-configuration`, {
      headers: forwarded("203.0.113.1"),
    });
    const discovery = (await response.json()) as Record<string, string>;
    expect(discovery.issuer).toBe(PUBLIC);
    expect(discovery.token_endpoint).toBe(`${PUBLIC}/token`);
    expect(discovery.authorization_endpoint).toBe(`${PUBLIC}/auth`);
    expect(discovery.backchannel_authentication_endpoint).toBe(`${PUBLIC}/backchannel`);
  });

  it("accepts a DPoP proof for the https token endpoint the client sees", async () => {
    const key = await generateKeyPair("ES256");
    const proof = await new SignJWT({
      jti: randomUUID(),
      htm: "POST",
      htu: `${PUBLIC}/token`,
      iat: Math.floor(Date.now() / 1000),
    })
      .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk: await exportJWK(key.publicKey) })
      .sign(key.privateKey);
    const { status, body } = await postForm(
      `${server.url}/token`,
      { grant_type: "client_credentials", scope: "deputy:admin" },
      { ...forwarded("203.0.113.1"), authorization: basicAuth("deputy-admin", ADMIN_SECRET), dpop: proof },
    );
    expect(status, JSON.stringify(body)).toBe(200);
    expect(body.token_type).toBe("DPoP");
  });

  it("sets oidc-provider's cookies Secure, and the agent gets its code and token through the proxy", async () => {
    const s = await createScenario(server);
    const browser = browserAt(server, "203.0.113.20");
    const { verifier, challenge } = pkce();
    const authorize = new URL(
      authorizeUrl(server, s.agent, { challenge, details: [agentTask()], resource: s.calendar }),
    );
    const started = await browser.request(authorize.pathname + authorize.search);
    expect(started.status).toBe(303);
    expect(started.location).toMatch(new RegExp(`^${PUBLIC}/interaction/`));
    const interactionCookies = started.headers.getSetCookie().filter((c) => c.startsWith("_interaction"));
    expect(interactionCookies.length).toBeGreaterThanOrEqual(2);
    for (const cookie of interactionCookies) expect(cookie).toMatch(/; secure(;|$)/i);

    const login = await browser.follow(String(started.location));
    const loginAction = /<form method="post" action="([^"]+)"/.exec(login.body)?.[1] ?? "";
    const signedIn = await browser.request(loginAction, {
      form: { csrf: hiddenField(login.body, "csrf"), email: s.person.email, password: PASSWORD },
    });
    const deputySession = signedIn.headers.getSetCookie().find((c) => c.startsWith("deputy_session="));
    expect(deputySession).toMatch(/; Secure$/);
    // Back at the authorization endpoint, oidc-provider starts its own session.
    const resumed = await browser.request(String(signedIn.location));
    const providerSession = resumed.headers.getSetCookie().find((c) => c.startsWith("_session="));
    expect(providerSession).toMatch(/; secure(;|$)/i);

    const consent = await browser.follow(String(resumed.location));
    expect(consent.status, consent.body).toBe(200);
    const action = formAction(consent.body);
    const approved = await browser.follow(action, {
      form: {
        csrf: hiddenField(consent.body, "csrf", action),
        decision: "approve",
        scope: choices(s.calendar, "calendar.read"),
        duration: "asked",
      },
    });
    // The agent redeems its code through the proxy too: oidc-provider audits the agent's forwarded address.
    const token = await postForm(
      `${server.url}/token`,
      {
        grant_type: "authorization_code",
        code: codeFrom(approved.location),
        redirect_uri: REDIRECT_URI,
        code_verifier: verifier,
      },
      { ...forwarded("203.0.113.21"), authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
    );
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(await addresses(server, "subject_token.issue", s.agent.client_id)).toEqual(["203.0.113.21"]);
  });

  it("throttles and audits the forwarded client address, never one the client claims", async () => {
    const prefix = `proxied-${Date.now()}-`;
    const guesser = browserAt(server, "203.0.113.7");
    let page = await failSignIns(guesser, 2, prefix);
    const person = await createPerson(server, `proxied-${Date.now()}@example.com`);
    const refused = await signIn(guesser, page, person.email);
    expect(refused.status).toBe(429);
    // The same address claiming to be another (a client's own X-Forwarded-For entry, which the proxy appends to).
    const claiming = browserAt(server, "203.0.113.7", "198.51.100.1");
    page = (await claiming.request("/login")).body;
    expect((await signIn(claiming, page, person.email)).status).toBe(429);
    // Another address, through the same proxy connection, is not held back.
    const other = browserAt(server, "203.0.113.8");
    page = (await other.request("/login")).body;
    const allowed = await signIn(other, page, person.email);
    expect(allowed.status, allowed.body).toBe(200);

    expect(await addresses(server, "login.failure", `${prefix}0@example.com`)).toEqual(["203.0.113.7"]);
    expect(await addresses(server, "login.throttled", person.email)).toEqual(["203.0.113.7", "203.0.113.7"]);
    expect(await addresses(server, "login.success", person.email)).toEqual(["203.0.113.8"]);
  });
});

describe("TRUST_PROXY off (the default)", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer("pglite", { DEPUTY_LOGIN_MAX_FAILURES_PER_ADDRESS: "2" });
  });
  afterAll(async () => {
    await server?.close();
  });

  it("ignores X-Forwarded-*: endpoints stay the issuer's, and a claimed address dodges no throttle", async () => {
    const discovery = (await (
      await fetch(`${server.url}/.well-known/openid-configuration`, { headers: forwarded("203.0.113.1") })
    ).json()) as Record<string, string>;
    expect(discovery.token_endpoint).toBe(`${server.url}/token`);

    const prefix = `direct-${Date.now()}-`;
    const client = new CookieClient(server.url);
    let page = (await client.request("/login")).body;
    for (let attempt = 0; attempt < 3; attempt++) {
      // Each attempt claims a different address; all of them come from this one.
      const claimed = { "x-forwarded-for": `203.0.113.${30 + attempt}` };
      const form = {
        csrf: hiddenField(page, "csrf"),
        email: `${prefix}${attempt}@example.com`,
        password: "x",
      };
      const answer = await client.request("/login", { form, headers: claimed });
      expect(answer.status).toBe(attempt < 2 ? 401 : 429);
      page = answer.body;
    }
    const [address] = await addresses(server, "login.failure", `${prefix}0@example.com`);
    expect(address).toMatch(/^(::ffff:)?127\.0\.0\.1$/);
    expect(await addresses(server, "login.throttled", `${prefix}2@example.com`)).toEqual([address]);
  });
});
