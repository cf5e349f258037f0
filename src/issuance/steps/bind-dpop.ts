import { OAuthError } from "../../http/oauth-error.ts";
import type { Grounds } from "../issuance-state.ts";

/**
 * RFC 9449 §5: a valid DPoP proof binds the new token to its key (cnf.jkt); an invalid or replayed one is
 * refused. An agent or resource server marked "DPoP required" gets no bearer token; a DPoP-bound parent token
 * used by its own holder needs a proof with the same key.
 */
export async function bindDpop(state: Grounds): Promise<string | undefined> {
  const { caller } = state.call;
  const proof = await state.call.dpopProof();
  if (!proof) {
    if (caller.dpopRequired)
      throw new OAuthError("invalid_request", `${caller.clientId} must send a DPoP proof`);
    if (state.resource.dpopRequired)
      throw new OAuthError(
        "invalid_request",
        `${state.resource.uri} accepts only DPoP-bound tokens: send a DPoP proof`,
      );
  }
  const { parent } = state;
  if (parent.jkt && parent.clientId === caller.clientId && proof?.thumbprint !== parent.jkt) {
    throw new OAuthError("invalid_dpop_proof", "subject_token is DPoP-bound: prove possession of its key");
  }
  return proof?.thumbprint;
}
