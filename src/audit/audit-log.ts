// The single writer of the audit trail. Every decision and every change goes through `record` (changes, in
// the caller's transaction) or `commit` (decisions on the hot path, through group commit). Both append to the
// hash chain inside their transaction (audit-chain.ts).
import { randomUUID } from "node:crypto";
import type { Context } from "koa";
import type { Prisma } from "../generated/prisma/client.ts";
import { type AuditAction, auditTypeOf } from "./actions.ts";
import { appendToChain, prismaTx, type UnsealedAuditEvent } from "./audit-chain.ts";
import type { GroupCommitWriter, PendingRows } from "./group-commit.ts";

/** Who asked and from where: carried from the HTTP request into every event it causes. */
export interface AuditContext {
  actor: string;
  requestId?: string;
  clientAddress?: string;
}

/**
 * The context of a request oidc-provider answers (a Koa context of its own, without Deputy's state): the request
 * id is the X-Request-Id Deputy's middleware set on the response.
 */
export function providerRequestContext(ctx: Context, actor: string): AuditContext {
  return { actor, requestId: ctx.response.get("x-request-id") || undefined, clientAddress: ctx.ip };
}

export interface AuditEventInput {
  /** What happened; its type comes with it (actions.ts). */
  action: AuditAction;
  decision?: "allow" | "deny";
  reason?: string;
  target?: string;
  delegatedBy?: string;
  agentChain?: string[];
  resource?: string;
  scopesAsked?: string[];
  scopesGranted?: string[];
  delegationId?: string;
  taskId?: string;
  /** The task's description as the person approved it (the agent's words). */
  taskDescription?: string;
  before?: unknown;
  after?: unknown;
  details?: unknown;
  /** The version of the policy that decided (policy decisions). */
  policyVersion?: string;
  /**
   * Reasoning the agent sent with its request, verbatim (cut to AGENT_CLAIM_MAX_LENGTH): the agent's own,
   * unverified claim. Never an input to a decision.
   */
  agentClaim?: string;
}

export const AGENT_CLAIM_MAX_LENGTH = 2000;
/** Events appended by one INSERT (its JSON parameter stays a few megabytes). */
const APPEND_CHUNK = 5_000;
const TRUNCATED = " …[truncated]";

export class AuditLog {
  readonly #writer: GroupCommitWriter;

  /** Every write goes through `writer` (group commit) or the caller's transaction. */
  constructor(writer: GroupCommitWriter) {
    this.#writer = writer;
  }

  /**
   * Records one event; pass `tx` to commit it atomically with the change it describes. With `tx`, the chain's
   * lock is held from here until that transaction ends, pausing every other append (token issuance included):
   * call it last, after the transaction's other statements. Without `tx` it goes through group commit.
   */
  async record(context: AuditContext, event: AuditEventInput, tx?: Prisma.TransactionClient): Promise<void> {
    await this.recordAll(context, [event], tx);
  }

  /**
   * Records several events of one change, in order, as `record` does one: with `tx`, appended by one
   * multi-row INSERT per APPEND_CHUNK events (a revocation reaching thousands of delegations stays cheap).
   */
  async recordAll(
    context: AuditContext,
    events: AuditEventInput[],
    tx?: Prisma.TransactionClient,
  ): Promise<void> {
    const rows = events.map((event) => toUnsealed(context, event));
    if (!tx) return this.#writer.write({ auditEvents: rows });
    for (let i = 0; i < rows.length; i += APPEND_CHUNK) {
      await appendToChain(prismaTx(tx), rows.slice(i, i + APPEND_CHUNK), this.#writer.chain);
    }
  }

  /**
   * Records one event through group commit, together with rows it vouches for (e.g. the lineage of a token
   * being issued). Resolves when all of them are durable: only then may the token leave the server.
   */
  async commit(
    context: AuditContext,
    event: AuditEventInput,
    rows: Omit<PendingRows, "auditEvents"> = {},
  ): Promise<void> {
    await this.#writer.write({ ...rows, auditEvents: [toUnsealed(context, event)] });
  }
}

export const TRANSACTION_OPTIONS = { maxWait: 10_000, timeout: 30_000 } as const;

/** The agent's reasoning as stored: well-formed text without control characters (but line breaks), cut short. */
export function agentClaim(value: unknown): string | undefined {
  if (typeof value !== "string") return undefined;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: removing control characters is the point
  const text = value.replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/g, "").trim();
  if (!text) return undefined;
  if (text.length <= AGENT_CLAIM_MAX_LENGTH) return text;
  return `${text.slice(0, AGENT_CLAIM_MAX_LENGTH - TRUNCATED.length)}${TRUNCATED}`;
}

function toUnsealed(context: AuditContext, event: AuditEventInput): UnsealedAuditEvent {
  return {
    id: randomUUID(),
    // Milliseconds, as stored (timestamptz(3)): the hash is computed over exactly what is read back.
    time: new Date(),
    type: auditTypeOf(event.action),
    action: text(event.action) ?? "",
    decision: text(event.decision),
    reason: text(event.reason),
    actor: text(context.actor),
    target: text(event.target),
    delegatedBy: text(event.delegatedBy),
    agentChain: (event.agentChain ?? []).map((item) => text(item) ?? ""),
    resource: text(event.resource),
    scopesAsked: (event.scopesAsked ?? []).map((item) => text(item) ?? ""),
    scopesGranted: (event.scopesGranted ?? []).map((item) => text(item) ?? ""),
    delegationId: text(event.delegationId),
    taskId: text(event.taskId),
    taskDescription: text(event.taskDescription),
    requestId: text(context.requestId),
    clientAddress: text(context.clientAddress),
    before: toJson(event.before),
    after: toJson(event.after),
    details: toJson(event.details),
    policyVersion: text(event.policyVersion),
    agentClaim: event.agentClaim === undefined ? null : (agentClaim(event.agentClaim) ?? null),
  };
}

/**
 * Text as PostgreSQL will store it and hand it back: NUL (which it refuses) and lone surrogates (which become
 * U+FFFD on the way) are replaced here, so the hash is computed over what is actually stored.
 */
function clean(value: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is what PostgreSQL refuses
  return value.replace(LONE_SURROGATE, "\uFFFD").replace(/\u0000/g, "\uFFFD");
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

function text(value: string | undefined | null): string | null {
  return value === undefined || value === null ? null : clean(value);
}

/** A JSON value as jsonb will hand it back (key order aside, which the canonical form ignores). */
function toJson(value: unknown): unknown {
  if (value === undefined || value === null) return null;
  const serialized = JSON.stringify(value);
  if (serialized === undefined) return null;
  return cleanJson(JSON.parse(serialized));
}

function cleanJson(value: unknown): unknown {
  if (typeof value === "string") return clean(value);
  if (Array.isArray(value)) return value.map(cleanJson);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([key, inner]) => [clean(key), cleanJson(inner)]));
  }
  return value;
}
