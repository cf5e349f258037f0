// Group commit: rows written by concurrent requests are collected for a moment and inserted together in one
// transaction; each caller's promise settles only when the transaction holding its rows has committed.
// This is how a token can wait for its audit event and lineage to be durable without paying a database
// round trip per request. Audit events join the hash chain inside that transaction (audit-chain.ts), so the
// chain lock is taken once per batch, not once per event.
//
// The transaction runs on the raw SQL runner when one is given (the server's): for these rows Prisma's
// interactive transactions and createMany cost several times more than the SQL itself.
import { appendToChain, type ChainTx, prismaTx, type UnsealedAuditEvent } from "../audit/audit-chain.ts";
import type { Prisma, PrismaClient } from "../generated/prisma/client.ts";
import type { SqlRunner } from "./sql-runner.ts";

export interface PendingRows {
  issuedTokens?: Prisma.IssuedTokenCreateManyInput[];
  auditEvents?: UnsealedAuditEvent[];
}

interface Waiter {
  rows: PendingRows;
  resolve(): void;
  reject(error: unknown): void;
}

const MAX_BATCH = 500;

export class GroupCommitWriter {
  readonly #prisma: PrismaClient;
  readonly #sql: SqlRunner | undefined;
  #queue: Waiter[] = [];
  #flushing: Promise<void> | undefined;
  #scheduled = false;

  constructor(prisma: PrismaClient, sql?: SqlRunner) {
    this.#prisma = prisma;
    this.#sql = sql;
  }

  /** Resolves once `rows` are committed; rejects if their batch failed. */
  write(rows: PendingRows): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ rows, resolve, reject });
      this.#schedule();
    });
  }

  /** Waits for everything queued so far to be committed (used on shutdown). */
  async drain(): Promise<void> {
    while (this.#queue.length || this.#flushing) {
      if (this.#flushing) await this.#flushing;
      else await this.#flush();
    }
  }

  #schedule(): void {
    if (this.#scheduled || this.#flushing) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      void this.#flush();
    });
  }

  async #flush(): Promise<void> {
    if (this.#flushing || this.#queue.length === 0) return;
    const batch = this.#queue.splice(0, MAX_BATCH);
    this.#flushing = this.#commit(batch);
    await this.#flushing;
    this.#flushing = undefined;
    if (this.#queue.length) this.#schedule();
  }

  async #commit(batch: Waiter[]): Promise<void> {
    const issuedTokens = batch.flatMap((waiter) => waiter.rows.issuedTokens ?? []);
    const auditEvents = batch.flatMap((waiter) => waiter.rows.auditEvents ?? []);
    const write = async (tx: ChainTx) => {
      await insertIssuedTokens(tx, issuedTokens);
      // Last, so the chain lock is held for as short a time as possible.
      await appendToChain(tx, auditEvents);
    };
    try {
      if (this.#sql) await this.#sql.transaction((tx) => write(tx));
      else await this.#prisma.$transaction((tx) => write(prismaTx(tx)), { maxWait: 10_000, timeout: 30_000 });
      for (const waiter of batch) waiter.resolve();
    } catch (error) {
      if (batch.length === 1) {
        batch[0]?.reject(error);
        return;
      }
      // One bad row must not fail its neighbours: retry each request's rows on its own (one after the other:
      // each retry is a transaction of its own and takes the chain lock).
      for (const waiter of batch) await this.#commit([waiter]);
    }
  }
}

/** issued_tokens columns by field, with the type jsonb_to_recordset reads each as. */
const TOKEN_COLUMNS: Record<string, [column: string, type: string]> = {
  jti: ["jti", "text"],
  delegationId: ["delegation_id", "uuid"],
  parentJti: ["parent_jti", "text"],
  clientId: ["client_id", "text"],
  actorChain: ["actor_chain", "text[]"],
  resource: ["resource", "text"],
  scopes: ["scopes", "text[]"],
  depth: ["depth", "int"],
  format: ["format", '"TokenFormat"'],
  issuedAt: ["issued_at", "timestamptz"],
  expiresAt: ["expires_at", "timestamptz"],
  revokedAt: ["revoked_at", "timestamptz"],
};

async function insertIssuedTokens(tx: ChainTx, rows: Prisma.IssuedTokenCreateManyInput[]): Promise<void> {
  if (rows.length === 0) return;
  const fields = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  const unknown = fields.filter((field) => !(field in TOKEN_COLUMNS));
  // A field added to IssuedToken must be added above, or its value would be dropped silently.
  if (unknown.length) throw new Error(`group commit: issued_tokens has no column for ${unknown.join(", ")}`);
  const columns = fields.map((field) => TOKEN_COLUMNS[field] as [string, string]);
  const records = rows.map((row) =>
    Object.fromEntries(
      fields.map((field, i) => {
        const value = (row as Record<string, unknown>)[field];
        return [columns[i]?.[0], value instanceof Date ? value.toISOString() : (value ?? null)];
      }),
    ),
  );
  const names = columns.map(([column]) => column).join(", ");
  const values = columns.map(([column]) => (column === "issued_at" ? "COALESCE(issued_at, now())" : column));
  await tx.query(
    `INSERT INTO issued_tokens (${names}) SELECT ${values.join(", ")}
       FROM jsonb_to_recordset($1::jsonb) AS r(${columns.map(([column, type]) => `${column} ${type}`).join(", ")})`,
    [JSON.stringify(records)],
  );
}
