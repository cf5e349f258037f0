// One definition of what a filter matches, for both places events live: each condition is compiled once into
// its SQL (over audit_events) and the same test on an event read back from an archive file. Wildcards become
// one regular expression that PostgreSQL (`~`, `~*`) and JavaScript evaluate alike: anchors, escaped
// literals, `.*` (`.` matching line breaks in both) and an optional scheme prefix — nothing either reads
// differently.
import type { AuditEventView } from "./audit-event.ts";

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
  /** The delegation the event happened under (exact). */
  delegationId?: string;
  /** The task the event happened for (exact). */
  taskId?: string;
  types?: string[];
  from?: Date;
  /** Exclusive upper bound. */
  before?: Date;
}

/** Numbered SQL parameters and the conditions that use them. */
export class Conditions {
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

interface Clause {
  sql(c: Conditions): string;
  test(event: AuditEventView): boolean;
}

export interface CompiledFilter {
  /** The filter's conditions, ready for more (a cursor's). */
  conditions(): Conditions;
  matches(event: AuditEventView): boolean;
}

export function compileFilter(filter: AuditFilter): CompiledFilter {
  const clauses = filterClauses(filter);
  return {
    conditions() {
      const c = new Conditions();
      for (const clause of clauses) c.add(clause.sql(c));
      return c;
    },
    matches: (event) => clauses.every((clause) => clause.test(event)),
  };
}

function filterClauses(filter: AuditFilter): Clause[] {
  const clauses: Clause[] = [];
  const { delegatedBy, agent, resource, action, decision, delegationId, taskId, types, from, before } =
    filter;
  if (delegatedBy)
    clauses.push({
      sql: (c) => `delegated_by = ${c.param(delegatedBy)}`,
      test: (e) => e.delegated_by === delegatedBy,
    });
  if (agent)
    clauses.push({
      sql: (c) => `${c.param(agent)} = ANY(agent_chain)`,
      test: (e) => e.agent_chain.includes(agent),
    });
  if (resource) clauses.push(resourceClause(resource));
  if (action) {
    const pattern = globPattern(action);
    const regex = new RegExp(pattern, "s");
    clauses.push({ sql: (c) => `action ~ ${c.param(pattern)}`, test: (e) => regex.test(e.action) });
  }
  if (decision)
    clauses.push({ sql: (c) => `decision = ${c.param(decision)}`, test: (e) => e.decision === decision });
  if (delegationId)
    clauses.push({
      sql: (c) => `delegation_id = ${c.param(delegationId)}`,
      test: (e) => e.delegation_id === delegationId,
    });
  if (taskId) clauses.push({ sql: (c) => `task_id = ${c.param(taskId)}`, test: (e) => e.task_id === taskId });
  if (types?.length)
    clauses.push({
      sql: (c) => `type IN (${types.map((type) => c.param(type)).join(", ")})`,
      test: (e) => types.includes(e.type),
    });
  if (from)
    clauses.push({
      sql: (c) => `time >= ${c.param(from.toISOString())}::timestamptz`,
      test: (e) => Date.parse(e.time) >= from.getTime(),
    });
  if (before)
    clauses.push({
      sql: (c) => `time < ${c.param(before.toISOString())}::timestamptz`,
      test: (e) => Date.parse(e.time) < before.getTime(),
    });
  return clauses;
}

/**
 * Several resources are recorded space-separated (a delegation's); any one of them may match, case-insensitively,
 * as a whole or after its `scheme://`.
 */
function resourceClause(glob: string): Clause {
  const pattern = globPattern(glob, "(?:[A-Za-z][A-Za-z0-9+.-]*://)?");
  const regex = new RegExp(pattern, "is");
  return {
    sql: (c) =>
      `EXISTS (SELECT 1 FROM unnest(string_to_array(resource, ' ')) AS r(uri) WHERE r.uri ~* ${c.param(pattern)})`,
    // string_to_array gives no element for NULL or '', and '' for each extra space, as split does.
    test: (e) => (e.resource ? e.resource.split(" ").some((uri) => regex.test(uri)) : false),
  };
}

/** `*` matches any run of characters; everything else literally, after an optional prefix. */
function globPattern(glob: string, prefix = ""): string {
  const literal = (part: string) => part.replace(/[\\^$.|?+()[\]{}]/g, "\\$&");
  return `^${prefix}${glob.split("*").map(literal).join(".*")}$`;
}
