// Helpers for the consent, CIBA and browser tests: a scenario (person, resource server, agents), PKCE, a
// cookie-keeping HTTP client that stops at every redirect, and the agent's side of the code flow.
import { createHash, randomBytes } from "node:crypto";
import { expect } from "vitest";
import { basicAuth, postForm } from "./oauth.ts";
import { type Agent, createAgent, createPerson, createResource } from "./scenario.ts";
import type { TestServer } from "./server.ts";

export const PASSWORD = "correct horse battery staple";
export const REDIRECT_URI = "https://agent.example/callback";
export const CIBA_GRANT = "urn:openid:params:grant-type:ciba";

export interface Scenario {
  person: { id: string; email: string };
  calendar: string;
  agent: Agent;
  helper: Agent;
}

let counter = 0;

/** A person, a calendar resource server with a low- and a high-risk scope, and an agent that may use both. */
export async function createScenario(
  server: TestServer,
  extra: Record<string, unknown> = {},
): Promise<Scenario> {
  counter += 1;
  const person = await createPerson(server, `consent${counter}-${Date.now()}@example.com`);
  const calendar = `https://calendar${counter}.example.com`;
  await createResource(server, calendar, ["calendar.read", "calendar.write"]);
  const helper = await createAgent(server, person.email, [{ resource: calendar, scopes: ["calendar.read"] }]);
  const agent = await createAgent(
    server,
    person.email,
    [{ resource: calendar, scopes: ["calendar.read", "calendar.write"] }],
    { redirect_uris: [REDIRECT_URI], may_delegate_to: [helper.client_id], max_depth: 2, ...extra },
  );
  return { person, calendar, agent, helper };
}

/** What the consent and approvals forms send for `scopes` ticked on `resource`: one value per pair. */
export function choices(resource: string, ...scopes: string[]): string[] {
  return scopes.map((scope) => `${resource} ${scope}`);
}

export function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString("base64url");
  return { verifier, challenge: createHash("sha256").update(verifier).digest("base64url") };
}

export function agentTask(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: "agent_task",
    task_id: `task-${randomBytes(4).toString("hex")}`,
    description: "Find a slot for the team offsite next week",
    ends_at: new Date(Date.now() + 2 * 3600_000).toISOString(),
    ...overrides,
  };
}

export function authorizeUrl(
  server: TestServer,
  agent: Agent,
  options: {
    challenge?: string;
    scope?: string;
    resource?: string | string[];
    details?: unknown[];
    state?: string;
    extra?: Record<string, string>;
  } = {},
): string {
  const params = new URLSearchParams({
    client_id: agent.client_id,
    response_type: "code",
    redirect_uri: REDIRECT_URI,
    scope: options.scope ?? "calendar.read calendar.write",
    state: options.state ?? "s1",
    ...(options.challenge ? { code_challenge: options.challenge, code_challenge_method: "S256" } : {}),
    ...(options.details ? { authorization_details: JSON.stringify(options.details) } : {}),
    ...options.extra,
  });
  for (const resource of [options.resource ?? []].flat()) params.append("resource", resource);
  return `${server.url}/auth?${params}`;
}

/** Sending a client's requests through a (simulated) TLS-terminating reverse proxy. */
export interface ProxyRoute {
  /** Where requests for the client's base really go: the server behind the proxy. */
  upstream: string;
  /** What the proxy adds to every request (X-Forwarded-Proto, -Host, -For). */
  headers: Record<string, string>;
}

/** A browser without a browser: keeps cookies, follows nothing by itself. */
export class CookieClient {
  readonly cookies = new Map<string, string>();
  readonly base: string;
  readonly #proxy?: ProxyRoute;

  constructor(base: string, proxy?: ProxyRoute) {
    this.base = base;
    this.#proxy = proxy;
  }

  async request(
    url: string,
    init: {
      method?: string;
      form?: Record<string, string | string[]>;
      headers?: Record<string, string>;
    } = {},
  ): Promise<{ status: number; location?: string; body: string; headers: Headers }> {
    const absolute = new URL(url, this.base);
    const headers: Record<string, string> = { accept: "text/html", ...init.headers };
    const sameOrigin = absolute.origin === new URL(this.base).origin;
    if (sameOrigin && this.cookies.size)
      headers.cookie = [...this.cookies].map(([name, value]) => `${name}=${value}`).join("; ");
    let body: string | undefined;
    if (init.form) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(init.form))
        for (const item of [value].flat()) params.append(key, item);
      body = params.toString();
      headers["content-type"] = "application/x-www-form-urlencoded";
    }
    const target =
      this.#proxy && sameOrigin
        ? new URL(absolute.pathname + absolute.search, this.#proxy.upstream)
        : absolute;
    const response = await fetch(target, {
      method: init.method ?? (init.form ? "POST" : "GET"),
      headers: sameOrigin ? { ...headers, ...this.#proxy?.headers } : headers,
      body,
      redirect: "manual",
    });
    for (const cookie of response.headers.getSetCookie()) {
      const [pair] = cookie.split(";");
      const separator = pair?.indexOf("=") ?? -1;
      if (!pair || separator < 0) continue;
      const name = pair.slice(0, separator).trim();
      const value = pair.slice(separator + 1).trim();
      if (/max-age=0|expires=thu, 01 jan 1970/i.test(cookie) || !value) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
    const location = response.headers.get("location") ?? undefined;
    return {
      status: response.status,
      location: location ? new URL(location, absolute).href : undefined,
      body: await response.text(),
      headers: response.headers,
    };
  }

  /** Follows redirects within the server until a page, or a redirect to the agent; returns that last answer. */
  async follow(url: string, init?: Parameters<CookieClient["request"]>[1]) {
    let answer = await this.request(url, init);
    let hops = 0;
    while (answer.location?.startsWith(this.base) && hops++ < 10)
      answer = await this.request(answer.location);
    return answer;
  }
}

/** The value of a hidden form field in a page (the first, or the one inside the form posting to `action`). */
export function hiddenField(html: string, name: string, action?: string): string {
  const scope = action ? (html.split(`action="${action}"`)[1] ?? "") : html;
  const match = new RegExp(`name="${name}" value="([^"]*)"`).exec(scope);
  if (!match?.[1]) throw new Error(`no ${name} field${action ? ` in the form for ${action}` : ""}`);
  return match[1];
}

/** What every page of Deputy's is: under a strict CSP (nothing inline), never framed, with no script, one stylesheet. */
export function expectStrictPage(page: { headers: Headers; body: string }): void {
  const csp = String(page.headers.get("content-security-policy"));
  expect(csp).toContain("default-src 'none'");
  expect(csp).toContain("style-src 'self'");
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).not.toContain("unsafe-inline");
  expect(page.headers.get("x-frame-options")).toBe("DENY");
  expect(page.body).not.toMatch(/<script|<[^>]*\s(style|on[a-z]+)=/i);
  expect(page.body.match(/<link rel="stylesheet"/g)).toHaveLength(1);
}

export function formAction(html: string): string {
  const match = /<form method="post" action="(\/interaction\/[^"]+)"/.exec(html);
  if (!match?.[1]) throw new Error("no interaction form on the page");
  return match[1];
}

/** Signs in through a login page the client is on (inside an interaction or at /login). */
export async function signIn(client: CookieClient, page: string, email: string, password = PASSWORD) {
  const action = /<form method="post" action="([^"]+)"/.exec(page)?.[1];
  if (!action) throw new Error("no login form on the page");
  const form = page.slice(page.indexOf(`action="${action}"`));
  const hidden = Object.fromEntries(
    [...form.matchAll(/<input type="hidden" name="([^"]+)" value="([^"]*)">/g)].map((m) => [m[1], m[2]]),
  );
  return client.follow(action, { form: { ...hidden, email, password } });
}

/**
 * Starts an authorization for the scenario's agent in `client` (a fresh browser by default) and signs in: the
 * client ends on the consent page.
 */
export async function toConsent(
  server: TestServer,
  s: Scenario,
  options: Parameters<typeof authorizeUrl>[2] = {},
  client = new CookieClient(server.url),
) {
  const { verifier, challenge } = pkce();
  const login = await client.follow(
    authorizeUrl(server, s.agent, { challenge, details: [agentTask()], resource: s.calendar, ...options }),
  );
  expect(login.status, login.body).toBe(200);
  expect(login.body).toContain("Sign in to Deputy");
  const consent = await signIn(client, login.body, s.person.email);
  expect(consent.status, consent.body).toBe(200);
  return { client, consent, verifier, action: formAction(consent.body) };
}

export function codeFrom(location: string | undefined): string {
  const url = new URL(String(location));
  const code = url.searchParams.get("code");
  if (!code) throw new Error(`no code in ${location}`);
  return code;
}

export async function redeemCode(server: TestServer, agent: Agent, code: string, verifier: string) {
  return postForm(
    `${server.url}/token`,
    { grant_type: "authorization_code", code, redirect_uri: REDIRECT_URI, code_verifier: verifier },
    { authorization: basicAuth(agent.client_id, agent.client_secret) },
  );
}
