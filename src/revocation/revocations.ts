// Revocation: the one way a delegation, or a subtree of its tokens, stops working. Every trigger (task end, the
// person, an admin, a suspension, an offboarding, the sweep, RFC 7009) comes through here.
//
// A revocation has two parts:
//  1. In the database, in ONE transaction (the caller's, when the revocation is part of a larger change such as
//     a suspension): delegations → ended/revoked with ended_at and end_reason, every token of their lineage (or
//     of the subtree) → revoked_at, and the audit events: one per delegation reached (its person, agent and
//     task), preceded by one summary event with the counts when it reached several — all appended by one
//     multi-row INSERT. This is the truth: exchanges and introspection consult it (through the delegation
//     state, cached and invalidated on every process, and the lineage for JWT subject tokens). Opaque tokens
//     revoked while their delegation stays active (a subtree) also go on the revocation list, which every
//     process holds in memory, so that no copy Redis still has (or gets back from a snapshot) is honoured.
//  2. Outside it, after commit: the list's new epoch is announced and the delegation caches of every process
//     are invalidated (bus), the opaque tokens and grants are destroyed in Redis, the task-end jobs that are now pointless are dropped, and a recheck job
//     is queued to catch tokens minted by exchanges that were already in flight. If Redis fails here, the
//     cleanup is queued as a retried job; if even that fails, the periodic sweep finds it from the database.
// Both parts are idempotent: running a revocation again changes nothing and audits nothing, but cleans Redis again.
import { randomUUID } from "node:crypto";
import type { AuditContext, AuditEventInput, AuditLog } from "../audit/audit-log.ts";
import { groupByResource, resourcesOf } from "../delegation/resource-grants.ts";
import type { Prisma, PrismaClient } from "../generated/prisma/client.ts";

import type { Logger } from "../logger.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import type {
  PendingRevocation,
  RevocationCause,
  RevocationScope,
  RevocationSummary,
  Revoker,
} from "../registry/revoker.ts";
import type { RevocationJobs } from "./jobs.ts";
import { announceEpoch, listRevokedTokens } from "./revocation-list.ts";
import type { TokenStore } from "./token-store.ts";

/** A revocation whose database part is written (or about to be committed) and whose Redis part is to do. */
export interface PendingWork extends PendingRevocation {
  cause: RevocationCause;
  /** Delegations in scope (changed now or before): their caches are dropped and their task-end jobs removed. */
  delegationIds: string[];
  /** Grants of unexpired tokens in scope (each exchanged token has its own; subject tokens share their
   * delegation's), revoked now or before: removed from Redis with every token they hold (idempotent). */
  grantIds: string[];
  /** Subtree roots, for the recheck job. */
  tokenRoots: string[];
  /** What it reached, for the listeners (read only when there are listeners). */
  reached?: Omit<RevocationReached, "cause" | "summary">;
  /** The revocation list's epoch, when this revocation added to it. */
  epoch?: number;
}

/** What one revocation reached, as its listeners hear it once it is committed and applied. */
export interface RevocationReached {
  cause: RevocationCause;
  summary: RevocationSummary;
  /** The delegations it ended or revoked now, with the person who granted each and the agent it went to. */
  delegations: { id: string; personId: string; agentClientId: string; resources: string[] }[];
  /** The tokens it revoked now: their references (SHA-256 of the jti, never the token) and resources. */
  tokens: { ref: string; delegationId: string; resource: string | null }[];
}

/** Hears every revocation after commit (e.g. to tell resource servers); errors are logged, never propagated. */
export type RevocationListener = (reached: RevocationReached) => void | Promise<void>;

/** Tokens purged inline up to this many; beyond, the purge is queued (their delegations already fail closed). */
const INLINE_PURGE_LIMIT = 5_000;
const PURGE_JOB_SIZE = 1_000;
/** Larger sets are published as one "drop everything" invalidation. */
const PUBLISH_EACH_LIMIT = 100;
/** How long after a revocation the recheck runs: longer than any exchange takes from load to lineage commit. */
const RECHECK_DELAY_MS = 3_000;
const TRANSACTION_OPTIONS = { maxWait: 10_000, timeout: 60_000 } as const;
const ID_CHUNK = 5_000;

type Tx = Prisma.TransactionClient;

export interface RevocationDeps {
  prisma: PrismaClient;
  audit: AuditLog;
  bus: InvalidationBus;
  tokens: TokenStore;
  jobs: RevocationJobs;
  log: Logger;
}

export class RevocationService implements Revoker {
  readonly #deps: RevocationDeps;
  readonly #listeners: RevocationListener[] = [];

  constructor(deps: RevocationDeps) {
    this.#deps = deps;
  }

  /** Registers `listener` for every revocation from now on, in this process. */
  onRevoked(listener: RevocationListener): void {
    this.#listeners.push(listener);
  }

  /** Revokes `scope` in its own transaction, then applies it everywhere. */
  async revoke(
    scope: RevocationScope,
    cause: RevocationCause,
    context: AuditContext,
  ): Promise<RevocationSummary> {
    const pending = await this.#deps.prisma.$transaction(
      (tx) => this.inTransaction(tx, scope, cause, context),
      TRANSACTION_OPTIONS,
    );
    await this.afterCommit(pending);
    return pending.summary;
  }

  /**
   * The database part, inside the caller's transaction `tx` (with the change that caused it, e.g. the agent's
   * suspension). Call `afterCommit` with the result once `tx` has committed.
   */
  async inTransaction(
    tx: Tx,
    scope: RevocationScope,
    cause: RevocationCause,
    context: AuditContext,
  ): Promise<PendingWork> {
    const outcome = cause.outcome ?? (cause.trigger === "task_end" ? "ended" : "revoked");
    const now = new Date();
    if ("tokens" in scope) return this.#revokeSubtrees(tx, scope.tokens, { ...cause, outcome }, context, now);
    const ids = await resolveDelegations(tx, scope);
    const changed: string[] = [];
    /** Tokens this revocation marked revoked, per delegation. */
    const revokedTokens = new Map<string, number>();
    const grantIds: string[] = [];
    for (let i = 0; i < ids.length; i += ID_CHUNK) {
      const chunk = ids.slice(i, i + ID_CHUNK);
      const updated = await tx.delegation.updateManyAndReturn({
        where: { id: { in: chunk }, status: "active" },
        data: { status: outcome, endedAt: now, endReason: `${cause.trigger}: ${cause.reason}` },
        select: { id: true },
      });
      changed.push(...updated.map((row) => row.id));
      for (const row of await revokeLineage(tx, chunk, now)) revokedTokens.set(row.id, row.tokens);
      const live = await tx.issuedToken.findMany({
        where: { delegationId: { in: chunk }, expiresAt: { gt: now }, grantId: { not: null } },
        select: { grantId: true },
      });
      grantIds.push(...live.flatMap((row) => (row.grantId ? [row.grantId] : [])));
      const grants = await tx.delegation.findMany({
        where: { id: { in: chunk }, grantId: { not: null } },
        select: { grantId: true },
      });
      grantIds.push(...grants.flatMap((row) => (row.grantId ? [row.grantId] : [])));
    }
    const summary: RevocationSummary = {
      trigger: cause.trigger,
      outcome,
      delegations: changed.length,
      tokens: [...revokedTokens.values()].reduce((sum, count) => sum + count, 0),
      delegation_ids: changed,
    };
    const changedNow = new Set(changed);
    const reached = ids.filter((id) => changedNow.has(id) || revokedTokens.has(id));
    const [first] = reached;
    if (reached.length > 1) await this.#auditEach(tx, context, cause, summary, reached, revokedTokens);
    else if (first) await this.#audit(tx, context, cause, summary, { delegationId: first });
    return {
      cause,
      summary,
      delegationIds: ids,
      grantIds: [...new Set(grantIds)],
      tokenRoots: [],
      reached: this.#listeners.length
        ? await reachedNow(tx, changed, { delegationId: { in: reached } }, now)
        : undefined,
    };
  }

  /** The part outside the database: caches, Redis, jobs. Never throws: what fails is queued or left to the sweep. */
  async afterCommit(pending: PendingWork): Promise<void> {
    const { bus, jobs, log } = this.#deps;
    const { delegationIds, summary } = pending;
    if (pending.epoch !== undefined) await announceEpoch(bus, pending.epoch, log);
    try {
      if (summary.delegation_ids.length > PUBLISH_EACH_LIMIT) await bus.publish("delegation", "*");
      else for (const id of summary.delegation_ids) await bus.publish("delegation", id);
    } catch (error) {
      // This process's cache is already dropped (publish delivers locally first); the others expire theirs.
      log.error({ err: error }, "revocation: could not publish the cache invalidation");
    }
    await this.#purge(pending);
    if (summary.delegation_ids.length) await jobs.cancelTaskEnds(summary.delegation_ids);
    if (!pending.cause.recheck && (delegationIds.length || pending.tokenRoots.length)) {
      await jobs.enqueueRecheck(
        {
          trigger: pending.cause.trigger,
          reason: pending.cause.reason,
          outcome: summary.outcome,
          delegationIds: delegationIds.slice(0, 10_000),
          tokenRoots: pending.tokenRoots,
        },
        RECHECK_DELAY_MS,
      );
    }
    await this.#tell(pending);
  }

  async #tell(pending: PendingWork): Promise<void> {
    if (!pending.reached) return;
    const reached = { cause: pending.cause, summary: pending.summary, ...pending.reached };
    if (!reached.delegations.length && !reached.tokens.length) return;
    for (const listener of this.#listeners) {
      try {
        await listener(reached);
      } catch (error) {
        this.#deps.log.error({ err: error }, "revocation: a listener failed");
      }
    }
  }

  async #purge(pending: PendingWork): Promise<void> {
    const { tokens, jobs, log } = this.#deps;
    const { grantIds, tokenRoots } = pending;
    if (!grantIds.length) return;
    // A subtree revocation leaves its delegation active: only destroying its tokens makes them inactive, so it
    // is always done here, before the answer. Whole delegations already fail closed; a huge purge is queued.
    const inline = tokenRoots.length > 0 || grantIds.length <= INLINE_PURGE_LIMIT;
    if (inline) {
      try {
        await tokens.revokeGrants(grantIds);
        return;
      } catch (error) {
        log.error(
          { err: error, grants: grantIds.length },
          "revocation: Redis cleanup failed; queued as a job",
        );
      }
    }
    try {
      for (let i = 0; i < grantIds.length; i += PURGE_JOB_SIZE) {
        await jobs.enqueuePurge({ grantIds: grantIds.slice(i, i + PURGE_JOB_SIZE) });
      }
    } catch (error) {
      log.error({ err: error }, "revocation: could not queue the Redis cleanup; the sweep will do it");
    }
  }

  async #revokeSubtrees(
    tx: Tx,
    roots: string[],
    cause: RevocationCause & { outcome: "ended" | "revoked" },
    context: AuditContext,
    now: Date,
  ): Promise<PendingWork> {
    const rows = await tx.$queryRaw<
      { jti: string; grantId: string | null; delegationId: string; revoked: boolean; live: boolean }[]
    >`
      WITH RECURSIVE subtree AS (
        SELECT jti FROM issued_tokens WHERE jti = ANY (${roots}::text[])
        UNION
        SELECT child.jti FROM issued_tokens child JOIN subtree ON child.parent_jti = subtree.jti
      )
      SELECT t.jti, t.grant_id AS "grantId", t.delegation_id::text AS "delegationId",
        t.revoked_at IS NOT NULL AS revoked, t.expires_at > ${now} AS live
      FROM issued_tokens t JOIN subtree USING (jti)`;
    const fresh = rows.filter((row) => !row.revoked);
    const freshIds = fresh.map((row) => row.jti);
    for (let i = 0; i < freshIds.length; i += ID_CHUNK) {
      await tx.issuedToken.updateMany({
        where: { jti: { in: freshIds.slice(i, i + ID_CHUNK) }, revokedAt: null },
        data: { revokedAt: now },
      });
    }
    const summary: RevocationSummary = {
      trigger: cause.trigger,
      outcome: cause.outcome,
      delegations: 0,
      tokens: fresh.length,
      delegation_ids: [],
    };
    if (fresh.length) {
      const perDelegation = new Map<string, number>();
      for (const row of fresh)
        perDelegation.set(row.delegationId, (perDelegation.get(row.delegationId) ?? 0) + 1);
      const [first] = perDelegation.keys();
      if (perDelegation.size > 1 || !first) {
        await this.#auditEach(tx, context, cause, summary, [...perDelegation.keys()], perDelegation);
      } else {
        // One subtree: which token it was, as held by whom and at what depth.
        const [root] = roots.length === 1 ? roots : [];
        const subtree = root
          ? await tx.issuedToken.findUnique({ where: { jti: root }, select: { clientId: true, depth: true } })
          : null;
        await this.#audit(tx, context, cause, summary, {
          delegationId: first,
          subtree: subtree ?? undefined,
        });
      }
    }
    // After the audit events: the list's epoch is raised under the chain's lock, which they hold.
    const epoch = await listRevokedTokens(tx, freshIds);
    return {
      cause,
      summary,
      delegationIds: [],
      grantIds: rows.flatMap((row) => (row.live && row.grantId ? [row.grantId] : [])),
      tokenRoots: rows.length ? roots : [],
      epoch,
      reached: this.#listeners.length ? await reachedNow(tx, [], { jti: { in: freshIds } }, now) : undefined,
    };
  }

  /** One event for a revocation that reached one delegation (or a subtree of its tokens). */
  async #audit(
    tx: Tx,
    context: AuditContext,
    cause: RevocationCause,
    summary: RevocationSummary,
    about?: { delegationId: string; subtree?: { clientId: string; depth: number } },
  ): Promise<void> {
    const [delegation] = about ? await delegationFacts(tx, [about.delegationId]) : [];
    const event: AuditEventInput = {
      ...revocationEvent(cause),
      ...(delegation ? aboutDelegation(delegation) : {}),
      details: {
        trigger: cause.trigger,
        outcome: summary.outcome,
        delegations: summary.delegations,
        tokens: summary.tokens,
        delegation_ids: summary.delegation_ids,
        ...(about?.subtree
          ? { subtree: { held_by: about.subtree.clientId, depth: about.subtree.depth } }
          : {}),
        ...(cause.recheck ? { recheck: true } : {}),
      },
    };
    await this.#deps.audit.record(context, event, tx);
  }

  /**
   * A revocation that reached several delegations: a summary event with the counts, then one event per
   * delegation (its person, agent and task, and the tokens revoked in its lineage), so that filtering the trail
   * by person or delegation finds it. All share `details.revocation_id`; they are appended together.
   */
  async #auditEach(
    tx: Tx,
    context: AuditContext,
    cause: RevocationCause,
    summary: RevocationSummary,
    reached: string[],
    revokedTokens: Map<string, number>,
  ): Promise<void> {
    const common = {
      revocation_id: randomUUID(),
      trigger: cause.trigger,
      outcome: summary.outcome,
      ...(cause.recheck ? { recheck: true } : {}),
    };
    const facts = new Map((await delegationFacts(tx, reached)).map((row) => [row.id, row]));
    const events: AuditEventInput[] = [
      {
        ...revocationEvent(cause),
        details: { ...common, delegations: summary.delegations, tokens: summary.tokens },
      },
      ...reached.flatMap((id) => {
        const delegation = facts.get(id);
        if (!delegation) return [];
        const details = { ...common, tokens: revokedTokens.get(id) ?? 0 };
        return [{ ...revocationEvent(cause), ...aboutDelegation(delegation), details }];
      }),
    ];
    await this.#deps.audit.recordAll(context, events, tx);
  }
}

/** What every revocation event says: the trigger, the reason and what it was aimed at. */
function revocationEvent(cause: RevocationCause) {
  return {
    action: `revocation.${cause.trigger}`,
    decision: "allow",
    reason: cause.reason,
    target: cause.target,
  } satisfies AuditEventInput;
}

/** The delegations changed now and the tokens revoked now (their `revoked_at` is this revocation's `now`). */
async function reachedNow(
  tx: Tx,
  changed: string[],
  tokensIn: Prisma.IssuedTokenWhereInput,
  now: Date,
): Promise<NonNullable<PendingWork["reached"]>> {
  const delegations = changed.length
    ? await tx.delegation.findMany({
        where: { id: { in: changed } },
        select: {
          id: true,
          personId: true,
          scopes: { select: { resource: true, scope: true } },
          agent: { select: { clientId: true } },
        },
      })
    : [];
  const tokens = await tx.issuedToken.findMany({
    where: { ...tokensIn, revokedAt: now },
    select: { jti: true, delegationId: true, resource: true },
  });
  return {
    delegations: delegations.map((row) => ({
      id: row.id,
      personId: row.personId,
      agentClientId: row.agent.clientId,
      resources: resourcesOf(groupByResource(row.scopes)),
    })),
    tokens: tokens.map((row) => ({ ref: row.jti, delegationId: row.delegationId, resource: row.resource })),
  };
}

type DelegationFacts = Awaited<ReturnType<typeof delegationFacts>>[number];

/** The delegations' person, agent and task, for their audit events (read in chunks of ID_CHUNK). */
async function delegationFacts(tx: Tx, ids: string[]) {
  const select = {
    id: true,
    taskId: true,
    taskDescription: true,
    scopes: { select: { resource: true, scope: true } },
    person: { select: { email: true } },
    agent: { select: { clientId: true } },
  } as const;
  const rows = [];
  for (let i = 0; i < ids.length; i += ID_CHUNK) {
    rows.push(
      ...(await tx.delegation.findMany({ where: { id: { in: ids.slice(i, i + ID_CHUNK) } }, select })),
    );
  }
  return rows;
}

function aboutDelegation(delegation: DelegationFacts): Partial<AuditEventInput> {
  return {
    delegationId: delegation.id,
    taskId: delegation.taskId ?? undefined,
    taskDescription: delegation.taskDescription ?? undefined,
    delegatedBy: delegation.person.email,
    agentChain: [delegation.agent.clientId],
    resource: resourcesOf(groupByResource(delegation.scopes)).join(" "),
  };
}

/** Marks every token of these delegations' lineage revoked; how many each delegation had left. */
function revokeLineage(tx: Tx, ids: string[], now: Date) {
  return tx.$queryRaw<{ id: string; tokens: number }[]>`
    WITH revoked AS (
      UPDATE issued_tokens SET revoked_at = ${now}
      WHERE delegation_id = ANY (${ids}::uuid[]) AND revoked_at IS NULL
      RETURNING delegation_id
    )
    SELECT delegation_id::text AS id, count(*)::int AS tokens FROM revoked GROUP BY delegation_id`;
}

/** The ids of the delegations a scope reaches (all of them for explicit ids; the active ones otherwise). */
async function resolveDelegations(tx: Tx, scope: Exclude<RevocationScope, { tokens: string[] }>) {
  if ("delegations" in scope) return [...new Set(scope.delegations)];
  if ("person" in scope) {
    const rows = await tx.delegation.findMany({
      where: { personId: scope.person, status: "active" },
      select: { id: true },
    });
    return rows.map((row) => row.id);
  }
  if ("all" in scope) {
    const rows = await tx.delegation.findMany({ where: { status: "active" }, select: { id: true } });
    return rows.map((row) => row.id);
  }
  // The agent as delegate, or anywhere in the chain of a token of an active delegation.
  const rows = await tx.$queryRaw<{ id: string }[]>`
    SELECT d.id::text AS id FROM delegations d JOIN agents a ON a.id = d.agent_id
    WHERE d.status = 'active' AND a.client_id = ${scope.agent}
    UNION
    SELECT DISTINCT t.delegation_id::text AS id FROM issued_tokens t JOIN delegations d ON d.id = t.delegation_id
    WHERE d.status = 'active' AND ${scope.agent} = ANY (t.actor_chain)`;
  return rows.map((row) => row.id);
}
