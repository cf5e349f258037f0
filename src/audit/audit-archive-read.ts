// Archive files read back. Queries, counts and exports take an archive's events only once the file's sha-256 is
// the one recorded when it was written (the audit_archives row, mirrored in manifest.json); a file missing or
// altered is an error naming it, never an answer without its events. Files are streamed a line at a time.
import { createReadStream, existsSync } from "node:fs";
import path from "node:path";
import { createInterface } from "node:readline";
import { createGunzip } from "node:zlib";
import type { AuditArchive } from "../generated/prisma/client.ts";
import { ApiError } from "../http/api-error.ts";
import { fileSha256 } from "./audit-archive.ts";
import { AUDIT_FIELDS, type AuditEventView, type AuditField } from "./audit-event.ts";

/** What is wrong with an archive's file (`is missing …`, `was altered …`), if anything. */
export async function archiveFileProblem(dir: string, archive: AuditArchive): Promise<string | undefined> {
  const file = path.resolve(dir, archive.file);
  if (!existsSync(file)) return `is missing from ${dir}`;
  if ((await fileSha256(file)) !== archive.fileSha256)
    return "was altered: its sha-256 is not the one recorded when it was written";
  return undefined;
}

/** The lines of an archive file, decompressed as they are read; the file is closed when the reader stops. */
export async function* archiveLines(dir: string, archive: AuditArchive): AsyncGenerator<string> {
  const input = createReadStream(path.resolve(dir, archive.file));
  const lines = createInterface({ input: input.pipe(createGunzip()), crlfDelay: Infinity });
  try {
    yield* lines;
  } finally {
    lines.close();
    input.destroy();
  }
}

/** An archive's events in seq order, in the export shape, after its file is verified. */
export async function* archivedEvents(dir: string, archive: AuditArchive): AsyncGenerator<AuditEventView> {
  const problem = await archiveFileProblem(dir, archive);
  if (problem)
    throw new ApiError(
      500,
      "archive_integrity",
      `audit archive ${archive.file} ${problem}, so the answer would leave out its events (seq ${archive.fromSeq}` +
        `–${archive.toSeq}, ${archive.fromTime.toISOString()} to ${archive.toTime.toISOString()}); restore the ` +
        "file (deputy audit verify checks every archive)",
    );
  for await (const line of archiveLines(dir, archive)) if (line.trim()) yield exportShape(JSON.parse(line));
}

/** Every export field, in order (a field added after the file was written is null). */
function exportShape(line: Record<string, unknown>): AuditEventView {
  const event = Object.fromEntries(AUDIT_FIELDS.map((field) => [field, line[field] ?? null]));
  return event as Record<AuditField, unknown> as AuditEventView;
}
