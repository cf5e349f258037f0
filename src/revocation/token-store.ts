// Removes revoked tokens from Redis through oidc-provider's own storage adapter, so a revoked token is gone from
// every server process sharing the Redis: introspection then answers `{"active": false}` and no exchange can load
// it. Every token Deputy mints has a grant (an exchanged token one of its own), so tokens are removed by grant id,
// with every token, code and refresh token the grant holds; the lineage never stores a token's id (an opaque
// token's id is the token). JWT-format tokens are never stored: their revocation lives in the lineage alone.
import type { Redis } from "ioredis";
import { type Adapter, createRedisAdapterFactory } from "../redis/redis-adapter.ts";

/** How many Redis calls are in flight at once (ioredis pipelines them on one connection). */
const BATCH = 500;

export interface TokenStore {
  /** Removes every record of these grants (tokens, codes, refresh tokens) and the grants themselves; returns how
   * many grants were still present. */
  revokeGrants(grantIds: readonly string[]): Promise<number>;
}

/** The part of an oidc-provider storage adapter used here (`provider.AccessToken.adapter` and the like). */
export type TokenAdapter = Pick<Adapter, "destroy" | "revokeByGrantId"> & {
  find(id: string): Promise<unknown>;
};

export interface TokenAdapters {
  accessTokens: TokenAdapter;
  grants: TokenAdapter;
}

/** The key prefix oidc-provider's adapter uses under REDIS_PREFIX (the same string src/app.ts passes). */
export const oidcKeyPrefix = (redisPrefix: string) => `${redisPrefix}oidc:`;

/** Adapters for a process that has no oidc-provider instance (the `deputy worker` process). */
export function standaloneAdapters(redis: Redis, redisPrefix: string): TokenAdapters {
  const RedisAdapter = createRedisAdapterFactory(redis, { prefix: oidcKeyPrefix(redisPrefix) });
  return { accessTokens: new RedisAdapter("AccessToken"), grants: new RedisAdapter("Grant") };
}

export function createTokenStore(adapters: TokenAdapters): TokenStore {
  const { accessTokens, grants } = adapters;
  return {
    async revokeGrants(grantIds) {
      let present = 0;
      for (let i = 0; i < grantIds.length; i += BATCH) {
        const batch = grantIds.slice(i, i + BATCH);
        const found = await Promise.all(
          batch.map(async (grantId) => {
            const grant = await grants.find(grantId);
            await accessTokens.revokeByGrantId(grantId);
            await grants.destroy(grantId);
            return grant !== undefined && grant !== null;
          }),
        );
        present += found.filter(Boolean).length;
      }
      return present;
    },
  };
}
