import { OAuthError } from "../../http/oauth-error.ts";
import { extend, type Grounds } from "../issuance-state.ts";

/**
 * The runtime policy may refuse what the static checks allowed, or narrow the default scope when none was asked
 * for. The verdict is kept on the state before a refusal, so the refusal's event names the version that decided.
 */
export async function applyPolicy(state: Grounds): Promise<{ scopes: string[] }> {
  const decision = await state.deps.policy({
    personId: state.parent.personId,
    chain: state.chain,
    resource: state.resource,
    scopes: state.scopes,
    delegation: state.delegation,
    clientAddress: state.call.clientAddress,
    requestId: state.call.requestId,
    requestedScopes: state.requestedScopes,
  });
  extend(state, { policy: { version: decision.version, decidedBy: decision.decidedBy } });
  if (!decision.allow) throw new OAuthError("access_denied", `refused by policy: ${decision.reason}`);
  const narrowed = decision.scopes?.filter((scope) => state.scopes.includes(scope));
  return { scopes: !state.requestedScopes && narrowed?.length ? narrowed : state.scopes };
}
