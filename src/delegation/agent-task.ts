// The task an agent names when it asks for delegation: an RFC 9396 authorization detail of type `agent_task`.
import { z } from "zod";
import { OAuthError } from "../http/oauth-error.ts";
import { plain } from "../http/plain-text.ts";

export const AGENT_TASK = "agent_task";

const invalidDetails = (description: string) => new OAuthError("invalid_authorization_details", description);

/** The whole detail: unknown members are refused rather than silently dropped. */
const agentTaskSchema = z
  .object({
    type: z.literal(AGENT_TASK),
    task_id: plain(z.string().trim().min(1).max(200)),
    description: plain(z.string().trim().min(1).max(2000)),
    ends_at: z.iso.datetime({ offset: true, message: "must be an ISO 8601 date-time with a time zone" }),
  })
  .strict();

export interface AgentTask {
  id: string;
  description: string;
  endsAt: Date;
}

/**
 * RFC 9396 §5: a detail that does not conform is refused with invalid_authorization_details — including a task
 * that has already ended or that would outlast the longest delegation the server allows.
 */
export function validateAgentTask(detail: unknown, maxSeconds: number, now = Date.now()): AgentTask {
  const parsed = agentTaskSchema.safeParse(detail);
  if (!parsed.success) {
    const problems = parsed.error.issues.slice(0, 3).map((issue) => {
      const where = issue.path.length ? issue.path.join(".") : "agent_task";
      return `${where}: ${issue.message}`;
    });
    throw invalidDetails(`invalid agent_task: ${problems.join("; ")}`);
  }
  const endsAt = new Date(parsed.data.ends_at);
  if (endsAt.getTime() <= now) throw invalidDetails("agent_task ends_at is in the past");
  if (endsAt.getTime() > now + maxSeconds * 1000) {
    throw invalidDetails(
      `agent_task ends_at is too far ahead: a delegation lasts at most ${maxSeconds} seconds`,
    );
  }
  return { id: parsed.data.task_id, description: parsed.data.description, endsAt };
}

/** The agent_task details of an `authorization_details` value (a JSON string, already checked by the provider). */
export function agentTaskDetails(value: unknown): Record<string, unknown>[] {
  if (typeof value !== "string" || !value) return [];
  let details: unknown;
  try {
    details = JSON.parse(value);
  } catch {
    return [];
  }
  return Array.isArray(details)
    ? details.filter(
        (detail): detail is Record<string, unknown> =>
          typeof detail === "object" && detail !== null && detail.type === AGENT_TASK,
      )
    : [];
}

/** The task named in stored request parameters, if any (its end time is not re-checked here). */
export function taskFromParams(value: unknown): AgentTask | undefined {
  const [detail] = agentTaskDetails(value);
  const parsed = agentTaskSchema.safeParse(detail);
  if (!parsed.success) return undefined;
  return {
    id: parsed.data.task_id,
    description: parsed.data.description,
    endsAt: new Date(parsed.data.ends_at),
  };
}

export interface ApprovedTaskDetail {
  type: typeof AGENT_TASK;
  task_id: string;
  description: string;
  ends_at: string;
  [key: string]: string;
}

/** The detail recorded in the grant and returned with the token: the task as the person approved it. */
export function approvedTaskDetail(task: AgentTask, endsAt: Date): ApprovedTaskDetail {
  return { type: AGENT_TASK, task_id: task.id, description: task.description, ends_at: endsAt.toISOString() };
}
