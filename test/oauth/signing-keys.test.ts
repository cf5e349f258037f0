// Signing key rotation on a deployment of several processes. A rotation made through one server is published at
// /jwks and accepted by Deputy's own JWT verification in every server at once (invalidation bus); each server
// signs with the new key from its next start, and browser cookies set by either are accepted by the other. A
// server that missed the message still accepts the new key (it reloads on an unknown kid). Concurrent rotations
// leave exactly one active key; /jwks never carries a private member. The replaced key is retiring until its
// removal time, then neither published nor accepted; `deputy keys retire` removes one at once, everywhere. "Servers" here are Deputy instances in this
// process sharing a PostgreSQL database and a Redis prefix; a restart is a new instance on the same database.
import { setTimeout as sleep } from "node:timers/promises";
import {
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  generateKeyPair,
  type JWK,
  jwtVerify,
  SignJWT,
} from "jose";
import Keygrip from "keygrip";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createLogger } from "../../src/logger.ts";
import { PublishedKeys } from "../../src/oauth/published-keys.ts";
import { rotateSigningKey, SIGNING_KEY_TOPIC } from "../../src/oauth/signing-keys.ts";
import { CookieKeys } from "../../src/pages/keys.ts";
import { ALL, type InvalidationBus } from "../../src/redis/invalidation-bus.ts";
import { runDeputy } from "../helpers/cli.ts";
import {
  agentTask,
  authorizeUrl,
  CookieClient,
  choices,
  codeFrom,
  createScenario,
  formAction,
  hiddenField,
  pkce,
  REDIRECT_URI,
  redeemCode,
  signIn,
} from "../helpers/consent.ts";
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
import { createPostgresDatabase, startServer, type TestServer } from "../helpers/server.ts";

const PUBLIC_MEMBERS = ["alg", "crv", "kid", "kty", "use", "x", "y"];

async function publishedKids(server: TestServer): Promise<string[]> {
  const response = await fetch(`${server.url}/jwks`);
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toContain("application/jwk-set+json");
  const { keys } = (await response.json()) as { keys: Record<string, unknown>[] };
  for (const key of keys) {
    expect(key.d).toBeUndefined();
    expect(Object.keys(key).sort()).toEqual(PUBLIC_MEMBERS);
  }
  return keys.map((key) => String(key.kid));
}

async function discoveredJwksUri(server: TestServer): Promise<string> {
  const response = await fetch(`${server.url}/.well-known/openid-configuration`);
  return ((await response.json()) as { jwks_uri: string }).jwks_uri;
}

async function rotate(server: TestServer): Promise<string> {
  const { status, body } = await server.admin("POST", "/keys/rotate");
  expect(status, JSON.stringify(body)).toBe(201);
  return body.key.kid;
}

describe("signing key rotation on a deployment of two servers sharing PostgreSQL and Redis", () => {
  let dropDatabase: () => Promise<void>;
  let shared: Record<string, string>;
  let first: TestServer;
  let second: TestServer;
  let rotated: string;
  let person: { id: string; email: string };
  let reports: Resource;
  let planner: Agent;
  let researcher: Agent;

  /** Restarts the first server: a new instance on the same database and Redis, with the same issuer. */
  async function restartFirst(): Promise<void> {
    await first.close();
    first = await startServer("pglite", shared);
  }

  /** Restarts the first server and has it issue the planner a JWT for the reports API. */
  async function restartFirstAndIssueJwt(): Promise<string> {
    await restartFirst();
    const root = await delegate(first, {
      personId: person.id,
      personEmail: person.email,
      agent: planner.client_id,
      grants: [{ resource: reports.uri, scopes: ["reports.read"] }],
    });
    const issued = await exchange(first, planner, {
      subject_token: root.subjectToken,
      resource: reports.uri,
    });
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    return String(issued.body.access_token);
  }

  beforeAll(async () => {
    const database = await createPostgresDatabase();
    dropDatabase = database.drop;
    // Behind a load balancer (TRUST_PROXY): a browser reaches either server at the issuer's address.
    shared = {
      DATABASE_URL: database.url,
      REDIS_PREFIX: `deputy-test:keys-${Date.now()}:`,
      TRUST_PROXY: "on",
    };
    first = await startServer("pglite", shared);
    shared.ISSUER = first.url;
    second = await startServer("pglite", shared);
    person = await createPerson(first);
    reports = await createResource(first, "https://reports.example.com", ["reports.read"], {
      token_format: "jwt",
    });
    const grants = [{ resource: reports.uri, scopes: ["reports.read"] }];
    researcher = await createAgent(first, person.email, grants, { max_depth: 1 });
    planner = await createAgent(first, person.email, grants, {
      may_delegate_to: [researcher.client_id],
      max_depth: 2,
    });
  });
  afterAll(async () => {
    await first?.close();
    await second?.close();
    await dropDatabase?.();
  });

  it("publishes a key rotated through one server at /jwks of the other at once, and audits before and after", async () => {
    const [previous] = await publishedKids(second);
    const jwksUri = await discoveredJwksUri(second);

    const { status, body } = await first.admin("POST", "/keys/rotate");
    expect(status, JSON.stringify(body)).toBe(201);
    rotated = body.key.kid;
    expect(body.key).toMatchObject({ active: true, retired_at: null });
    expect(body.note).toMatch(/publishes the new key at \/jwks and accepts tokens signed with it now/);
    expect(body.note).toMatch(/signs with it from its next restart/);

    // No restart: the other server publishes the new key (the previous one stays published) and, like this one,
    // keeps the same jwks_uri.
    await expect.poll(() => publishedKids(second), { timeout: 2_000 }).toEqual([rotated, previous]);
    expect(await publishedKids(first)).toEqual([rotated, previous]);
    expect(await discoveredJwksUri(second)).toBe(jwksUri);

    // The previous key is retiring: published and accepted until the end of its retiring period.
    const window = first.deputy.config.keyRetiringSeconds * 1000;
    expect(body.retiring).toEqual([
      expect.objectContaining({ kid: previous, status: "retiring", active: false }),
    ]);
    const [retiring] = body.retiring;
    expect(Date.parse(retiring.removed_at) - Date.parse(retiring.retired_at)).toBe(window);

    const event = await first.deputy.db.prisma.auditEvent.findFirstOrThrow({
      where: { action: "key.rotate" },
    });
    expect(event).toMatchObject({
      type: "admin_change",
      actor: "deputy-admin",
      target: rotated,
      before: { active_kids: [previous] },
      after: { active_kids: [rotated], retiring: [{ kid: previous, removed_at: retiring.removed_at }] },
    });
  });

  it("has a JWT signed with the new key by the restarted server accepted by the other, which has not restarted", async () => {
    const jwt = await restartFirstAndIssueJwt();
    expect(decodeProtectedHeader(jwt)).toMatchObject({ typ: "at+jwt", kid: rotated });

    // Introspection and token exchange (the JWT as the subject token) at the server that has not restarted.
    expect(await introspect(second, reports, jwt)).toMatchObject({ active: true, jti: decodeJwt(jwt).jti });
    const child = await exchange(second, researcher, { subject_token: jwt });
    expect(child.status, JSON.stringify(child.body)).toBe(200);
    // That server still signs with the previous key, which the restarted one accepts.
    const childJwt = String(child.body.access_token);
    expect(decodeProtectedHeader(childJwt).kid).not.toBe(rotated);
    expect(await introspect(first, reports, childJwt)).toMatchObject({ active: true });
  });

  it("keeps a person's sign-in and requests going when moved between a restarted server and one not yet restarted", async () => {
    await rotate(first);
    await restartFirst();
    // A browser, with its cookies, that the load balancer sends to `server` from now on.
    const issuer = String(shared.ISSUER);
    const headers = { "x-forwarded-proto": "http", "x-forwarded-host": new URL(issuer).host };
    const at = (server: TestServer, from?: CookieClient) => {
      const browser = new CookieClient(issuer, { upstream: server.url, headers });
      for (const [name, value] of from?.cookies ?? []) browser.cookies.set(name, value);
      return browser;
    };
    const s = await createScenario(first);
    /** The agent's request, started in `browser`: the page it leads to. */
    const start = async (browser: CookieClient) => {
      const { verifier, challenge } = pkce();
      const url = authorizeUrl({ ...first, url: issuer }, s.agent, {
        challenge,
        details: [agentTask()],
        resource: s.calendar,
      });
      return { verifier, page: (await browser.follow(url)).body };
    };
    const approve = async (browser: CookieClient, consent: string, verifier: string) => {
      const action = formAction(consent);
      const done = await browser.follow(action, {
        form: {
          csrf: hiddenField(consent, "csrf", action),
          decision: "approve",
          scope: choices(s.calendar, "calendar.read"),
        },
      });
      expect(done.location, done.body).toContain(`${REDIRECT_URI}?code=`);
      const token = await redeemCode(second, s.agent, codeFrom(done.location), verifier);
      expect(token.status, JSON.stringify(token.body)).toBe(200);
    };

    // Signed in on the restarted server, at the consent page of a request started there: approved on the other.
    const signedIn = at(first);
    await signIn(signedIn, (await signedIn.follow("/login")).body, s.person.email);
    const consent = await start(signedIn);
    expect(consent.page).toContain("asks to act for you");
    await approve(at(second, signedIn), consent.page, consent.verifier);

    // A sign-in to a request, started on the restarted server: the password is sent to the other.
    const fresh = at(first);
    const login = await start(fresh);
    expect(login.page).toContain("Sign in to Deputy");
    const onSecond = at(second, fresh);
    const page = await signIn(onSecond, login.page, s.person.email);
    expect(page.status, page.body).toBe(200);
    await approve(onSecond, page.body, login.verifier);
  });

  it("has a server that missed the rotation's message accept the new key when a token names it", async () => {
    // A rotation whose invalidation never reaches the other server (as if Redis had dropped the message).
    const silent: InvalidationBus = { publish: async () => {}, on: () => {}, close: async () => {} };
    const { kid } = await rotateSigningKey(
      {
        prisma: first.deputy.db.prisma,
        audit: first.deputy.audit,
        bus: silent,
        retiringSeconds: first.deputy.config.keyRetiringSeconds,
      },
      { actor: "test" },
    );
    const jwt = await restartFirstAndIssueJwt();
    expect(decodeProtectedHeader(jwt).kid).toBe(kid);
    // The unknown kid makes the other server reload its keys (at most every few seconds).
    await expect
      .poll(async () => (await introspect(second, reports, jwt)).active, { timeout: 10_000, interval: 500 })
      .toBe(true);
    expect(await publishedKids(second)).toContain(kid);
  });

  it("leaves exactly one active key after concurrent rotations through both servers, each audited in turn", async () => {
    const start = new Date();
    const kids = await Promise.all(
      Array.from({ length: 10 }, (_, i) => (i % 2 ? second : first)).map(rotate),
    );
    expect(new Set(kids).size).toBe(10);
    const active = await first.deputy.db.prisma.signingKey.findMany({ where: { active: true } });
    expect(active).toHaveLength(1);

    // Serialized: each rotation retired exactly the key the one before it made.
    const events = await first.deputy.db.prisma.auditEvent.findMany({
      where: { action: "key.rotate", time: { gte: start } },
      orderBy: { seq: "asc" },
    });
    const steps = events.map((event) => ({
      before: (event.before as { active_kids: string[] }).active_kids,
      after: (event.after as { active_kids: string[] }).active_kids,
    }));
    expect(steps).toHaveLength(10);
    for (const [index, step] of steps.entries()) {
      expect(step.before).toHaveLength(1);
      if (index > 0) expect(step.before).toEqual(steps[index - 1]?.after);
    }
    expect(steps.at(-1)?.after).toEqual([active[0]?.kid]);
    await expect.poll(async () => (await publishedKids(second))[0], { timeout: 2_000 }).toBe(active[0]?.kid);
    expect((await publishedKids(first))[0]).toBe(active[0]?.kid);
  });

  it("removes a retiring key in an emergency (deputy keys retire): gone from /jwks and refused everywhere at once", async () => {
    // The second server has not restarted: it still signs with the key active when it started, long rotated away.
    const root = await delegate(second, {
      personId: person.id,
      personEmail: person.email,
      agent: planner.client_id,
      grants: [{ resource: reports.uri, scopes: ["reports.read"] }],
    });
    const issued = await exchange(second, planner, {
      subject_token: root.subjectToken,
      resource: reports.uri,
    });
    expect(issued.status, JSON.stringify(issued.body)).toBe(200);
    const jwt = String(issued.body.access_token);
    const kid = String(decodeProtectedHeader(jwt).kid);
    const listed = (await first.admin("GET", "/keys")).body.keys;
    expect(listed.find((key: { kid: string }) => key.kid === kid)).toMatchObject({ status: "retiring" });
    for (const server of [first, second]) {
      expect(await publishedKids(server)).toContain(kid);
      expect(await introspect(server, reports, jwt)).toMatchObject({ active: true });
    }

    const run = await runDeputy(first.url, [
      "--json",
      "keys",
      "retire",
      kid,
      "--reason",
      "private key leaked",
    ]);
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    const answer = JSON.parse(run.stdout);
    expect(answer.key).toMatchObject({ kid, status: "removed", active: false });
    expect(answer.note).toMatch(/restart those now/);

    // Both servers: no longer published, and the token is refused by introspection and by token exchange.
    for (const server of [first, second]) {
      await expect.poll(() => publishedKids(server), { timeout: 2_000 }).not.toContain(kid);
      expect(await introspect(server, reports, jwt)).toEqual({ active: false });
      const child = await exchange(server, researcher, { subject_token: jwt });
      expect(child.status).toBe(400);
      expect(child.body.error).toBe("invalid_request");
    }
    const event = await first.deputy.db.prisma.auditEvent.findFirstOrThrow({
      where: { action: "key.retire" },
    });
    expect(event).toMatchObject({
      type: "admin_change",
      actor: "deputy-admin",
      target: kid,
      reason: "private key leaked",
      before: { status: "retiring" },
      after: { status: "removed", removed_at: answer.key.removed_at },
    });

    // Refused, changing nothing: the active key (rotate first), a key already removed, an unknown kid.
    const active = (await first.admin("GET", "/keys")).body.keys.find(
      (key: { status: string }) => key.status === "active",
    );
    const refusals: [string, number, RegExp][] = [
      [active.kid, 409, /is the active key: rotate first/],
      [kid, 409, /already removed/],
      ["no-such-kid", 404, /does not exist/],
    ];
    for (const [target, status, message] of refusals) {
      const refused = await first.admin("POST", `/keys/${encodeURIComponent(target)}/retire`, {});
      expect(refused.status, JSON.stringify(refused.body)).toBe(status);
      expect(refused.body.error_description).toMatch(message);
    }
    expect(await first.deputy.db.prisma.auditEvent.count({ where: { action: "key.retire" } })).toBe(1);
    expect(await publishedKids(first)).toContain(active.kid);
  });
});

describe("signing key rotation on PGlite (one process)", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer("pglite");
  });
  afterAll(async () => {
    await server?.close();
  });

  it("drops a retiring key from /jwks, and refuses what it signed, when its retiring period ends", async () => {
    const person = await createPerson(server);
    const ledger = await createResource(server, "https://ledger.example.com", ["ledger.read"], {
      token_format: "jwt",
    });
    const agent = await createAgent(server, person.email, [
      { resource: ledger.uri, scopes: ["ledger.read"] },
    ]);
    const root = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: agent.client_id,
      grants: [{ resource: ledger.uri, scopes: ["ledger.read"] }],
    });
    const issued = await exchange(server, agent, { subject_token: root.subjectToken, resource: ledger.uri });
    const jwt = String(issued.body.access_token);
    const kid = String(decodeProtectedHeader(jwt).kid);
    await rotate(server);
    expect(await publishedKids(server)).toContain(kid);
    expect(await introspect(server, ledger, jwt)).toMatchObject({ active: true });

    // The end of its retiring period, brought forward to two seconds from now (a day by default); the process
    // learns the new time, then hears nothing more.
    await server.deputy.db.prisma.signingKey.update({
      where: { kid },
      data: { removedAt: new Date(Date.now() + 2_000) },
    });
    await server.deputy.bus.publish(SIGNING_KEY_TOPIC, kid);
    await expect
      .poll(async () => (await introspect(server, ledger, jwt)).active, { timeout: 10_000, interval: 250 })
      .toBe(false);
    expect(await publishedKids(server)).not.toContain(kid);
    const listed = (await server.admin("GET", "/keys")).body.keys;
    expect(listed.find((key: { kid: string }) => key.kid === kid)).toMatchObject({ status: "removed" });
  });

  it("publishes the rotated key at once and leaves exactly one active key after concurrent rotations", async () => {
    const [previous] = await publishedKids(server);
    const kids = await Promise.all([server, server, server].map(rotate));
    const active = await server.deputy.db.prisma.signingKey.findMany({ where: { active: true } });
    expect(active).toHaveLength(1);
    expect(kids).toContain(active[0]?.kid);
    const published = await publishedKids(server);
    expect(published[0]).toBe(active[0]?.kid);
    expect(published.sort()).toEqual([previous, ...kids].sort());
  });
});

describe("the published keys of one process", () => {
  it("reload on an unknown kid at most every few seconds, and whenever the bus says so", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      const pair = async (kid: string) => {
        const { publicKey, privateKey } = await generateKeyPair("ES256");
        const jwk: JWK = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
        const sign = () => new SignJWT({}).setProtectedHeader({ alg: "ES256", kid }).sign(privateKey);
        return { jwk, sign };
      };
      const [old, next] = [await pair("old"), await pair("next")];
      let stored = [old.jwk];
      let loads = 0;
      const handlers: ((key: string) => void)[] = [];
      const bus: InvalidationBus = {
        publish: async () => {},
        on: (_topic, handler) => void handlers.push(handler),
        close: async () => {},
      };
      const keys = new PublishedKeys(async () => {
        loads++;
        await sleep(5);
        return stored.map((jwk) => ({ jwk }));
      }, bus);
      const verifies = async (token: string) =>
        jwtVerify(token, keys.getKey).then(
          () => true,
          () => false,
        );

      expect(await verifies(await old.sign())).toBe(true);
      expect(loads).toBe(1);
      // A key added without a message reaching this process: refused while the set is fresh, without a reload.
      stored = [next.jwk, old.jwk];
      const token = await next.sign();
      expect(await verifies(token)).toBe(false);
      expect(loads).toBe(1);
      // Some seconds later, concurrent tokens naming it cause one reload between them, and are accepted.
      vi.setSystemTime(Date.now() + 5_000);
      expect(await Promise.all(Array.from({ length: 10 }, () => verifies(token)))).toEqual(
        Array(10).fill(true),
      );
      expect(loads).toBe(2);
      expect((await keys.jwks()).keys.map((key) => key.kid)).toEqual(["next", "old"]);

      // The bus's drop-all (fail-closed) and a rotation's message both make the next read load again.
      for (const handler of handlers) handler(ALL);
      await keys.jwks();
      expect(loads).toBe(3);
      for (const handler of handlers) handler("next");
      await keys.jwks();
      expect(loads).toBe(4);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("keys at their removal time, in one process", () => {
  it("are no longer published or accepted, nor their cookie secrets, once their removal time has passed", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    try {
      const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
      const jwk: JWK = { ...(await exportJWK(publicKey)), kid: "retiring", alg: "ES256", use: "sig" };
      const token = await new SignJWT({})
        .setProtectedHeader({ alg: "ES256", kid: "retiring" })
        .sign(privateKey);
      const removedAt = Date.now() + 60_000;
      const silent: InvalidationBus = { publish: async () => {}, on: () => {}, close: async () => {} };
      // What the database gives: the key until its removal time, nothing after.
      const keys = new PublishedKeys(
        async () => (Date.now() < removedAt ? [{ jwk, removedAt }] : []),
        silent,
      );
      const verifies = () =>
        jwtVerify(token, keys.getKey).then(
          () => true,
          () => false,
        );
      expect(await verifies()).toBe(true);
      vi.setSystemTime(removedAt - 1);
      expect(await verifies()).toBe(true);
      vi.setSystemTime(removedAt);
      expect(await verifies()).toBe(false);
      expect((await keys.jwks()).keys).toEqual([]);

      vi.setSystemTime(removedAt - 60_000);
      const own = await exportJWK((await generateKeyPair("ES256", { extractable: true })).privateKey);
      const retiring = await exportJWK(privateKey);
      const cookies = await CookieKeys.create(
        async () => [{ jwk: own }, { jwk: retiring, removedAt }],
        silent,
        createLogger("silent"),
      );
      expect(cookies.accepted).toHaveLength(2);
      vi.setSystemTime(removedAt);
      expect(cookies.accepted).toEqual([cookies.signing]);
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("the cookie keys of one process", () => {
  it("sign as keygrip does, and accept a newer key's secret once the bus announces it, still signing with their own", async () => {
    const privateJwk = async () =>
      exportJWK((await generateKeyPair("ES256", { extractable: true })).privateKey);
    const [old, next] = [await privateJwk(), await privateJwk()];
    let stored = [old];
    const handlers: ((key: string) => void)[] = [];
    const bus: InvalidationBus = {
      publish: async () => {},
      on: (_topic, handler) => void handlers.push(handler),
      close: async () => {},
    };
    const log = createLogger("silent");
    const entries = (jwks: JWK[]) => jwks.map((jwk) => ({ jwk }));
    const running = await CookieKeys.create(async () => entries(stored), bus, log);
    // A process started after the rotation, with the new key active.
    const restarted = await CookieKeys.create(async () => entries([next, old]), bus, log);
    const cookie = "_interaction=abc";
    const own = running.keygrip.sign(cookie);
    expect(own).toBe(new Keygrip([running.signing.toString("base64url")]).sign(cookie));
    expect(restarted.keygrip.index(cookie, own)).toBe(1);

    const newer = restarted.keygrip.sign(cookie);
    expect(running.keygrip.verify(cookie, newer)).toBe(false);
    stored = [next, old];
    for (const handler of handlers) handler(ALL);
    await vi.waitFor(() => expect(running.keygrip.index(cookie, newer)).toBe(1));
    expect(running.keygrip.sign(cookie)).toBe(own);
    expect(running.keygrip.verify(cookie, `${newer}x`)).toBe(false);
  });
});
