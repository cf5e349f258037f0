// Turns a person's answer into effects: on approval, the oidc-provider Grant (what the agent's token may carry)
// and the Delegation row (what Deputy enforces), linked by the grant id, then the interaction or CIBA request
// finished with them; on denial, an audit event. Shared by browser consent and CIBA approvals.
//
// An approval is all or nothing for the person: one request (interaction or CIBA request) makes at most one
// delegation (a unique key on the request, so a replayed or double-submitted approval is refused), and a
// delegation whose request could not be finished is revoked at once, so none is left active without a token.
import { errors, type Grant } from "oidc-provider";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import { isUniqueViolation } from "../db/prisma-errors.ts";
import { type ApprovedTaskDetail, approvedTaskDetail } from "../delegation/agent-task.ts";
import type { Delegation } from "../generated/prisma/client.ts";
import { askedEnd, type DelegationRequest, type RequestingAgent } from "./delegation-request.ts";
import { alreadyAnswered, PageError } from "./page-error.ts";
import type { WebDeps } from "./web.ts";

export interface Decision {
  approve: boolean;
  /** The scopes left ticked. */
  scopes: string[];
  /** "asked", or a shorter length in seconds counted from approval. */
  duration: "asked" | number;
}

const MAX_FIELD = 200;

/** Reads the consent form; anything malformed is a clear 400, never a guess. */
export function readDecision(form: URLSearchParams): Decision {
  const decision = form.get("decision");
  if (decision !== "approve" && decision !== "deny")
    throw new PageError(400, "No answer", "Choose Approve or Deny.");
  const scopes = form.getAll("scope").filter((scope) => scope.length <= MAX_FIELD);
  const duration = form.get("duration");
  if (duration === null || duration === "asked")
    return { approve: decision === "approve", scopes, duration: "asked" };
  const seconds = Number(duration);
  if (!/^\d{1,8}$/.test(duration) || seconds < 60 || seconds > 30 * 86400)
    throw new PageError(400, "Unclear length", "Pick how long the delegation lasts from the list.");
  return { approve: decision === "approve", scopes, duration: seconds };
}

/** What an approval uses of the pages' services (the revocation service ends an unfinished one's delegation). */
export type ApprovalDeps = Pick<WebDeps, "provider" | "delegations" | "config" | "services" | "log">;

/** A person's approval of one request. */
export interface Answer {
  personId: string;
  agent: RequestingAgent;
  request: DelegationRequest;
  decision: Decision;
  /** The request answered ("interaction:<uid>", "ciba:<auth_req_id>"): it makes at most one delegation. */
  requestRef: string;
}

export interface Approval {
  grant: Grant;
  delegation: Delegation;
  /** The task as approved (its end possibly brought forward), for the token's authorization_details. */
  rar?: ApprovedTaskDetail[];
}

/** The end reason of a delegation revoked because its request could not be finished. */
const APPROVAL_NOT_COMPLETED = "the approval could not be completed";

/**
 * Makes the approval (Grant + Delegation), then `finish`es the request with it (oidc-provider's interaction or
 * CIBA result). If finishing fails, the delegation is revoked, the request is `abandon`ed if given (best effort:
 * a failure is logged, not raised) and the person is told nothing was delegated.
 */
export async function approveRequest<T>(
  deps: ApprovalDeps,
  context: AuditContext,
  answer: Answer,
  finish: (approval: Approval) => Promise<T>,
  abandon?: (reason: string) => Promise<void>,
): Promise<T> {
  const approval = await createApproval(deps, context, answer);
  try {
    return await finish(approval);
  } catch (error) {
    const delegation = approval.delegation.id;
    deps.log.warn({ err: error, delegation }, "approval could not be completed");
    await deps.services.revokeDelegation(context, delegation, APPROVAL_NOT_COMPLETED);
    await abandon?.(APPROVAL_NOT_COMPLETED).catch((err: unknown) =>
      deps.log.warn({ err, delegation }, "the request of an approval not completed could not be ended"),
    );
    throw notCompleted(error);
  }
}

/** What the person is told when their approval was made but could not reach the agent's request. */
function notCompleted(error: unknown): PageError {
  return new PageError(
    error instanceof errors.OIDCProviderError ? 409 : 503,
    "Approval not completed",
    "Your approval could not be passed on to the agent (the request may have expired or been answered " +
      "elsewhere), so nothing was delegated. Ask the agent to start again.",
  );
}

async function createApproval(
  deps: ApprovalDeps,
  context: AuditContext,
  { personId, agent, request, decision, requestRef }: Answer,
): Promise<Approval> {
  const now = Date.now();
  if (decision.scopes.some((scope) => !request.scopes.includes(scope)))
    throw new PageError(400, "Scope not asked for", "Only scopes the agent asked for can be approved.");
  const scopes = request.scopes.filter((scope) => decision.scopes.includes(scope));
  if (!scopes.length)
    throw new PageError(
      400,
      "Nothing ticked",
      "Tick at least one permission to approve, or deny the request.",
    );
  const asked = askedEnd(request, deps.config.untaskedDelegationSeconds, now);
  if (asked.getTime() <= now)
    throw new PageError(
      409,
      "Task already ended",
      "The task's end time has passed; the agent must ask again.",
    );
  const endsAt =
    decision.duration === "asked"
      ? asked
      : new Date(Math.min(asked.getTime(), now + decision.duration * 1000));
  // Only the resource servers on which some approved scope is allowed stay in the delegation.
  const resources = request.resources.filter((uri) =>
    agent.scopeGrants.some(
      (grant) => grant.resourceServer.uri === uri && grant.scopes.some((scope) => scopes.includes(scope)),
    ),
  );
  const rar = request.task ? [approvedTaskDetail(request.task, endsAt)] : undefined;

  const grant = new deps.provider.Grant({ accountId: personId, clientId: request.clientId });
  if (request.openid) grant.addOIDCScope("openid");
  const rejected = request.scopes.filter((scope) => !scopes.includes(scope));
  // Every asked scope is recorded as granted or rejected under each indicator, so the provider does not ask again.
  for (const indicator of request.indicators) {
    grant.addResourceScope(indicator, scopes);
    if (rejected.length) grant.rejectResourceScope(indicator, rejected);
  }
  for (const detail of rar ?? []) grant.addRar(detail);
  const grantId = await grant.save();
  try {
    const delegation = await deps.delegations.create(context, {
      personId,
      agentClientId: request.clientId,
      taskId: request.task?.id,
      taskDescription: request.task?.description,
      scopes,
      resources,
      endsAt,
      grantId,
      requestRef,
    });
    return { grant, delegation, rar };
  } catch (error) {
    await grant.destroy();
    throw isUniqueViolation(error) ? alreadyAnswered() : error;
  }
}

/** The high-risk scopes an approval granted, per resource server (what a policy step-up is about). */
export function highRiskGranted(
  agent: RequestingAgent,
  delegation: Delegation,
): { resource: string; scopes: string[] }[] {
  return delegation.resources.flatMap((uri) => {
    const grant = agent.scopeGrants.find((g) => g.resourceServer.uri === uri);
    const scopes = (grant?.resourceServer.scopes ?? [])
      .filter((scope) => scope.risk === "high" && delegation.scopes.includes(scope.name))
      .map((scope) => scope.name);
    return scopes.length ? [{ resource: uri, scopes }] : [];
  });
}

/** A refusal is an audit event with the person, the agent and the task. */
export async function recordDenial(
  audit: AuditLog,
  context: AuditContext,
  personEmail: string,
  request: DelegationRequest,
  channel: "browser" | "ciba",
): Promise<void> {
  await audit.record(context, {
    action: "delegation.deny",
    decision: "deny",
    reason: "the person declined",
    delegatedBy: personEmail,
    agentChain: [request.clientId],
    resource: request.resources.join(" "),
    scopesAsked: request.scopes,
    taskId: request.task?.id,
    taskDescription: request.task?.description,
    details: { channel },
  });
}
