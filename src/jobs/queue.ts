// The revocation queue (BullMQ on the server's Redis, keys under REDIS_PREFIX so deployments and test servers
// sharing a Redis never see each other's jobs). Producers live in every server process; workers run inside the
// server (DEPUTY_WORKERS=inline, the default) or in `deputy worker` processes.
//
// Jobs:
//   task-end  delayed to a delegation's end time: ends it and its whole lineage (jobId task-end-<delegation id>)
//   purge     destroys revoked tokens and grants in Redis when the inline cleanup failed or was too large
//   recheck   re-runs a revocation a few seconds later, for tokens minted by exchanges already in flight
//   sweep     repeatable: reconciles Redis and the job schedule with the database (sweep.ts)
//   audit-archive  repeatable: moves audit events older than the hot window to archive files (src/audit)
// Every job is idempotent and retried with exponential backoff; failures stay listed (`deputy jobs failed`).
import { Job, type JobsOptions, Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "../logger.ts";

export const REVOCATION_QUEUE = "revocation";
export const JOB = {
  taskEnd: "task-end",
  purge: "purge",
  recheck: "recheck",
  sweep: "sweep",
  auditArchive: "audit-archive",
} as const;
export type JobName = (typeof JOB)[keyof typeof JOB];
export const SWEEP_SCHEDULER = "sweep";
export const AUDIT_ARCHIVE_SCHEDULER = "audit-archive";

export interface TaskEndJob {
  delegationId: string;
}
export interface PurgeJob {
  grantIds: string[];
}
export interface RecheckJob {
  trigger: string;
  reason: string;
  outcome: "ended" | "revoked";
  delegationIds: string[];
  tokenRoots: string[];
}

/** 10 attempts, 1 s doubling: the last retry comes about 8.5 minutes after the first failure. */
export const JOB_OPTIONS: JobsOptions = {
  attempts: 10,
  backoff: { type: "exponential", delay: 1_000 },
  removeOnComplete: { age: 3_600, count: 1_000 },
  removeOnFail: { age: 14 * 86_400, count: 10_000 },
};

/** A producer call in a request path never waits longer than this for Redis. */
const PRODUCER_TIMEOUT_MS = 2_000;

/** BullMQ's key prefix under the server's REDIS_PREFIX. */
export const bullPrefix = (redisPrefix: string) => `${redisPrefix}bull`;

export const taskEndJobId = (delegationId: string) => `task-end-${delegationId}`;

export interface FailedJobView {
  id: string;
  name: string;
  error: string;
  attempts: number;
  failed_at: string | null;
  created_at: string;
  /** What the job was about, without token values. */
  about: Record<string, unknown>;
}

export class RevocationJobs {
  readonly queue: Queue;
  readonly prefix: string;
  readonly #log: Logger;

  /** `connection` is this queue's own (it is closed with it). */
  constructor(connection: Redis, redisPrefix: string, log: Logger) {
    this.prefix = bullPrefix(redisPrefix);
    this.#log = log;
    this.queue = new Queue(REVOCATION_QUEUE, {
      connection,
      prefix: this.prefix,
      defaultJobOptions: JOB_OPTIONS,
    });
    this.queue.on("error", (error) => log.error({ err: error }, "revocation queue: Redis error"));
  }

  /**
   * Schedules the end of a delegation at its end time. Never throws: if Redis cannot take the job now, the
   * sweep ends the delegation anyway (and re-arms jobs for delegations about to end).
   */
  async scheduleTaskEnd(delegationId: string, endsAt: Date): Promise<void> {
    try {
      await bounded(
        this.queue.add(JOB.taskEnd, { delegationId } satisfies TaskEndJob, {
          jobId: taskEndJobId(delegationId),
          delay: Math.max(0, endsAt.getTime() - Date.now()),
        }),
      );
    } catch (error) {
      this.#log.warn(
        { err: error, delegationId },
        "could not schedule the task-end job; the sweep will end it",
      );
    }
  }

  /** Drops task-end jobs of delegations that ended early. Best effort: a job left behind finds nothing to do. */
  async cancelTaskEnds(delegationIds: string[]): Promise<void> {
    if (delegationIds.length > 1_000) return;
    await Promise.all(
      delegationIds.map((id) => bounded(this.queue.remove(taskEndJobId(id))).catch(() => undefined)),
    );
  }

  async enqueuePurge(data: PurgeJob): Promise<void> {
    await bounded(this.queue.add(JOB.purge, data));
  }

  /** Best effort: the sweep catches what a recheck would have. */
  async enqueueRecheck(data: RecheckJob, delayMs = 3_000): Promise<void> {
    try {
      await bounded(this.queue.add(JOB.recheck, data, { delay: delayMs }));
    } catch (error) {
      this.#log.warn({ err: error }, "could not queue the revocation recheck; the sweep will cover it");
    }
  }

  /** Creates or refreshes the repeatable sweep (idempotent: called at start and again every interval). */
  async ensureSweep(everySeconds: number): Promise<void> {
    await this.queue.upsertJobScheduler(
      SWEEP_SCHEDULER,
      { every: everySeconds * 1_000 },
      { name: JOB.sweep, data: {}, opts: { attempts: 1, removeOnFail: { age: 86_400, count: 100 } } },
    );
  }

  /** Creates or refreshes the repeatable audit archiving (idempotent, like ensureSweep). */
  async ensureAuditArchive(everySeconds: number): Promise<void> {
    await this.queue.upsertJobScheduler(
      AUDIT_ARCHIVE_SCHEDULER,
      { every: everySeconds * 1_000 },
      {
        name: JOB.auditArchive,
        data: {},
        opts: { attempts: 3, removeOnFail: { age: 14 * 86_400, count: 100 } },
      },
    );
  }

  /** Failed jobs, newest first. */
  async failed(limit = 100): Promise<FailedJobView[]> {
    const jobs = await this.queue.getFailed(0, Math.max(0, limit - 1));
    return jobs.filter((job): job is Job => Boolean(job)).map(failedView);
  }

  /** Retries a failed job now; undefined when there is no such failed job. */
  async retry(id: string): Promise<FailedJobView | undefined> {
    const job = await Job.fromId(this.queue, id);
    if (!job || !(await job.isFailed())) return undefined;
    const view = failedView(job);
    await job.retry("failed");
    return view;
  }

  async close(): Promise<void> {
    await this.queue.close();
    await this.queue.disconnect().catch(() => undefined);
  }
}

function failedView(job: Job): FailedJobView {
  return {
    id: String(job.id),
    name: job.name,
    error: job.failedReason ?? "unknown error",
    attempts: job.attemptsMade,
    failed_at: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
    created_at: new Date(job.timestamp).toISOString(),
    about: describeJob(job.name, job.data),
  };
}

/** A job's data as shown to operators: ids and counts. */
export function describeJob(name: string, data: unknown): Record<string, unknown> {
  const value = (data ?? {}) as Record<string, unknown>;
  const count = (list: unknown) => (Array.isArray(list) ? list.length : 0);
  switch (name) {
    case JOB.taskEnd:
      return { delegation_id: value.delegationId };
    case JOB.purge:
      return { grants: count(value.grantIds) };
    case JOB.recheck:
      return {
        trigger: value.trigger,
        delegations: count(value.delegationIds),
        subtrees: count(value.tokenRoots),
      };
    default:
      return {};
  }
}

async function bounded<T>(promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("Redis did not answer in time")), PRODUCER_TIMEOUT_MS);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
