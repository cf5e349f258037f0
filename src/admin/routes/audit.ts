import { Readable } from "node:stream";
import type { Router } from "@koa/router";
import type { Context } from "koa";
import { z } from "zod";
import type { AuditEventView } from "../../audit/audit-event.ts";
import { EXPORT_CONTENT_TYPES, type ExportFormat, exportChunks } from "../../audit/audit-export.ts";
import {
  decodeCursor,
  parseFilter,
  parseLimit,
  parseOrder,
  parseStatsBy,
  singleValues,
} from "../../audit/audit-query.ts";
import { invalidRequest } from "../../http/api-error.ts";
import { reasonBody } from "../../registry/reason.ts";
import { body } from "../request-body.ts";
import type { AdminDeps } from "../routes.ts";

const emptyBody = z.strictObject({});

/** `anchor=SEQ:HASH`: a head noted earlier, which must still be in the trail. */
function parseAnchor(value: string | undefined) {
  if (value === undefined) return undefined;
  const match = /^(\d{1,15}):([0-9a-f]{64})$/.exec(value);
  if (!match) throw invalidRequest("anchor: SEQ:HASH, as a previous verify reported them in head");
  return { seq: Number(match[1]), hash: match[2] as string };
}

export function auditRoutes(router: Router, { auditTrail }: Pick<AdminDeps, "auditTrail">): void {
  router.get("/audit", async (ctx) => {
    const values = singleValues(ctx.query, ["limit", "cursor", "order", "stats_by"]);
    const filter = parseFilter(values);
    if (values.stats_by !== undefined) {
      const paging = ["limit", "cursor", "order"].filter((name) => values[name] !== undefined);
      if (paging.length) throw invalidRequest(`stats_by counts every match: drop ${paging.join(", ")}`);
      ctx.body = await auditTrail.stats(filter, parseStatsBy(values.stats_by));
      return;
    }
    const order = parseOrder(values.order);
    const limit = parseLimit(values.limit);
    const after = values.cursor === undefined ? undefined : decodeCursor(values.cursor, order);
    ctx.body = await auditTrail.query(filter, { limit, order, after });
  });

  router.get("/audit/export", async (ctx) => {
    const values = singleValues(ctx.query, ["format"]);
    const format = values.format ?? "ndjson";
    if (format !== "ndjson" && format !== "csv") throw invalidRequest("format: ndjson or csv");
    await streamExport(ctx, auditTrail.events(parseFilter(values)), format);
  });

  router.get("/audit/verify", async (ctx) => {
    const values = singleValues(ctx.query, ["anchor"]);
    for (const name of Object.keys(values))
      if (name !== "anchor") throw invalidRequest(`verify checks the whole trail: ${name} is not accepted`);
    ctx.body = await auditTrail.verify(parseAnchor(values.anchor));
  });

  router.get("/audit/archives", async (ctx) => {
    ctx.body = { archives: await auditTrail.archives(), settings: archiveSettings(auditTrail.settings) };
  });
  router.post("/audit/archive", async (ctx) => {
    emptyBody.parse(body(ctx));
    ctx.body = await auditTrail.archive(ctx.state.audit);
  });

  router.get("/audit/holds", async (ctx) => {
    ctx.body = { holds: await auditTrail.holds.list() };
  });
  router.post("/audit/holds", async (ctx) => {
    const { reason } = reasonBody.parse(body(ctx));
    ctx.status = 201;
    ctx.body = await auditTrail.holds.place(ctx.state.audit, reason);
  });
  router.post("/audit/holds/:id/release", async (ctx) => {
    emptyBody.parse(body(ctx));
    ctx.body = await auditTrail.holds.release(ctx.state.audit, ctx.params.id ?? "");
  });
}

function archiveSettings(settings: { hotDays: number; archiveDir: string }) {
  return { hot_days: settings.hotDays, archive_dir: settings.archiveDir };
}

/**
 * Streams an export a page of events at a time. The first page is read before the response starts, so a
 * failing database is still a JSON error; a failure later aborts the connection (the client sees a truncated
 * transfer, never a complete-looking file).
 */
async function streamExport(
  ctx: Context,
  events: AsyncIterable<AuditEventView>,
  format: ExportFormat,
): Promise<void> {
  const chunks = exportChunks(events, format);
  const first = await chunks.next();
  async function* all() {
    if (!first.done) yield first.value;
    yield* chunks;
  }
  const stream = Readable.from(all(), { objectMode: false });
  stream.once("error", (error) => {
    ctx.app.emit("error", error, ctx);
    ctx.res.destroy(error);
  });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  ctx.set("Content-Disposition", `attachment; filename="deputy-audit-${stamp}.${format}"`);
  ctx.set("Cache-Control", "no-store");
  ctx.type = EXPORT_CONTENT_TYPES[format];
  ctx.body = stream;
}
