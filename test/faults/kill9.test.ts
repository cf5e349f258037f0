// No token reaches a client before its issuance is durable. A real server process is killed with SIGKILL while a
// few hundred token exchanges are in flight, on each database; afterwards every token any client received must
// have its lineage row and its audit event, and the hash chain must verify. Then the server starts again on the
// same data (taking over the embedded database's lock the killed process left) and the chain carries on. Every
// process started here is killed in afterAll.
import { afterAll, describe, expect, it } from "vitest";
import { BACKENDS, prepareEnvironment } from "../helpers/server.ts";
import {
  checkTrail,
  exchangeOnce,
  killStarted,
  runExchangeLoad,
  seedExchangeFixture,
  startHealthy,
  stopServer,
} from "../helpers/server-process.ts";

const CONCURRENCY = 300;
const TOKENS_BEFORE_KILL = 300;
const LOAD_LIMIT_MS = 60_000;
const TEST_TIMEOUT_MS = 240_000;

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  await killStarted();
  for (const cleanup of cleanups) await cleanup();
});

describe.each(BACKENDS)("kill -9 under an exchange load on %s", (backend) => {
  it(
    "leaves no token a client received without its lineage and audit event, and serves again on the same data",
    async () => {
      const prepared = await prepareEnvironment(backend, { LOG_LEVEL: "warn" });
      cleanups.push(prepared.cleanup);
      const env: Record<string, string> = { ...prepared.env, ISSUER: prepared.url };
      const fixture = await seedExchangeFixture(env);
      const server = await startHealthy(env);

      const load = runExchangeLoad(server.url, fixture, { concurrency: CONCURRENCY, stopOnFailure: true });
      const started = Date.now();
      while (load.received.length < TOKENS_BEFORE_KILL && Date.now() - started < LOAD_LIMIT_MS)
        await new Promise((resolve) => setTimeout(resolve, 20));
      server.child.kill("SIGKILL");
      await server.exited;
      await load.stop();

      const figures = { sent: load.sent.exchanges, received: load.received.length, errors: load.errors };
      expect(load.received.length, JSON.stringify(figures)).toBeGreaterThanOrEqual(TOKENS_BEFORE_KILL);
      // Only the requests in flight when the process died failed, and some were.
      expect(Object.keys(load.errors), JSON.stringify(figures)).toEqual(["connection failed"]);

      const trail = await checkTrail(env, prepared.dataDir, load.received);
      console.info(
        `kill9 ${backend}:`,
        JSON.stringify({
          ...figures,
          checked: trail.checked,
          missingLineage: trail.missingLineage.length,
          missingAudit: trail.missingAudit.length,
        }),
      );
      expect(trail.missingLineage).toEqual([]);
      expect(trail.missingAudit).toEqual([]);
      expect(trail.report.ok, JSON.stringify(trail.report.first_bad)).toBe(true);

      // The same data serves again, and the chain carries on from where the killed process left it.
      const again = await startHealthy(env);
      const after = await exchangeOnce(again.url, fixture);
      expect(after.status, JSON.stringify(after.body)).toBe(200);
      expect((await stopServer(again)).code).toBe(0);
      const reopened = await checkTrail(env, prepared.dataDir, [
        ...load.received,
        String(after.body?.access_token),
      ]);
      expect(reopened.missingAudit).toEqual([]);
      expect(reopened.report.ok, JSON.stringify(reopened.report.first_bad)).toBe(true);
      expect(reopened.report.checked.events).toBeGreaterThan(load.received.length);
    },
    TEST_TIMEOUT_MS,
  );
});
