// What policies may know about agents (name, purpose, owner), cached in-process and dropped on any change to
// a client (the same invalidation the client store listens to).

import type { PrismaClient } from "../generated/prisma/client.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";

export interface AgentFacts {
  clientId: string;
  name: string;
  purpose: string;
  ownerId: string;
  ownerEmail: string;
}

const CACHE_TTL_MS = 60_000;

export class AgentDirectory {
  readonly #prisma: PrismaClient;
  readonly #cache = new Map<string, { facts: AgentFacts | undefined; loadedAt: number }>();

  constructor(prisma: PrismaClient, bus: InvalidationBus) {
    this.#prisma = prisma;
    bus.on("client", (clientId) => {
      if (clientId === "*") this.#cache.clear();
      else this.#cache.delete(clientId);
    });
  }

  async find(clientId: string): Promise<AgentFacts | undefined> {
    const cached = this.#cache.get(clientId);
    if (cached && Date.now() - cached.loadedAt < CACHE_TTL_MS) return cached.facts;
    const row = await this.#prisma.agent.findUnique({ where: { clientId }, include: { owner: true } });
    const facts = row
      ? {
          clientId: row.clientId,
          name: row.name,
          purpose: row.purpose,
          ownerId: row.ownerId,
          ownerEmail: row.owner.email,
        }
      : undefined;
    this.#cache.set(clientId, { facts, loadedAt: Date.now() });
    return facts;
  }
}
