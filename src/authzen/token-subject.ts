// An AuthZEN subject given as the access token the agent presented ({"type": "token", "id": <token>}), read
// in-process by the one presented-token reader: the asking resource server must be its audience and the
// delegation behind it must still be usable.
import { type DelegationState, DelegationStore } from "../delegation/delegations.ts";
import type { PresentedTokens } from "../delegation/presented-token.ts";

export interface TokenSubject {
  jti: string;
  personId: string;
  /** The agent chain, the agent holding the token first. */
  chain: string[];
  scopes: string[];
  delegation: DelegationState;
}

export interface TokenSubjectDeps {
  tokens: PresentedTokens;
  delegations: DelegationStore;
}

/** The token's subject, or why it is not active for this resource server. */
export async function tokenSubject(
  deps: TokenSubjectDeps,
  value: string,
  audience: string,
): Promise<TokenSubject | { inactive: string }> {
  const token = await deps.tokens.read(value, audience);
  if (!token) return { inactive: "the token is not an active access token for this resource server" };
  const delegation = await deps.delegations.state(token.claims.delegation.id);
  const unusable = DelegationStore.unusable(delegation);
  if (unusable || !delegation) return { inactive: `the token is no longer active: ${unusable}` };
  return { jti: token.jti, personId: token.personId, chain: token.chain, scopes: token.scopes, delegation };
}
