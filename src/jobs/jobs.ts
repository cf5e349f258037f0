// One process's side of the job queue: the producer every process has, and — in processes that run them — the
// workers, started with the handlers the composition root collects from the modules that own the jobs.
import { setTimeout as sleep } from "node:timers/promises";
import type { Redis } from "ioredis";
import type { Logger } from "../logger.ts";
import type { RedisConnection } from "../redis/connect.ts";
import { describeJobWith, type JobHandler } from "./handler.ts";
import { JobQueue } from "./queue.ts";
import { type RunningWorker, startWorker } from "./worker.ts";

const CLOSE_GRACE_MS = 3_000;

export interface Jobs {
  queue: JobQueue;
  /** The jobs this process knows, from the modules that own them: described in views, run by its workers. */
  handle(handlers: JobHandler[]): void;
  /** Starts this process's workers (repeatable jobs are scheduled again every `refreshSeconds`). */
  startWorkers(refreshSeconds: number): Promise<void>;
  /** Lets running jobs finish for a moment (they are idempotent and retried if cut short), then disconnects. */
  close(): Promise<void>;
}

export function createJobs(redis: RedisConnection, redisPrefix: string, log: Logger): Jobs {
  // The queue's own connection: commands fail fast (2 retries) rather than hang a request when Redis is away.
  const queueConnection = redis.redis.duplicate({ maxRetriesPerRequest: 2, lazyConnect: false });
  const queue = new JobQueue(queueConnection, redisPrefix, log);
  let handlers: JobHandler[] = [];
  let worker: RunningWorker | undefined;
  let workerConnection: Redis | undefined;
  return {
    queue,
    handle(known) {
      handlers = known;
      queue.describeWith(describeJobWith(handlers));
    },
    async startWorkers(refreshSeconds) {
      if (worker) return;
      workerConnection = redis.duplicate();
      worker = await startWorker({
        connection: workerConnection,
        redisPrefix,
        queue,
        handlers,
        refreshSeconds,
        log,
      });
    },
    async close() {
      const graceful = (async () => {
        await worker?.close();
        await queue.close();
      })().then(
        () => true,
        () => true,
      );
      if (!(await Promise.race([graceful, sleep(CLOSE_GRACE_MS, false, { ref: false })]))) {
        log.warn("jobs did not stop in time (is Redis gone?); disconnecting");
      }
      workerConnection?.disconnect();
      queueConnection.disconnect();
    },
  };
}
