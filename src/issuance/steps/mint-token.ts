import { actClaim, type DelegatedTokenClaims, mayAct } from "../../delegation/token-claims.ts";
import type { Grounds, IssuedToken, Known } from "../issuance-state.ts";

/**
 * Mints the new token through the endpoint: opaque by default (stored, introspectable, revocable), RFC 9068 JWT
 * when the resource server asks for it, bound to the DPoP key when one was proven.
 */
export async function mintToken(state: Known<Grounds, "expiresIn">): Promise<IssuedToken> {
  const { delegation, chain, resource } = state;
  const claims: DelegatedTokenClaims = {
    act: actClaim(chain),
    delegation: {
      id: delegation.id,
      task_id: delegation.taskId,
      task: delegation.taskDescription,
      ends_at: Math.floor(delegation.endsAt.getTime() / 1000),
      depth: chain.length,
      max_depth: state.maxDepth,
    },
    ...mayAct(state.call.caller.mayDelegateTo),
  };
  const minted = await state.call.mint({
    personId: state.parent.personId,
    grantType: state.grantType,
    resource,
    scope: state.scopes.join(" "),
    exp: Math.floor(Date.now() / 1000) + state.expiresIn,
    claims,
    jkt: state.jkt,
  });
  return { ...minted, tokenType: state.jkt ? "DPoP" : "Bearer", format: resource.tokenFormat };
}
