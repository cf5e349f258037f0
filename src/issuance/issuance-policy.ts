// The issuance policy (issuance-state.ts) the engine answers: every issuance is decided for each scope it would grant.
// When the agent named no scope, high-risk scopes still waiting for the person's approval are left out of the
// default rather than refusing the whole exchange; asked for by name, they are refused with the step-up advice.

import type { PolicyEngine } from "../policy/engine.ts";
import type { IssuancePolicy, PolicyInput } from "./issuance-state.ts";

export function issuancePolicy(engine: PolicyEngine): IssuancePolicy {
  const decide = (input: PolicyInput, scopes: string[]) => {
    const { delegation } = input;
    return engine.decide({
      kind: "exchange",
      personId: input.personId,
      personEmail: delegation.personEmail,
      chain: input.chain,
      resource: input.resource,
      actions: scopes,
      task: delegation.taskId
        ? { id: delegation.taskId, description: delegation.taskDescription }
        : undefined,
      clientAddress: input.clientAddress,
      // Every caller builds the same shape (same properties, same order): one hidden class for V8.
      target: undefined,
      delegationId: delegation.id,
      audit: { actor: input.chain[0] ?? "", requestId: input.requestId, clientAddress: input.clientAddress },
    });
  };
  return async (input) => {
    let decision = await decide(input, input.scopes);
    let scopes: string[] | undefined;
    if (!decision.allow && !input.requestedScopes && decision.stepUp.length) {
      const rest = input.scopes.filter((scope) => !decision.stepUp.includes(scope));
      if (rest.length) {
        const narrowed = await decide(input, rest);
        if (narrowed.allow) {
          decision = narrowed;
          scopes = rest;
        }
      }
    }
    const verdict = { version: String(decision.version), decidedBy: decision.decidedBy };
    if (decision.allow) return { allow: true, ...verdict, ...(scopes ? { scopes } : {}) };
    return {
      allow: false,
      reason: `${decision.message} (decided by ${decision.decidedBy.join(", ")}; policy version ${decision.version})`,
      ...verdict,
    };
  };
}
