// Drift: the first time an agent uses an action on a resource. Known uses are kept in AgentUsage (and cached
// here, since they never become unknown again); a use is recorded only once a decision has allowed it, so a
// policy that refuses drifting requests keeps refusing until one is allowed.
import type { PrismaClient } from "../generated/prisma/client.ts";

const MAX_CACHED = 100_000;

export class UsageTracker {
  readonly #prisma: PrismaClient;
  readonly #known = new Set<string>();

  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
  }

  /** Whether this would be the agent's first use of `action` on `resource`. */
  async isNew(agent: string, resource: string, action: string): Promise<boolean> {
    const key = cacheKey(agent, resource, action);
    if (this.#known.has(key)) return false;
    const row = await this.#prisma.agentUsage.findUnique({
      where: { agentClientId_resource_action: { agentClientId: agent, resource, action } },
      select: { action: true },
    });
    if (row) this.#remember(key);
    return !row;
  }

  /** Records a use; true when it was the first (exactly one process and request sees true). */
  async record(agent: string, resource: string, action: string): Promise<boolean> {
    const key = cacheKey(agent, resource, action);
    if (this.#known.has(key)) return false;
    const { count } = await this.#prisma.agentUsage.createMany({
      data: [{ agentClientId: agent, resource, action }],
      skipDuplicates: true,
    });
    this.#remember(key);
    return count === 1;
  }

  #remember(key: string): void {
    if (this.#known.size >= MAX_CACHED) this.#known.clear();
    this.#known.add(key);
  }
}

const cacheKey = (agent: string, resource: string, action: string) =>
  `${agent}\u0000${resource}\u0000${action}`;
