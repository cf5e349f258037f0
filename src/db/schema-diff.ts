// Offline migration authoring: the Prisma schema engine compiled to WebAssembly, driven through the PGlite
// driver adapter. A fresh in-memory PGlite with every migration applied (by our own runner) stands for "the
// database the migrations produce"; diffing it against schema.prisma yields the SQL of the next migration,
// and an empty diff proves schema and migrations agree.
import { existsSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PrismaPg } from "@prisma/adapter-pg";
import type { DiagnoseMigrationHistoryOutput, SchemaEngine } from "@prisma/schema-engine-wasm";
import type pg from "pg";
import { PrismaPGlite } from "pglite-prisma-adapter";
import { applyPendingMigrations, defaultMigrationsDir, readMigrations } from "./migrate.ts";
import { pgliteRunner } from "./sql-runner.ts";

export interface SchemaDiffOptions {
  /** Directory of migration folders. Defaults to prisma/migrations in the package root. */
  migrationsDir?: string;
  /** Schema file. Defaults to prisma/schema.prisma next to the migrations directory. */
  schemaPath?: string;
  /** Schema text to diff instead of the file's content (tests use it to diff a modified schema). */
  schema?: string;
  /** Receives the engine's log lines (JSON strings). */
  log?: (line: string) => void;
}

/** A migrated in-memory database that can be diffed against several schemas (one PGlite start-up). */
export interface SchemaDiffer {
  /** SQL bringing the migrated database to `schema` (default: the schema file); "" when they agree. */
  diff(schema?: string): Promise<string>;
  close(): Promise<void>;
}

/**
 * The SQL needed to bring a database with every migration applied to the state schema.prisma describes.
 * Empty string when schema and migrations agree.
 */
export async function diffSchemaAgainstMigrations(options: SchemaDiffOptions = {}): Promise<string> {
  const differ = await openSchemaDiffer(options);
  try {
    return await differ.diff(options.schema);
  } finally {
    await differ.close();
  }
}

export async function openSchemaDiffer(options: SchemaDiffOptions = {}): Promise<SchemaDiffer> {
  const migrationsDir = options.migrationsDir ?? defaultMigrationsDir();
  const schemaPath = options.schemaPath ?? defaultSchemaPath(migrationsDir);
  await loadSchemaEngine();
  const db = new PGlite();
  try {
    await db.waitReady;
    await applyPendingMigrations(pgliteRunner(db), { migrationsDir });
  } catch (error) {
    await db.close();
    throw error;
  }
  let closed = false;

  return {
    async diff(schema?: string) {
      if (closed) throw new Error("SchemaDiffer is closed");
      const file = {
        path: path.basename(schemaPath),
        content: schema ?? (await readFile(schemaPath, "utf8")),
      };
      const result = await withEngine(db, file, options.log, (engine) =>
        engine.diff({
          from: { tag: "schemaDatasource", files: [file], configDir: path.dirname(schemaPath) },
          to: { tag: "schemaDatamodel", files: [file] },
          script: true,
          exitCode: null,
          filters: { externalTables: [], externalEnums: [] },
        }),
      );
      const sql = result.stdout ?? "";
      return isEmptyMigration(sql) ? "" : sql;
    },
    async close() {
      if (closed) return;
      closed = true;
      await db.close();
    },
  };
}

/**
 * What the Prisma schema engine itself (the logic behind `prisma migrate status`) makes of a database's
 * `_prisma_migrations` table and the migrations directory. Proves our runner's bookkeeping is the one
 * Prisma expects. Reads only; needs no shadow database.
 */
export async function prismaMigrationDiagnosis(
  db: PGlite | pg.Pool,
  options: { migrationsDir?: string; schemaPath?: string } = {},
): Promise<DiagnoseMigrationHistoryOutput> {
  const migrationsDir = options.migrationsDir ?? defaultMigrationsDir();
  const schemaPath = options.schemaPath ?? defaultSchemaPath(migrationsDir);
  const file = { path: path.basename(schemaPath), content: await readFile(schemaPath, "utf8") };
  const lockPath = path.join(migrationsDir, "migration_lock.toml");
  const migrations = await readMigrations(migrationsDir);
  return withEngine(db, file, undefined, (engine) =>
    engine.diagnoseMigrationHistory({
      migrationsList: {
        baseDir: migrationsDir,
        lockfile: {
          path: "migration_lock.toml",
          content: existsSync(lockPath) ? readFileSync(lockPath, "utf8") : null,
        },
        shadowDbInitScript: "",
        migrationDirectories: migrations.map((migration) => ({
          path: migration.name,
          migrationFile: { path: "migration.sql", content: { tag: "ok", value: migration.sql } },
        })),
      },
      optInToShadowDatabase: false,
      filters: { externalTables: [], externalEnums: [] },
    }),
  );
}

function defaultSchemaPath(migrationsDir: string): string {
  return path.join(path.dirname(migrationsDir), "schema.prisma");
}

/** Runs one engine command against `db`, translating engine errors back into readable ones. */
async function withEngine<T>(
  db: PGlite | pg.Pool,
  schemaFile: { path: string; content: string },
  log: ((line: string) => void) | undefined,
  command: (engine: SchemaEngine) => Promise<T>,
): Promise<T> {
  const engineModule = await loadSchemaEngine();
  // adapter-pg cannot decode Postgres's internal "char" type, so it cannot describe a schema (diff); it
  // can serve commands that only read _prisma_migrations.
  const adapter = bindAdapterFactory(db instanceof PGlite ? new PrismaPGlite(db) : new PrismaPg(db));
  let engine: SchemaEngine | undefined;
  try {
    // The datamodels list must not be empty: the engine panics on an empty one.
    engine = await engineModule.SchemaEngine.new(
      { datamodels: [[schemaFile.path, schemaFile.content]] },
      log ?? (() => {}),
      adapter,
    );
    return await command(engine);
  } catch (error) {
    throw engineError(error, adapter.errorRegistry);
  } finally {
    engine?.free();
  }
}

/** True when a script holds nothing but comments and whitespace ("-- This is an empty migration."). */
export function isEmptyMigration(sql: string): boolean {
  return sql
    .split("\n")
    .map((line) => line.trim())
    .every((line) => line === "" || line.startsWith("--"));
}

// ---------------------------------------------------------------------------------------------------------
// Loading the WebAssembly engine.
//
// The package is built for bundlers (its entry point imports the .wasm file as a module, which Node cannot
// do), so instantiate the module ourselves and hand its exports to the generated JS glue.

type EngineModule = typeof import("@prisma/schema-engine-wasm/schema_engine_bg");

interface PanicRegistry {
  get(): string;
  set_message(message: string): void;
}

declare global {
  // The engine's panic hook reports the panic message here; without it a panic is an opaque crash.
  var PRISMA_WASM_PANIC_REGISTRY: PanicRegistry | undefined;
}

// The project's TypeScript lib settings (ES2023, no DOM) do not declare the WebAssembly global Node provides.
interface WasmApi {
  compile(bytes: Uint8Array): Promise<object>;
  instantiate(module: object, imports: object): Promise<{ exports: Record<string, unknown> }>;
  RuntimeError: new (...args: never[]) => Error;
}
const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

let enginePromise: Promise<EngineModule> | undefined;

function loadSchemaEngine(): Promise<EngineModule> {
  enginePromise ??= (async () => {
    if (!globalThis.PRISMA_WASM_PANIC_REGISTRY) {
      let message = "";
      globalThis.PRISMA_WASM_PANIC_REGISTRY = {
        get: () => message,
        set_message: (value: string) => {
          message = `RuntimeError: ${value}`;
        },
      };
    }
    const glue: EngineModule = await import("@prisma/schema-engine-wasm/schema_engine_bg");
    const gluePath = createRequire(import.meta.url).resolve("@prisma/schema-engine-wasm/schema_engine_bg");
    const wasmPath = path.join(path.dirname(gluePath), "schema_engine_bg.wasm");
    const module = await wasmApi.compile(readFileSync(wasmPath));
    const instance = await wasmApi.instantiate(module, { "./schema_engine_bg.js": glue });
    glue.__wbg_set_wasm(instance.exports);
    (instance.exports.__wbindgen_start as () => void)();
    return glue;
  })();
  enginePromise.catch(() => {
    enginePromise = undefined;
  });
  return enginePromise;
}

function engineError(error: unknown, registry: ErrorRegistry): Error {
  const panic = globalThis.PRISMA_WASM_PANIC_REGISTRY?.get();
  if (error instanceof wasmApi.RuntimeError && panic) {
    return new Error(`Prisma schema engine panicked: ${panic}`, { cause: error });
  }
  // Errors thrown by our JavaScript (the adapter) come back from the engine as "External error id#<n>",
  // an id into the adapter's registry.
  const id = error instanceof Error ? /External error id#(\d+)/.exec(error.message)?.[1] : undefined;
  if (id !== undefined) {
    const original = registry.consume(Number(id));
    if (original instanceof Error) return original;
  }
  if (error instanceof Error) return error;
  const described = error as { message?: unknown; code?: unknown } | undefined;
  if (described && typeof described.message === "string") {
    const code = typeof described.code === "string" ? `${described.code}: ` : "";
    return new Error(`Prisma schema engine: ${code}${described.message}`, { cause: error });
  }
  return new Error(`Prisma schema engine failed: ${String(error)}`);
}

// ---------------------------------------------------------------------------------------------------------
// Driver adapter binding.
//
// The engine expects the "error-capturing" form of a driver adapter: every method resolves to
// { ok: true, value } or { ok: false, error } instead of throwing. @prisma/driver-adapter-utils has this
// binder, but only as a transitive dependency, so this is a small equivalent of it.

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

class ErrorRegistry {
  private readonly errors = new Map<number, unknown>();
  private nextId = 0;

  register(error: unknown): number {
    const id = this.nextId++;
    this.errors.set(id, error);
    return id;
  }

  consume(id: number): unknown {
    const error = this.errors.get(id);
    this.errors.delete(id);
    return error;
  }
}

function capture<A extends unknown[], R>(
  registry: ErrorRegistry,
  fn: (...args: A) => R | Promise<R>,
): (...args: A) => Promise<Outcome<R>> {
  return async (...args) => {
    try {
      return { ok: true, value: await fn(...args) };
    } catch (error) {
      return { ok: false, error: adapterError(registry, error) };
    }
  };
}

function adapterError(registry: ErrorRegistry, error: unknown): unknown {
  // A DriverAdapterError carries a structured database error the engine understands.
  const candidate = error as { name?: unknown; cause?: unknown } | undefined;
  if (candidate?.name === "DriverAdapterError" && typeof candidate.cause === "object") return candidate.cause;
  return { kind: "GenericJs", id: registry.register(error) };
}

// Structural views of the driver adapter interfaces (the adapter package pins its own copy of the types).
type AnyFn = (...args: never[]) => unknown;
interface AdapterLike {
  provider: string;
  adapterName: string;
  queryRaw: AnyFn;
  executeRaw: AnyFn;
  executeScript: AnyFn;
  dispose: AnyFn;
  startTransaction: AnyFn;
  getConnectionInfo?: AnyFn;
}
interface TransactionLike {
  provider: string;
  adapterName: string;
  options: unknown;
  queryRaw: AnyFn;
  executeRaw: AnyFn;
  commit: AnyFn;
  rollback: AnyFn;
  createSavepoint?: AnyFn;
  rollbackToSavepoint?: AnyFn;
  releaseSavepoint?: AnyFn;
}
interface FactoryLike {
  provider: string;
  adapterName: string;
  connect(): Promise<unknown>;
}

function method<F extends AnyFn>(target: object, fn: F) {
  return fn.bind(target) as unknown as (...args: unknown[]) => unknown;
}

function bindAdapterFactory(factory: FactoryLike) {
  const errorRegistry = new ErrorRegistry();
  const connect = capture(errorRegistry, () => factory.connect());
  return {
    adapterName: factory.adapterName,
    provider: factory.provider,
    errorRegistry,
    async connect() {
      const outcome = await connect();
      return outcome.ok
        ? { ok: true, value: bindAdapter(outcome.value as AdapterLike, errorRegistry) }
        : outcome;
    },
    // Diffing a live database never needs a shadow database; refuse instead of silently creating one.
    connectToShadowDb: capture(errorRegistry, () => {
      throw new Error("Deputy's schema differ does not provide a shadow database");
    }),
  };
}

function bindAdapter(adapter: AdapterLike, errorRegistry: ErrorRegistry) {
  const startTransaction = capture(errorRegistry, method(adapter, adapter.startTransaction));
  const bound: Record<string, unknown> = {
    adapterName: adapter.adapterName,
    provider: adapter.provider,
    queryRaw: capture(errorRegistry, method(adapter, adapter.queryRaw)),
    executeRaw: capture(errorRegistry, method(adapter, adapter.executeRaw)),
    executeScript: capture(errorRegistry, method(adapter, adapter.executeScript)),
    dispose: capture(errorRegistry, method(adapter, adapter.dispose)),
    async startTransaction(...args: unknown[]) {
      const outcome = await startTransaction(...args);
      return outcome.ok
        ? { ok: true, value: bindTransaction(outcome.value as TransactionLike, errorRegistry) }
        : outcome;
    },
  };
  if (adapter.getConnectionInfo) {
    const getConnectionInfo = method(adapter, adapter.getConnectionInfo);
    bound.getConnectionInfo = (...args: unknown[]): Outcome<unknown> => {
      try {
        return { ok: true, value: getConnectionInfo(...args) };
      } catch (error) {
        return { ok: false, error: adapterError(errorRegistry, error) };
      }
    };
  }
  return bound;
}

function bindTransaction(tx: TransactionLike, errorRegistry: ErrorRegistry) {
  const bound: Record<string, unknown> = {
    adapterName: tx.adapterName,
    provider: tx.provider,
    options: tx.options,
    queryRaw: capture(errorRegistry, method(tx, tx.queryRaw)),
    executeRaw: capture(errorRegistry, method(tx, tx.executeRaw)),
    commit: capture(errorRegistry, method(tx, tx.commit)),
    rollback: capture(errorRegistry, method(tx, tx.rollback)),
  };
  for (const name of ["createSavepoint", "rollbackToSavepoint", "releaseSavepoint"] as const) {
    const fn = tx[name];
    if (fn) bound[name] = capture(errorRegistry, method(tx, fn));
  }
  return bound;
}
