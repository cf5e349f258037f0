// What narrowing an agent in the registry does to what is live, inside the update's transaction. An agent is
// narrowed when its max_depth is lowered, or scopes or resources leave its grants, or agents leave its
// may_delegate_to. Then, at once:
//  - its active delegations are cut down to what it may now be delegated (`withinAgent`: the (resource, scope)
//    pairs it is still granted, depth), each with a `delegation.narrow` event; one left with no pair is revoked;
//  - every live token beyond the new bounds is revoked with everything exchanged from it: tokens where the agent
//    stands deeper in the chain than its max_depth now allows; tokens it holds with a resource or scope it is no
//    longer granted; tokens of a narrowed delegation that carry a scope it no longer grants on their resource;
//    tokens an agent it no longer delegates to got from it;
//  - later exchanges are held to the new bounds by the exchange itself, which reads the agent's registry entry
//    and the delegation's state (both cached, and dropped on every process by the `client` invalidation the
//    update publishes).
// Widening an agent, or changing anything else, reaches nothing.
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import {
  type AgentBounds,
  agentBounds,
  type DelegationBounds,
  withinAgent,
} from "../delegation/delegations.ts";
import {
  groupByResource,
  pairsOutside,
  resourcesOf,
  scopeNames,
  scopesOn,
} from "../delegation/resource-grants.ts";
import type { Prisma } from "../generated/prisma/client.ts";
import type { AgentRow } from "./agents.ts";
import type { PendingRevocation, Revoker } from "./revoker.ts";

/** What narrowing reached. */
export interface NarrowingSummary {
  /** Delegations cut down (still active). */
  delegations_narrowed: number;
  /** Delegations left with nothing, revoked. */
  delegations_revoked: number;
  /** Tokens revoked: those beyond the bounds and everything exchanged from them (the revoked delegations' too). */
  tokens_revoked: number;
}

export interface Narrowing {
  summary: NarrowingSummary;
  /** For `Revoker.afterCommit` once the transaction has committed. */
  pending: PendingRevocation[];
}

interface Change {
  before: AgentRow;
  after: AgentRow;
}

interface LiveToken {
  jti: string;
  delegationId: string;
  clientId: string;
  actorChain: string[];
  resource: string | null;
  scopes: string[];
}

/** Narrows what is live to the agent's new registry entry; undefined when the update did not narrow it. */
export async function narrowLive(
  tx: Prisma.TransactionClient,
  deps: { audit: AuditLog; revocations: Revoker },
  context: AuditContext,
  change: Change,
): Promise<Narrowing | undefined> {
  const reason = narrowingReason(change);
  if (!reason) return undefined;
  const { after } = change;
  const bounds = agentBounds(after);
  const cause = { trigger: "narrowing", reason, target: after.clientId } as const;

  const delegations = await tx.delegation.findMany({
    where: { agentId: after.id, status: "active" },
    include: {
      person: { select: { email: true } },
      scopes: { select: { resource: true, scope: true } },
    },
  });
  const emptied: string[] = [];
  /** The agent's active delegations as they are now, narrowed or not. */
  const current = new Map<string, DelegationBounds>();
  let narrowed = 0;
  for (const delegation of delegations) {
    const held: DelegationBounds = {
      grants: groupByResource(delegation.scopes),
      maxDepth: delegation.maxDepth,
    };
    const within = withinAgent(held, bounds);
    if (!within.grants.length) {
      emptied.push(delegation.id);
      continue;
    }
    current.set(delegation.id, within);
    const lost = pairsOutside(held.grants, within.grants);
    if (within.maxDepth === held.maxDepth && !lost.length) continue;
    narrowed++;
    await tx.delegation.update({
      where: { id: delegation.id },
      // The pairs it may no longer be delegated leave it; the others stay as they were.
      data: { maxDepth: within.maxDepth, ...(lost.length ? { scopes: { deleteMany: lost } } : {}) },
    });
    await deps.audit.record(
      context,
      {
        action: "delegation.narrow",
        target: delegation.id,
        reason,
        delegationId: delegation.id,
        delegatedBy: delegation.person.email,
        agentChain: [after.clientId],
        taskId: delegation.taskId ?? undefined,
        taskDescription: delegation.taskDescription ?? undefined,
        resource: resourcesOf(within.grants).join(" "),
        scopesGranted: scopeNames(within.grants),
        before: { grants: held.grants, max_depth: held.maxDepth },
        after: { grants: within.grants, max_depth: within.maxDepth },
      },
      tx,
    );
  }

  const pending: PendingRevocation[] = [];
  if (emptied.length) {
    pending.push(await deps.revocations.inTransaction(tx, { delegations: emptied }, cause, context));
  }
  const agent = { clientId: after.clientId, bounds, delegates: after.mayDelegateTo };
  const beyond = (await liveTokens(tx, after.clientId))
    .filter((token) => !emptied.includes(token.delegationId))
    .filter((token) => isBeyond(token, agent, current.get(token.delegationId)))
    .map((token) => token.jti);
  if (beyond.length) {
    pending.push(await deps.revocations.inTransaction(tx, { tokens: beyond }, cause, context));
  }
  return {
    summary: {
      delegations_narrowed: narrowed,
      delegations_revoked: emptied.length,
      tokens_revoked: pending.reduce((sum, revocation) => sum + revocation.summary.tokens, 0),
    },
    pending,
  };
}

/** Unrevoked, unexpired tokens of active delegations with the agent anywhere in their chain. */
function liveTokens(tx: Prisma.TransactionClient, clientId: string): Promise<LiveToken[]> {
  return tx.$queryRaw<LiveToken[]>`
    SELECT t.jti, t.delegation_id::text AS "delegationId", t.client_id AS "clientId",
      t.actor_chain AS "actorChain", t.resource, t.scopes
    FROM issued_tokens t JOIN delegations d ON d.id = t.delegation_id
    WHERE d.status = 'active' AND t.revoked_at IS NULL AND t.expires_at > now()
      AND ${clientId} = ANY (t.actor_chain)`;
}

/**
 * Whether a live token (with the agent in its chain) reaches beyond the agent's registry entry as it is now, or
 * beyond its delegation as it is now when the agent is the delegation's delegate.
 */
function isBeyond(
  token: LiveToken,
  agent: { clientId: string; bounds: AgentBounds; delegates: string[] },
  delegation: DelegationBounds | undefined,
): boolean {
  const { clientId, bounds } = agent;
  // The chain lists the holder first: the agent at index i stands i + 1 agents deep from the holder, and its
  // max_depth counts from where it stands.
  const index = token.actorChain.indexOf(clientId);
  if (index + 1 > bounds.maxDepth) return true;
  // Whoever got the token from the agent must still be one of its delegates.
  const next = token.actorChain[index - 1];
  if (next !== undefined && !agent.delegates.includes(next)) return true;
  // Subject tokens (no resource) are bounded at exchange by their delegation's current pairs.
  if (token.resource === null) return false;
  const { resource, scopes } = token;
  if (token.clientId === clientId) {
    const granted = bounds.grants[resource];
    if (!granted || scopes.some((scope) => !granted.includes(scope))) return true;
  }
  if (!delegation) return false;
  const delegated = scopesOn(delegation.grants, resource);
  return scopes.some((scope) => !delegated.includes(scope));
}

/** Why the update narrows the agent, in words (the audit events' reason); undefined when it does not. */
function narrowingReason({ before, after }: Change): string | undefined {
  const changes: string[] = [];
  if (after.maxDepth < before.maxDepth)
    changes.push(`max_depth lowered from ${before.maxDepth} to ${after.maxDepth}`);
  const was = agentBounds(before).grants;
  const now = agentBounds(after).grants;
  for (const [uri, scopes] of Object.entries(was)) {
    const kept = now[uri];
    if (!kept) changes.push(`resource ${uri} removed`);
    else {
      const removed = scopes.filter((scope) => !kept.includes(scope));
      if (removed.length) changes.push(`scopes ${removed.join(" ")} removed on ${uri}`);
    }
  }
  const dropped = before.mayDelegateTo.filter((id) => !after.mayDelegateTo.includes(id));
  if (dropped.length) changes.push(`may no longer delegate to ${dropped.join(", ")}`);
  return changes.length ? `agent ${after.clientId} narrowed: ${changes.join("; ")}` : undefined;
}
