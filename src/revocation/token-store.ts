// Removes revoked tokens from Redis through oidc-provider's own storage adapter, so a revoked token is gone from
// every server process sharing the Redis: introspection then answers `{"active": false}` and no exchange can load
// it. Opaque tokens are stored under their jti; grants (and every token, code and refresh token they hold) are
// removed by grant id. JWT-format tokens are never stored: their revocation lives in the lineage table alone.
import type { Redis } from "ioredis";
import { type Adapter, createRedisAdapterFactory } from "../oauth/redis-adapter.ts";

/** How many Redis calls are in flight at once (ioredis pipelines them on one connection). */
const BATCH = 500;

export interface TokenStore {
  /** Destroys opaque access tokens by jti; returns how many were still present. */
  destroyAccessTokens(jtis: readonly string[]): Promise<number>;
  /** Removes every record of these grants (tokens, codes, refresh tokens) and the grants themselves. */
  revokeGrants(grantIds: readonly string[]): Promise<void>;
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
    async destroyAccessTokens(jtis) {
      let present = 0;
      for (let i = 0; i < jtis.length; i += BATCH) {
        const batch = jtis.slice(i, i + BATCH);
        const found = await Promise.all(batch.map((jti) => accessTokens.find(jti)));
        const live = batch.filter((_, index) => found[index] !== undefined && found[index] !== null);
        present += live.length;
        await Promise.all(live.map((jti) => accessTokens.destroy(jti)));
      }
      return present;
    },
    async revokeGrants(grantIds) {
      for (let i = 0; i < grantIds.length; i += BATCH) {
        const batch = grantIds.slice(i, i + BATCH);
        await Promise.all(
          batch.map(async (grantId) => {
            await accessTokens.revokeByGrantId(grantId);
            await grants.destroy(grantId);
          }),
        );
      }
    },
  };
}
