// oidc-provider storage adapter on Redis. Every server process sharing one Redis sees the same tokens, codes,
// sessions, interactions, PAR requests and replay-detection entries.
//
// Key layout (P = options.prefix):
//   P<Model>:<id>                     hash { payload: JSON, consumed?: epoch seconds, grantId?, uid?, userCode? }
//   Pidx:uid:<Model>:<uid>            string <id>      (same TTL as the record)
//   Pidx:userCode:<Model>:<userCode>  string <id>      (same TTL as the record)
//   Pidx:grant:<grantId>              sorted set of record keys scored by their expiry (ms since epoch, +inf if
//                                     none); the set expires with its longest-lived member.
//
// The index fields are copied out of the JSON into the hash so that scripts can maintain and check the
// indexes without decoding JSON in Lua (cjson turns empty arrays into objects and rounds big numbers).
// Writes are Lua scripts (atomic, one round trip); reads are one command or one script.
//
// The scripts derive index keys at run time, so this adapter needs a standalone (or Sentinel) Redis, not
// Redis Cluster. An ioredis `keyPrefix` on the connection is honoured.
//
// Nothing here logs, and errors never carry payloads: stored values are tokens.
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

/** What oidc-provider hands to and expects from an adapter (structural: oidc-provider ships no types). */
export interface AdapterPayload {
  [key: string]: unknown;
  jti?: string;
  kind?: string;
  exp?: number;
  iat?: number;
  grantId?: string;
  uid?: string;
  userCode?: string;
  consumed?: number;
}

export interface Adapter {
  upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void>;
  find(id: string): Promise<AdapterPayload | undefined>;
  findByUid(uid: string): Promise<AdapterPayload | undefined>;
  findByUserCode(userCode: string): Promise<AdapterPayload | undefined>;
  consume(id: string): Promise<void>;
  destroy(id: string): Promise<void>;
  revokeByGrantId(grantId: string): Promise<void>;
}

export type AdapterConstructor = new (name: string) => Adapter;

// Models whose records join their grant's index, so that revokeByGrantId removes them. The Grant model itself
// is deliberately absent (its payload has no grantId; whether a revocation also destroys the Grant is
// oidc-provider's revokeGrantPolicy, which calls Grant.adapter.destroy itself). Interaction carries a grantId
// too but must survive a revocation. ClientCredentials has no grantId today; listed in case it gains one.
const GRANTABLE = new Set([
  "AccessToken",
  "AuthorizationCode",
  "RefreshToken",
  "DeviceCode",
  "ClientCredentials",
  "BackchannelAuthenticationRequest",
  "PreAuthorizedCode",
]);

// Shared Lua helpers. `rp` is the raw prefix (ioredis keyPrefix + options.prefix) for keys built in Lua.
const LUA_HELPERS = `
local function dropIndex(rp, kind, model, value, id)
  if value and value ~= '' then
    local k = rp .. 'idx:' .. kind .. ':' .. model .. ':' .. value
    if redis.call('GET', k) == id then redis.call('DEL', k) end
  end
end
local function dropGrantMember(rp, grantId, member)
  if grantId and grantId ~= '' then
    local g = rp .. 'idx:grant:' .. grantId
    redis.call('ZREM', g, member)
    if redis.call('ZCARD', g) == 0 then redis.call('DEL', g) end
  end
end
`;

// KEYS[1] record. ARGV: rp, model, id, payload, ttlMs ('' = no expiry), grantId, uid, userCode ('' = absent).
const UPSERT = `${LUA_HELPERS}
local key, rp, model, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local payload, ttl, grantId, uid, userCode = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local old = redis.call('HMGET', key, 'grantId', 'uid', 'userCode')
if old[1] and old[1] ~= grantId then dropGrantMember(rp, old[1], key) end
if old[2] and old[2] ~= uid then dropIndex(rp, 'uid', model, old[2], id) end
if old[3] and old[3] ~= userCode then dropIndex(rp, 'userCode', model, old[3], id) end
redis.call('DEL', key)
local fields = { 'payload', payload }
if grantId ~= '' then table.insert(fields, 'grantId'); table.insert(fields, grantId) end
if uid ~= '' then table.insert(fields, 'uid'); table.insert(fields, uid) end
if userCode ~= '' then table.insert(fields, 'userCode'); table.insert(fields, userCode) end
redis.call('HSET', key, unpack(fields))
if ttl ~= '' then redis.call('PEXPIRE', key, ttl) end
local function setIndex(kind, value)
  if value == '' then return end
  local k = rp .. 'idx:' .. kind .. ':' .. model .. ':' .. value
  if ttl ~= '' then redis.call('SET', k, id, 'PX', ttl) else redis.call('SET', k, id) end
end
setIndex('uid', uid)
setIndex('userCode', userCode)
if grantId ~= '' then
  local g = rp .. 'idx:grant:' .. grantId
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local score = '+inf'
  if ttl ~= '' then score = tostring(now + tonumber(ttl)) end
  redis.call('ZADD', g, score, key)
  redis.call('ZREMRANGEBYSCORE', g, '-inf', '(' .. tostring(now))
  local top = redis.call('ZRANGE', g, -1, -1, 'WITHSCORES')
  if top[2] == 'inf' or top[2] == '+inf' then
    redis.call('PERSIST', g)
  else
    redis.call('PEXPIREAT', g, top[2])
  end
end
return 1
`;

// KEYS[1] record. ARGV: epoch seconds. Keeps the first consumption time; never creates a record.
const CONSUME = `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HSETNX', KEYS[1], 'consumed', ARGV[1])
`;

// KEYS[1] record. ARGV: rp, model, id.
const DESTROY = `${LUA_HELPERS}
local key, rp, model, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local old = redis.call('HMGET', key, 'grantId', 'uid', 'userCode')
redis.call('DEL', key)
dropGrantMember(rp, old[1], key)
dropIndex(rp, 'uid', model, old[2], id)
dropIndex(rp, 'userCode', model, old[3], id)
return 1
`;

// KEYS[1] grant index. ARGV: rp, grantId. Members are raw record keys: rp .. model .. ':' .. id.
const REVOKE = `${LUA_HELPERS}
local g, rp, grantId = KEYS[1], ARGV[1], ARGV[2]
local members = redis.call('ZRANGE', g, 0, -1)
local removed = 0
for _, member in ipairs(members) do
  local f = redis.call('HMGET', member, 'grantId', 'uid', 'userCode')
  if f[1] == grantId then
    redis.call('DEL', member)
    removed = removed + 1
    local rest = string.sub(member, #rp + 1)
    local colon = string.find(rest, ':', 1, true)
    if colon then
      local model, id = string.sub(rest, 1, colon - 1), string.sub(rest, colon + 1)
      dropIndex(rp, 'uid', model, f[2], id)
      dropIndex(rp, 'userCode', model, f[3], id)
    end
  end
end
redis.call('DEL', g)
return removed
`;

// KEYS[1] index key. ARGV: raw record key prefix (rp .. model .. ':'), index field, value.
// Answers only if the record still carries that value (an index entry may outlive a re-upsert in theory).
const FIND_BY_INDEX = `
local id = redis.call('GET', KEYS[1])
if not id then return nil end
local f = redis.call('HMGET', ARGV[1] .. id, 'payload', 'consumed', ARGV[2])
if not f[1] or f[3] ~= ARGV[3] then return nil end
return { f[1], f[2] }
`;

class LuaScript {
  readonly sha: string;
  constructor(readonly source: string) {
    this.sha = createHash("sha1").update(source).digest("hex");
  }

  async run(redis: Redis, keys: string[], args: string[]): Promise<unknown> {
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith("NOSCRIPT")) throw error;
      return redis.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

const SCRIPTS = {
  upsert: new LuaScript(UPSERT),
  consume: new LuaScript(CONSUME),
  destroy: new LuaScript(DESTROY),
  revoke: new LuaScript(REVOKE),
  findByIndex: new LuaScript(FIND_BY_INDEX),
};

function epochSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

function indexValue(value: unknown): string {
  return typeof value === "string" ? value : "";
}

function decode(payload: unknown, consumed: unknown): AdapterPayload | undefined {
  if (typeof payload !== "string") return undefined;
  let parsed: AdapterPayload;
  try {
    parsed = JSON.parse(payload) as AdapterPayload;
  } catch {
    // JSON.parse messages quote the input; the input is a token.
    throw new Error("oidc-provider redis adapter: stored payload is not valid JSON");
  }
  if (typeof consumed === "string") parsed.consumed = Number(consumed);
  return parsed;
}

/**
 * Returns the adapter class to pass as `adapter` in the oidc-provider configuration. oidc-provider creates one
 * instance per model name (AccessToken, Session, ReplayDetection, ...).
 */
export function createRedisAdapterFactory(redis: Redis, options: { prefix: string }): AdapterConstructor {
  const { prefix } = options;
  const connectionPrefix = redis.options.keyPrefix;
  // Keys passed through ioredis get its keyPrefix automatically; keys built inside Lua need it spelled out.
  const rawPrefix = `${connectionPrefix === undefined ? "" : String(connectionPrefix)}${prefix}`;

  return class RedisAdapter implements Adapter {
    // Clients never come here: src/oauth/adapter.ts serves them from the registry.
    readonly #model: string;

    constructor(name: string) {
      this.#model = name;
    }

    #key(id: string): string {
      return `${prefix}${this.#model}:${id}`;
    }

    #indexKey(kind: "uid" | "userCode", value: string): string {
      return `${prefix}idx:${kind}:${this.#model}:${value}`;
    }

    async upsert(id: string, payload: AdapterPayload, expiresIn?: number): Promise<void> {
      // Never store with a TTL <= 0: Redis would delete at once, and a replay-detection entry written right at
      // the edge of the clock tolerance would vanish while its assertion is still acceptable.
      const ttl =
        typeof expiresIn === "number" && Number.isFinite(expiresIn)
          ? String(Math.max(1000, Math.ceil(expiresIn * 1000)))
          : "";
      const grantId = GRANTABLE.has(this.#model) ? indexValue(payload.grantId) : "";
      await SCRIPTS.upsert.run(
        redis,
        [this.#key(id)],
        [
          rawPrefix,
          this.#model,
          id,
          JSON.stringify(payload),
          ttl,
          grantId,
          indexValue(payload.uid),
          indexValue(payload.userCode),
        ],
      );
    }

    async find(id: string): Promise<AdapterPayload | undefined> {
      if (typeof id !== "string") return undefined;
      const [payload, consumed] = await redis.hmget(this.#key(id), "payload", "consumed");
      return decode(payload, consumed);
    }

    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      return this.#findByIndex("uid", uid);
    }

    async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      return this.#findByIndex("userCode", userCode);
    }

    async #findByIndex(kind: "uid" | "userCode", value: string): Promise<AdapterPayload | undefined> {
      if (typeof value !== "string") return undefined;
      const found = await SCRIPTS.findByIndex.run(
        redis,
        [this.#indexKey(kind, value)],
        [`${rawPrefix}${this.#model}:`, kind, value],
      );
      if (!Array.isArray(found)) return undefined;
      return decode(found[0], found[1]);
    }

    async consume(id: string): Promise<void> {
      await SCRIPTS.consume.run(redis, [this.#key(id)], [String(epochSeconds())]);
    }

    async destroy(id: string): Promise<void> {
      await SCRIPTS.destroy.run(redis, [this.#key(id)], [rawPrefix, this.#model, id]);
    }

    // Removes every record of the grant, whatever the model of the adapter it is called on (oidc-provider
    // calls it once per token model in a revocation; the first call does the work).
    async revokeByGrantId(grantId: string): Promise<void> {
      await SCRIPTS.revoke.run(redis, [`${prefix}idx:grant:${grantId}`], [rawPrefix, grantId]);
    }
  };
}
