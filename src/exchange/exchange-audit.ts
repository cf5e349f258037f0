// How an exchange is described in the audit trail, whether it was allowed or refused.
import {
  type AuditContext,
  type AuditEventInput,
  agentClaim,
  providerRequestContext,
} from "../audit/audit-log.ts";
import { actorChain } from "../delegation/token-claims.ts";
import type { ExchangeState } from "./exchange-state.ts";

export function auditContext(state: ExchangeState): AuditContext {
  return providerRequestContext(state.ctx, state.caller.clientId);
}

/**
 * Whatever is known about the exchange so far, in audit terms, with its decision. A refusal grants nothing,
 * whatever scope the steps before it had narrowed to. The optional `reasoning` parameter is stored as
 * `agentClaim`: the agent's own words, cut to a bounded length, never checked and never used to decide.
 */
export function describeExchange(state: ExchangeState, decision: "allow" | "deny"): AuditEventInput {
  const params = state.ctx.oidc.params as Record<string, unknown> | undefined;
  const asked = [params?.resource, params?.audience].flat().filter((v): v is string => typeof v === "string");
  return {
    type: "exchange",
    action: "token.exchange",
    decision,
    delegatedBy: state.delegation?.personEmail,
    agentChain:
      state.chain ??
      (state.subject
        ? [state.caller.clientId, ...actorChain(state.subject.claims.act)]
        : [state.caller.clientId]),
    resource: state.resource?.uri ?? asked.join(" ").slice(0, 2048),
    scopesAsked: state.requestedScopes?.slice(0, 100),
    scopesGranted: decision === "allow" ? state.scopes : [],
    delegationId: state.delegation?.id,
    taskId: state.delegation?.taskId ?? undefined,
    taskDescription: state.delegation?.taskDescription ?? undefined,
    agentClaim: agentClaim(params?.reasoning),
    // Refused before the policy was asked: the version in force at the time of the refusal.
    policyVersion: state.policy?.version ?? state.deps.policyVersion(),
    reason: state.policy?.decidedBy?.length ? `decided by ${state.policy.decidedBy.join(", ")}` : undefined,
  };
}
