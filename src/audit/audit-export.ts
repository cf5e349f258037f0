// Export formats. NDJSON is the faithful form (one event per line, export field names, chain links included:
// a file exported from the start of the trail can be verified on its own). CSV is for spreadsheets: arrays are
// space-separated, JSON fields are JSON text, and cells that a spreadsheet would run as a formula get a
// leading apostrophe (OWASP CSV injection guidance).
import { AUDIT_FIELDS, type AuditEventView } from "./audit-event.ts";

export type ExportFormat = "ndjson" | "csv";

export const EXPORT_CONTENT_TYPES: Record<ExportFormat, string> = {
  ndjson: "application/x-ndjson; charset=utf-8",
  csv: "text/csv; charset=utf-8",
};

export function ndjsonLine(event: AuditEventView): string {
  return `${JSON.stringify(event)}\n`;
}

export const CSV_HEADER = `${AUDIT_FIELDS.join(",")}\r\n`;

export function csvLine(event: AuditEventView): string {
  return `${AUDIT_FIELDS.map((field) => csvCell(event[field])).join(",")}\r\n`;
}

function csvCell(value: unknown): string {
  let text: string;
  if (value === null || value === undefined) text = "";
  else if (Array.isArray(value) && value.every((item) => typeof item === "string")) text = value.join(" ");
  else if (typeof value === "object") text = JSON.stringify(value);
  else text = String(value);
  if (/^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]|^\s|\s$/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

const CHUNK = 64 * 1024;

/** An export as text chunks of about 64 KB (whole lines), header first for CSV. */
export async function* exportChunks(
  events: AsyncIterable<AuditEventView>,
  format: ExportFormat,
): AsyncGenerator<string> {
  let chunk = format === "csv" ? CSV_HEADER : "";
  const line = format === "csv" ? csvLine : ndjsonLine;
  for await (const event of events) {
    chunk += line(event);
    if (chunk.length >= CHUNK) {
      yield chunk;
      chunk = "";
    }
  }
  if (chunk) yield chunk;
}
