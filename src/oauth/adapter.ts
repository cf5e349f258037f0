// The storage adapter handed to oidc-provider: clients come from the registry, everything else from Redis.
import type { Redis } from "ioredis";
import { type Adapter, createRedisAdapterFactory } from "../redis/redis-adapter.ts";
import type { ClientStore } from "./client-store.ts";

/** An oidc-provider adapter factory: called once per model name. */
export function createProviderAdapter(
  redis: Redis,
  prefix: string,
  clients: ClientStore,
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
  return (name) => (name === "Client" ? registryClients : new RedisAdapter(name));
}
