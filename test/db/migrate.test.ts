// applyPendingMigrations on both databases Deputy supports: embedded PGlite and real PostgreSQL.
import { createHash, randomBytes } from "node:crypto";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, userInfo } from "node:os";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  applyPendingMigrations,
  defaultMigrationsDir,
  MigrationError,
  readMigrations,
} from "../../src/db/migrate.ts";
import { prismaMigrationDiagnosis } from "../../src/db/schema-diff.ts";
import { pgliteRunner, pgPoolRunner, type SqlRunner } from "../../src/db/sql-runner.ts";

const POSTGRES_URL = "postgresql://127.0.0.1:5432/test";
// Trust auth still needs a role name; pg takes it from $USER, which is not always set.
const POSTGRES_USER = process.env.PGUSER || process.env.USER || userInfo().username;
const migrationsDir = defaultMigrationsDir();
const repoMigrations = await readMigrations(migrationsDir);

interface Backend {
  /** Two runners on the same database (separate connections where the database has them). */
  runners: [SqlRunner, SqlRunner];
  database: PGlite | pg.Pool;
  close(): Promise<void>;
}

async function openPglite(): Promise<Backend> {
  const db = new PGlite();
  await db.waitReady;
  const runner = pgliteRunner(db);
  return { runners: [runner, runner], database: db, close: () => db.close() };
}

async function openPostgres(): Promise<Backend> {
  // Test files run in parallel: each gets a database of its own.
  const name = `deputy_mig_${randomBytes(6).toString("hex")}`;
  const url = new URL(POSTGRES_URL);
  // pg lets an empty user name in a URL override its $USER default, so spell the role out.
  url.username ||= POSTGRES_USER;
  const admin = new pg.Pool({ connectionString: url.href, max: 1 });
  await admin.query(`CREATE DATABASE ${name}`);
  url.pathname = `/${name}`;
  const pools = [1, 2].map(() => new pg.Pool({ connectionString: url.href }));
  return {
    runners: [pgPoolRunner(pools[0] as pg.Pool), pgPoolRunner(pools[1] as pg.Pool)],
    database: pools[0] as pg.Pool,
    async close() {
      await Promise.all(pools.map((pool) => pool.end()));
      try {
        await dropDatabase(admin, name);
      } finally {
        await admin.end();
      }
    },
  };
}

/**
 * pool.end() resolves before the server has seen every session go, and WITH (FORCE) would kill those
 * sessions under a client that no longer listens for errors: retry while the database is still in use.
 */
async function dropDatabase(admin: pg.Pool, name: string): Promise<void> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${name}`);
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== "55006" || attempt >= 50) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

/** A copy of the repository's migrations plus extra folders, in a temporary directory. */
function migrationsWith(extra: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), "deputy-migrations-"));
  cpSync(migrationsDir, dir, { recursive: true });
  for (const [name, sql] of Object.entries(extra)) {
    mkdirSync(path.join(dir, name));
    writeFileSync(path.join(dir, name, "migration.sql"), sql);
  }
  tempDirs.push(dir);
  return dir;
}
const tempDirs: string[] = [];
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

interface MigrationRowShape {
  id: string;
  checksum: string;
  finished_at: Date | null;
  migration_name: string;
  logs: string | null;
  rolled_back_at: Date | null;
  started_at: Date;
  applied_steps_count: number;
}

describe.each([
  { label: "PGlite (in memory)", open: openPglite },
  { label: "PostgreSQL", open: openPostgres },
])("applyPendingMigrations on $label", ({ open }) => {
  let backend: Backend;
  let sql: SqlRunner;

  beforeAll(async () => {
    backend = await open();
    sql = backend.runners[0];
  }, 120_000);

  afterAll(async () => {
    await backend?.close();
  });

  it("applies every migration once, even when two processes start at once", async () => {
    const logged: string[] = [];
    const [first, second] = await Promise.all([
      applyPendingMigrations(backend.runners[0], { migrationsDir, log: (msg) => logged.push(msg) }),
      applyPendingMigrations(backend.runners[1], { migrationsDir, log: (msg) => logged.push(msg) }),
    ]);
    expect([...first, ...second].sort()).toEqual(repoMigrations.map((migration) => migration.name));
    expect(logged).toContain("applied migration");
    const counts = await sql.query<{ n: number }>("SELECT count(*)::int AS n FROM _prisma_migrations");
    expect(counts[0]?.n).toBe(repoMigrations.length);
    const tables = await sql.query<{ people: string | null }>("SELECT to_regclass('people')::text AS people");
    expect(tables[0]?.people).toBe("people");
  }, 60_000);

  it("creates _prisma_migrations with the columns prisma migrate deploy uses", async () => {
    const columns = await sql.query(
      `SELECT column_name, data_type, character_maximum_length AS max_length, is_nullable, column_default
         FROM information_schema.columns
        WHERE table_name = '_prisma_migrations' AND table_schema = current_schema()
        ORDER BY ordinal_position`,
    );
    expect(columns).toEqual([
      {
        column_name: "id",
        data_type: "character varying",
        max_length: 36,
        is_nullable: "NO",
        column_default: null,
      },
      {
        column_name: "checksum",
        data_type: "character varying",
        max_length: 64,
        is_nullable: "NO",
        column_default: null,
      },
      {
        column_name: "finished_at",
        data_type: "timestamp with time zone",
        max_length: null,
        is_nullable: "YES",
        column_default: null,
      },
      {
        column_name: "migration_name",
        data_type: "character varying",
        max_length: 255,
        is_nullable: "NO",
        column_default: null,
      },
      { column_name: "logs", data_type: "text", max_length: null, is_nullable: "YES", column_default: null },
      {
        column_name: "rolled_back_at",
        data_type: "timestamp with time zone",
        max_length: null,
        is_nullable: "YES",
        column_default: null,
      },
      {
        column_name: "started_at",
        data_type: "timestamp with time zone",
        max_length: null,
        is_nullable: "NO",
        column_default: "now()",
      },
      {
        column_name: "applied_steps_count",
        data_type: "integer",
        max_length: null,
        is_nullable: "NO",
        column_default: "0",
      },
    ]);
    const primaryKey = await sql.query<{ conname: string }>(
      "SELECT conname FROM pg_constraint WHERE conrelid = '_prisma_migrations'::regclass AND contype = 'p'",
    );
    expect(primaryKey.map((row) => row.conname)).toEqual(["_prisma_migrations_pkey"]);
  });

  it("records each migration as Prisma does", async () => {
    const rows = await sql.query<MigrationRowShape>(
      "SELECT * FROM _prisma_migrations ORDER BY migration_name",
    );
    expect(rows).toHaveLength(repoMigrations.length);
    for (const [index, row] of rows.entries()) {
      const file = path.join(migrationsDir, row.migration_name, "migration.sql");
      expect(row.migration_name).toBe(repoMigrations[index]?.name);
      expect(row.checksum).toBe(sha256(readFileSync(file, "utf8")));
      expect(row.checksum).toMatch(/^[0-9a-f]{64}$/);
      expect(row.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(row.applied_steps_count).toBe(1);
      expect(row.logs).toBeNull();
      expect(row.rolled_back_at).toBeNull();
      expect(row.started_at).toBeInstanceOf(Date);
      expect(row.finished_at).toBeInstanceOf(Date);
      expect((row.finished_at as Date).getTime()).toBeGreaterThanOrEqual(row.started_at.getTime());
    }
  });

  it("does nothing on a second run", async () => {
    expect(await applyPendingMigrations(sql, { migrationsDir })).toEqual([]);
    const counts = await sql.query<{ n: number }>("SELECT count(*)::int AS n FROM _prisma_migrations");
    expect(counts[0]?.n).toBe(repoMigrations.length);
  });

  it("leaves a history the Prisma schema engine itself accepts", async () => {
    const diagnosis = await prismaMigrationDiagnosis(backend.database, { migrationsDir });
    expect(diagnosis).toMatchObject({
      hasMigrationsTable: true,
      editedMigrationNames: [],
      failedMigrationNames: [],
      history: null,
    });
  }, 60_000);

  it("refuses to start when an applied migration's file has changed", async () => {
    const name = repoMigrations[0]?.name as string;
    await sql.query("UPDATE _prisma_migrations SET checksum = $1 WHERE migration_name = $2", [
      "0".repeat(64),
      name,
    ]);
    try {
      await expect(applyPendingMigrations(sql, { migrationsDir })).rejects.toThrow(
        new RegExp(`Migration "${name}" was modified after it was applied`),
      );
      // Prisma's own engine draws the same conclusion.
      const diagnosis = await prismaMigrationDiagnosis(backend.database, { migrationsDir });
      expect(diagnosis.editedMigrationNames).toEqual([name]);
    } finally {
      await sql.query("UPDATE _prisma_migrations SET checksum = $1 WHERE migration_name = $2", [
        repoMigrations[0]?.checksum,
        name,
      ]);
    }
    expect(await applyPendingMigrations(sql, { migrationsDir })).toEqual([]);
  });

  it("refuses to start when a failed migration is recorded", async () => {
    await sql.query(
      `INSERT INTO _prisma_migrations (id, checksum, migration_name, started_at, applied_steps_count)
       VALUES ('00000000-0000-4000-8000-000000000000', $1, '29990101000000_half_done', now(), 0)`,
      ["f".repeat(64)],
    );
    try {
      await expect(applyPendingMigrations(sql, { migrationsDir })).rejects.toThrow(
        /Migration "29990101000000_half_done" is recorded as failed/,
      );
    } finally {
      await sql.query("DELETE FROM _prisma_migrations WHERE migration_name = '29990101000000_half_done'");
    }
  });

  it("throws on a failing migration, rolls it back and does not record it", async () => {
    const dir = migrationsWith({
      "29990101000000_good": "CREATE TABLE migrate_probe_good (id integer PRIMARY KEY);\n",
      // The first statement succeeds, the second fails: the whole migration must roll back.
      "29990102000000_broken":
        "CREATE TABLE migrate_probe_partial (id integer);\nINSERT INTO migrate_probe_missing VALUES (1);\n",
      "29990103000000_after": "CREATE TABLE migrate_probe_after (id integer);\n",
    });
    const error = await applyPendingMigrations(sql, { migrationsDir: dir }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(MigrationError);
    expect((error as MigrationError).migrationName).toBe("29990102000000_broken");
    expect((error as Error).message).toMatch(/29990102000000_broken/);
    expect((error as Error).message).toMatch(/relation "migrate_probe_missing" does not exist/);

    const recorded = await sql.query<{ migration_name: string }>(
      "SELECT migration_name FROM _prisma_migrations WHERE migration_name LIKE '2999%' ORDER BY migration_name",
    );
    expect(recorded.map((row) => row.migration_name)).toEqual(["29990101000000_good"]);
    const tables = await sql.query<Record<string, string | null>>(
      `SELECT to_regclass('migrate_probe_good')::text AS good, to_regclass('migrate_probe_partial')::text AS partial,
              to_regclass('migrate_probe_after')::text AS after`,
    );
    expect(tables[0]).toEqual({ good: "migrate_probe_good", partial: null, after: null });

    // Once fixed, the same run picks up where it stopped.
    writeFileSync(
      path.join(dir, "29990102000000_broken", "migration.sql"),
      "CREATE TABLE migrate_probe_partial (id integer);\n",
    );
    expect(await applyPendingMigrations(sql, { migrationsDir: dir })).toEqual([
      "29990102000000_broken",
      "29990103000000_after",
    ]);
  });
});
