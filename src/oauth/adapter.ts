// The storage adapter handed to oidc-provider: clients come from the registry, everything else from Redis —
// except that an access token on the revocation list is absent, whatever Redis holds (a Redis restored from an
// older snapshot brings revoked tokens back): introspection, token exchange, AuthZEN and every other reader of
// opaque tokens goes through `AccessToken.find`, which asks this adapter.
import type { Redis } from "ioredis";
import { type Adapter, createRedisAdapterFactory } from "../redis/redis-adapter.ts";
import type { RevocationList } from "../revocation/revocation-list.ts";
import type { ClientStore } from "./client-store.ts";

/** An oidc-provider adapter factory: called once per model name. */
export function createProviderAdapter(
  redis: Redis,
  prefix: string,
  clients: ClientStore,
  revoked: RevocationList,
): (name: string) => Adapter {
  const RedisAdapter = createRedisAdapterFactory(redis, { prefix });
  const registryClients: Adapter = {
    find: async (id) => clients.find(id),
    // The registry is changed through the admin API only, never by oidc-provider.
    upsert: async () => {},
    findByUid: async () => undefined,
    findByUserCode: async () => undefined,
    consume: async () => {},
    destroy: async () => {},
    revokeByGrantId: async () => {},
  };
  class AccessTokens extends RedisAdapter {
    override async find(id: string) {
      const token = await super.find(id);
      return token && !(await revoked.has(id)) ? token : undefined;
    }
  }
  return (name) => {
    if (name === "Client") return registryClients;
    return name === "AccessToken" ? new AccessTokens(name) : new RedisAdapter(name);
  };
}
