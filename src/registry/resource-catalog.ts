// Resource servers by URI with their scopes: a read-through cache in front of the registry, dropped on change.

import type { InvalidationBus } from "../events/invalidation-bus.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";

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

const CACHE_TTL_MS = 60_000;

export class ResourceCatalog {
  readonly #prisma: PrismaClient;
  readonly #cache = new Map<string, { resource: CatalogResource | undefined; loadedAt: number }>();

  constructor(prisma: PrismaClient, bus: InvalidationBus) {
    this.#prisma = prisma;
    bus.on("resource", (uri) => {
      if (uri === "*") this.#cache.clear();
      else this.#cache.delete(uri);
    });
  }

  async findByUri(uri: string): Promise<CatalogResource | undefined> {
    const cached = this.#cache.get(uri);
    if (cached && Date.now() - cached.loadedAt < CACHE_TTL_MS) return cached.resource;
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
    this.#cache.set(uri, { resource, loadedAt: Date.now() });
    return resource;
  }
}
