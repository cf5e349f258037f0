// The single writer of the audit trail. Every decision and every change goes through `record`.
import type { GroupCommitWriter, PendingRows } from "../db/group-commit.ts";
import type { Prisma, PrismaClient } from "../generated/prisma/client.ts";

export type AuditType =
  | "admin_change"
  | "exchange"
  | "introspection"
  | "consent"
  | "ciba"
  | "revocation"
  | "login";

/** Who asked and from where: carried from the HTTP request into every event it causes. */
export interface AuditContext {
  actor: string;
  requestId?: string;
  clientAddress?: string;
}

export interface AuditEventInput {
  type: AuditType;
  action: string;
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
  before?: unknown;
  after?: unknown;
  details?: unknown;
}

export class AuditLog {
  readonly #prisma: PrismaClient;
  readonly #writer: GroupCommitWriter;

  constructor(prisma: PrismaClient, writer: GroupCommitWriter) {
    this.#prisma = prisma;
    this.#writer = writer;
  }

  /** Records one event; pass `tx` to commit it atomically with the change it describes. */
  async record(context: AuditContext, event: AuditEventInput, tx?: Prisma.TransactionClient): Promise<void> {
    await (tx ?? this.#prisma).auditEvent.create({ data: toRow(context, event) });
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
    await this.#writer.write({ ...rows, auditEvents: [toRow(context, event)] });
  }
}

function toRow(context: AuditContext, event: AuditEventInput): Prisma.AuditEventCreateManyInput {
  return {
    type: event.type,
    action: event.action,
    decision: event.decision,
    reason: event.reason,
    actor: context.actor,
    target: event.target,
    delegatedBy: event.delegatedBy,
    agentChain: event.agentChain ?? [],
    resource: event.resource,
    scopesAsked: event.scopesAsked ?? [],
    scopesGranted: event.scopesGranted ?? [],
    delegationId: event.delegationId,
    taskId: event.taskId,
    requestId: context.requestId,
    clientAddress: context.clientAddress,
    before: toJson(event.before),
    after: toJson(event.after),
    details: toJson(event.details),
  };
}

function toJson(value: unknown): Prisma.InputJsonValue | undefined {
  return value === undefined ? undefined : (JSON.parse(JSON.stringify(value)) as Prisma.InputJsonValue);
}
