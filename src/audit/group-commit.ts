// Group commit: rows written by concurrent requests are collected for a moment and inserted together in one
// transaction; each caller's promise settles only when the transaction holding its rows has committed.
// This is how a token can wait for its audit event and lineage to be durable without paying a database
// round trip per request. Audit events join the hash chain inside that transaction (audit-chain.ts), so the
// chain lock is taken once per batch, not once per event.
//
// The transaction runs on the raw SQL runner when one is given (the server's): for these rows Prisma's
// interactive transactions and createMany cost several times more than the SQL itself.

import type { SqlRunner } from "../db/sql-runner.ts";
import type { Prisma, PrismaClient } from "../generated/prisma/client.ts";
import { databaseOutage } from "../http/unavailable.ts";
import {
  appendToChain,
  CHAIN_LOCK_FROM_ITEM,
  ChainHead,
  type ChainTx,
  prismaTx,
  type UnsealedAuditEvent,
} from "./audit-chain.ts";

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
  /** The audit chain's head as this process last wrote it (shared with AuditLog.record). */
  readonly chain = new ChainHead();
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

  async #commit(batch: Waiter[], retried = false): Promise<void> {
    const issuedTokens = batch.flatMap((waiter) => waiter.rows.issuedTokens ?? []);
    const auditEvents = batch.flatMap((waiter) => waiter.rows.auditEvents ?? []);
    const write = async (tx: ChainTx) => {
      // The lineage insert also takes the chain's lock when events follow (one statement fewer); the append
      // comes last, so the lock is held for as short a time as possible.
      const locked = auditEvents.length > 0 && issuedTokens.length > 0;
      await insertIssuedTokens(tx, issuedTokens, locked);
      await appendToChain(tx, auditEvents, this.chain, { locked });
    };
    try {
      if (this.#sql) await this.#sql.transaction((tx) => write(tx));
      else await this.#prisma.$transaction((tx) => write(prismaTx(tx)), { maxWait: 10_000, timeout: 30_000 });
      for (const waiter of batch) waiter.resolve();
    } catch (error) {
      if (databaseOutage(error)) {
        // A lost connection fails the batch, not one of its rows: once more (the pool opens a new connection),
        // then the whole batch fails; retrying each request alone would meet the outage once per request.
        if (!retried) return this.#commit(batch, true);
        for (const waiter of batch) waiter.reject(error);
        return;
      }
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

const COLUMNS = new Map<string, string>();

/** Prisma field names follow the schema's @map convention: camelCase fields, snake_case columns. */
function column(field: string): string {
  let name = COLUMNS.get(field);
  if (name === undefined) {
    name = field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    COLUMNS.set(field, name);
  }
  return name;
}

/**
 * Inserts token lineage rows with one statement per shape of row, typed by the table's own row type
 * (jsonb_populate_recordset), so a column added to IssuedToken needs no change here; a field that maps to no
 * column fails loudly. Columns a row leaves out get their defaults.
 */
async function insertIssuedTokens(
  tx: ChainTx,
  rows: Prisma.IssuedTokenCreateManyInput[],
  lockChain: boolean,
): Promise<void> {
  const shapes = new Map<string, Record<string, unknown>[]>();
  for (const row of rows) {
    const record: Record<string, unknown> = {};
    for (const [field, value] of Object.entries(row)) {
      if (value !== undefined) record[column(field)] = value instanceof Date ? value.toISOString() : value;
    }
    const key = Object.keys(record).sort().join(",");
    const same = shapes.get(key);
    if (same) same.push(record);
    else shapes.set(key, [record]);
  }
  let lock = lockChain;
  for (const [key, records] of shapes) {
    const names = key
      .split(",")
      .map((name) => `"${name}"`)
      .join(", ");
    await tx.query(
      `INSERT INTO issued_tokens (${names})
       SELECT ${names} FROM jsonb_populate_recordset(NULL::issued_tokens, $1::jsonb)${lock ? `, ${CHAIN_LOCK_FROM_ITEM}` : ""}`,
      [JSON.stringify(records)],
    );
    lock = false;
  }
}
