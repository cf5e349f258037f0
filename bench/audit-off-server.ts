// MEASUREMENT ONLY: a Deputy server whose token exchanges and policy decisions write their lineage but no audit
// event, so that a benchmark can price auditing against the same server in the same run. The production entry
// (src/main.ts) has no such setting; this file is never part of a deployment.
import { type AuditContext, type AuditEventInput, AuditLog } from "../src/audit/audit-log.ts";
import type { GroupCommitWriter, PendingRows } from "../src/audit/group-commit.ts";
import { runServer } from "../src/main.ts";

class EventlessCommits extends AuditLog {
  readonly #writer: GroupCommitWriter;

  constructor(writer: GroupCommitWriter) {
    super(writer);
    this.#writer = writer;
  }

  override async commit(
    _context: AuditContext,
    _event: AuditEventInput,
    rows: Omit<PendingRows, "auditEvents"> = {},
  ): Promise<void> {
    if (rows.issuedTokens?.length) await this.#writer.write(rows);
  }
}

console.warn("audit-off-server: exchanges and decisions write NO audit events (benchmark measurement only)");
await runServer({ auditLog: (writer) => new EventlessCommits(writer) });
