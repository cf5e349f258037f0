// `deputy worker`: a process that runs only the revocation jobs, against the servers' PostgreSQL (DATABASE_URL)
// and Redis (REDIS_URL, REDIS_PREFIX). Production servers then run with DEPUTY_WORKERS=off. It cannot use the
// embedded database: PGlite belongs to the one server process that opened it.
import { auditArchiveLeftToServers } from "./audit/archive-job.ts";
import { AuditLog } from "./audit/audit-log.ts";
import { GroupCommitWriter } from "./audit/group-commit.ts";
import type { Config } from "./config.ts";
import { type Database, openDatabase } from "./db/connect.ts";
import { createJobs, type Jobs } from "./jobs/jobs.ts";
import type { Logger } from "./logger.ts";
import { connectRedis, type RedisConnection } from "./redis/connect.ts";
import { createInvalidationBus, type InvalidationBus } from "./redis/invalidation-bus.ts";
import { createRevocationRuntime, type RevocationRuntime } from "./revocation/runtime.ts";
import { standaloneAdapters } from "./revocation/token-store.ts";

export class WorkerSetupError extends Error {}

export interface WorkerProcess {
  runtime: RevocationRuntime;
  close(): Promise<void>;
}

export async function startWorkerProcess(config: Config, log: Logger): Promise<WorkerProcess> {
  if (!config.databaseUrl) {
    throw new WorkerSetupError(
      "deputy worker needs DATABASE_URL: the embedded database (PGlite) can only be used by the one server " +
        "process that opened it. Point DATABASE_URL (and REDIS_URL, REDIS_PREFIX) at the PostgreSQL and Redis " +
        "your servers use, or keep DEPUTY_WORKERS=inline on the server.",
    );
  }
  const db: Database = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    log: (msg, fields) => log.info(fields ?? {}, msg),
    warn: (msg, fields) => log.warn(fields ?? {}, msg),
  });
  let redis: RedisConnection | undefined;
  let bus: InvalidationBus | undefined;
  let writer: GroupCommitWriter | undefined;
  let jobs: Jobs | undefined;
  try {
    // Never a private Redis: the worker must share the servers' Redis.
    redis = await connectRedis({ url: config.redisUrl, dataDir: config.dataDir, allowPrivate: false });
    bus = await createInvalidationBus(redis.redis, redis.duplicate(), config.redisPrefix);
    writer = new GroupCommitWriter(db.prisma, db.sql);
    jobs = createJobs(redis, config.redisPrefix, log);
    const runtime = createRevocationRuntime({
      settings: config,
      prisma: db.prisma,
      audit: new AuditLog(writer),
      bus,
      queue: jobs.queue,
      log,
      adapters: standaloneAdapters(redis.redis, config.redisPrefix),
    });
    jobs.handle([...runtime.jobHandlers, auditArchiveLeftToServers]);
    await jobs.startWorkers(config.sweepSeconds);
    const [openBus, openRedis, openWriter, openJobs] = [bus, redis, writer, jobs];
    return {
      runtime,
      async close() {
        await openJobs.close();
        await openWriter.drain();
        await openBus.close();
        await openRedis.close();
        await db.close();
      },
    };
  } catch (error) {
    await jobs?.close().catch(() => undefined);
    await bus?.close().catch(() => undefined);
    await redis?.close().catch(() => undefined);
    await db.close().catch(() => undefined);
    throw error;
  }
}
