// The migration to (resource, scope) pairs keeps what every existing delegation allowed: each of its scopes on
// each of its resources, nothing more, nothing less; on PGlite and PostgreSQL.
import { randomUUID } from "node:crypto";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { applyPendingMigrations, defaultMigrationsDir, readMigrations } from "../../src/db/migrate.ts";
import { pgliteRunner, pgPoolRunner, type SqlRunner } from "../../src/db/sql-runner.ts";
import { createPostgresDatabase } from "../helpers/server.ts";

const MIGRATION = "20261201220809_delegation_scopes";
const migrationsDir = defaultMigrationsDir();

/** The repository's migrations up to (not including) the one under test, in a temporary directory. */
async function migrationsBefore(): Promise<string> {
  const dir = mkdtempSync(path.join(tmpdir(), "deputy-migrations-before-"));
  for (const { name } of await readMigrations(migrationsDir)) {
    if (name >= MIGRATION) continue;
    cpSync(path.join(migrationsDir, name), path.join(dir, name), { recursive: true });
  }
  cpSync(path.join(migrationsDir, "migration_lock.toml"), path.join(dir, "migration_lock.toml"));
  return dir;
}

async function openPglite() {
  const db = new PGlite();
  await db.waitReady;
  return { sql: pgliteRunner(db), close: () => db.close() };
}

async function openPostgres() {
  const database = await createPostgresDatabase();
  const pool = new pg.Pool({ connectionString: database.url, max: 2 });
  return {
    sql: pgPoolRunner(pool),
    async close() {
      await pool.end();
      await database.drop();
    },
  };
}

const MAIL = "https://mail.example.com";
const OUTBOX = "https://outbox.example.com";

describe.each([
  { label: "PGlite", open: openPglite },
  { label: "PostgreSQL", open: openPostgres },
])("the delegation_scopes migration on $label", ({ open }) => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  it("turns every delegation's scopes × resources into its pairs, and drops the two lists", async () => {
    const before = await migrationsBefore();
    cleanups.push(() => rmSync(before, { recursive: true, force: true }));
    const db = await open();
    cleanups.push(db.close);
    const sql: SqlRunner = db.sql;
    await applyPendingMigrations(sql, { migrationsDir: before });

    const person = randomUUID();
    const agent = randomUUID();
    await sql.exec(
      `INSERT INTO people (id, email, name, password_hash, updated_at)
       VALUES ('${person}', 'ada@example.com', 'Ada', 'x', now());
       INSERT INTO agents (id, client_id, name, owner_id, purpose, auth_method, updated_at, review_due_at)
       VALUES ('${agent}', 'agt_1', 'Agent', '${person}', 'testing', 'client_secret', now(), now());`,
    );
    const rows: [string, string[] | null, string[] | null, string][] = [
      // Two resources, two scopes: four pairs, as the old exchange allowed (each scope on each resource).
      [randomUUID(), ["mail.send", "mail.read"], [MAIL, OUTBOX], "active"],
      // Repeated entries make one pair.
      [randomUUID(), ["mail.read", "mail.read"], [MAIL, MAIL], "active"],
      // An ended delegation keeps its history.
      [randomUUID(), ["mail.send"], [OUTBOX], "revoked"],
      // Nothing to pair: no resource, or no scope (NULL lists, as the column allowed).
      [randomUUID(), ["mail.send"], [], "active"],
      [randomUUID(), null, [MAIL], "active"],
    ];
    const array = (values: string[] | null) =>
      values === null ? "NULL" : `ARRAY[${values.map((v) => `'${v}'`).join(",")}]::text[]`;
    for (const [id, scopes, resources, status] of rows) {
      await sql.exec(
        `INSERT INTO delegations (id, person_id, agent_id, scopes, resources, ends_at, max_depth, status)
         VALUES ('${id}', '${person}', '${agent}', ${array(scopes)}, ${array(resources)},
                 now() + interval '1 hour', 1, '${status}')`,
      );
    }

    expect(await applyPendingMigrations(sql, { migrationsDir })).toEqual([
      ...(await readMigrations(migrationsDir)).map(({ name }) => name).filter((name) => name >= MIGRATION),
    ]);

    const pairs = await sql.query<{ delegation_id: string; resource: string; scope: string }>(
      `SELECT delegation_id::text, resource, scope FROM delegation_scopes ORDER BY delegation_id, resource, scope`,
    );
    const expected = rows
      .flatMap(([id, scopes, resources]) =>
        [...new Set(resources ?? [])].flatMap((resource) =>
          [...new Set(scopes ?? [])].map((scope) => ({ delegation_id: id, resource, scope })),
        ),
      )
      .sort((a, b) =>
        `${a.delegation_id} ${a.resource} ${a.scope}` < `${b.delegation_id} ${b.resource} ${b.scope}`
          ? -1
          : 1,
      );
    expect(pairs).toEqual(expected);
    expect(pairs).toHaveLength(6);
    const [first, second, third] = rows.map(([id]) => id);
    expect(pairs.filter((pair) => pair.delegation_id === first)).toHaveLength(4);
    expect(pairs.filter((pair) => pair.delegation_id === second)).toEqual([
      { delegation_id: second, resource: MAIL, scope: "mail.read" },
    ]);
    expect(pairs.filter((pair) => pair.delegation_id === third)).toEqual([
      { delegation_id: third, resource: OUTBOX, scope: "mail.send" },
    ]);

    const columns = await sql.query<{ column_name: string }>(
      `SELECT column_name FROM information_schema.columns
       WHERE table_name = 'delegations' AND column_name IN ('scopes', 'resources')`,
    );
    expect(columns).toEqual([]);
    expect((await sql.query<{ n: number }>("SELECT count(*)::int AS n FROM delegations"))[0]?.n).toBe(5);
  }, 120_000);
});
