// Turns a person's answer into effects: on approval, the oidc-provider Grant (what the agent's token may carry)
// and the Delegation row (what Deputy enforces), linked by the grant id; on denial, an audit event. Shared by
// browser consent and CIBA approvals.
import type Provider from "oidc-provider";
import type { Grant } from "oidc-provider";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { DelegationStore } from "../delegation/delegations.ts";
import type { Delegation } from "../generated/prisma/client.ts";
import { type ApprovedTaskDetail, approvedTaskDetail } from "./agent-task.ts";
import { askedEnd, type DelegationRequest, type RequestingAgent } from "./delegation-request.ts";
import { PageError } from "./page-error.ts";

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

export interface ApprovalDeps {
  provider: Provider;
  delegations: DelegationStore;
  untaskedSeconds: number;
}

export interface Approval {
  grant: Grant;
  delegation: Delegation;
  /** The task as approved (its end possibly brought forward), for the token's authorization_details. */
  rar?: ApprovedTaskDetail[];
}

export async function approveRequest(
  deps: ApprovalDeps,
  context: AuditContext,
  personId: string,
  agent: RequestingAgent,
  request: DelegationRequest,
  decision: Decision,
  now = Date.now(),
): Promise<Approval> {
  if (decision.scopes.some((scope) => !request.scopes.includes(scope)))
    throw new PageError(400, "Scope not asked for", "Only scopes the agent asked for can be approved.");
  const scopes = request.scopes.filter((scope) => decision.scopes.includes(scope));
  if (!scopes.length)
    throw new PageError(
      400,
      "Nothing ticked",
      "Tick at least one permission to approve, or deny the request.",
    );
  const asked = askedEnd(request, deps.untaskedSeconds, now);
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
    });
    return { grant, delegation, rar };
  } catch (error) {
    await grant.destroy();
    throw error;
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
    type: "consent",
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
