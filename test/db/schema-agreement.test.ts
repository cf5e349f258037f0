// schema.prisma and prisma/migrations must describe the same database: a schema change without its migration
// (run `npm run db:migration -- <name>`) fails here.
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultMigrationsDir } from "../../src/db/migrate.ts";
import { openSchemaDiffer, type SchemaDiffer } from "../../src/db/schema-diff.ts";

const migrationsDir = defaultMigrationsDir();
const schemaPath = path.join(path.dirname(migrationsDir), "schema.prisma");

describe("schema.prisma and prisma/migrations", () => {
  let differ: SchemaDiffer;

  beforeAll(async () => {
    // One in-memory PGlite with every migration applied, shared by the diffs below.
    differ = await openSchemaDiffer({ migrationsDir, schemaPath });
  }, 120_000);

  afterAll(async () => {
    await differ?.close();
  });

  it("agree: the diff from the migrated database to the schema is empty", async () => {
    const sql = await differ.diff();
    expect(sql, `schema.prisma has changes no migration covers:\n${sql}`).toBe("");
  });

  it("would disagree if the schema gained a model (the check can fail)", async () => {
    const schema = `${readFileSync(schemaPath, "utf8")}\nmodel AgreementProbe {\n  id Int @id\n  note String\n}\n`;
    const sql = await differ.diff(schema);
    expect(sql).toContain('CREATE TABLE "AgreementProbe"');
  });

  it("would disagree if the schema dropped a column", async () => {
    const original = readFileSync(schemaPath, "utf8");
    const schema = original.replace(/^\s*blastRadius\s.*$/m, "");
    expect(schema).not.toBe(original);
    const sql = await differ.diff(schema);
    expect(sql).toMatch(/ALTER TABLE "agents" DROP COLUMN "blast_radius"/);
  });

  it("keeps the migration lock file Prisma expects", () => {
    const lock = readFileSync(path.join(migrationsDir, "migration_lock.toml"), "utf8");
    expect(lock).toMatch(/^provider = "postgresql"$/m);
  });
});
