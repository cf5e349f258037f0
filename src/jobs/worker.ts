// Runs the jobs of the queue (queue.ts) with the handlers the owning modules declare: inside the server by
// default, or in `deputy worker` processes. Any number of workers may run against one queue: BullMQ hands each job
// to one of them, and every job is idempotent.
import { Worker } from "bullmq";
import type { Redis } from "ioredis";
import type { Logger } from "../logger.ts";
import { describeJobWith, type JobHandler } from "./handler.ts";
import { bullPrefix, JOB_QUEUE, type JobQueue } from "./queue.ts";

export interface WorkerOptions {
  /** The worker's own connection (maxRetriesPerRequest: null, as BullMQ requires); closed with the worker. */
  connection: Redis;
  redisPrefix: string;
  queue: JobQueue;
  handlers: JobHandler[];
  /** How often repeatable jobs are scheduled again (their schedule lives in Redis, which may lose it). */
  refreshSeconds: number;
  log: Logger;
  concurrency?: number;
}

export interface RunningWorker {
  close(): Promise<void>;
}

export async function startWorker(options: WorkerOptions): Promise<RunningWorker> {
  const { log, queue, handlers } = options;
  const byName = new Map(handlers.map((handler) => [handler.name, handler]));
  const describe = describeJobWith(handlers);
  const worker = new Worker(
    JOB_QUEUE,
    async (job, token) => {
      const handler = byName.get(job.name);
      if (!handler) throw new Error(`no handler for job ${job.name}`);
      return handler.run(job, token);
    },
    {
      connection: options.connection,
      prefix: bullPrefix(options.redisPrefix),
      concurrency: options.concurrency ?? 4,
    },
  );
  worker.on("failed", (job, error) => {
    if (!job) return;
    const final = job.attemptsMade >= (job.opts.attempts ?? 1);
    log[final ? "error" : "warn"](
      {
        job: job.name,
        jobId: job.id,
        attempts: job.attemptsMade,
        about: describe(job.name, job.data),
        err: error,
      },
      final ? "job failed for good (deputy jobs failed)" : "job failed; it will be retried",
    );
  });
  worker.on("error", (error) => log.error({ err: error }, "job worker: Redis error"));

  const refresh = () =>
    Promise.all(
      handlers.map(async ({ name, repeat }) => {
        if (!repeat) return;
        await queue.schedule(name, repeat.everySeconds, repeat.options).catch((error: unknown) => {
          log.warn({ err: error, job: name }, "could not (re)schedule a repeatable job");
        });
      }),
    );
  await refresh();
  const timer = setInterval(refresh, Math.max(options.refreshSeconds, 5) * 1_000);
  timer.unref();
  await worker.waitUntilReady();
  log.info({ jobs: handlers.map((handler) => handler.name) }, "job worker started");

  return {
    async close() {
      clearInterval(timer);
      await worker.close();
      await worker.disconnect().catch(() => undefined);
    },
  };
}
