// Reading the audit trail: filters (validated, each with a message that says what to send instead), keyset
// pages with an opaque cursor on seq, streaming iteration for exports, and counts grouped by dimensions — over
// the archive files and the database alike, as one trail in seq order.
import type { AuditArchive, Prisma, PrismaClient } from "../generated/prisma/client.ts";
import { ApiError, invalidRequest } from "../http/api-error.ts";
import { isPlainText } from "../http/plain-text.ts";
import { AUDIT_TYPES } from "./actions.ts";
import { archivedEvents } from "./audit-archive-read.ts";
import { type AuditEventRow, type AuditEventView, eventView } from "./audit-event.ts";
import { type AuditFilter, type CompiledFilter, compileFilter } from "./audit-filter.ts";
import { TRANSACTION_OPTIONS } from "./audit-log.ts";

/** Each dimension as SQL over audit_events and as the same value of an archived event. */
export const STAT_DIMENSIONS = {
  agent: { sql: "agent_chain[1]", of: (e: AuditEventView) => e.agent_chain[0] ?? null },
  action: { sql: "action", of: (e: AuditEventView) => e.action },
  resource: { sql: "resource", of: (e: AuditEventView) => e.resource },
  type: { sql: "type", of: (e: AuditEventView) => e.type },
  decision: { sql: "decision", of: (e: AuditEventView) => e.decision },
  delegated_by: { sql: "delegated_by", of: (e: AuditEventView) => e.delegated_by },
  actor: { sql: "actor", of: (e: AuditEventView) => e.actor },
} as const;
export type StatDimension = keyof typeof STAT_DIMENSIONS;

const FILTER_PARAMETERS = [
  "delegated_by",
  "agent",
  "resource",
  "action",
  "decision",
  "delegation_id",
  "task_id",
  "type",
  "from",
  "to",
];
export const MAX_PAGE = 1000;
const MAX_GROUPS = 1000;
/** Groups counted at once (the largest MAX_GROUPS are answered): bounds the memory of a count over archives. */
const MAX_COUNTED_GROUPS = 50_000;
/** Database rows read at a time. */
const BATCH = 1000;

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
  filter.delegationId = text("delegation_id", 200);
  filter.taskId = text("task_id", 200);
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
// Archives and database: seq numbers both (archives hold a prefix of the chain), so a cursor's seq is a position
// in either, and a page may run from the last archive into the database.

/** Where events live: the database, and the archive files (DEPUTY_AUDIT_ARCHIVE_DIR). */
export interface AuditSource {
  prisma: PrismaClient;
  archiveDir: string;
}

type Reader = Pick<PrismaClient, "$queryRawUnsafe" | "auditArchive">;
type Order = "asc" | "desc";

const COLUMNS = `seq, id, time, type, action, decision, reason, actor, target, delegated_by AS "delegatedBy",
  agent_chain AS "agentChain", resource, scopes_asked AS "scopesAsked", scopes_granted AS "scopesGranted",
  delegation_id AS "delegationId", task_id AS "taskId", task_description AS "taskDescription",
  request_id AS "requestId", client_address AS "clientAddress", before, after, details,
  policy_version AS "policyVersion", agent_claim AS "agentClaim", prev_hash AS "prevHash", hash`;

/**
 * The archives a read needs, and the read, from one snapshot: an archiver run records its archive and removes
 * the archive's events in one transaction, so every event is seen in exactly one of the two.
 */
async function snapshot<T>(
  prisma: PrismaClient,
  archives: Prisma.AuditArchiveWhereInput,
  order: Order,
  read: (tx: Reader) => Promise<T>,
) {
  return prisma.$transaction(
    async (tx) => ({
      archives: await tx.auditArchive.findMany({ where: archives, orderBy: { fromSeq: order } }),
      result: await read(tx),
    }),
    { ...TRANSACTION_OPTIONS, isolationLevel: "RepeatableRead" },
  );
}

/** Archives that may hold matches beyond `position`: their time span overlaps the filter's. */
function archivesBeyond(filter: AuditFilter, order: Order, position?: bigint): Prisma.AuditArchiveWhereInput {
  const where: Prisma.AuditArchiveWhereInput = {};
  if (filter.before) where.fromTime = { lt: filter.before };
  if (filter.from) where.toTime = { gte: filter.from };
  if (position !== undefined) {
    if (order === "asc") where.toSeq = { gt: position };
    else where.fromSeq = { lt: position };
  }
  return where;
}

async function readRows(
  db: Reader,
  filter: CompiledFilter,
  order: Order,
  after: bigint | undefined,
  limit: number,
): Promise<AuditEventRow[]> {
  const c = filter.conditions();
  if (after !== undefined) c.add(`seq ${order === "asc" ? ">" : "<"} ${c.param(after.toString())}::bigint`);
  const sql = `SELECT ${COLUMNS} FROM audit_events ${c.where} ORDER BY seq ${order} LIMIT ${c.param(limit)}::int`;
  return db.$queryRawUnsafe<AuditEventRow[]>(sql, ...c.params);
}

/** Archived matches after `after`, oldest first. */
async function* oldestArchived(
  dir: string,
  archives: AuditArchive[],
  filter: CompiledFilter,
  after?: bigint,
): AsyncGenerator<AuditEventView> {
  for (const archive of archives)
    for await (const event of archivedEvents(dir, archive))
      if ((after === undefined || event.seq > after) && filter.matches(event)) yield event;
}

/** The newest `want` archived matches before `before`, newest first (a file is read forwards: keep its last). */
async function* newestArchived(
  dir: string,
  archives: AuditArchive[],
  filter: CompiledFilter,
  before: bigint | undefined,
  want: number,
): AsyncGenerator<AuditEventView> {
  for (const archive of archives) {
    if (want <= 0) return;
    const last: AuditEventView[] = [];
    for await (const event of archivedEvents(dir, archive)) {
      if ((before !== undefined && event.seq >= before) || !filter.matches(event)) continue;
      last.push(event);
      if (last.length > want) last.shift();
    }
    want -= last.length;
    yield* last.reverse();
  }
}

/**
 * Up to `max` matching events beyond `after`, in seq order: oldest first the archived ones and then the
 * database's, newest first the other way round. Archive files are streamed; rows are read a batch at a time.
 */
async function* searchEvents(
  source: AuditSource,
  filter: AuditFilter,
  order: Order,
  after: bigint | undefined,
  max: number,
): AsyncGenerator<AuditEventView> {
  const compiled = compileFilter(filter);
  let position = after;
  let left = max;
  for (;;) {
    const batch = Math.min(BATCH, left);
    const from = position;
    const { archives, result: rows } = await snapshot(
      source.prisma,
      archivesBeyond(filter, order, from),
      order,
      (tx) => readRows(tx, compiled, order, from, batch),
    );
    const database = rows.map(eventView);
    const parts =
      order === "asc"
        ? [oldestArchived(source.archiveDir, archives, compiled, from), database]
        : [
            database,
            rows.length < batch
              ? newestArchived(source.archiveDir, archives, compiled, from, left - rows.length)
              : [],
          ];
    for (const part of parts)
      for await (const event of part) {
        yield event;
        position = BigInt(event.seq);
        if (--left === 0) return;
      }
    if (rows.length < batch) return;
  }
}

export interface AuditPage {
  events: AuditEventView[];
  next_cursor: string | null;
}

export async function queryPage(
  source: AuditSource,
  filter: AuditFilter,
  options: { limit: number; order: Order; after?: bigint },
): Promise<AuditPage> {
  const events: AuditEventView[] = [];
  for await (const event of searchEvents(source, filter, options.order, options.after, options.limit + 1))
    events.push(event);
  const page = events.slice(0, options.limit);
  const last = page.at(-1);
  return {
    events: page,
    next_cursor: events.length > options.limit && last ? encodeCursor(BigInt(last.seq), options.order) : null,
  };
}

/** Every matching event, oldest first, streamed (memory stays flat however many there are). */
export function iterateEvents(source: AuditSource, filter: AuditFilter): AsyncGenerator<AuditEventView> {
  return searchEvents(source, filter, "asc", undefined, Number.POSITIVE_INFINITY);
}

export interface AuditStats {
  stats_by: StatDimension[];
  total: number;
  /** One object per group: each dimension's value, and `count`. */
  groups: Record<string, string | number | null>[];
  truncated: boolean;
}

type GroupValues = (string | null)[];

export async function queryStats(
  source: AuditSource,
  filter: AuditFilter,
  dimensions: StatDimension[],
): Promise<AuditStats> {
  const compiled = compileFilter(filter);
  const { archives, result: rows } = await snapshot(
    source.prisma,
    archivesBeyond(filter, "asc"),
    "asc",
    (tx) => countRows(tx, compiled, dimensions),
  );
  const counts = new Map<string, number>();
  for (const row of rows)
    countGroup(
      counts,
      dimensions.map((d) => row[d] ?? null),
      Number(row.count),
    );
  for await (const event of oldestArchived(source.archiveDir, archives, compiled))
    countGroup(
      counts,
      dimensions.map((d) => STAT_DIMENSIONS[d].of(event)),
      1,
    );
  return statsOf(counts, dimensions);
}

async function countRows(db: Reader, filter: CompiledFilter, dimensions: StatDimension[]) {
  const c = filter.conditions();
  const select = dimensions.map((d) => `${STAT_DIMENSIONS[d].sql} AS "${d}"`).join(", ");
  const group = dimensions.map((d) => STAT_DIMENSIONS[d].sql).join(", ");
  const sql = `SELECT ${select}, count(*)::text AS count FROM audit_events ${c.where} GROUP BY ${group}
    LIMIT ${MAX_COUNTED_GROUPS + 1}`;
  return db.$queryRawUnsafe<Record<string, string | null>[]>(sql, ...c.params);
}

function countGroup(counts: Map<string, number>, values: GroupValues, count: number): void {
  const key = JSON.stringify(values);
  counts.set(key, (counts.get(key) ?? 0) + count);
  if (counts.size > MAX_COUNTED_GROUPS)
    throw invalidRequest(
      `stats_by: more than ${MAX_COUNTED_GROUPS} groups; count by fewer dimensions or narrow the filters`,
    );
}

/** The largest groups first (ties in the order of their values, empty last). */
function statsOf(counts: Map<string, number>, dimensions: StatDimension[]): AuditStats {
  const groups = [...counts].map(([key, count]) => ({ values: JSON.parse(key) as GroupValues, count }));
  groups.sort((a, b) => b.count - a.count || compareValues(a.values, b.values));
  return {
    stats_by: dimensions,
    total: groups.reduce((sum, group) => sum + group.count, 0),
    groups: groups.slice(0, MAX_GROUPS).map(({ values, count }) => ({
      ...Object.fromEntries(dimensions.map((d, i) => [d, values[i] ?? null])),
      count,
    })),
    truncated: groups.length > MAX_GROUPS,
  };
}

function compareValues(a: GroupValues, b: GroupValues): number {
  for (let i = 0; i < a.length; i++) {
    const [x, y] = [a[i] ?? null, b[i] ?? null];
    if (x === y) continue;
    if (x === null) return 1;
    if (y === null) return -1;
    return x < y ? -1 : 1;
  }
  return 0;
}
