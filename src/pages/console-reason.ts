// The reason an admin gives on the console (suspending an agent, the emergency stop), checked by the admin API's
// own schema so that both accept exactly the same text; a refusal is a sentence for the page.
import { reasonBody } from "../registry/reason.ts";

/** The longest reason accepted: the forms' maxlength. */
export const REASON_MAX = reasonBody.shape.reason.maxLength;

export function readReason(form: URLSearchParams): { reason: string } | { error: string } {
  const result = reasonBody.safeParse({ reason: form.get("reason") ?? "" });
  if (result.success) return { reason: result.data.reason };
  const issue = result.error.issues[0];
  if (issue?.code === "too_big")
    return { error: `the reason is too long (at most ${REASON_MAX} characters).` };
  if (issue?.code === "custom") return { error: `the reason ${issue.message}.` };
  return { error: "give a reason; it is recorded in the audit trail." };
}
