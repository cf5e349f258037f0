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
import type { DelegationRecord } from "../delegation/delegations.ts";
import {
  groupByResource,
  type ResourceGrant,
  resourcesOf,
  type ScopePair,
  samePair,
  scopeNames,
  toPairs,
} from "../delegation/resource-grants.ts";
import { askedEnd, type DelegationRequest, type RequestingAgent } from "./delegation-request.ts";
import { alreadyAnswered, PageError } from "./page-error.ts";
import { readChoices } from "./scope-choice.ts";
import type { WebDeps } from "./web.ts";

export interface Decision {
  approve: boolean;
  /** The (resource, scope) pairs left ticked. */
  choices: ScopePair[];
  /** "asked", or a shorter length in seconds counted from approval. */
  duration: "asked" | number;
}

/** Reads the consent form; anything malformed is a clear 400, never a guess. */
export function readDecision(form: URLSearchParams): Decision {
  const decision = form.get("decision");
  if (decision !== "approve" && decision !== "deny")
    throw new PageError(400, "No answer", "Choose Approve or Deny.");
  const choices = readChoices(form.getAll("scope"));
  const duration = form.get("duration");
  if (duration === null || duration === "asked")
    return { approve: decision === "approve", choices, duration: "asked" };
  const seconds = Number(duration);
  if (!/^\d{1,8}$/.test(duration) || seconds < 60 || seconds > 30 * 86400)
    throw new PageError(400, "Unclear length", "Pick how long the delegation lasts from the list.");
  return { approve: decision === "approve", choices, duration: seconds };
}

/** What an approval uses of the pages' services (the revocation service ends an unfinished one's delegation). */
export type ApprovalDeps = Pick<WebDeps, "provider" | "delegations" | "config" | "services" | "log">;

/** A person's approval of one request. */
export interface Answer {
  personId: string;
  request: DelegationRequest;
  decision: Decision;
  /** The request answered ("interaction:<uid>", "ciba:<auth_req_id>"): it makes at most one delegation. */
  requestRef: string;
}

export interface Approval {
  grant: Grant;
  delegation: DelegationRecord;
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
  { personId, request, decision, requestRef }: Answer,
): Promise<Approval> {
  const now = Date.now();
  const asked = toPairs(request.grants);
  // The browser's answer is trusted no further than the request: a pair the agent did not ask for is refused.
  if (decision.choices.some((choice) => !asked.some((pair) => samePair(pair, choice))))
    throw new PageError(
      400,
      "Permission not asked for",
      "Only permissions the agent asked for, on the resource servers shown, can be approved.",
    );
  const grants = groupByResource(decision.choices);
  if (!grants.length)
    throw new PageError(
      400,
      "Nothing ticked",
      "Tick at least one permission to approve, or deny the request.",
    );
  const end = askedEnd(request, deps.config.untaskedDelegationSeconds, now);
  if (end.getTime() <= now)
    throw new PageError(
      409,
      "Task already ended",
      "The task's end time has passed; the agent must ask again.",
    );
  const endsAt =
    decision.duration === "asked" ? end : new Date(Math.min(end.getTime(), now + decision.duration * 1000));
  const rar = request.task ? [approvedTaskDetail(request.task, endsAt)] : undefined;

  const grant = new deps.provider.Grant({ accountId: personId, clientId: request.clientId });
  if (request.openid) grant.addOIDCScope("openid");
  // The grant is oidc-provider's record for the subject token, which is for Deputy under whichever indicator
  // it is minted: each gets every approved scope name. What a resource server's token may carry is the
  // delegation's (resource, scope) pairs, enforced at exchange.
  const scopes = scopeNames(grants);
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
      grants,
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
  delegation: { grants: ResourceGrant[] },
): ResourceGrant[] {
  return delegation.grants.flatMap(({ resource, scopes: granted }) => {
    const grant = agent.scopeGrants.find((g) => g.resourceServer.uri === resource);
    const scopes = (grant?.resourceServer.scopes ?? [])
      .filter((scope) => scope.risk === "high" && granted.includes(scope.name))
      .map((scope) => scope.name);
    return scopes.length ? [{ resource, scopes }] : [];
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
    resource: resourcesOf(request.grants).join(" "),
    scopesAsked: request.scopes,
    taskId: request.task?.id,
    taskDescription: request.task?.description,
    details: { channel },
  });
}
