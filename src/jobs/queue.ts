// Deputy's job queue (BullMQ on the server's Redis, keys under REDIS_PREFIX so deployments and test servers
// sharing a Redis never see each other's jobs). Producers live in every server process; workers run inside the
// server (DEPUTY_WORKERS=inline, the default) or in `deputy worker` processes. The queue knows no job: the module
// that owns a job declares its handler (jobs.ts here has the type) and adds it by name.
// Every job is idempotent and retried with exponential backoff; failures stay listed (`deputy jobs failed`).
import { Job, type JobsOptions, Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "../logger.ts";

/** One queue for every job; its name predates the other jobs and is kept so an upgrade finds its jobs. */
export const JOB_QUEUE = "revocation";

/** 10 attempts, 1 s doubling: the last retry comes about 8.5 minutes after the first failure. */
const JOB_OPTIONS: JobsOptions = {
  attempts: 10,
  backoff: { type: "exponential", delay: 1_000 },
  removeOnComplete: { age: 3_600, count: 1_000 },
  removeOnFail: { age: 14 * 86_400, count: 10_000 },
};

/** A producer call in a request path never waits longer than this for Redis. */
const PRODUCER_TIMEOUT_MS = 2_000;

/** BullMQ's key prefix under the server's REDIS_PREFIX. */
export const bullPrefix = (redisPrefix: string) => `${redisPrefix}bull`;

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

/** What the operators' views say a job is about (each job's handler describes its own data). */
export type JobDescriber = (name: string, data: unknown) => Record<string, unknown>;

export class JobQueue {
  readonly queue: Queue;
  readonly prefix: string;
  #describe: JobDescriber = () => ({});

  /** `connection` is this queue's own (it is closed with it). */
  constructor(connection: Redis, redisPrefix: string, log: Logger) {
    this.prefix = bullPrefix(redisPrefix);
    this.queue = new Queue(JOB_QUEUE, { connection, prefix: this.prefix, defaultJobOptions: JOB_OPTIONS });
    this.queue.on("error", (error) => log.error({ err: error }, "job queue: Redis error"));
  }

  /** How failed jobs are described (the composition root passes the handlers' descriptions). */
  describeWith(describe: JobDescriber): void {
    this.#describe = describe;
  }

  /** Adds a job, waiting for Redis no longer than a request may. */
  async add(name: string, data: object, options?: JobsOptions): Promise<void> {
    await bounded(this.queue.add(name, data, options));
  }

  /** Removes a job that is no longer needed. */
  async remove(jobId: string): Promise<void> {
    await bounded(this.queue.remove(jobId));
  }

  /** Creates or refreshes a repeatable job (idempotent: called at start and again at every refresh). */
  async schedule(name: string, everySeconds: number, options: JobsOptions): Promise<void> {
    await this.queue.upsertJobScheduler(
      name,
      { every: everySeconds * 1_000 },
      { name, data: {}, opts: options },
    );
  }

  /** Failed jobs, newest first. */
  async failed(limit = 100): Promise<FailedJobView[]> {
    const jobs = await this.queue.getFailed(0, Math.max(0, limit - 1));
    return jobs.filter((job): job is Job => Boolean(job)).map((job) => this.#failedView(job));
  }

  /** Retries a failed job now; undefined when there is no such failed job. */
  async retry(id: string): Promise<FailedJobView | undefined> {
    const job = await Job.fromId(this.queue, id);
    if (!job || !(await job.isFailed())) return undefined;
    const view = this.#failedView(job);
    await job.retry("failed");
    return view;
  }

  async close(): Promise<void> {
    await this.queue.close();
    await this.queue.disconnect().catch(() => undefined);
  }

  #failedView(job: Job): FailedJobView {
    return {
      id: String(job.id),
      name: job.name,
      error: job.failedReason ?? "unknown error",
      attempts: job.attemptsMade,
      failed_at: job.finishedOn ? new Date(job.finishedOn).toISOString() : null,
      created_at: new Date(job.timestamp).toISOString(),
      about: this.#describe(job.name, job.data),
    };
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
