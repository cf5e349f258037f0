// Legal holds: while any hold is active, retention removes no audit event (archiving is skipped). Placing and
// releasing a hold are themselves audited, in the same transaction.
import { isUuid } from "../db/ids.ts";
import type { LegalHold, PrismaClient } from "../generated/prisma/client.ts";
import { conflict, notFound } from "../http/api-error.ts";
import { type AuditContext, type AuditLog, TRANSACTION_OPTIONS } from "./audit-log.ts";

export interface LegalHoldView {
  id: string;
  reason: string;
  created_by: string;
  created_at: string;
  released_at: string | null;
  active: boolean;
}

export function holdView(hold: LegalHold): LegalHoldView {
  return {
    id: hold.id,
    reason: hold.reason,
    created_by: hold.createdBy,
    created_at: hold.createdAt.toISOString(),
    released_at: hold.releasedAt?.toISOString() ?? null,
    active: hold.releasedAt === null,
  };
}

export class LegalHolds {
  readonly #prisma: PrismaClient;
  readonly #audit: AuditLog;

  constructor(prisma: PrismaClient, audit: AuditLog) {
    this.#prisma = prisma;
    this.#audit = audit;
  }

  async list(): Promise<LegalHoldView[]> {
    const holds = await this.#prisma.legalHold.findMany({ orderBy: { createdAt: "asc" } });
    return holds.map(holdView);
  }

  async place(context: AuditContext, reason: string): Promise<LegalHoldView> {
    return this.#prisma.$transaction(async (tx) => {
      const hold = await tx.legalHold.create({ data: { reason, createdBy: context.actor } });
      await this.#audit.record(
        context,
        { action: "audit.hold.place", target: hold.id, reason, after: holdView(hold) },
        tx,
      );
      return holdView(hold);
    }, TRANSACTION_OPTIONS);
  }

  async release(context: AuditContext, id: string): Promise<LegalHoldView> {
    if (!isUuid(id)) throw notFound(`legal hold ${id}`);
    return this.#prisma.$transaction(async (tx) => {
      const hold = await tx.legalHold.findUnique({ where: { id } });
      if (!hold) throw notFound(`legal hold ${id}`);
      if (hold.releasedAt)
        throw conflict(`legal hold ${id} was released at ${hold.releasedAt.toISOString()}`);
      // Conditional, so two concurrent releases cannot both succeed.
      const { count } = await tx.legalHold.updateMany({
        where: { id, releasedAt: null },
        data: { releasedAt: new Date() },
      });
      if (count !== 1) throw conflict(`legal hold ${id} has just been released`);
      const released = await tx.legalHold.findUniqueOrThrow({ where: { id } });
      await this.#audit.record(
        context,
        {
          action: "audit.hold.release",
          target: id,
          reason: hold.reason,
          before: holdView(hold),
          after: holdView(released),
        },
        tx,
      );
      return holdView(released);
    }, TRANSACTION_OPTIONS);
  }
}
