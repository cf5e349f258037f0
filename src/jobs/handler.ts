// What a module declares for each job it owns: the worker (worker.ts) runs it by name, the queue's views describe
// it, and a repeatable one is (re)scheduled by every worker.
import type { Job, JobsOptions } from "bullmq";

export interface JobHandler {
  name: string;
  /** Runs the job; `token` is BullMQ's lock token, for a job that moves itself back to delayed. */
  run(job: Job, token?: string): Promise<unknown>;
  /** What the job is about, as operators see it: ids and counts, never token values. */
  describe?(data: Record<string, unknown>): Record<string, unknown>;
  /** A repeatable job: every this many seconds, with these options. */
  repeat?: { everySeconds: number; options: JobsOptions };
}

/** The description of a job by its handler (empty for a job no handler describes). */
export function describeJobWith(handlers: JobHandler[]) {
  return (name: string, data: unknown): Record<string, unknown> =>
    handlers.find((handler) => handler.name === name)?.describe?.((data ?? {}) as Record<string, unknown>) ??
    {};
}
