// Appending to the hash chain. Every writer — group commit, admin changes in their own transaction, the
// archiver — appends through `appendToChain` inside its transaction: it takes one transaction-scoped advisory
// lock, reads the chain's head, numbers the new events and links each to the one before. The lock makes the
// chain total across concurrent writers and across server processes sharing a PostgreSQL database (PGlite is
// one process, and the same SQL runs there).
//
// Rows are inserted with one statement and one parameter (a JSON array expanded by jsonb_to_recordset): for
// these wide rows that is several times cheaper than Prisma's createMany, and it is the hot path of every
// token exchange.
import type { Prisma } from "../generated/prisma/client.ts";
import { type AuditEventRow, chainHash, eventContent, eventView } from "./audit-event.ts";

/** pg_advisory_xact_lock key of the chain ("DPTYAUDT"); distinct from the migration runner's. */
export const AUDIT_CHAIN_LOCK_KEY = 0x4450_5459_4155_4454n;

/** A normalized event, ready to be numbered, linked and stored. */
export type UnsealedAuditEvent = Omit<AuditEventRow, "seq" | "prevHash" | "hash">;

/** Raw SQL inside an open transaction: a Prisma interactive transaction, or a SqlRunner transaction. */
export interface ChainTx {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
}

export function prismaTx(tx: Prisma.TransactionClient): ChainTx {
  return { query: (sql, params = []) => tx.$queryRawUnsafe(sql, ...params) };
}

const HEAD_SQL = `
SELECT COALESCE(
         (SELECT hash FROM audit_events WHERE hash IS NOT NULL ORDER BY seq DESC LIMIT 1),
         (SELECT NULLIF(last_hash, '') FROM audit_archives ORDER BY to_seq DESC LIMIT 1)
       ) AS head,
       ARRAY(SELECT nextval(pg_get_serial_sequence('audit_events', 'seq'))::text
             FROM generate_series(1, $1::int)) AS seqs`;

const INSERT_SQL = `
INSERT INTO audit_events (seq, id, time, type, action, decision, reason, actor, target, delegated_by, agent_chain,
  resource, scopes_asked, scopes_granted, delegation_id, task_id, request_id, client_address, before, after,
  details, policy_version, agent_claim, prev_hash, hash)
SELECT seq, id, time, type, action, decision, reason, actor, target, delegated_by, agent_chain, resource,
  scopes_asked, scopes_granted, delegation_id, task_id, request_id, client_address, before, after, details,
  policy_version, agent_claim, prev_hash, hash
FROM jsonb_to_recordset($1::jsonb) AS r(seq bigint, id uuid, time timestamptz, type text, action text,
  decision text, reason text, actor text, target text, delegated_by text, agent_chain text[], resource text,
  scopes_asked text[], scopes_granted text[], delegation_id text, task_id text, request_id text,
  client_address text, before jsonb, after jsonb, details jsonb, policy_version text, agent_claim text,
  prev_hash text, hash text)`;

/** Serializes chain appends until the transaction ends (re-entrant within one transaction). */
export async function lockChain(tx: ChainTx): Promise<void> {
  await tx.query(`SELECT 1 AS locked FROM pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK_KEY})`);
}

/** Numbers, links and inserts `events`, in order, at the head of the chain. Call inside a transaction. */
export async function appendToChain(tx: ChainTx, events: UnsealedAuditEvent[]): Promise<void> {
  if (events.length === 0) return;
  await lockChain(tx);
  // A statement of its own, after the lock: under READ COMMITTED it sees every append committed before ours.
  const [state] = await tx.query<{ head: string | null; seqs: string[] }>(HEAD_SQL, [events.length]);
  const seqs = (state?.seqs ?? []).map((value) => BigInt(value)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  if (seqs.length !== events.length) throw new Error("audit chain: could not number the new events");
  let prevHash = state?.head ?? null;
  const rows = events.map((event, index) => {
    const seq = seqs[index] as bigint;
    const view = eventView({ ...event, seq, prevHash, hash: null });
    const hash = chainHash(prevHash, eventContent(view));
    const row = { ...view, seq: seq.toString(), prev_hash: prevHash, hash };
    prevHash = hash;
    return row;
  });
  await tx.query(INSERT_SQL, [JSON.stringify(rows)]);
}
