import { errors } from "oidc-provider";
import { type ExchangeState, required } from "../exchange-state.ts";

/** The runtime policy may refuse what the static checks allowed, or narrow the default scope when none was asked for. */
export async function applyPolicy(state: ExchangeState): Promise<void> {
  const decision = await state.deps.policy({
    personId: required(state.subject, "subject").accountId,
    chain: required(state.chain, "chain"),
    resource: required(state.resource, "resource"),
    scopes: required(state.scopes, "scopes"),
    delegation: required(state.delegation, "delegation"),
    clientAddress: state.ctx.ip,
    requestId: state.ctx.response.get("x-request-id") || undefined,
    requestedScopes: state.requestedScopes,
  });
  state.policy = { version: decision.version, decidedBy: decision.decidedBy };
  if (!decision.allow) throw new errors.AccessDenied(`refused by policy: ${decision.reason}`);
  const narrowed = decision.scopes?.filter((scope) => state.scopes?.includes(scope));
  if (!state.requestedScopes && narrowed?.length) state.scopes = narrowed;
}
