// Prepares, once per test run, an already-migrated PGlite data directory that each test server copies
// (creating a fresh PGlite costs seconds; copying a prepared one costs a fraction of that).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import type { TestProject } from "vitest/node";
import { applyPendingMigrations } from "../../src/db/migrate.ts";
import { pgliteRunner } from "../../src/db/sql-runner.ts";

export default async function setup(project: TestProject) {
  const root = mkdtempSync(path.join(tmpdir(), "deputy-template-"));
  const dir = path.join(root, "pgdata");
  const db = new PGlite(dir);
  await db.waitReady;
  await applyPendingMigrations(pgliteRunner(db));
  await db.close();
  project.provide("pgliteTemplate", dir);
  return () => rmSync(root, { recursive: true, force: true });
}

declare module "vitest" {
  export interface ProvidedContext {
    pgliteTemplate: string;
  }
}
