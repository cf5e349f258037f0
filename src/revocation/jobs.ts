// Revocation's jobs, on the shared job queue (src/jobs):
//   task-end  delayed to a delegation's end time: ends it and its whole lineage (jobId task-end-<delegation id>)
//   purge     destroys revoked tokens and grants in Redis when the inline cleanup failed or was too large
//   recheck   re-runs a revocation a few seconds later, for tokens minted by exchanges already in flight
//   sweep     repeatable: reconciles Redis and the job schedule with the database (sweep.ts)
import { DelayedError, type Job } from "bullmq";
import type { RevocationTrigger } from "../audit/actions.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import type { JobHandler } from "../jobs/handler.ts";
import type { JobQueue } from "../jobs/queue.ts";
import type { Logger } from "../logger.ts";
import type { RevocationService } from "./revocations.ts";
import type { Sweeper } from "./sweep.ts";
import type { TokenStore } from "./token-store.ts";

export const REVOCATION_JOB = {
  taskEnd: "task-end",
  purge: "purge",
  recheck: "recheck",
  sweep: "sweep",
} as const;

export interface TaskEndJob {
  delegationId: string;
}
export interface PurgeJob {
  grantIds: string[];
}
export interface RecheckJob {
  trigger: RevocationTrigger;
  reason: string;
  outcome: "ended" | "revoked";
  delegationIds: string[];
  tokenRoots: string[];
}

export const taskEndJobId = (delegationId: string) => `task-end-${delegationId}`;

/** A task-end job that fires this much before its delegation's end (clock skew) waits again instead. */
const EARLY_TOLERANCE_MS = 1_000;

/** The producer side: what revocations and the sweep put on the queue. */
export class RevocationJobs {
  readonly #queue: JobQueue;
  readonly #log: Logger;

  constructor(queue: JobQueue, log: Logger) {
    this.#queue = queue;
    this.#log = log;
  }

  /**
   * Schedules the end of a delegation at its end time. Never throws: if Redis cannot take the job now, the
   * sweep ends the delegation anyway (and re-arms jobs for delegations about to end).
   */
  async scheduleTaskEnd(delegationId: string, endsAt: Date): Promise<void> {
    try {
      await this.#queue.add(REVOCATION_JOB.taskEnd, { delegationId } satisfies TaskEndJob, {
        jobId: taskEndJobId(delegationId),
        delay: Math.max(0, endsAt.getTime() - Date.now()),
      });
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
    await Promise.all(delegationIds.map((id) => this.#queue.remove(taskEndJobId(id)).catch(() => undefined)));
  }

  async enqueuePurge(data: PurgeJob): Promise<void> {
    await this.#queue.add(REVOCATION_JOB.purge, data);
  }

  /** Best effort: the sweep catches what a recheck would have. */
  async enqueueRecheck(data: RecheckJob, delayMs: number): Promise<void> {
    try {
      await this.#queue.add(REVOCATION_JOB.recheck, data, { delay: delayMs });
    } catch (error) {
      this.#log.warn({ err: error }, "could not queue the revocation recheck; the sweep will cover it");
    }
  }
}

export interface RevocationJobDeps {
  prisma: PrismaClient;
  revocations: RevocationService;
  sweeper: Sweeper;
  tokens: TokenStore;
  sweepSeconds: number;
}

const count = (list: unknown) => (Array.isArray(list) ? list.length : 0);

/** The handlers of revocation's jobs, for the worker. */
export function revocationJobHandlers(deps: RevocationJobDeps): JobHandler[] {
  return [
    {
      name: REVOCATION_JOB.taskEnd,
      run: (job, token) => endTask(deps, job as Job<TaskEndJob>, token),
      describe: (data) => ({ delegation_id: data.delegationId }),
    },
    {
      name: REVOCATION_JOB.purge,
      run: async (job) => ({
        grants_removed: await deps.tokens.revokeGrants((job.data as PurgeJob).grantIds ?? []),
      }),
      describe: (data) => ({ grants: count(data.grantIds) }),
    },
    {
      name: REVOCATION_JOB.recheck,
      run: (job) => recheck(deps, job.data as RecheckJob),
      describe: (data) => ({
        trigger: data.trigger,
        delegations: count(data.delegationIds),
        subtrees: count(data.tokenRoots),
      }),
    },
    {
      name: REVOCATION_JOB.sweep,
      run: () => deps.sweeper.run(),
      repeat: {
        everySeconds: deps.sweepSeconds,
        options: { attempts: 1, removeOnFail: { age: 86_400, count: 100 } },
      },
    },
  ];
}

async function endTask(deps: RevocationJobDeps, job: Job<TaskEndJob>, token?: string) {
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

async function recheck(deps: RevocationJobDeps, data: RecheckJob) {
  const cause = { trigger: data.trigger, reason: data.reason, outcome: data.outcome, recheck: true };
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
