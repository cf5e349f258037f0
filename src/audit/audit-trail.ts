// The audit trail's read side and upkeep, as the admin API and the scheduled retention job use it.
import type { PrismaClient } from "../generated/prisma/client.ts";
import { type ArchiveResult, archiveAuditEvents, archiveView } from "./audit-archive.ts";
import type { AuditFilter } from "./audit-filter.ts";
import type { AuditContext, AuditLog } from "./audit-log.ts";
import {
  type AuditPage,
  type AuditSource,
  type AuditStats,
  iterateEvents,
  queryPage,
  queryStats,
  type StatDimension,
} from "./audit-query.ts";
import { type Anchor, type VerifyReport, verifyAuditTrail } from "./audit-verify.ts";
import { LegalHolds } from "./legal-holds.ts";

export interface AuditSettings {
  /** DEPUTY_AUDIT_HOT_DAYS */
  hotDays: number;
  /** DEPUTY_AUDIT_ARCHIVE_DIR (default DEPUTY_DATA_DIR/audit-archive) */
  archiveDir: string;
}

export class AuditTrail {
  readonly holds: LegalHolds;
  readonly #prisma: PrismaClient;
  readonly #audit: AuditLog;
  readonly settings: AuditSettings;

  constructor(prisma: PrismaClient, audit: AuditLog, settings: AuditSettings) {
    this.#prisma = prisma;
    this.#audit = audit;
    this.settings = settings;
    this.holds = new LegalHolds(prisma, audit);
  }

  query(
    filter: AuditFilter,
    options: { limit: number; order: "asc" | "desc"; after?: bigint },
  ): Promise<AuditPage> {
    return queryPage(this.#source, filter, options);
  }

  stats(filter: AuditFilter, dimensions: StatDimension[]): Promise<AuditStats> {
    return queryStats(this.#source, filter, dimensions);
  }

  events(filter: AuditFilter) {
    return iterateEvents(this.#source, filter);
  }

  /** Queries read the archive files as well as the database. */
  get #source(): AuditSource {
    return { prisma: this.#prisma, archiveDir: this.settings.archiveDir };
  }

  async archives() {
    const archives = await this.#prisma.auditArchive.findMany({ orderBy: { fromSeq: "asc" } });
    return archives.map(archiveView);
  }

  verify(anchor?: Anchor): Promise<VerifyReport> {
    return verifyAuditTrail(this.#prisma, { archiveDir: this.settings.archiveDir, anchor });
  }

  /** Archives events older than the hot window (what the scheduled retention job runs). */
  archive(
    context?: AuditContext,
    options: { now?: Date; eventsPerFile?: number } = {},
  ): Promise<ArchiveResult> {
    return archiveAuditEvents({
      prisma: this.#prisma,
      audit: this.#audit,
      dir: this.settings.archiveDir,
      hotDays: this.settings.hotDays,
      context,
      ...options,
    });
  }
}
