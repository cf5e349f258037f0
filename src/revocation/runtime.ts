// Wires revocation together for one process: the service, task completion, the job queue, the sweep and (when
// this process runs them) the workers. The server builds it in app.ts; `deputy worker` builds it in
// src/jobs/worker-process.ts without oidc-provider (it reaches Redis through the same storage adapter).
import { setTimeout as sleep } from "node:timers/promises";
import type { Redis } from "ioredis";
import type Provider from "oidc-provider";
import { AUDIT_ARCHIVE_EVERY_SECONDS, archiveAuditEvents } from "../audit/audit-archive.ts";
import type { AuditLog } from "../audit/audit-log.ts";
import type { Config } from "../config.ts";
import type { DelegationStore } from "../delegation/delegations.ts";
import type { InvalidationBus } from "../events/invalidation-bus.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { RevocationJobs } from "../jobs/queue.ts";
import { type RunningWorker, startRevocationWorker } from "../jobs/worker.ts";
import type { Logger } from "../logger.ts";
import type { RedisConnection } from "../redis/connect.ts";
import { RevocationService } from "./revocations.ts";
import { registerRevocationCascade } from "./rfc7009.ts";
import { type PersonAuthenticator, taskRoutes } from "./routes.ts";
import { Sweeper } from "./sweep.ts";
import { TaskService } from "./tasks.ts";
import { createTokenStore, type TokenAdapters, type TokenStore } from "./token-store.ts";

export interface RevocationRuntimeOptions {
  config: Config;
  prisma: PrismaClient;
  audit: AuditLog;
  bus: InvalidationBus;
  redis: RedisConnection;
  log: Logger;
  /** oidc-provider's storage adapters for access tokens and grants. */
  adapters: TokenAdapters;
  /** In the server: new delegations get their task-end job, and /token/revocation cascades. */
  delegations?: DelegationStore;
  provider?: Provider;
}

export interface RevocationRuntime {
  revocations: RevocationService;
  tasks: TaskService;
  jobs: RevocationJobs;
  sweeper: Sweeper;
  tokens: TokenStore;
  /** POST /tasks/{task_id}/complete (the server mounts it). */
  routes(options?: { authenticatePerson?: PersonAuthenticator }): ReturnType<typeof taskRoutes>;
  /** Starts this process's workers (the server does unless DEPUTY_WORKERS=off). */
  startWorkers(): Promise<void>;
  close(): Promise<void>;
}

const CLOSE_GRACE_MS = 3_000;

export function createRevocationRuntime(options: RevocationRuntimeOptions): RevocationRuntime {
  const { config, prisma, audit, bus, redis, log, delegations, provider } = options;
  // The queue's own connection: commands fail fast (2 retries) rather than hang a request when Redis is away.
  const queueConnection = redis.redis.duplicate({ maxRetriesPerRequest: 2, lazyConnect: false });
  const jobs = new RevocationJobs(queueConnection, config.redisPrefix, log);
  const tokens = createTokenStore(options.adapters);
  const revocations = new RevocationService({ prisma, audit, bus, tokens, jobs, log });
  const sweeper = new Sweeper({
    prisma,
    audit,
    revocations,
    tokens,
    jobs,
    bus,
    log,
    sweepSeconds: config.sweepSeconds,
    maxDelegationSeconds: config.maxDelegationSeconds,
  });
  const tasks = new TaskService(prisma, revocations);
  delegations?.onCreated((delegation) => jobs.scheduleTaskEnd(delegation.id, delegation.endsAt));
  if (provider) registerRevocationCascade(provider, { prisma, revocations });

  let worker: RunningWorker | undefined;
  let workerConnection: Redis | undefined;
  return {
    revocations,
    tasks,
    jobs,
    sweeper,
    tokens,
    routes(routeOptions = {}) {
      if (!provider) throw new Error("task routes need the oidc-provider instance");
      return taskRoutes({ provider, tasks, log, ...routeOptions });
    },
    async startWorkers() {
      if (worker) return;
      workerConnection = redis.duplicate();
      worker = await startRevocationWorker({
        connection: workerConnection,
        redisPrefix: config.redisPrefix,
        prisma,
        revocations,
        sweeper,
        tokens,
        jobs,
        sweepSeconds: config.sweepSeconds,
        log,
        archiveAudit: () =>
          archiveAuditEvents({ prisma, audit, dir: config.audit.archiveDir, hotDays: config.audit.hotDays }),
        auditArchiveSeconds: AUDIT_ARCHIVE_EVERY_SECONDS,
      });
    },
    /** Lets running jobs finish for a moment (they are idempotent and retried if cut short), then disconnects. */
    async close() {
      const graceful = (async () => {
        await worker?.close();
        await jobs.close();
      })().then(
        () => true,
        () => true,
      );
      if (!(await Promise.race([graceful, sleep(CLOSE_GRACE_MS, false, { ref: false })]))) {
        log.warn("revocation jobs did not stop in time (is Redis gone?); disconnecting");
      }
      workerConnection?.disconnect();
      queueConnection.disconnect();
    },
  };
}
