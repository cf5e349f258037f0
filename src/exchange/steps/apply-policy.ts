import { errors } from "oidc-provider";
import { type ExchangeState, required } from "../exchange-state.ts";

/** The runtime policy may refuse what the static checks allowed. */
export async function applyPolicy(state: ExchangeState): Promise<void> {
  const decision = await state.deps.policy({
    personId: required(state.subject, "subject").accountId,
    chain: required(state.chain, "chain"),
    resource: required(state.resource, "resource"),
    scopes: required(state.scopes, "scopes"),
    delegation: required(state.delegation, "delegation"),
    clientAddress: state.ctx.ip,
    requestId: state.ctx.response.get("x-request-id") || undefined,
  });
  state.policy = { version: decision.version, decidedBy: decision.decidedBy };
  if (!decision.allow) throw new errors.AccessDenied(`refused by policy: ${decision.reason}`);
}
