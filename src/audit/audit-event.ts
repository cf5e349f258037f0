// The audit event as it leaves the database: one stable, documented shape for the query API, NDJSON and CSV
// exports and archive files — and the content its hash is computed over.
//
// hash = sha256_hex((prev_hash ?? "") + canonical_json(content)), where content is every field below except
// prev_hash and hash, with keys sorted, no whitespace, dates as ISO 8601 strings (UTC, milliseconds), absent
// values as null — except the fields added after the chain began (LATER_FIELDS), which are left out while null,
// so that events written before them hash as they did. The same function checks rows in the database and lines
// of exported or archived files.
import { createHash } from "node:crypto";

/** Export field names, in the order CSV columns appear. Stable: documented in the README. */
export const AUDIT_FIELDS = [
  "seq",
  "id",
  "time",
  "type",
  "action",
  "decision",
  "reason",
  "actor",
  "target",
  "delegated_by",
  "agent_chain",
  "resource",
  "scopes_asked",
  "scopes_granted",
  "delegation_id",
  "task_id",
  "task_description",
  "request_id",
  "client_address",
  "policy_version",
  "agent_claim",
  "before",
  "after",
  "details",
  "prev_hash",
  "hash",
] as const;

export type AuditField = (typeof AUDIT_FIELDS)[number];

/** The fields the hash covers (everything but the chain links themselves). */
export const CONTENT_FIELDS = AUDIT_FIELDS.filter(
  (field): field is Exclude<AuditField, "prev_hash" | "hash"> => field !== "prev_hash" && field !== "hash",
);

/** Fields added after the chain began: hashed only when not null, so that older events keep their hashes. */
const LATER_FIELDS: ReadonlySet<string> = new Set<AuditField>(["task_description"]);

/** The value a field contributes to the hash; undefined when it is left out. */
function hashedValue(source: Record<string, unknown>, field: string): unknown {
  const value = source[field] ?? null;
  return value === null && LATER_FIELDS.has(field) ? undefined : value;
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export interface AuditEventView {
  seq: number;
  id: string;
  time: string;
  type: string;
  action: string;
  decision: string | null;
  reason: string | null;
  actor: string | null;
  target: string | null;
  delegated_by: string | null;
  agent_chain: string[];
  resource: string | null;
  scopes_asked: string[];
  scopes_granted: string[];
  delegation_id: string | null;
  task_id: string | null;
  /** The task's description as the person approved it: the agent's words. */
  task_description: string | null;
  request_id: string | null;
  client_address: string | null;
  policy_version: string | null;
  /** Reasoning the agent sent with its request: the agent's own, unverified claim. */
  agent_claim: string | null;
  before: Json;
  after: Json;
  details: Json;
  prev_hash: string | null;
  hash: string | null;
}

export type AuditEventContent = Omit<AuditEventView, "prev_hash" | "hash">;

/** An audit_events row as Prisma returns it. */
export interface AuditEventRow {
  seq: bigint;
  id: string;
  time: Date;
  type: string;
  action: string;
  decision: string | null;
  reason: string | null;
  actor: string | null;
  target: string | null;
  delegatedBy: string | null;
  agentChain: string[];
  resource: string | null;
  scopesAsked: string[];
  scopesGranted: string[];
  delegationId: string | null;
  taskId: string | null;
  taskDescription: string | null;
  requestId: string | null;
  clientAddress: string | null;
  before: unknown;
  after: unknown;
  details: unknown;
  policyVersion: string | null;
  agentClaim: string | null;
  prevHash: string | null;
  hash: string | null;
}

export function eventView(row: AuditEventRow): AuditEventView {
  return {
    seq: Number(row.seq),
    id: row.id,
    time: row.time.toISOString(),
    type: row.type,
    action: row.action,
    decision: row.decision,
    reason: row.reason,
    actor: row.actor,
    target: row.target,
    delegated_by: row.delegatedBy,
    agent_chain: row.agentChain,
    resource: row.resource,
    scopes_asked: row.scopesAsked,
    scopes_granted: row.scopesGranted,
    delegation_id: row.delegationId,
    task_id: row.taskId,
    task_description: row.taskDescription,
    request_id: row.requestId,
    client_address: row.clientAddress,
    policy_version: row.policyVersion,
    agent_claim: row.agentClaim,
    before: (row.before ?? null) as Json,
    after: (row.after ?? null) as Json,
    details: (row.details ?? null) as Json,
    prev_hash: row.prevHash,
    hash: row.hash,
  };
}

/** The hashed part of an event (a view, or a line of an export or archive). */
export function eventContent(event: object): Record<string, unknown> {
  const source = event as Record<string, unknown>;
  const content: Record<string, unknown> = {};
  for (const field of CONTENT_FIELDS) {
    const value = hashedValue(source, field);
    if (value !== undefined) content[field] = value;
  }
  return content;
}

/** JSON with object keys sorted at every level and no whitespace; dates as ISO strings, bigints as digits. */
export function canonicalJson(value: unknown): string {
  if (value === null || value === undefined) return "null";
  switch (typeof value) {
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "number":
      return Number.isFinite(value) ? JSON.stringify(value) : "null";
    case "bigint":
      return value.toString();
    case "object":
      break;
    default:
      return "null";
  }
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  if (Array.isArray(value)) return `[${value.map((item) => canonicalJson(item)).join(",")}]`;
  const record = value as Record<string, unknown>;
  const keys = Object.keys(record)
    .filter((key) => record[key] !== undefined)
    .sort();
  return `{${keys.map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`).join(",")}}`;
}

const SORTED_CONTENT = [...CONTENT_FIELDS]
  .sort()
  .map((field) => [field, `${JSON.stringify(field)}:`] as const);

/** canonicalJson(eventContent(event)), without building the intermediate object (the hot path). */
export function canonicalContent(event: object): string {
  const source = event as Record<string, unknown>;
  let out = "{";
  for (const [field, prefix] of SORTED_CONTENT) {
    const value = hashedValue(source, field);
    if (value !== undefined) out += `${out.length > 1 ? "," : ""}${prefix}${canonicalJson(value)}`;
  }
  return `${out}}`;
}

/** The hash of an event (a view, or a line of an export or archive) linked to `prevHash`. */
export function eventHash(prevHash: string | null, event: object): string {
  return createHash("sha256")
    .update(prevHash ?? "")
    .update(canonicalContent(event))
    .digest("hex");
}
