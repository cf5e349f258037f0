// Applies prisma/migrations/<name>/migration.sql files without the Prisma CLI (which needs a native engine
// this deployment does not ship). Bookkeeping is the `_prisma_migrations` table exactly as
// `prisma migrate deploy` keeps it, so `prisma migrate status` / `deploy` keep working wherever the CLI is
// available.
import { createHash, randomUUID } from "node:crypto";
import { type Dirent, existsSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { SqlRunner } from "./sql-runner.ts";

export interface MigrateOptions {
  /** Directory holding `<name>/migration.sql` folders. Defaults to `prisma/migrations` in the package root. */
  migrationsDir?: string;
  log?: (msg: string, fields?: object) => void;
}

export interface MigrationFile {
  name: string;
  sql: string;
  /** Lowercase hex SHA-256 of the file's bytes, as Prisma records it. */
  checksum: string;
}

/** A migration whose SQL failed. Its transaction was rolled back: nothing of it is applied or recorded. */
export class MigrationError extends Error {
  readonly migrationName: string;

  constructor(migrationName: string, databaseMessage: string, options?: ErrorOptions) {
    super(`Migration "${migrationName}" failed and was rolled back: ${databaseMessage}`, options);
    this.name = "MigrationError";
    this.migrationName = migrationName;
  }
}

/** The table as the Prisma schema engine creates it for PostgreSQL (verbatim column list). */
export const PRISMA_MIGRATIONS_TABLE_DDL = `CREATE TABLE _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
);`;

/**
 * The advisory lock key the Prisma schema engine takes (`pg_advisory_lock(72707369)`) around migrations.
 * Taking the same key serializes this runner with other Deputy processes and with `prisma migrate deploy`.
 */
const MIGRATION_LOCK_KEY = 72707369;

interface MigrationRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | string | null;
  rolled_back_at: Date | string | null;
  started_at: Date | string;
}

export function defaultMigrationsDir(): string {
  // Walk up from this file to the package root, so the answer does not depend on the working directory.
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, "package.json"))) return path.join(dir, "prisma", "migrations");
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error("Cannot locate the package root (no package.json above src/db)");
    dir = parent;
  }
}

export function migrationChecksum(bytes: Buffer | string): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/**
 * Whether `sql` matches a recorded checksum. Like Prisma, tolerate a file whose line endings were converted
 * (git autocrlf) after it was applied.
 */
function matchesChecksum(sql: string, recorded: string): boolean {
  const candidates = [
    sql,
    sql.replaceAll("\r\n", "\n"),
    sql.replaceAll("\r\n", "\n").replaceAll("\n", "\r\n"),
  ];
  return candidates.some((text) => migrationChecksum(text) === recorded);
}

/** Reads every migration folder, in name order. Every folder must contain a migration.sql. */
export async function readMigrations(
  migrationsDir: string = defaultMigrationsDir(),
): Promise<MigrationFile[]> {
  let entries: Dirent[];
  try {
    entries = await readdir(migrationsDir, { withFileTypes: true });
  } catch (error) {
    throw new Error(`Cannot read the migrations directory ${migrationsDir}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
  const names = entries
    .filter((entry) => entry.isDirectory())
    .map((entry) => entry.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const migrations: MigrationFile[] = [];
  for (const name of names) {
    const file = path.join(migrationsDir, name, "migration.sql");
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch (error) {
      throw new Error(
        `Migration folder "${name}" has no readable migration.sql (${file}): ${errorMessage(error)}`,
        {
          cause: error,
        },
      );
    }
    migrations.push({ name, sql: bytes.toString("utf8"), checksum: migrationChecksum(bytes) });
  }
  return migrations;
}

/**
 * Applies every migration folder not yet recorded in `_prisma_migrations`, in name order, each in its own
 * transaction (SQL and bookkeeping row commit together or not at all). Returns the names applied.
 *
 * Refuses (throws before applying anything) when the history is not trustworthy: a recorded migration whose
 * file changed since, or a failed migration left behind by `prisma migrate deploy`.
 */
export async function applyPendingMigrations(
  runner: SqlRunner,
  options: MigrateOptions = {},
): Promise<string[]> {
  const migrationsDir = options.migrationsDir ?? defaultMigrationsDir();
  const log = options.log ?? (() => {});
  const migrations = await readMigrations(migrationsDir);
  const applied: string[] = [];
  let warned = false;

  // One transaction per migration. Each takes the lock first and re-reads the history, so a concurrent
  // process that got there first is seen and its work is not repeated.
  for (;;) {
    const next = await runner.transaction(async (tx) => {
      await tx.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK_KEY]);
      const exists = await tx.query<{ present: boolean }>(
        "SELECT to_regclass('_prisma_migrations') IS NOT NULL AS present",
      );
      if (!exists[0]?.present) await tx.exec(PRISMA_MIGRATIONS_TABLE_DDL);
      const rows = await tx.query<MigrationRow>(
        `SELECT migration_name, checksum, finished_at, rolled_back_at, started_at
           FROM _prisma_migrations ORDER BY started_at ASC`,
      );
      const { pending, unknown } = planMigrations(migrations, rows, migrationsDir);
      if (unknown.length > 0 && !warned) {
        warned = true;
        log("database has applied migrations that are not in the migrations directory", {
          migrations: unknown,
          migrationsDir,
        });
      }
      const migration = pending[0];
      if (!migration) return undefined;
      if (applied.includes(migration.name)) {
        throw new Error(
          `Migration "${migration.name}" was applied but is not recorded in _prisma_migrations`,
        );
      }

      const started = Date.now();
      log("applying migration", { migration: migration.name });
      const id = randomUUID();
      await tx.query(
        `INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, applied_steps_count)
         VALUES ($1, $2, $3, clock_timestamp(), 0)`,
        [id, migration.checksum, migration.name],
      );
      try {
        await tx.exec(migration.sql);
      } catch (error) {
        throw new MigrationError(migration.name, describeDatabaseError(error), { cause: error });
      }
      await tx.query(
        `UPDATE _prisma_migrations
            SET finished_at = clock_timestamp(), applied_steps_count = applied_steps_count + 1
          WHERE id = $1`,
        [id],
      );
      log("applied migration", { migration: migration.name, ms: Date.now() - started });
      return migration.name;
    });
    if (next === undefined) return applied;
    applied.push(next);
  }
}

/** Compares the directory with the recorded history; throws on edited or failed migrations. */
function planMigrations(
  migrations: MigrationFile[],
  rows: MigrationRow[],
  migrationsDir: string,
): { pending: MigrationFile[]; unknown: string[] } {
  const problems: string[] = [];
  const failed = rows.filter((row) => row.finished_at === null && row.rolled_back_at === null);
  for (const row of failed) {
    problems.push(
      `Migration "${row.migration_name}" is recorded as failed (started ${formatTime(row.started_at)}, never ` +
        "finished nor rolled back). Repair the database by hand, then mark it resolved with " +
        `\`prisma migrate resolve --rolled-back ${row.migration_name}\` (or \`--applied\`), ` +
        "or set its rolled_back_at in _prisma_migrations.",
    );
  }

  const successful = rows.filter((row) => row.finished_at !== null && row.rolled_back_at === null);
  const byName = new Map(migrations.map((migration) => [migration.name, migration]));
  const done = new Set<string>();
  for (const row of successful) {
    done.add(row.migration_name);
    const file = byName.get(row.migration_name);
    if (file && !matchesChecksum(file.sql, row.checksum)) {
      problems.push(
        `Migration "${row.migration_name}" was modified after it was applied: the database recorded checksum ` +
          `${row.checksum}, ${path.join(migrationsDir, row.migration_name, "migration.sql")} now has ` +
          `${file.checksum}. Restore the original file and put the change in a new migration.`,
      );
    }
  }

  if (problems.length > 0) {
    throw new Error(`Refusing to migrate the database:\n- ${problems.join("\n- ")}`);
  }
  return {
    pending: migrations.filter((migration) => !done.has(migration.name)),
    unknown: [...done].filter((name) => !byName.has(name)),
  };
}

function describeDatabaseError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const details = error as Error & { detail?: unknown; hint?: unknown; position?: unknown };
  let message = error.message;
  if (typeof details.detail === "string" && details.detail) message += ` (detail: ${details.detail})`;
  if (typeof details.hint === "string" && details.hint) message += ` (hint: ${details.hint})`;
  return message;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function formatTime(value: Date | string): string {
  return value instanceof Date ? value.toISOString() : String(value);
}
