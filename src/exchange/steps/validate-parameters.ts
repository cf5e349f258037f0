import { errors } from "oidc-provider";
import { ACCESS_TOKEN_TYPE } from "../../http/oauth-constants.ts";
import type { ExchangeState } from "../exchange-state.ts";

const MAX_TOKEN_LENGTH = 8192;
const TOKEN_TYPES_ACCEPTED_FOR_ACTOR = new Set([ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt"]);

/** RFC 8693 §2.1: the request's own shape, before any token is looked at. */
export async function validateParameters(state: ExchangeState): Promise<void> {
  const params = state.ctx.oidc.params as Record<string, string | string[] | undefined>;
  const subjectToken = params.subject_token;
  // RFC 8693 §2.1: subject_token and subject_token_type are REQUIRED.
  if (typeof subjectToken !== "string" || !subjectToken) {
    throw new errors.InvalidRequest("missing required parameter 'subject_token'");
  }
  if (!params.subject_token_type)
    throw new errors.InvalidRequest("missing required parameter 'subject_token_type'");
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  if (subjectToken.length > MAX_TOKEN_LENGTH) throw new errors.InvalidRequest("subject_token is too long");
  if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest(
      `requested_token_type must be ${ACCESS_TOKEN_TYPE} (the only type Deputy issues)`,
    );
  }
  // RFC 8693 §2.1: actor_token_type is REQUIRED when actor_token is present, and must not be sent without it.
  if (params.actor_token !== undefined || params.actor_token_type !== undefined) {
    if (typeof params.actor_token !== "string" || !params.actor_token) {
      throw new errors.InvalidRequest("actor_token_type was sent without an actor_token");
    }
    if (!params.actor_token_type) throw new errors.InvalidRequest("actor_token requires actor_token_type");
    if (!TOKEN_TYPES_ACCEPTED_FOR_ACTOR.has(String(params.actor_token_type))) {
      throw new errors.InvalidRequest("actor_token_type must be an access_token or jwt token type");
    }
    if (params.actor_token.length > MAX_TOKEN_LENGTH)
      throw new errors.InvalidRequest("actor_token is too long");
  }
  if (params.scope !== undefined) {
    const scopes = String(params.scope).split(" ").filter(Boolean);
    if (scopes.length === 0)
      throw new errors.InvalidScope("scope is empty; omit it to receive every scope you may have", "");
    state.requestedScopes = [...new Set(scopes)];
  }
}
