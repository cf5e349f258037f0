// Ending a task now: the delegate agent (or the person who delegated) says the task is done, and every
// delegation for it ends with its whole lineage. Completing a task twice is not an error: the answer is the same.
import type { AuditContext } from "../audit/audit-log.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { ApiError } from "../http/api-error.ts";
import type { RevocationService } from "./revocations.ts";

/** Who asks to complete the task: the delegate agent, or the person (through a signed-in session). */
export type TaskCaller = { kind: "agent"; clientId: string } | { kind: "person"; personId: string };

export interface TaskCompletion {
  task_id: string;
  status: "ended";
  delegations: { id: string; status: string; ended_at: string | null; end_reason: string | null }[];
  /** What this request reached (zero when the task had already ended). */
  revoked: { delegations: number; tokens: number };
}

export class TaskService {
  readonly #prisma: PrismaClient;
  readonly #revocations: RevocationService;

  constructor(prisma: PrismaClient, revocations: RevocationService) {
    this.#prisma = prisma;
    this.#revocations = revocations;
  }

  async complete(taskId: string, caller: TaskCaller, context: AuditContext): Promise<TaskCompletion> {
    // Only the caller's own delegations for the task: someone else's task answers exactly like no task at all,
    // so that task ids cannot be probed.
    const mine = await this.#prisma.delegation.findMany({
      where:
        caller.kind === "agent"
          ? { taskId, agent: { clientId: caller.clientId } }
          : { taskId, personId: caller.personId },
      select: { id: true, status: true },
    });
    if (!mine.length) {
      throw new ApiError(
        404,
        "not_found",
        caller.kind === "agent"
          ? `there is no task ${taskId} delegated to ${caller.clientId}: only its delegate agent or the person can complete it`
          : `there is no task ${taskId} that you delegated`,
      );
    }
    const active = mine.filter((delegation) => delegation.status === "active").map((d) => d.id);
    const summary = active.length
      ? await this.#revocations.revoke(
          { delegations: active },
          {
            trigger: caller.kind === "agent" ? "task_end" : "person",
            outcome: "ended",
            reason:
              caller.kind === "agent" ? "the agent completed the task" : "the person completed the task",
            target: taskId,
          },
          context,
        )
      : { delegations: 0, tokens: 0 };
    const after = await this.#prisma.delegation.findMany({
      where: { id: { in: mine.map((d) => d.id) } },
      select: { id: true, status: true, endedAt: true, endReason: true },
      orderBy: { createdAt: "asc" },
    });
    return {
      task_id: taskId,
      status: "ended",
      delegations: after.map((row) => ({
        id: row.id,
        status: row.status,
        ended_at: row.endedAt?.toISOString() ?? null,
        end_reason: row.endReason,
      })),
      revoked: { delegations: summary.delegations, tokens: summary.tokens },
    };
  }
}
