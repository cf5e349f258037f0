// The audit trail's job: every AUDIT_ARCHIVE_EVERY_SECONDS, events older than the hot window move to archive
// files (audit-archive.ts).
import type { JobHandler } from "../jobs/handler.ts";
import { type ArchiveOptions, AUDIT_ARCHIVE_EVERY_SECONDS, archiveAuditEvents } from "./audit-archive.ts";

export const AUDIT_ARCHIVE_JOB = "audit-archive";

export function auditArchiveJob(options: ArchiveOptions): JobHandler {
  return {
    name: AUDIT_ARCHIVE_JOB,
    run: () => archiveAuditEvents(options),
    repeat: {
      everySeconds: AUDIT_ARCHIVE_EVERY_SECONDS,
      options: { attempts: 3, removeOnFail: { age: 14 * 86_400, count: 100 } },
    },
  };
}

/**
 * For `deputy worker` processes: archive files belong with the servers (DEPUTY_AUDIT_ARCHIVE_DIR), so a worker
 * that is handed the archive job leaves it to them.
 */
export const auditArchiveLeftToServers: JobHandler = {
  name: AUDIT_ARCHIVE_JOB,
  run: async () => ({ skipped: "this worker does not archive audit events" }),
};
