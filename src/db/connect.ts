// Opens the database: embedded PGlite under the data directory by default, PostgreSQL when DATABASE_URL is set.
// Pending migrations are applied before Prisma is handed out.
import { mkdirSync } from "node:fs";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PrismaPg } from "@prisma/adapter-pg";
import pg from "pg";
import { PrismaPGlite } from "pglite-prisma-adapter";
import { PrismaClient } from "../generated/prisma/client.ts";
import { lockEmbeddedDatabase } from "./embedded-lock.ts";
import { applyPendingMigrations } from "./migrate.ts";
import { pgliteRunner, pgPoolRunner, type SqlRunner } from "./sql-runner.ts";

/** How long a request waits for a PostgreSQL connection (a new one, or a free one of the pool's). */
const CONNECT_TIMEOUT_MS = 10_000;

export interface Database {
  kind: "pglite" | "postgresql";
  prisma: PrismaClient;
  sql: SqlRunner;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  databaseUrl?: string;
  dataDir: string;
  log?: (msg: string, fields?: object) => void;
  /** Told when PostgreSQL drops an idle connection (a restart, a failover, an administrator). */
  warn?: (msg: string, fields?: object) => void;
}

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.databaseUrl) return openPostgres(options.databaseUrl, options);
  return openPglite(options.dataDir, options.log);
}

async function openPostgres(url: string, { log, warn }: DatabaseOptions): Promise<Database> {
  // A database that cannot be reached fails a request within CONNECT_TIMEOUT_MS rather than holding it (and group
  // commit behind it) until TCP gives up; keepalive notices a connection whose peer vanished without a word.
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
  // pg.Pool re-emits the error of a connection that dies while idle; unheard, it would end the process. The
  // pool has already dropped that connection, and the next query opens a new one.
  pool.on("error", (error) =>
    warn?.("database connection lost; it will be reopened", { error: error.message }),
  );
  // A connection that dies while checked out (a transaction between two statements, or in one) emits its error
  // on the client, where pg.Pool listens only while the client is idle: unheard, it would end the process. The
  // statement in flight, or the next one, fails instead, and the pool drops the client when it is released.
  const lostInUse = (error: Error) =>
    warn?.("database connection lost while in use; its request fails", { error: error.message });
  pool.on("acquire", (client) => client.on("error", lostInUse));
  pool.on("release", (_error, client) => client.removeListener("error", lostInUse));
  const sql = pgPoolRunner(pool);
  try {
    await applyPendingMigrations(sql, { log });
  } catch (error) {
    await pool.end();
    throw error;
  }
  const prisma = new PrismaClient({ adapter: new PrismaPg(pool) });
  return {
    kind: "postgresql",
    prisma,
    sql,
    async close() {
      await prisma.$disconnect();
      await pool.end().catch(() => {});
    },
  };
}

async function openPglite(dataDir: string, log?: DatabaseOptions["log"]): Promise<Database> {
  // Before anything is opened: a second process on these files would fork the data (embedded-lock.ts).
  const lock = await lockEmbeddedDatabase(dataDir);
  let db: PGlite | undefined;
  try {
    const dir = path.join(dataDir, "pgdata");
    mkdirSync(dir, { recursive: true });
    db = new PGlite(dir);
    await db.waitReady;
    const sql = pgliteRunner(db);
    await applyPendingMigrations(sql, { log });
    const pglite = db;
    const prisma = new PrismaClient({ adapter: new PrismaPGlite(pglite) });
    return {
      kind: "pglite",
      prisma,
      sql,
      async close() {
        await prisma.$disconnect();
        await pglite.close();
        lock.release();
      },
    };
  } catch (error) {
    try {
      await db?.close();
    } finally {
      lock.release();
    }
    throw error;
  }
}
