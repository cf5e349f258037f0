import { errors } from "oidc-provider";
import { checkDpopProof } from "../../oauth/provider-internals.ts";
import { type ExchangeState, required } from "../exchange-state.ts";

/**
 * RFC 9449 §5: a valid DPoP proof binds the new token to its key (cnf.jkt); an invalid or replayed one is
 * refused. An agent or resource server marked "DPoP required" gets no bearer token; a DPoP-bound subject
 * token exchanged by its own holder needs a proof with the same key.
 */
export async function bindDpop(state: ExchangeState): Promise<void> {
  const subject = required(state.subject, "subject");
  const resource = required(state.resource, "resource");
  const proof = await checkDpopProof(state.deps.provider, state.ctx);
  if (!proof) {
    if (state.caller.dpopRequired)
      throw new errors.InvalidRequest(`${state.caller.clientId} must send a DPoP proof`);
    if (resource.dpopRequired)
      throw new errors.InvalidRequest(`${resource.uri} accepts only DPoP-bound tokens: send a DPoP proof`);
  }
  if (subject.jkt && subject.clientId === state.caller.clientId && proof?.thumbprint !== subject.jkt) {
    throw new errors.InvalidDpopProof("subject_token is DPoP-bound: prove possession of its key");
  }
  state.jkt = proof?.thumbprint;
}
