// The server's PostgreSQL connections can be cut from the outside (a restart, a failover, an administrator's
// pg_terminate_backend). Deputy must log it and carry on with new connections, never end the process.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Database, openDatabase } from "../../src/db/connect.ts";
import { databaseOutage } from "../../src/http/unavailable.ts";
import { createPostgresDatabase, POSTGRES_ADMIN_URL } from "../helpers/server.ts";

describe("PostgreSQL connections cut by the server", () => {
  let database: { url: string; drop(): Promise<void> };
  let db: Database;
  const warnings: string[] = [];

  beforeAll(async () => {
    database = await createPostgresDatabase();
    db = await openDatabase({
      databaseUrl: database.url,
      dataDir: "unused",
      warn: (msg) => warnings.push(msg),
    });
  }, 60_000);
  afterAll(async () => {
    await db?.close();
    await database?.drop();
  });

  it("logs the lost idle connections and answers the next query on new ones", async () => {
    // Several idle connections in the pool, then every one of them terminated by the server.
    await Promise.all(Array.from({ length: 3 }, () => db.sql.query("SELECT pg_sleep(0.05)")));
    const name = new URL(database.url).pathname.slice(1);
    const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
    await admin.connect();
    const [{ n }] = (
      await admin.query(
        "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = $1",
        [name],
      )
    ).rows;
    await admin.end();
    expect(n).toBeGreaterThan(0);

    for (let i = 0; i < 50 && warnings.length < n; i++) await sleep(20);
    expect(warnings.length).toBe(n);
    expect(warnings[0]).toMatch(/connection lost/);
    expect(await db.sql.query("SELECT 1 AS one")).toEqual([{ one: 1 }]);
    expect(await db.prisma.person.count()).toBe(0);
  });

  // A transaction holds its connection between statements; cut there, the connection's error arrives while no
  // statement is running. The transaction fails with an error that reads as an outage; the process lives on.
  it.each([
    [
      "the SQL runner (group commit)",
      (work: (pid: () => Promise<number>) => Promise<void>) =>
        db.sql.transaction((tx) =>
          work(async () => (await tx.query<{ pid: number }>("SELECT pg_backend_pid() AS pid"))[0]?.pid ?? 0),
        ),
    ],
    [
      "Prisma",
      (work: (pid: () => Promise<number>) => Promise<void>) =>
        db.prisma.$transaction(async (tx) =>
          work(
            async () => (await tx.$queryRaw<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`)[0]?.pid ?? 0,
          ),
        ),
    ],
  ])(
    "fails a transaction on %s whose connection is cut between statements; the next one works",
    async (_, run) => {
      warnings.length = 0;
      const outcome = await run(async (pid) => {
        const own = await pid();
        await terminate(`pid = ${Number(own)}`);
        // The connection's error event has arrived, with no statement running on it.
        await sleep(200);
        await pid();
      }).then(
        () => "committed",
        (error: unknown) => error,
      );
      expect(databaseOutage(outcome), String(outcome)).toBeTruthy();
      expect(warnings).toContain("database connection lost while in use; its request fails");
      expect(await db.sql.transaction((tx) => tx.query("SELECT 1 AS one"))).toEqual([{ one: 1 }]);
      expect(await db.prisma.$transaction((tx) => tx.person.count())).toBe(0);
    },
  );
});

async function terminate(where: string): Promise<number> {
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await admin.connect();
  try {
    const { rows } = await admin.query(
      `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE ${where}`,
    );
    return rows[0].n;
  } finally {
    await admin.end();
  }
}
