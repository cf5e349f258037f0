// Appending to the hash chain. Every writer — group commit, admin changes in their own transaction, the
// archiver — appends through `appendToChain` inside its transaction: it takes one transaction-scoped advisory
// lock, numbers the new events after the chain's head and links each to the one before. The lock makes the
// chain total across concurrent writers and across server processes sharing a PostgreSQL database (PGlite is
// one process, and the same SQL runs there).
//
// The hot path is two statements: the lock, and one INSERT that carries the whole batch as one JSON parameter
// (expanded by jsonb_to_recordset; for these wide rows several times cheaper than Prisma's createMany). The head
// the batch was linked to is the one this process last wrote (ChainHead); the INSERT checks, in the same
// statement, that it is still the head, and inserts nothing otherwise — then the head is read and the batch
// linked again. Under READ COMMITTED a statement that starts after the lock was granted sees every append
// committed before it, so the check cannot pass on a stale head.
import type { Prisma } from "../generated/prisma/client.ts";
import { type AuditEventRow, eventHash, eventView } from "./audit-event.ts";

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

/**
 * The head this process believes the chain has: the seq and hash of the last event it appended. Only a hint —
 * every append checks it against the database in its INSERT — so a stale one (another process appended, or our
 * transaction rolled back) costs one extra read, never a fork.
 */
export class ChainHead {
  seq: bigint | undefined;
  hash: string | null = null;
}

// seq is assigned here (the last seq + 1, under the lock), not by the column's sequence: the hash covers it.
const HEAD_SQL = `
SELECT (SELECT max(seq) FROM audit_events)::text AS top_seq,
       (SELECT hash FROM audit_events WHERE hash IS NOT NULL ORDER BY seq DESC LIMIT 1) AS top_hash,
       (SELECT to_seq FROM audit_archives ORDER BY to_seq DESC LIMIT 1)::text AS archive_seq,
       (SELECT NULLIF(last_hash, '') FROM audit_archives ORDER BY to_seq DESC LIMIT 1) AS archive_hash`;

const INSERT_SQL = `
INSERT INTO audit_events (seq, id, time, type, action, decision, reason, actor, target, delegated_by, agent_chain,
  resource, scopes_asked, scopes_granted, delegation_id, task_id, task_description, request_id, client_address,
  before, after, details, policy_version, agent_claim, prev_hash, hash)
SELECT seq, id, time, type, action, decision, reason, actor, target, delegated_by, agent_chain, resource,
  scopes_asked, scopes_granted, delegation_id, task_id, task_description, request_id, client_address, before,
  after, details, policy_version, agent_claim, prev_hash, hash
FROM jsonb_to_recordset($1::jsonb) AS r(seq bigint, id uuid, time timestamptz, type text, action text,
  decision text, reason text, actor text, target text, delegated_by text, agent_chain text[], resource text,
  scopes_asked text[], scopes_granted text[], delegation_id text, task_id text, task_description text,
  request_id text, client_address text, before jsonb, after jsonb, details jsonb, policy_version text,
  agent_claim text, prev_hash text, hash text)
WHERE $2::boolean
   OR ((SELECT max(seq) FROM audit_events) = $3::bigint
       AND (SELECT hash FROM audit_events WHERE hash IS NOT NULL ORDER BY seq DESC LIMIT 1) IS NOT DISTINCT FROM $4::text)
RETURNING 1 AS inserted`;

/** A FROM item that takes the chain's lock, for a statement that runs before the append in the same transaction. */
export const CHAIN_LOCK_FROM_ITEM = `(SELECT pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK_KEY})) AS chain_lock`;

/** Serializes chain appends until the transaction ends (re-entrant within one transaction). */
export async function lockChain(tx: ChainTx): Promise<void> {
  await tx.query(`SELECT 1 AS locked FROM pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK_KEY})`);
}

async function readHead(tx: ChainTx): Promise<{ seq: bigint; hash: string | null }> {
  const [row] = await tx.query<{
    top_seq: string | null;
    top_hash: string | null;
    archive_seq: string | null;
    archive_hash: string | null;
  }>(HEAD_SQL);
  const top = row?.top_seq ? BigInt(row.top_seq) : 0n;
  const archived = row?.archive_seq ? BigInt(row.archive_seq) : 0n;
  return { seq: top > archived ? top : archived, hash: row?.top_hash ?? row?.archive_hash ?? null };
}

/**
 * Numbers, links and inserts `events`, in order, at the head of the chain. Call inside a transaction; pass the
 * writer's ChainHead so that, in the common case, the head need not be read.
 */
export async function appendToChain(
  tx: ChainTx,
  events: UnsealedAuditEvent[],
  head: ChainHead = new ChainHead(),
  options: { locked?: boolean } = {},
): Promise<void> {
  if (events.length === 0) return;
  // `locked`: an earlier statement of this transaction took the lock (CHAIN_LOCK_FROM_ITEM).
  if (!options.locked) await lockChain(tx);
  let base = head.seq === undefined ? await readHead(tx) : { seq: head.seq, hash: head.hash };
  let verified = head.seq === undefined;
  for (;;) {
    let prevHash = base.hash;
    const rows = events.map((event, index) => {
      const seq = base.seq + BigInt(index + 1);
      const view = eventView({ ...event, seq, prevHash, hash: null });
      const hash = eventHash(prevHash, view);
      const row = { ...view, seq: seq.toString(), prev_hash: prevHash, hash };
      prevHash = hash;
      return row;
    });
    const inserted = await tx.query(INSERT_SQL, [
      JSON.stringify(rows),
      verified,
      base.seq.toString(),
      base.hash,
    ]);
    if (inserted.length === events.length) {
      head.seq = base.seq + BigInt(events.length);
      head.hash = prevHash;
      return;
    }
    if (verified) throw new Error("audit chain: the batch was not inserted");
    // Someone else appended (or our last transaction rolled back): read the head and link the batch again.
    base = await readHead(tx);
    verified = true;
  }
}
