import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AdapterConstructor, createRedisAdapterFactory } from "../../src/redis/redis-adapter.ts";

const REDIS_URL = "redis://127.0.0.1:6379";
const PREFIX = `test:redis-adapter:${randomUUID()}:`;

let redis: Redis;
let other: Redis;
let Adapter: AdapterConstructor;
let OtherAdapter: AdapterConstructor;

async function keysUnder(pattern: string): Promise<string[]> {
  const found: string[] = [];
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    found.push(...keys);
  } while (cursor !== "0");
  return found;
}

beforeAll(async () => {
  redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  other = new Redis(REDIS_URL, { maxRetriesPerRequest: 2 });
  Adapter = createRedisAdapterFactory(redis, { prefix: PREFIX });
  OtherAdapter = createRedisAdapterFactory(other, { prefix: PREFIX });
});

afterAll(async () => {
  const keys = await keysUnder(`${PREFIX}*`);
  if (keys.length > 0) await redis.del(...keys);
  await Promise.all([redis.quit(), other.quit()]);
});

function id(): string {
  return randomUUID().replaceAll("-", "");
}

describe("redis adapter", () => {
  it("round-trips a payload through upsert and find", async () => {
    const adapter = new Adapter("AccessToken");
    const jti = id();
    const payload = {
      jti,
      kind: "AccessToken",
      iat: 1_700_000_000,
      exp: 1_700_000_600,
      accountId: "alice",
      clientId: "c",
      grantId: id(),
      scope: "read write",
      aud: [],
      extra: { act: { sub: "agent-1" }, empty: {} },
    };
    await adapter.upsert(jti, payload, 600);
    expect(await adapter.find(jti)).toStrictEqual(payload);
    expect(await adapter.find(id())).toBeUndefined();
    // Models are separate namespaces.
    expect(await new Adapter("RefreshToken").find(jti)).toBeUndefined();
  });

  it("sets a TTL on the record and its indexes no longer than expiresIn", async () => {
    const adapter = new Adapter("DeviceCode");
    const jti = id();
    const grantId = id();
    const userCode = `UC-${id()}`;
    await adapter.upsert(jti, { jti, grantId, userCode }, 30);
    for (const key of [
      `${PREFIX}DeviceCode:${jti}`,
      `${PREFIX}idx:userCode:DeviceCode:${userCode}`,
      `${PREFIX}idx:grant:${grantId}`,
    ]) {
      const pttl = await redis.pttl(key);
      expect(pttl, key).toBeGreaterThan(0);
      expect(pttl, key).toBeLessThanOrEqual(30_000);
    }
  });

  it("keeps a grant index alive as long as its longest-lived member", async () => {
    const grantId = id();
    const grantKey = `${PREFIX}idx:grant:${grantId}`;
    await new Adapter("AccessToken").upsert("at1", { grantId }, 10);
    expect(await redis.pttl(grantKey)).toBeLessThanOrEqual(10_000);
    await new Adapter("RefreshToken").upsert("rt1", { grantId }, 1000);
    expect(await redis.pttl(grantKey)).toBeGreaterThan(990_000);
    await new Adapter("AccessToken").upsert("at2", { grantId }, 5);
    expect(await redis.pttl(grantKey)).toBeGreaterThan(990_000);
    expect(await redis.zcard(grantKey)).toBe(3);
  });

  it("finds by uid and by user code", async () => {
    const sessions = new Adapter("Session");
    const sessionId = id();
    const uid = id();
    await sessions.upsert(sessionId, { jti: sessionId, uid, accountId: "alice" }, 60);
    expect(await sessions.findByUid(uid)).toMatchObject({ jti: sessionId, uid, accountId: "alice" });
    expect(await sessions.findByUid(id())).toBeUndefined();

    const codes = new Adapter("DeviceCode");
    const deviceCode = id();
    const userCode = `ABCD-${id()}`;
    await codes.upsert(deviceCode, { jti: deviceCode, userCode, clientId: "c" }, 60);
    expect(await codes.findByUserCode(userCode)).toMatchObject({ jti: deviceCode, userCode });
    expect(await codes.findByUserCode("NOPE-NOPE")).toBeUndefined();

    // A re-upsert that changes the user code retires the old index entry.
    const newCode = `EFGH-${id()}`;
    await codes.upsert(deviceCode, { jti: deviceCode, userCode: newCode, clientId: "c" }, 60);
    expect(await codes.findByUserCode(userCode)).toBeUndefined();
    expect(await redis.exists(`${PREFIX}idx:userCode:DeviceCode:${userCode}`)).toBe(0);
    expect(await codes.findByUserCode(newCode)).toMatchObject({ jti: deviceCode, userCode: newCode });
  });

  it("consume marks the record consumed, visibly to another process", async () => {
    const jti = id();
    await new Adapter("AuthorizationCode").upsert(jti, { jti, grantId: id() }, 60);
    const seenElsewhere = new OtherAdapter("AuthorizationCode");
    expect((await seenElsewhere.find(jti))?.consumed).toBeUndefined();

    const before = Math.floor(Date.now() / 1000);
    await new Adapter("AuthorizationCode").consume(jti);
    const consumed = (await seenElsewhere.find(jti))?.consumed;
    expect(typeof consumed).toBe("number");
    expect(consumed).toBeGreaterThanOrEqual(before);
    expect(consumed).toBeLessThanOrEqual(Math.floor(Date.now() / 1000));
    // The TTL survives consumption.
    expect(await redis.pttl(`${PREFIX}AuthorizationCode:${jti}`)).toBeGreaterThan(0);

    // Consuming a missing record does not create one.
    const missing = id();
    await seenElsewhere.consume(missing);
    expect(await redis.exists(`${PREFIX}AuthorizationCode:${missing}`)).toBe(0);
  });

  it("revokeByGrantId removes every token of the grant and nothing of another grant", async () => {
    const grantA = id();
    const grantB = id();
    const sessionUid = id();
    const a = [
      ["AccessToken", id()],
      ["RefreshToken", id()],
      ["AuthorizationCode", id()],
      ["BackchannelAuthenticationRequest", id()],
    ] as const;
    const b = [
      ["AccessToken", id()],
      ["RefreshToken", id()],
    ] as const;
    for (const [model, jti] of a)
      await new Adapter(model).upsert(jti, { jti, grantId: grantA, sessionUid }, 60);
    for (const [model, jti] of b) await new Adapter(model).upsert(jti, { jti, grantId: grantB }, 60);
    const interaction = id();
    await new Adapter("Interaction").upsert(interaction, { jti: interaction, grantId: grantA }, 60);

    await new Adapter("AccessToken").revokeByGrantId(grantA);

    for (const [model, jti] of a) expect(await new Adapter(model).find(jti), model).toBeUndefined();
    for (const [model, jti] of b) expect(await new Adapter(model).find(jti), model).toMatchObject({ jti });
    expect(await new Adapter("Interaction").find(interaction)).toMatchObject({ grantId: grantA });
    expect(await redis.exists(`${PREFIX}idx:grant:${grantA}`)).toBe(0);
    expect(await redis.zcard(`${PREFIX}idx:grant:${grantB}`)).toBe(2);
  });

  it("destroy removes the record and its indexes", async () => {
    const codes = new Adapter("DeviceCode");
    const jti = id();
    const grantId = id();
    const userCode = `WXYZ-${id()}`;
    await codes.upsert(jti, { jti, grantId, userCode }, 60);
    const sessions = new Adapter("Session");
    const sessionId = id();
    const uid = id();
    await sessions.upsert(sessionId, { jti: sessionId, uid }, 60);
    const indexKeys = [
      `${PREFIX}idx:userCode:DeviceCode:${userCode}`,
      `${PREFIX}idx:grant:${grantId}`,
      `${PREFIX}idx:uid:Session:${uid}`,
    ];
    expect(await redis.exists(...indexKeys)).toBe(3);

    await codes.destroy(jti);
    await sessions.destroy(sessionId);

    expect(await codes.find(jti)).toBeUndefined();
    expect(await codes.findByUserCode(userCode)).toBeUndefined();
    expect(await sessions.findByUid(uid)).toBeUndefined();
    expect(
      await redis.exists(`${PREFIX}DeviceCode:${jti}`, `${PREFIX}Session:${sessionId}`, ...indexKeys),
    ).toBe(0);
  });

  it("lets entries expire", async () => {
    const codes = new Adapter("DeviceCode");
    const jti = id();
    const grantId = id();
    const userCode = `EXPI-${id()}`;
    await codes.upsert(jti, { jti, grantId, userCode }, 1);
    expect(await codes.find(jti)).toMatchObject({ jti });
    await sleep(1300);
    expect(await codes.find(jti)).toBeUndefined();
    expect(await codes.findByUserCode(userCode)).toBeUndefined();
    expect(
      await redis.exists(
        `${PREFIX}DeviceCode:${jti}`,
        `${PREFIX}idx:userCode:DeviceCode:${userCode}`,
        `${PREFIX}idx:grant:${grantId}`,
      ),
    ).toBe(0);
  });

  it("shares ReplayDetection entries between processes", async () => {
    const first = new Adapter("ReplayDetection");
    const second = new OtherAdapter("ReplayDetection");
    const jti = id();
    expect(await second.find(jti)).toBeUndefined();
    await first.upsert(jti, { jti, iss: "client-1", kind: "ReplayDetection" }, 60);
    expect(await second.find(jti)).toStrictEqual({ jti, iss: "client-1", kind: "ReplayDetection" });
    await second.upsert(jti, { jti, iss: "client-2", kind: "ReplayDetection" }, 60);
    expect(await first.find(jti)).toMatchObject({ iss: "client-2" });
    // A non-positive TTL (an assertion accepted within the clock tolerance) is still remembered briefly.
    const edge = id();
    await first.upsert(edge, { jti: edge, iss: "client-1" }, 0);
    expect(await second.find(edge)).toMatchObject({ iss: "client-1" });
  });

  it("honours an ioredis keyPrefix on the connection", async () => {
    const prefixed = new Redis(REDIS_URL, { keyPrefix: `${PREFIX}kp:`, maxRetriesPerRequest: 2 });
    try {
      const PrefixedAdapter = createRedisAdapterFactory(prefixed, { prefix: "oidc:" });
      const grantId = id();
      const uid = id();
      const sessionId = id();
      await new PrefixedAdapter("Session").upsert(sessionId, { jti: sessionId, uid }, 60);
      expect(await new PrefixedAdapter("Session").findByUid(uid)).toMatchObject({ jti: sessionId });
      await new PrefixedAdapter("AccessToken").upsert("t1", { grantId }, 60);
      await new PrefixedAdapter("RefreshToken").upsert("t2", { grantId }, 60);
      expect(await redis.zcard(`${PREFIX}kp:oidc:idx:grant:${grantId}`)).toBe(2);
      await new PrefixedAdapter("AccessToken").revokeByGrantId(grantId);
      expect(await redis.exists(`${PREFIX}kp:oidc:AccessToken:t1`, `${PREFIX}kp:oidc:RefreshToken:t2`)).toBe(
        0,
      );
    } finally {
      await prefixed.quit();
    }
  });
});

// oidc-provider ships no type declarations; import it through a non-literal specifier so TypeScript types it
// as `any`, and describe the little that is used here.
interface OidcProvider {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
}
type OidcProviderConstructor = new (issuer: string, configuration: object) => OidcProvider;
const OIDC_PROVIDER: string = "oidc-provider";

describe("redis adapter behind a real oidc-provider", () => {
  const providerPrefix = `${PREFIX}provider:`;
  let server: Server;
  let base: string;

  beforeAll(async () => {
    const { default: Provider } = (await import(OIDC_PROVIDER)) as { default: OidcProviderConstructor };
    let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
    server = createServer((req, res) => {
      if (handler) handler(req, res);
      else res.writeHead(503).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    base = `http://127.0.0.1:${port}`;
    const provider = new Provider(`http://localhost:${port}`, {
      adapter: createRedisAdapterFactory(redis, { prefix: providerPrefix }),
      clients: [
        {
          client_id: "c",
          client_secret: "s",
          grant_types: ["client_credentials"],
          redirect_uris: [],
          response_types: [],
        },
      ],
      features: {
        clientCredentials: { enabled: true },
        introspection: { enabled: true },
        revocation: { enabled: true },
        devInteractions: { enabled: false },
      },
    });
    handler = provider.callback();
  });

  afterAll(async () => {
    await new Promise<void>((resolve, reject) =>
      server.close((error) => (error ? reject(error) : resolve())),
    );
  });

  const basic = `Basic ${Buffer.from("c:s").toString("base64")}`;

  async function post(path: string, form: Record<string, string>): Promise<Response> {
    return fetch(`${base}${path}`, {
      method: "POST",
      headers: { authorization: basic, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(form),
    });
  }

  async function introspect(token: string): Promise<Record<string, unknown>> {
    const response = await post("/token/introspection", { token });
    expect(response.status).toBe(200);
    return (await response.json()) as Record<string, unknown>;
  }

  it("issues, introspects and revokes a client_credentials token stored in Redis", async () => {
    const tokenResponse = await post("/token", { grant_type: "client_credentials" });
    expect(tokenResponse.status).toBe(200);
    const body = (await tokenResponse.json()) as { access_token?: unknown; token_type?: unknown };
    expect(body.token_type).toBe("Bearer");
    expect(typeof body.access_token).toBe("string");
    const token = body.access_token as string;

    // The token lives in Redis under this test's prefix, so the adapter (not a memory store) served it.
    expect(await keysUnder(`${providerPrefix}ClientCredentials:*`)).toHaveLength(1);
    expect(await redis.exists(`${providerPrefix}ClientCredentials:${token}`)).toBe(1);

    expect(await introspect(token)).toMatchObject({ active: true, client_id: "c", token_type: "Bearer" });

    const revocation = await post("/token/revocation", { token });
    expect(revocation.status).toBe(200);
    expect(await redis.exists(`${providerPrefix}ClientCredentials:${token}`)).toBe(0);

    expect(await introspect(token)).toStrictEqual({ active: false });
  });
});
