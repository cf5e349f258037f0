// How an exchange is described in the audit trail, whether it was allowed or refused.
import { type AuditEventInput, agentClaim } from "../audit/audit-log.ts";
import type { ExchangeState } from "./exchange-state.ts";

/**
 * Whatever is known about the exchange so far, in audit terms, with its decision. A refusal grants nothing,
 * whatever scope the steps before it had narrowed to. The optional `reasoning` parameter is stored as
 * `agentClaim`: the agent's own words, cut to a bounded length, never checked and never used to decide.
 */
export function describeExchange(state: ExchangeState, decision: "allow" | "deny"): AuditEventInput {
  const { call } = state;
  const asked = [call.params.resource, call.params.audience]
    .flat()
    .filter((v): v is string => typeof v === "string");
  const caller = call.caller.clientId;
  return {
    action: "token.exchange",
    decision,
    delegatedBy: state.delegation?.personEmail,
    agentChain: state.chain ?? (state.subject ? [caller, ...state.subject.chain] : [caller]),
    resource: state.resource?.uri ?? asked.join(" ").slice(0, 2048),
    scopesAsked: state.requestedScopes?.slice(0, 100),
    scopesGranted: decision === "allow" ? state.scopes : [],
    delegationId: state.delegation?.id,
    taskId: state.delegation?.taskId ?? undefined,
    taskDescription: state.delegation?.taskDescription ?? undefined,
    agentClaim: agentClaim(call.params.reasoning),
    // Refused before the policy was asked: the version in force at the time of the refusal.
    policyVersion: state.policy?.version ?? state.deps.policyVersion(),
    reason: state.policy?.decidedBy?.length ? `decided by ${state.policy.decidedBy.join(", ")}` : undefined,
  };
}
