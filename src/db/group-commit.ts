// Group commit: rows written by concurrent requests are collected for a moment and inserted together in one
// transaction; each caller's promise settles only when the transaction holding its rows has committed.
// This is how a token can wait for its audit event and lineage to be durable without paying a database
// round trip per request.
import type { Prisma, PrismaClient } from "../generated/prisma/client.ts";

export interface PendingRows {
  issuedTokens?: Prisma.IssuedTokenCreateManyInput[];
  auditEvents?: Prisma.AuditEventCreateManyInput[];
}

interface Waiter {
  rows: PendingRows;
  resolve(): void;
  reject(error: unknown): void;
}

const MAX_BATCH = 500;

export class GroupCommitWriter {
  readonly #prisma: PrismaClient;
  #queue: Waiter[] = [];
  #flushing: Promise<void> | undefined;
  #scheduled = false;

  constructor(prisma: PrismaClient) {
    this.#prisma = prisma;
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
    try {
      await this.#prisma.$transaction([
        ...(issuedTokens.length ? [this.#prisma.issuedToken.createMany({ data: issuedTokens })] : []),
        ...(auditEvents.length ? [this.#prisma.auditEvent.createMany({ data: auditEvents })] : []),
      ]);
      for (const waiter of batch) waiter.resolve();
    } catch (error) {
      if (batch.length === 1) {
        batch[0]?.reject(error);
        return;
      }
      // One bad row must not fail its neighbours: retry each request's rows on its own.
      await Promise.all(batch.map((waiter) => this.#commit([waiter])));
    }
  }
}
