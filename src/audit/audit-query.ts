// Reading the audit trail: filters (validated, each with a message that says what to send instead), keyset
// pages with an opaque cursor on seq, streaming iteration for exports, and counts grouped by dimensions.
import type { PrismaClient } from "../generated/prisma/client.ts";
import { ApiError, invalidRequest } from "../http/api-error.ts";
import { isPlainText } from "../http/plain-text.ts";
import { type AuditEventRow, type AuditEventView, eventView } from "./audit-event.ts";
import { AUDIT_TYPES } from "./audit-log.ts";

export interface AuditFilter {
  /** Email of the person on whose behalf agents acted. */
  delegatedBy?: string;
  /** Client id of an agent anywhere in the chain. */
  agent?: string;
  /** Resource URI; `*` matches any run of characters; without a scheme it also matches after `scheme://`. */
  resource?: string;
  /** Action; `*` wildcards allowed (e.g. `token.*`). */
  action?: string;
  decision?: "allow" | "deny";
  types?: string[];
  from?: Date;
  /** Exclusive upper bound. */
  before?: Date;
}

export const STAT_DIMENSIONS = {
  agent: "agent_chain[1]",
  action: "action",
  resource: "resource",
  type: "type",
  decision: "decision",
  delegated_by: "delegated_by",
  actor: "actor",
} as const;
export type StatDimension = keyof typeof STAT_DIMENSIONS;

const FILTER_PARAMETERS = ["delegated_by", "agent", "resource", "action", "decision", "type", "from", "to"];
export const MAX_PAGE = 1000;
const MAX_GROUPS = 1000;

type Query = Record<string, string | string[] | undefined>;

/** One value per parameter, and no parameter Deputy does not know. */
export function singleValues(query: Query, extra: readonly string[]): Record<string, string> {
  const known = [...FILTER_PARAMETERS, ...extra];
  const values: Record<string, string> = {};
  for (const [name, value] of Object.entries(query)) {
    if (!known.includes(name)) throw invalidRequest(`unknown parameter ${name} (known: ${known.join(", ")})`);
    if (Array.isArray(value)) throw invalidRequest(`${name}: give it once`);
    if (value !== undefined) values[name] = value;
  }
  return values;
}

export function parseFilter(values: Record<string, string>): AuditFilter {
  const filter: AuditFilter = {};
  const text = (name: string, max: number): string | undefined => {
    const value = values[name]?.trim();
    if (value === undefined) return undefined;
    if (!value) throw invalidRequest(`${name}: must not be empty`);
    if (value.length > max) throw invalidRequest(`${name}: at most ${max} characters`);
    if (!isPlainText(value)) throw invalidRequest(`${name}: must not contain control characters`);
    return value;
  };
  const delegatedBy = text("delegated_by", 320);
  if (delegatedBy !== undefined) {
    if (!/^[^\s@]+@[^\s@]+$/.test(delegatedBy))
      throw invalidRequest(
        `delegated_by: "${delegatedBy}" is not an email address (the person who delegated)`,
      );
    filter.delegatedBy = delegatedBy.toLowerCase();
  }
  filter.agent = text("agent", 256);
  filter.resource = text("resource", 2048);
  filter.action = text("action", 200);
  const decision = text("decision", 10);
  if (decision !== undefined) {
    if (decision !== "allow" && decision !== "deny") throw invalidRequest("decision: must be allow or deny");
    filter.decision = decision;
  }
  const types = text("type", 500);
  if (types !== undefined) {
    const list = types.split(",").map((item) => item.trim());
    const unknown = list.filter((item) => !(AUDIT_TYPES as readonly string[]).includes(item));
    if (unknown.length)
      throw invalidRequest(`type: unknown ${unknown.join(", ")} (known: ${AUDIT_TYPES.join(", ")})`);
    filter.types = [...new Set(list)];
  }
  const from = values.from === undefined ? undefined : parseTime("from", values.from, "start");
  const to = values.to === undefined ? undefined : parseTime("to", values.to, "end");
  if (from) filter.from = from;
  if (to) filter.before = to;
  if (from && to && from.getTime() >= to.getTime())
    throw invalidRequest(`from (${values.from}) must be before to (${values.to})`);
  for (const key of Object.keys(filter) as (keyof AuditFilter)[]) {
    if (filter[key] === undefined) delete filter[key];
  }
  return filter;
}

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i;

/**
 * `YYYY-MM-DD` is a whole day in UTC (`from` its first instant, `to` through its last); a date-time needs a
 * time zone (`Z` or `±hh:mm`). Returns the inclusive start, or the exclusive end.
 */
export function parseTime(name: string, value: string, bound: "start" | "end"): Date {
  const fail = (): never => {
    throw invalidRequest(
      `${name}: "${value.slice(0, 60)}" is not a valid date; use YYYY-MM-DD (a whole day, UTC) or an ISO 8601 ` +
        "date-time with a time zone, such as 2026-10-01T09:30:00Z",
    );
  };
  const day = DATE.exec(value);
  if (day) {
    const [year, month, date] = [Number(day[1]), Number(day[2]), Number(day[3])];
    if (!validDay(year, month, date)) fail();
    return new Date(Date.UTC(year, month - 1, date + (bound === "end" ? 1 : 0)));
  }
  const full = DATE_TIME.exec(value);
  if (!full) return fail();
  const [year, month, date, hour, minute, second] = [1, 2, 3, 4, 5, 6].map((i) => Number(full[i] ?? 0)) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  if (!validDay(year, month, date) || hour > 23 || minute > 59 || second > 59) fail();
  const offset = full[7]?.toUpperCase();
  if (offset && offset !== "Z" && (Number(offset.slice(1, 3)) > 23 || Number(offset.slice(4, 6)) > 59))
    fail();
  const time = new Date(value);
  if (Number.isNaN(time.getTime())) fail();
  // An instant `to` is inclusive: the exclusive bound is the next millisecond.
  return bound === "end" ? new Date(time.getTime() + 1) : time;
}

function validDay(year: number, month: number, day: number): boolean {
  if (year < 1970 || year > 9999 || month < 1 || month > 12 || day < 1) return false;
  return day <= new Date(Date.UTC(year, month, 0)).getUTCDate();
}

export function parseLimit(value: string | undefined): number {
  if (value === undefined) return 100;
  if (!/^\d{1,7}$/.test(value) || Number(value) < 1 || Number(value) > MAX_PAGE)
    throw invalidRequest(`limit: a whole number from 1 to ${MAX_PAGE}`);
  return Number(value);
}

export function parseOrder(value: string | undefined): "asc" | "desc" {
  if (value === undefined || value === "asc" || value === "desc") return value ?? "asc";
  throw invalidRequest("order: asc (oldest first, the default) or desc (newest first)");
}

export function parseStatsBy(value: string): StatDimension[] {
  const list = value.split(",").map((item) => item.trim());
  const unknown = list.filter((item) => !(item in STAT_DIMENSIONS));
  if (!value.trim() || unknown.length)
    throw invalidRequest(
      `stats_by: ${unknown.length ? `unknown ${unknown.join(", ")}` : "empty"} (known: ${Object.keys(STAT_DIMENSIONS).join(", ")})`,
    );
  return [...new Set(list)] as StatDimension[];
}

// Cursors are opaque to clients: a version, the last seq returned and the order they were read in.
export function encodeCursor(seq: bigint, order: "asc" | "desc"): string {
  return Buffer.from(JSON.stringify({ v: 1, s: seq.toString(), o: order })).toString("base64url");
}

export function decodeCursor(cursor: string, order: "asc" | "desc"): bigint {
  let parsed: { v?: unknown; s?: unknown; o?: unknown } | undefined;
  try {
    if (cursor.length <= 200) parsed = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    parsed = undefined;
  }
  if (parsed?.v !== 1 || typeof parsed.s !== "string" || !/^\d{1,19}$/.test(parsed.s))
    throw invalidRequest("cursor: not a cursor this server returned (pass next_cursor back unchanged)");
  if (parsed.o !== order)
    throw new ApiError(400, "invalid_request", `cursor: it was returned for order=${String(parsed.o)}`);
  return BigInt(parsed.s);
}

// ---------------------------------------------------------------------------------------------------------
// SQL

const COLUMNS = `seq, id, time, type, action, decision, reason, actor, target, delegated_by AS "delegatedBy",
  agent_chain AS "agentChain", resource, scopes_asked AS "scopesAsked", scopes_granted AS "scopesGranted",
  delegation_id AS "delegationId", task_id AS "taskId", task_description AS "taskDescription",
  request_id AS "requestId",
  client_address AS "clientAddress", before, after, details, policy_version AS "policyVersion",
  agent_claim AS "agentClaim", prev_hash AS "prevHash", hash`;

/** `*` becomes `%`; LIKE's own wildcards and escape are taken literally. */
function likePattern(glob: string): string {
  return glob.replace(/[\\%_]/g, (c) => `\\${c}`).replace(/\*/g, "%");
}

class Conditions {
  readonly parts: string[] = [];
  readonly params: unknown[] = [];

  param(value: unknown): string {
    this.params.push(value);
    return `$${this.params.length}`;
  }

  add(sql: string): void {
    this.parts.push(sql);
  }

  get where(): string {
    return this.parts.length ? `WHERE ${this.parts.join(" AND ")}` : "";
  }
}

function conditions(filter: AuditFilter): Conditions {
  const c = new Conditions();
  if (filter.delegatedBy) c.add(`delegated_by = ${c.param(filter.delegatedBy)}`);
  if (filter.agent) c.add(`${c.param(filter.agent)} = ANY(agent_chain)`);
  if (filter.resource) {
    const pattern = c.param(likePattern(filter.resource));
    // Several resources are recorded space-separated (a delegation's); any one of them may match.
    c.add(
      `EXISTS (SELECT 1 FROM unnest(string_to_array(resource, ' ')) AS r(uri)
        WHERE r.uri ILIKE ${pattern} ESCAPE '\\'
           OR regexp_replace(r.uri, '^[A-Za-z][A-Za-z0-9+.-]*://', '') ILIKE ${pattern} ESCAPE '\\')`,
    );
  }
  if (filter.action) c.add(`action LIKE ${c.param(likePattern(filter.action))} ESCAPE '\\'`);
  if (filter.decision) c.add(`decision = ${c.param(filter.decision)}`);
  if (filter.types?.length) c.add(`type IN (${filter.types.map((t) => c.param(t)).join(", ")})`);
  if (filter.from) c.add(`time >= ${c.param(filter.from.toISOString())}::timestamptz`);
  if (filter.before) c.add(`time < ${c.param(filter.before.toISOString())}::timestamptz`);
  return c;
}

export interface AuditPage {
  events: AuditEventView[];
  next_cursor: string | null;
}

export async function queryPage(
  prisma: PrismaClient,
  filter: AuditFilter,
  options: { limit: number; order: "asc" | "desc"; after?: bigint },
): Promise<AuditPage> {
  const rows = await readRows(prisma, filter, options.order, options.after, options.limit + 1);
  const more = rows.length > options.limit;
  const page = rows.slice(0, options.limit);
  const last = page.at(-1);
  return {
    events: page.map(eventView),
    next_cursor: more && last ? encodeCursor(last.seq, options.order) : null,
  };
}

async function readRows(
  prisma: PrismaClient,
  filter: AuditFilter,
  order: "asc" | "desc",
  after: bigint | undefined,
  limit: number,
): Promise<AuditEventRow[]> {
  const c = conditions(filter);
  if (after !== undefined) c.add(`seq ${order === "asc" ? ">" : "<"} ${c.param(after.toString())}::bigint`);
  const sql = `SELECT ${COLUMNS} FROM audit_events ${c.where} ORDER BY seq ${order} LIMIT ${c.param(limit)}::int`;
  return prisma.$queryRawUnsafe<AuditEventRow[]>(sql, ...c.params);
}

/** Every matching event, oldest first, read a page at a time (memory stays flat however many there are). */
export async function* iterateEvents(
  prisma: PrismaClient,
  filter: AuditFilter,
  pageSize = 1000,
): AsyncGenerator<AuditEventView> {
  let after: bigint | undefined;
  for (;;) {
    const rows = await readRows(prisma, filter, "asc", after, pageSize);
    for (const row of rows) yield eventView(row);
    if (rows.length < pageSize) return;
    after = rows.at(-1)?.seq;
  }
}

export interface AuditStats {
  stats_by: StatDimension[];
  total: number;
  /** One object per group: each dimension's value, and `count`. */
  groups: Record<string, string | number | null>[];
  truncated: boolean;
}

export async function queryStats(
  prisma: PrismaClient,
  filter: AuditFilter,
  dimensions: StatDimension[],
): Promise<AuditStats> {
  const c = conditions(filter);
  const select = dimensions.map((d) => `${STAT_DIMENSIONS[d]} AS "${d}"`).join(", ");
  const group = dimensions.map((d) => STAT_DIMENSIONS[d]).join(", ");
  const sql = `SELECT ${select}, count(*)::text AS count, (sum(count(*)) OVER ())::text AS total,
      (count(*) OVER ())::int AS groups
    FROM audit_events ${c.where} GROUP BY ${group} ORDER BY count(*) DESC, ${group} LIMIT ${MAX_GROUPS}`;
  const rows = await prisma.$queryRawUnsafe<Record<string, string | null>[]>(sql, ...c.params);
  return {
    stats_by: dimensions,
    total: Number(rows[0]?.total ?? 0),
    groups: rows.map((row) => {
      const group: Record<string, string | number | null> = {};
      for (const d of dimensions) group[d] = row[d] ?? null;
      group.count = Number(row.count);
      return group;
    }),
    truncated: Number(rows[0]?.groups ?? 0) > MAX_GROUPS,
  };
}

/** Archives whose time span overlaps the filter's: their events are in files, not in query results. */
export async function archivesOverlapping(prisma: PrismaClient, filter: AuditFilter) {
  const archives = await prisma.auditArchive.findMany({
    where: {
      ...(filter.before ? { fromTime: { lt: filter.before } } : {}),
      ...(filter.from ? { toTime: { gte: filter.from } } : {}),
    },
    orderBy: { fromSeq: "asc" },
  });
  return archives.map((archive) => ({
    id: archive.id,
    file: archive.file,
    from_time: archive.fromTime.toISOString(),
    to_time: archive.toTime.toISOString(),
    event_count: archive.eventCount,
  }));
}
