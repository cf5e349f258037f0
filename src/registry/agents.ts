// Agents: registered OAuth clients that act for people, with an owner, a purpose and a lifecycle.

import { randomBytes } from "node:crypto";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import { isUuid } from "../db/ids.ts";
import type {
  Agent,
  AgentCoOwner,
  AgentScopeGrant,
  Person,
  Prisma,
  PrismaClient,
  ResourceServer,
} from "../generated/prisma/client.ts";
import { ApiError, invalidRequest, notFound } from "../http/api-error.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import { generateClientSecret, hashClientSecret } from "../security/secrets.ts";
import { type NarrowingSummary, narrowLive } from "./agent-narrowing.ts";
import { checkClientKeys } from "./client-keys.ts";
import type { RevocationSummary, Revoker } from "./revoker.ts";

export const REVIEW_INTERVAL_DAYS = 90;

export interface GrantInput {
  resource: string;
  scopes: string[];
}

export interface AgentInput {
  name: string;
  owner: string;
  /** People (emails or ids) who own the agent beside its primary owner, in order of succession. */
  co_owners?: string[];
  purpose: string;
  grants: GrantInput[];
  auth:
    | { method: "client_secret" }
    | { method: "private_key_jwt"; jwks: { keys: Record<string, unknown>[] } };
  redirect_uris?: string[];
  may_delegate_to?: string[];
  max_depth?: number;
  blast_radius?: string;
  allow_untasked?: boolean;
  dpop_required?: boolean;
  status?: "pending" | "active";
  review_due_at?: string;
}

export type AgentUpdate = Partial<
  Pick<
    AgentInput,
    | "name"
    | "co_owners"
    | "purpose"
    | "grants"
    | "redirect_uris"
    | "may_delegate_to"
    | "max_depth"
    | "blast_radius"
    | "allow_untasked"
    | "dpop_required"
    | "review_due_at"
  >
> & { owner?: string };

export type LifecycleAction = "activate" | "suspend" | "retire";

/** What the emergency stop did. */
export interface SuspendAllResult {
  suspended: number;
  client_ids: string[];
  revocation: RevocationSummary;
}

/** Suspensions revoke in the same transaction as the status change; large ones may take a while. */
const REVOKING_TRANSACTION = { maxWait: 10_000, timeout: 60_000 } as const;

export interface OwnerView {
  id: string;
  email: string;
  name: string;
  status: Person["status"];
}

export interface AgentView {
  id: string;
  client_id: string;
  name: string;
  owner: OwnerView;
  co_owners: OwnerView[];
  purpose: string;
  status: Agent["status"];
  status_reason: string | null;
  needs_owner: boolean;
  auth_method: Agent["authMethod"];
  grants: GrantInput[];
  redirect_uris: string[];
  may_delegate_to: string[];
  max_depth: number;
  blast_radius: string;
  allow_untasked: boolean;
  dpop_required: boolean;
  created_at: string;
  last_reviewed_at: string | null;
  review_due_at: string;
}

export type AgentRow = Agent & {
  owner: Person;
  coOwners: (AgentCoOwner & { person: Person })[];
  scopeGrants: (AgentScopeGrant & { resourceServer: ResourceServer })[];
};
/** What an agent's view reads besides the agent itself. */
export const AGENT_INCLUDE = {
  owner: true,
  coOwners: { include: { person: true }, orderBy: { position: "asc" } },
  scopeGrants: { include: { resourceServer: true } },
} as const;

function ownerView(person: Person): OwnerView {
  return { id: person.id, email: person.email, name: person.name, status: person.status };
}

/** Every owner of an agent, in order of succession: the primary owner, then the co-owners. */
export function owners(row: AgentRow): Person[] {
  return [row.owner, ...row.coOwners.map((coOwner) => coOwner.person)];
}

export function agentView(row: AgentRow): AgentView {
  return {
    id: row.id,
    client_id: row.clientId,
    name: row.name,
    owner: ownerView(row.owner),
    co_owners: row.coOwners.map((coOwner) => ownerView(coOwner.person)),
    purpose: row.purpose,
    status: row.status,
    status_reason: row.statusReason,
    needs_owner: row.needsOwner,
    auth_method: row.authMethod,
    grants: row.scopeGrants
      .map((grant) => ({ resource: grant.resourceServer.uri, scopes: grant.scopes }))
      .sort((a, b) => a.resource.localeCompare(b.resource)),
    redirect_uris: row.redirectUris,
    may_delegate_to: row.mayDelegateTo,
    max_depth: row.maxDepth,
    blast_radius: row.blastRadius,
    allow_untasked: row.allowUntasked,
    dpop_required: row.dpopRequired,
    created_at: row.createdAt.toISOString(),
    last_reviewed_at: row.lastReviewedAt?.toISOString() ?? null,
    review_due_at: row.reviewDueAt.toISOString(),
  };
}

/** Lifecycle: which status each action leads to, and from which statuses it is allowed. */
const TRANSITIONS: Record<LifecycleAction, { to: Agent["status"]; from: Agent["status"][] }> = {
  activate: { to: "active", from: ["pending", "suspended"] },
  suspend: { to: "suspended", from: ["pending", "active"] },
  retire: { to: "retired", from: ["pending", "active", "suspended"] },
};

/** Whether an agent that is `status` may take `action` (for pages that offer only the actions that apply). */
export function canTransition(status: Agent["status"], action: LifecycleAction): boolean {
  return TRANSITIONS[action].from.includes(status);
}

function daysFromNow(days: number): Date {
  return new Date(Date.now() + days * 86_400_000);
}

/** Co-owner rows for these people, in this order. */
function coOwnerRows(personIds: string[]): { personId: string; position: number }[] {
  return personIds.map((personId, position) => ({ personId, position }));
}

/** Makes these people, in this order, an agent's co-owners (and nobody else). */
export async function replaceCoOwners(
  tx: Prisma.TransactionClient,
  agentId: string,
  personIds: string[],
): Promise<void> {
  await tx.agentCoOwner.deleteMany({ where: { agentId } });
  await tx.agentCoOwner.createMany({
    data: coOwnerRows(personIds).map((row) => ({ ...row, agentId })),
  });
}

export class AgentService {
  readonly #prisma: PrismaClient;
  readonly #audit: AuditLog;
  readonly #bus: InvalidationBus;
  readonly #revocations: Revoker;

  /** `revocations`: suspending or retiring an agent revokes every delegation it holds or acts in. */
  constructor(prisma: PrismaClient, audit: AuditLog, bus: InvalidationBus, revocations: Revoker) {
    this.#prisma = prisma;
    this.#audit = audit;
    this.#bus = bus;
    this.#revocations = revocations;
  }

  /** Registers an agent; a generated secret is returned once and stored only as a hash. */
  async create(context: AuditContext, input: AgentInput): Promise<AgentView & { client_secret?: string }> {
    const owner = await this.#activePerson(input.owner, "owner");
    const coOwnerIds = await this.#coOwners(input.co_owners ?? [], owner.id);
    const grants = await this.#resolveGrants(input.grants);
    await this.#checkDelegates(input.may_delegate_to ?? []);
    if (input.auth.method === "private_key_jwt") await checkClientKeys(input.auth.jwks.keys);
    const clientSecret = input.auth.method === "client_secret" ? generateClientSecret() : undefined;
    const view = await this.#prisma.$transaction(async (tx) => {
      const row = await tx.agent.create({
        data: {
          clientId: `agt_${randomBytes(12).toString("base64url")}`,
          name: input.name,
          ownerId: owner.id,
          purpose: input.purpose,
          status: input.status ?? "active",
          authMethod: input.auth.method,
          jwks:
            input.auth.method === "private_key_jwt" ? (input.auth.jwks as Prisma.InputJsonValue) : undefined,
          clientSecretHash: clientSecret ? hashClientSecret(clientSecret) : undefined,
          redirectUris: input.redirect_uris ?? [],
          mayDelegateTo: input.may_delegate_to ?? [],
          maxDepth: input.max_depth,
          blastRadius: input.blast_radius,
          allowUntasked: input.allow_untasked,
          dpopRequired: input.dpop_required,
          reviewDueAt: input.review_due_at
            ? new Date(input.review_due_at)
            : daysFromNow(REVIEW_INTERVAL_DAYS),
          coOwners: { create: coOwnerRows(coOwnerIds) },
          scopeGrants: { create: grants },
        },
        include: AGENT_INCLUDE,
      });
      const created = agentView(row);
      await this.#audit.record(context, { action: "agent.create", target: row.clientId, after: created }, tx);
      return created;
    });
    return clientSecret ? { ...view, client_secret: clientSecret } : view;
  }

  /** Agents, oldest first; `owner` (an email) matches agents the person owns or co-owns. */
  async list(filter: { status?: Agent["status"]; owner?: string } = {}): Promise<AgentView[]> {
    const email = filter.owner?.toLowerCase();
    const rows = await this.#prisma.agent.findMany({
      where: {
        status: filter.status,
        OR: email ? [{ owner: { email } }, { coOwners: { some: { person: { email } } } }] : undefined,
      },
      include: AGENT_INCLUDE,
      orderBy: { createdAt: "asc" },
    });
    return rows.map(agentView);
  }

  async get(key: string): Promise<AgentView> {
    return agentView(await this.#find(key));
  }

  /**
   * Changes an agent's registration. An update that narrows it (max_depth lowered, grants or delegates removed)
   * narrows its live delegations and revokes the tokens beyond its new bounds, in the same transaction.
   */
  async update(
    context: AuditContext,
    key: string,
    input: AgentUpdate,
  ): Promise<AgentView & { narrowing?: NarrowingSummary }> {
    const before = await this.#find(key);
    const owner = input.owner === undefined ? undefined : await this.#activePerson(input.owner, "owner");
    const coOwnerIds = await this.#updatedCoOwners(before, input.co_owners, owner);
    const grants = input.grants === undefined ? undefined : await this.#resolveGrants(input.grants);
    if (input.may_delegate_to) await this.#checkDelegates(input.may_delegate_to, before.clientId);
    const revocations = this.#revocations;
    const { view, narrowing } = await this.#prisma.$transaction(async (tx) => {
      if (coOwnerIds) await replaceCoOwners(tx, before.id, coOwnerIds);
      if (grants) {
        await tx.agentScopeGrant.deleteMany({ where: { agentId: before.id } });
        await tx.agentScopeGrant.createMany({
          data: grants.map((grant) => ({ ...grant, agentId: before.id })),
        });
      }
      const row = await tx.agent.update({
        where: { id: before.id },
        data: {
          name: input.name,
          purpose: input.purpose,
          ownerId: owner?.id,
          needsOwner: owner ? false : undefined,
          redirectUris: input.redirect_uris,
          mayDelegateTo: input.may_delegate_to,
          maxDepth: input.max_depth,
          blastRadius: input.blast_radius,
          allowUntasked: input.allow_untasked,
          dpopRequired: input.dpop_required,
          reviewDueAt: input.review_due_at ? new Date(input.review_due_at) : undefined,
        },
        include: AGENT_INCLUDE,
      });
      const after = agentView(row);
      await this.#audit.record(
        context,
        {
          action: "agent.update",
          target: row.clientId,
          before: agentView(before),
          after,
        },
        tx,
      );
      const narrowing =
        revocations &&
        (await narrowLive(tx, { audit: this.#audit, revocations }, context, { before, after: row }));
      return { view: after, narrowing };
    }, REVOKING_TRANSACTION);
    // Every process drops the agent and, with it, every delegation's cached state (narrowed ones included).
    await this.#bus.publish("client", view.client_id);
    if (!narrowing) return view;
    for (const pending of narrowing.pending) await revocations?.afterCommit(pending);
    return { ...view, narrowing: narrowing.summary };
  }

  /**
   * Moves an agent through its lifecycle. Suspending or retiring stops its authentication at once and, in the
   * same transaction, revokes every delegation where it is the delegate or anywhere in a token's chain.
   */
  async transition(
    context: AuditContext,
    key: string,
    action: LifecycleAction,
    reason?: string,
  ): Promise<AgentView & { revocation?: RevocationSummary }> {
    const before = await this.#find(key);
    const rule = TRANSITIONS[action];
    if (!canTransition(before.status, action)) {
      throw new ApiError(409, "invalid_transition", `cannot ${action} an agent that is ${before.status}`);
    }
    const revocations = action === "activate" ? undefined : this.#revocations;
    const { view, pending } = await this.#prisma.$transaction(async (tx) => {
      const row = await tx.agent.update({
        where: { id: before.id },
        data: { status: rule.to, statusReason: reason ?? null },
        include: AGENT_INCLUDE,
      });
      const after = agentView(row);
      await this.#audit.record(
        context,
        {
          action: `agent.${action}`,
          target: row.clientId,
          reason,
          before: agentView(before),
          after,
        },
        tx,
      );
      const pending = await revocations?.inTransaction(
        tx,
        { agent: row.clientId },
        { trigger: "suspension", reason: reason ?? `agent ${action}`, target: row.clientId },
        context,
      );
      return { view: after, pending };
    }, REVOKING_TRANSACTION);
    await this.#bus.publish("client", view.client_id);
    if (!pending) return view;
    await this.#revocations.afterCommit(pending);
    return { ...view, revocation: pending.summary };
  }

  /**
   * The emergency stop: every active or pending agent is suspended and every active delegation revoked, in one
   * transaction. Reversible per agent with `activate` (the delegations stay revoked).
   */
  async suspendAll(context: AuditContext, reason: string): Promise<SuspendAllResult> {
    const revocations = this.#revocations;
    const { clientIds, pending } = await this.#prisma.$transaction(async (tx) => {
      const targets = await tx.agent.findMany({
        where: { status: { in: TRANSITIONS.suspend.from } },
        select: { id: true, clientId: true },
      });
      await tx.agent.updateMany({
        where: { id: { in: targets.map((agent) => agent.id) } },
        data: { status: "suspended", statusReason: reason },
      });
      const clientIds = targets.map((agent) => agent.clientId);
      await this.#audit.record(
        context,
        {
          action: "agent.suspend_all",
          target: "*",
          reason,
          details: { suspended: clientIds.length, client_ids: clientIds },
        },
        tx,
      );
      const pending = await revocations.inTransaction(
        tx,
        { all: true },
        { trigger: "suspension", reason, target: "*" },
        context,
      );
      return { clientIds, pending };
    }, REVOKING_TRANSACTION);
    await this.#bus.publish("client", "*");
    await revocations.afterCommit(pending);
    return { suspended: clientIds.length, client_ids: clientIds, revocation: pending.summary };
  }

  /** Records that a person reviewed the agent's registration; the next review is due in 90 days. */
  async markReviewed(context: AuditContext, key: string): Promise<AgentView> {
    const before = await this.#find(key);
    return this.#prisma.$transaction(async (tx) => {
      const row = await tx.agent.update({
        where: { id: before.id },
        data: { lastReviewedAt: new Date(), reviewDueAt: daysFromNow(REVIEW_INTERVAL_DAYS) },
        include: AGENT_INCLUDE,
      });
      const after = agentView(row);
      await this.#audit.record(context, { action: "agent.review", target: row.clientId, after }, tx);
      return after;
    });
  }

  async #find(key: string): Promise<AgentRow> {
    const where = isUuid(key) ? { id: key } : { clientId: key };
    const row = await this.#prisma.agent.findUnique({ where, include: AGENT_INCLUDE });
    if (!row) throw notFound(`agent ${key}`);
    return row;
  }

  async #activePerson(emailOrId: string, role: "owner" | "co-owner"): Promise<Person> {
    const where = isUuid(emailOrId) ? { id: emailOrId } : { email: emailOrId.toLowerCase() };
    const person = await this.#prisma.person.findUnique({ where });
    if (!person) throw invalidRequest(`${role} ${emailOrId} is not a registered person`);
    if (person.status !== "active")
      throw invalidRequest(`${role} ${emailOrId} is ${person.status} and cannot own agents`);
    return person;
  }

  /** The ids of the co-owners named, in order: active people, none of them the primary owner, none twice. */
  async #coOwners(names: string[], ownerId: string): Promise<string[]> {
    const ids: string[] = [];
    for (const name of names) {
      const person = await this.#activePerson(name, "co-owner");
      if (person.id === ownerId) throw invalidRequest(`co-owner ${name} is the agent's primary owner`);
      if (ids.includes(person.id)) throw invalidRequest(`co-owner ${name} is listed twice`);
      ids.push(person.id);
    }
    return ids;
  }

  /**
   * The co-owners an update leaves, when it changes them: those named; else, with a new primary owner, the
   * current ones without that person (a co-owner made primary owner is no longer a co-owner).
   */
  async #updatedCoOwners(before: AgentRow, names?: string[], owner?: Person): Promise<string[] | undefined> {
    if (names) return this.#coOwners(names, owner?.id ?? before.ownerId);
    if (!owner) return undefined;
    return before.coOwners.map((coOwner) => coOwner.personId).filter((id) => id !== owner.id);
  }

  /** Each granted scope must be one the resource server defines. */
  async #resolveGrants(grants: GrantInput[]): Promise<{ resourceServerId: string; scopes: string[] }[]> {
    const seen = new Set<string>();
    const resolved = [];
    for (const grant of grants) {
      if (seen.has(grant.resource)) throw invalidRequest(`resource ${grant.resource} is listed twice`);
      seen.add(grant.resource);
      const resource = await this.#prisma.resourceServer.findUnique({
        where: { uri: grant.resource },
        include: { scopes: true },
      });
      if (!resource) throw invalidRequest(`resource ${grant.resource} is not a registered resource server`);
      const known = new Set(resource.scopes.map((scope) => scope.name));
      const unknown = grant.scopes.filter((scope) => !known.has(scope));
      if (unknown.length)
        throw invalidRequest(`resource ${grant.resource} has no scope ${unknown.join(", ")}`);
      resolved.push({ resourceServerId: resource.id, scopes: [...new Set(grant.scopes)] });
    }
    return resolved;
  }

  async #checkDelegates(clientIds: string[], self?: string): Promise<void> {
    if (self && clientIds.includes(self)) throw invalidRequest("an agent cannot delegate to itself");
    const found = await this.#prisma.agent.findMany({
      where: { clientId: { in: clientIds } },
      select: { clientId: true },
    });
    const missing = clientIds.filter((id) => !found.some((agent) => agent.clientId === id));
    if (missing.length) throw invalidRequest(`may_delegate_to names unknown agents: ${missing.join(", ")}`);
  }
}
