// Runs the revocation jobs (queue.ts): inside the server by default, or in `deputy worker` processes. Any number
// of workers may run against one queue: BullMQ hands each job to one of them, and every job is idempotent.
import { DelayedError, type Job, Worker } from "bullmq";
import type { Redis } from "ioredis";
import type { PrismaClient } from "../generated/prisma/client.ts";
import type { Logger } from "../logger.ts";
import type { RevocationService } from "../revocation/revocations.ts";
import type { Sweeper } from "../revocation/sweep.ts";
import type { TokenStore } from "../revocation/token-store.ts";
import {
  bullPrefix,
  describeJob,
  JOB,
  type PurgeJob,
  REVOCATION_QUEUE,
  type RecheckJob,
  type RevocationJobs,
  type TaskEndJob,
} from "./queue.ts";

/** A task-end job that fires this much before its delegation's end (clock skew) waits again instead. */
const EARLY_TOLERANCE_MS = 1_000;

export interface WorkerDeps {
  /** The worker's own connection (maxRetriesPerRequest: null, as BullMQ requires); closed with the worker. */
  connection: Redis;
  redisPrefix: string;
  prisma: PrismaClient;
  revocations: RevocationService;
  sweeper: Sweeper;
  tokens: TokenStore;
  jobs: RevocationJobs;
  sweepSeconds: number;
  log: Logger;
  concurrency?: number;
  /** Archives audit events older than the hot window (src/audit/audit-archive.ts), every `auditArchiveSeconds`. */
  archiveAudit?: () => Promise<unknown>;
  auditArchiveSeconds?: number;
}

export interface RunningWorker {
  close(): Promise<void>;
}

export async function startRevocationWorker(deps: WorkerDeps): Promise<RunningWorker> {
  const { log, jobs, sweepSeconds } = deps;
  const worker = new Worker(REVOCATION_QUEUE, (job, token) => processJob(deps, job, token), {
    connection: deps.connection,
    prefix: bullPrefix(deps.redisPrefix),
    concurrency: deps.concurrency ?? 4,
  });
  worker.on("failed", (job, error) => {
    if (!job) return;
    const final = job.attemptsMade >= (job.opts.attempts ?? 1);
    log[final ? "error" : "warn"](
      {
        job: job.name,
        jobId: job.id,
        attempts: job.attemptsMade,
        about: describeJob(job.name, job.data),
        err: error,
      },
      final
        ? "revocation job failed for good (deputy jobs failed)"
        : "revocation job failed; it will be retried",
    );
  });
  worker.on("error", (error) => log.error({ err: error }, "revocation worker: Redis error"));

  // The sweep's schedule lives in Redis: if Redis loses it, the next refresh brings it back.
  const refresh = () =>
    Promise.all([
      jobs.ensureSweep(sweepSeconds).catch((error: unknown) => {
        log.warn({ err: error }, "could not (re)schedule the revocation sweep");
      }),
      deps.archiveAudit &&
        jobs.ensureAuditArchive(deps.auditArchiveSeconds ?? 3_600).catch((error: unknown) => {
          log.warn({ err: error }, "could not (re)schedule audit archiving");
        }),
    ]);
  await refresh();
  const timer = setInterval(refresh, Math.max(sweepSeconds, 5) * 1_000);
  timer.unref();
  await worker.waitUntilReady();
  log.info({ sweepSeconds }, "revocation worker started");

  return {
    async close() {
      clearInterval(timer);
      await worker.close();
      await worker.disconnect().catch(() => undefined);
    },
  };
}

async function processJob(deps: WorkerDeps, job: Job, token?: string): Promise<unknown> {
  switch (job.name) {
    case JOB.taskEnd:
      return endTask(deps, job as Job<TaskEndJob>, token);
    case JOB.purge: {
      const { grantIds } = job.data as PurgeJob;
      return { grants_removed: await deps.tokens.revokeGrants(grantIds ?? []) };
    }
    case JOB.recheck:
      return recheck(deps, job.data as RecheckJob);
    case JOB.sweep:
      return deps.sweeper.run();
    case JOB.auditArchive:
      return deps.archiveAudit
        ? deps.archiveAudit()
        : { skipped: "this worker does not archive audit events" };
    default:
      throw new Error(`unknown revocation job ${job.name}`);
  }
}

async function endTask(deps: WorkerDeps, job: Job<TaskEndJob>, token?: string) {
  const { delegationId } = job.data;
  const delegation = await deps.prisma.delegation.findUnique({
    where: { id: delegationId },
    select: { status: true, endsAt: true, taskId: true },
  });
  if (!delegation) return { skipped: "no such delegation" };
  if (delegation.status !== "active") return { skipped: `already ${delegation.status}` };
  if (delegation.endsAt.getTime() > Date.now() + EARLY_TOLERANCE_MS) {
    await job.moveToDelayed(delegation.endsAt.getTime(), token);
    throw new DelayedError();
  }
  return deps.revocations.revoke(
    { delegations: [delegationId] },
    {
      trigger: "task_end",
      outcome: "ended",
      reason: "its end time passed",
      target: delegation.taskId ?? delegationId,
    },
    { actor: "deputy:task-end" },
  );
}

async function recheck(deps: WorkerDeps, data: RecheckJob) {
  const cause = {
    trigger: data.trigger as Parameters<RevocationService["revoke"]>[1]["trigger"],
    reason: data.reason,
    outcome: data.outcome,
    recheck: true,
  };
  const context = { actor: "deputy:recheck" };
  let tokens = 0;
  if (data.delegationIds?.length) {
    tokens += (await deps.revocations.revoke({ delegations: data.delegationIds }, cause, context)).tokens;
  }
  if (data.tokenRoots?.length) {
    tokens += (await deps.revocations.revoke({ tokens: data.tokenRoots }, cause, context)).tokens;
  }
  return { tokens };
}
