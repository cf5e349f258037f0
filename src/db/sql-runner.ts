// A minimal raw-SQL interface over both databases Deputy runs on: embedded PGlite and PostgreSQL (pg.Pool).
// Used by the migration runner and by code that needs SQL outside Prisma Client.
import type { PGlite, Transaction } from "@electric-sql/pglite";
import type pg from "pg";

export interface SqlRunner {
  /** One statement with `$1`-style parameters; resolves to the result rows. */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** A multi-statement script (simple query protocol, no parameters). Rejects if any statement fails. */
  exec(script: string): Promise<void>;
  /**
   * Runs `fn` in a transaction: COMMIT when it resolves, ROLLBACK when it rejects. Calling `transaction` on
   * the runner handed to `fn` nests through a savepoint. The runner handed to `fn` must not be used after
   * `fn` settles.
   */
  transaction<T>(fn: (tx: SqlRunner) => Promise<T>): Promise<T>;
}

interface Connection {
  query(sql: string, params: unknown[] | undefined): Promise<unknown[]>;
  exec(script: string): Promise<void>;
}

export function pgliteRunner(db: PGlite): SqlRunner {
  return {
    async query<T>(sql: string, params?: unknown[]) {
      const result = await db.query<T>(sql, params);
      return result.rows;
    },
    async exec(script: string) {
      // Awaited: PGlite runs the script through the simple query protocol and rejects at the first error.
      await db.exec(script);
    },
    transaction<T>(fn: (tx: SqlRunner) => Promise<T>) {
      // PGlite serializes transactions itself and rolls back when the callback rejects.
      return db.transaction((tx: Transaction) => withinTransaction(pgliteConnection(tx), fn));
    },
  };
}

function pgliteConnection(tx: Transaction): Connection {
  return {
    async query(sql, params) {
      return (await tx.query(sql, params)).rows;
    },
    async exec(script) {
      await tx.exec(script);
    },
  };
}

export function pgPoolRunner(pool: pg.Pool): SqlRunner {
  return {
    async query<T>(sql: string, params?: unknown[]) {
      const result = await pool.query(sql, params);
      return result.rows as T[];
    },
    async exec(script: string) {
      // Without parameters pg uses the simple query protocol, which accepts several statements and
      // stops (rejecting) at the first one that fails.
      await pool.query(script);
    },
    async transaction<T>(fn: (tx: SqlRunner) => Promise<T>) {
      const client = await pool.connect();
      // A client whose ROLLBACK failed is in an unknown state: destroy it rather than return it to the pool.
      let broken: Error | undefined;
      try {
        await client.query("BEGIN");
        try {
          const result = await withinTransaction(pgClientConnection(client), fn);
          await client.query("COMMIT");
          return result;
        } catch (error) {
          try {
            await client.query("ROLLBACK");
          } catch (rollbackError) {
            broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
          }
          throw error;
        }
      } finally {
        client.release(broken ?? false);
      }
    },
  };
}

function pgClientConnection(client: pg.PoolClient): Connection {
  return {
    async query(sql, params) {
      return (await client.query(sql, params)).rows;
    },
    async exec(script) {
      await client.query(script);
    },
  };
}

/** Runs `fn` with a runner bound to an open transaction, and retires that runner once `fn` settles. */
async function withinTransaction<T>(connection: Connection, fn: (tx: SqlRunner) => Promise<T>): Promise<T> {
  let finished = false;
  let savepoints = 0;
  const live = (): Connection => {
    if (finished) throw new Error("SqlRunner: this transaction has already finished");
    return connection;
  };
  const tx: SqlRunner = {
    async query<R>(sql: string, params?: unknown[]) {
      return (await live().query(sql, params)) as R[];
    },
    async exec(script: string) {
      await live().exec(script);
    },
    async transaction<R>(inner: (tx: SqlRunner) => Promise<R>) {
      savepoints += 1;
      const name = `deputy_savepoint_${savepoints}`;
      await live().exec(`SAVEPOINT ${name}`);
      let result: R;
      try {
        result = await inner(tx);
      } catch (error) {
        await live().exec(`ROLLBACK TO SAVEPOINT ${name}`);
        throw error;
      }
      await live().exec(`RELEASE SAVEPOINT ${name}`);
      return result;
    },
  };
  try {
    return await fn(tx);
  } finally {
    finished = true;
  }
}
