// One AuthZEN access evaluation: resolve the subject (the agent's access token), check the action is a scope
// of the asking resource server that the token carries, let the policy engine decide, and audit the decision.
import type { AuditContext, AuditEventInput, AuditLog } from "../audit/audit-log.ts";
import type { PolicyEngine } from "../policy/engine.ts";
import type { CatalogResource } from "../registry/resource-catalog.ts";
import type { EvaluationRequest } from "./schemas.ts";
import { type TokenSubjectDeps, tokenSubject } from "./token-subject.ts";

export interface EvaluationResult {
  decision: boolean;
  context: Record<string, unknown>;
}

/** A request Deputy cannot evaluate at all (for the single endpoint: 400; in a batch: that item's error). */
export class EvaluationError extends Error {
  readonly status = 400;
}

export const SUBJECT_TYPES = ["token"];

export interface EvaluatorDeps extends TokenSubjectDeps {
  engine: PolicyEngine;
  audit: AuditLog;
  /** The policy version in force now: recorded on refusals made before the engine decides. */
  policyVersion: () => string;
}

export class Evaluator {
  readonly #deps: EvaluatorDeps;

  constructor(deps: EvaluatorDeps) {
    this.#deps = deps;
  }

  /**
   * Decides one request for `resource` (the asking resource server). The decision's audit event is returned
   * unwritten so that a batch can commit its events together; `evaluate` writes it.
   */
  async decide(
    request: EvaluationRequest,
    resource: CatalogResource,
    audit: AuditContext,
  ): Promise<{ result: EvaluationResult; event: AuditEventInput }> {
    if (!SUBJECT_TYPES.includes(request.subject.type)) {
      throw new EvaluationError(
        `subject.type must be "token" (subject.id: the access token the agent presented), not ${JSON.stringify(request.subject.type)}`,
      );
    }
    const target = { type: request.resource.type, id: request.resource.id };
    const name = request.action.name;
    const event: AuditEventInput = {
      action: "access.evaluate",
      target: `${target.type}:${target.id}`.slice(0, 500),
      resource: resource.uri,
      scopesAsked: [name],
      policyVersion: this.#deps.policyVersion(),
    };
    const subject = await tokenSubject(this.#deps, request.subject.id, resource.uri);
    const refuse = (code: string, message: string) => ({
      result: { decision: false, context: { reason: [code], reason_admin: { en: message } } },
      event: { ...event, decision: "deny" as const, reason: `${code}: ${message}` },
    });
    if ("inactive" in subject) return refuse("token_inactive", subject.inactive);

    const { delegation } = subject;
    Object.assign(event, {
      delegatedBy: delegation.personEmail,
      agentChain: subject.chain,
      delegationId: delegation.id,
      taskId: delegation.taskId ?? undefined,
      taskDescription: delegation.taskDescription ?? undefined,
    });
    if (!resource.scopes.some((scope) => scope.name === name)) {
      return refuse("unknown_action", `${name} is not a scope of ${resource.uri}: register it as one`);
    }
    if (!subject.scopes.includes(name)) {
      return refuse("scope_not_granted", `the token does not carry scope ${name}`);
    }
    const address = request.subject.properties?.ip_address;
    const decision = await this.#deps.engine.decide({
      kind: "evaluation",
      personId: subject.personId,
      personEmail: delegation.personEmail,
      chain: subject.chain,
      resource,
      actions: [name],
      task: delegation.taskId
        ? { id: delegation.taskId, description: delegation.taskDescription }
        : undefined,
      clientAddress: typeof address === "string" ? address.slice(0, 100) : "",
      target,
      delegationId: delegation.id,
      audit,
    });
    const context: Record<string, unknown> = {
      reason: decision.decidedBy,
      reason_admin: { en: decision.message },
      policy_version: decision.version,
    };
    if (decision.stepUp.length) context.step_up = { scopes: decision.stepUp };
    return {
      result: { decision: decision.allow, context },
      event: {
        ...event,
        decision: decision.allow ? "allow" : "deny",
        reason: decision.message,
        policyVersion: String(decision.version),
        details: {
          decided_by: decision.decidedBy,
          ...(decision.shadow.length ? { shadow: decision.shadow } : {}),
          ...(decision.drift.length ? { drift: decision.drift } : {}),
          ...(decision.errors.length ? { policy_errors: decision.errors.slice(0, 10) } : {}),
        },
      },
    };
  }
}
