// Resource servers by URI with their scopes: a read-through cache in front of the registry, dropped on change.

import { TtlCache } from "../cache/ttl-cache.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";

export interface CatalogScope {
  name: string;
  description: string;
  risk: "low" | "high";
}

export interface CatalogResource {
  id: string;
  uri: string;
  name: string;
  clientId: string;
  tokenFormat: "opaque" | "jwt";
  tokenTtlSeconds: number;
  dpopRequired: boolean;
  scopes: CatalogScope[];
}

export class ResourceCatalog {
  readonly #prisma: PrismaClient;
  readonly #cache = new TtlCache<CatalogResource | undefined>({ ttlMs: 60_000, maxEntries: 10_000 });

  constructor(prisma: PrismaClient, bus: InvalidationBus) {
    this.#prisma = prisma;
    bus.on("resource", (uri) => this.#cache.invalidate(uri));
  }

  async findByUri(uri: string): Promise<CatalogResource | undefined> {
    return this.#cache.get(uri, (key) => this.#load(key));
  }

  async #load(uri: string): Promise<CatalogResource | undefined> {
    const row = await this.#prisma.resourceServer.findUnique({ where: { uri }, include: { scopes: true } });
    const resource: CatalogResource | undefined = row
      ? {
          id: row.id,
          uri: row.uri,
          name: row.name,
          clientId: row.clientId,
          tokenFormat: row.tokenFormat,
          tokenTtlSeconds: row.tokenTtlSeconds,
          dpopRequired: row.dpopRequired,
          scopes: row.scopes
            .map(({ name, description, risk }) => ({ name, description, risk }))
            .sort((a, b) => a.name.localeCompare(b.name)),
        }
      : undefined;
    return resource;
  }
}
