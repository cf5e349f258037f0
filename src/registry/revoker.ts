// What the registry's changes need from revocation — a suspension, a retirement or an offboarding revokes in
// the same transaction as the change — declared here, where it is used, and implemented by RevocationService
// (src/revocation), which the composition root hands in. Nothing here imports from above the registry.
import type { RevocationTrigger } from "../audit/actions.ts";
import type { AuditContext } from "../audit/audit-log.ts";
import type { Prisma } from "../generated/prisma/client.ts";

/** What a revocation reaches. */
export type RevocationScope =
  /** These delegations and every token of their lineage. */
  | { delegations: string[] }
  /** These tokens (lineage references) and every token exchanged from them, at any depth (their delegations
   * stay as they are). */
  | { tokens: string[] }
  /** Every active delegation whose delegate is this agent or that holds a token with it anywhere in the chain. */
  | { agent: string }
  /** Every active delegation this person granted. */
  | { person: string }
  /** Every active delegation (the emergency stop). */
  | { all: true };

export interface RevocationCause {
  trigger: RevocationTrigger;
  /** Why, in words: kept as the delegation's end_reason and the audit event's reason. */
  reason: string;
  /** `ended`: the task is over (completed, or its end time passed); `revoked`: authority withdrawn. */
  outcome?: "ended" | "revoked";
  /** What the revocation was aimed at (a task id, an agent, a person, a token's jti): the audit target. */
  target?: string;
  /** A recheck run: audited only if it finds something the first run could not. */
  recheck?: boolean;
}

export interface RevocationSummary {
  trigger: RevocationTrigger;
  outcome: "ended" | "revoked";
  /** Delegations this revocation ended or revoked (not those that already were). */
  delegations: number;
  /** Tokens this revocation marked revoked in the lineage (not those that already were). */
  tokens: number;
  delegation_ids: string[];
}

/** A revocation written in a transaction whose work after commit is still to do (what else it holds is the revoker's). */
export interface PendingRevocation {
  summary: RevocationSummary;
}

export interface Revoker {
  /** The database part, inside the caller's transaction `tx`; call `afterCommit` once `tx` has committed. */
  inTransaction(
    tx: Prisma.TransactionClient,
    scope: RevocationScope,
    cause: RevocationCause,
    context: AuditContext,
  ): Promise<PendingRevocation>;
  /** Caches, Redis and jobs, once the transaction has committed. */
  afterCommit(pending: PendingRevocation): Promise<void>;
}
