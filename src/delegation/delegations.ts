// Delegations: a person's approval for one agent, bounded by task, scopes per resource server, time and depth.
// Their state is read on every exchange, so it is cached in-process and dropped (on every process) on change.

import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import { TtlCache } from "../cache/ttl-cache.ts";
import { isUuid } from "../db/ids.ts";
import type { Delegation, PrismaClient } from "../generated/prisma/client.ts";
import { invalidRequest } from "../http/api-error.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import {
  groupByResource,
  pairsOutside,
  type ResourceGrant,
  resourcesOf,
  type ScopePair,
  scopeNames,
  toPairs,
} from "./resource-grants.ts";

/** What an exchange needs to know about a delegation, in one cached object. */
export interface DelegationState {
  id: string;
  status: Delegation["status"];
  personId: string;
  personEmail: string;
  personActive: boolean;
  agentClientId: string;
  taskId: string | null;
  taskDescription: string | null;
  /** What the person approved, per resource server: an exchange for a resource gets at most its scopes. */
  grants: ResourceGrant[];
  endsAt: Date;
  maxDepth: number;
}

/** A delegation row with what it grants. */
export type DelegationRecord = Delegation & { grants: ResourceGrant[] };

export interface NewDelegation {
  personId: string;
  agentClientId: string;
  taskId?: string;
  taskDescription?: string;
  /** The scopes approved on each resource server. */
  grants: ResourceGrant[];
  endsAt: Date;
  maxDepth?: number;
  grantId?: string;
  /** The request it answers: a second delegation for the same request is refused (a unique violation). */
  requestRef?: string;
}

/** What an agent may be delegated: scopes per resource server URI (its grants), and its max_depth. */
export interface AgentBounds {
  grants: Record<string, string[]>;
  maxDepth: number;
}

/** What a delegation holds that bounds it: the scopes approved on each resource server, and its max_depth. */
export interface DelegationBounds {
  grants: ResourceGrant[];
  maxDepth: number;
}

/** An agent's bounds, from its registry row with its grants' resource servers. */
export function agentBounds(agent: {
  maxDepth: number;
  scopeGrants: { scopes: string[]; resourceServer: { uri: string } }[];
}): AgentBounds {
  return {
    grants: Object.fromEntries(agent.scopeGrants.map((grant) => [grant.resourceServer.uri, grant.scopes])),
    maxDepth: agent.maxDepth,
  };
}

/** Whether the agent may be delegated `scope` on `resource`. */
export function mayHold(agent: AgentBounds, { resource, scope }: ScopePair): boolean {
  return Object.hasOwn(agent.grants, resource) && (agent.grants[resource] ?? []).includes(scope);
}

/**
 * The part of a delegation an agent may hold: the (resource, scope) pairs it is granted, and no more depth than
 * its max_depth. Creating a delegation refuses anything beyond; narrowing an agent cuts its live delegations
 * down to it.
 */
export function withinAgent(delegation: DelegationBounds, agent: AgentBounds): DelegationBounds {
  return {
    grants: groupByResource(toPairs(delegation.grants).filter((pair) => mayHold(agent, pair))),
    maxDepth: Math.min(delegation.maxDepth, agent.maxDepth),
  };
}

/** Called after a delegation is committed (e.g. to schedule the job that ends it at its end time). */
export type DelegationCreatedListener = (delegation: DelegationRecord) => Promise<void>;

export class DelegationStore {
  readonly #prisma: PrismaClient;
  readonly #audit: AuditLog;
  readonly #cache = new TtlCache<DelegationState | undefined>({ ttlMs: 30_000, maxEntries: 50_000 });
  readonly #maxDepth: number;
  readonly #createdListeners: DelegationCreatedListener[] = [];

  constructor(prisma: PrismaClient, audit: AuditLog, bus: InvalidationBus, serverMaxDepth: number) {
    this.#prisma = prisma;
    this.#audit = audit;
    this.#maxDepth = serverMaxDepth;
    bus.on("delegation", (id) => this.#cache.invalidate(id));
    // A person's or agent's status is part of every delegation's state.
    bus.on("client", () => this.#cache.invalidate("*"));
  }

  /**
   * Records a person's approval. The agent must be active and registered for every scope on its resource
   * server; the delegation's depth is capped by the agent's and the server's maximum.
   */
  async create(context: AuditContext, input: NewDelegation): Promise<DelegationRecord> {
    const agent = await this.#prisma.agent.findUnique({
      where: { clientId: input.agentClientId },
      include: { scopeGrants: { include: { resourceServer: true } } },
    });
    if (agent?.status !== "active") throw invalidRequest(`agent ${input.agentClientId} is not active`);
    const person = await this.#prisma.person.findUnique({ where: { id: input.personId } });
    if (person?.status !== "active") throw invalidRequest("the person is not active");
    if (input.endsAt.getTime() <= Date.now()) throw invalidRequest("the delegation would end in the past");
    const grants = groupByResource(toPairs(input.grants));
    const bounds = agentBounds(agent);
    const within = withinAgent({ grants, maxDepth: input.maxDepth ?? agent.maxDepth }, bounds);
    const unknownResources = resourcesOf(grants).filter((uri) => !Object.hasOwn(bounds.grants, uri));
    if (unknownResources.length)
      throw invalidRequest(`the agent may not be delegated ${unknownResources.join(", ")}`);
    const excess = pairsOutside(grants, within.grants);
    if (excess.length)
      throw invalidRequest(
        `the agent may not be delegated ${excess.map(({ resource, scope }) => `${scope} on ${resource}`).join(", ")}`,
      );
    if (grants.length === 0) throw invalidRequest("a delegation needs at least one scope");

    const created = await this.#prisma.$transaction(async (tx) => {
      const delegation = await tx.delegation.create({
        data: {
          personId: person.id,
          agentId: agent.id,
          grantId: input.grantId,
          requestRef: input.requestRef,
          taskId: input.taskId,
          taskDescription: input.taskDescription,
          scopes: { create: toPairs(grants) },
          endsAt: input.endsAt,
          maxDepth: Math.min(within.maxDepth, this.#maxDepth),
        },
      });
      await this.#audit.record(
        context,
        {
          action: "delegation.create",
          decision: "allow",
          target: delegation.id,
          delegatedBy: person.email,
          agentChain: [agent.clientId],
          resource: resourcesOf(grants).join(" "),
          scopesGranted: scopeNames(grants),
          delegationId: delegation.id,
          taskId: delegation.taskId ?? undefined,
          taskDescription: delegation.taskDescription ?? undefined,
          details: { ends_at: delegation.endsAt.toISOString(), grants },
        },
        tx,
      );
      return { ...delegation, grants };
    });
    for (const listener of this.#createdListeners) await listener(created);
    return created;
  }

  /** Registers a listener for committed delegations; it must not throw (the delegation exists either way). */
  onCreated(listener: DelegationCreatedListener): void {
    this.#createdListeners.push(listener);
  }

  /** The delegation's current state (cached), or undefined if there is no such delegation. */
  async state(id: string): Promise<DelegationState | undefined> {
    if (!isUuid(id)) return undefined;
    return this.#cache.get(id, (key) => this.#load(key));
  }

  async #load(id: string): Promise<DelegationState | undefined> {
    const row = await this.#prisma.delegation.findUnique({
      where: { id },
      include: { person: true, agent: true, scopes: true },
    });
    const state: DelegationState | undefined = row
      ? {
          id: row.id,
          status: row.status,
          personId: row.personId,
          personEmail: row.person.email,
          personActive: row.person.status === "active",
          agentClientId: row.agent.clientId,
          taskId: row.taskId,
          taskDescription: row.taskDescription,
          grants: groupByResource(row.scopes),
          endsAt: row.endsAt,
          maxDepth: row.maxDepth,
        }
      : undefined;
    return state;
  }

  /** Why a delegation cannot be used now, or undefined when it can. */
  static unusable(state: DelegationState | undefined, now = Date.now()): string | undefined {
    if (!state) return "the delegation behind it does not exist";
    // Before the status: offboarding also revokes the person's delegations, and this says why.
    if (!state.personActive) return "the person who delegated is no longer active";
    if (state.status !== "active") return `the delegation behind it has been ${state.status}`;
    if (state.endsAt.getTime() <= now) return "the delegation behind it has ended";
    return undefined;
  }
}
