// RFC 8693 token exchange for delegation: the steps run in this order, each typed by what it needs, and the
// issuance tail finishes; any step may refuse, and every refusal is an audit event with the reason given.
import { scopesOn } from "../delegation/resource-grants.ts";
import { TOKEN_EXCHANGE_GRANT } from "../http/oauth-constants.ts";
import { extend, type TokenResponse } from "../issuance/issuance-state.ts";
import { issueToken } from "../issuance/issue-token.ts";
import { describeExchange } from "./exchange-audit.ts";
import { validateParameters } from "./exchange-request.ts";
import type { ExchangeCall, ExchangeDeps, ExchangeState } from "./exchange-state.ts";
import { checkActor } from "./steps/check-actor.ts";
import { checkDelegation } from "./steps/check-delegation.ts";
import { checkDepth, currentChain } from "./steps/check-depth.ts";
import { loadSubjectToken } from "./steps/load-subject-token.ts";
import { narrowScope } from "./steps/narrow-scope.ts";
import { requireAgent } from "./steps/require-agent.ts";
import { resolveTarget } from "./steps/resolve-target.ts";

/** The parameters a token exchange request may carry (oidc-provider passes only these to the grant). */
export const EXCHANGE_PARAMETERS = [
  "subject_token",
  "subject_token_type",
  "actor_token",
  "actor_token_type",
  "requested_token_type",
  "resource",
  "audience",
  "scope",
  // Deputy's own: why the agent asks, recorded in the audit trail as its unverified claim (agent_claim).
  "reasoning",
];
/** RFC 8693 §2.1: resource and audience may each be sent more than once. */
export const EXCHANGE_DUPLICATES_ALLOWED = ["resource", "audience"];

export async function exchangeToken(deps: ExchangeDeps, call: ExchangeCall): Promise<TokenResponse> {
  const state: ExchangeState = {
    deps,
    call,
    grantType: TOKEN_EXCHANGE_GRANT,
    describe: () => describeExchange(state, "allow"),
  };
  try {
    requireAgent(state);
    const request = validateParameters(call.params);
    const asked = extend(state, { request, requestedScopes: request.scopes });
    const loaded = extend(asked, { subject: await loadSubjectToken(asked) });
    const checked = extend(loaded, { parent: loaded.subject, delegation: await checkDelegation(loaded) });
    const acting = extend(checked, { chain: await checkActor(checked) });
    const targeted = extend(acting, { resource: await resolveTarget(acting) });
    const scoped = extend(targeted, {
      scopes: narrowScope({
        caller: call.caller,
        subjectScopes: targeted.subject.scopes,
        delegationScopes: scopesOn(targeted.delegation.grants, targeted.resource.uri),
        resource: targeted.resource,
        requested: request.scopes,
      }),
    });
    const grounds = extend(scoped, {
      maxDepth: checkDepth({
        chainLength: scoped.chain.length,
        tokenLimit: scoped.subject.claims.delegation.max_depth,
        delegationLimit: scoped.delegation.maxDepth,
        serverLimit: deps.maxDelegationDepth,
        callerMaxDepth: call.caller.maxDepth,
        chainAgents: await currentChain(scoped.chain, deps.activeAgent),
      }),
    });
    return await issueToken(grounds);
  } catch (error) {
    if (!state.issued) await recordRefusal(state, error);
    throw error;
  }
}

/** Every refused exchange is an audit event too, with the reason the agent was given. */
async function recordRefusal(state: ExchangeState, error: unknown): Promise<void> {
  const {
    error: code,
    error_description: description,
    message,
  } = error as {
    error?: string;
    error_description?: string;
    message?: string;
  };
  await state.deps.audit.commit(state.call.audit, {
    ...describeExchange(state, "deny"),
    reason: code ? `${code}: ${description ?? message ?? ""}` : "server_error",
  });
}
