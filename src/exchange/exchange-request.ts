// RFC 8693 §2.1: the token exchange request's own shape, checked before any token is looked at.
import { ACCESS_TOKEN_TYPE } from "../http/oauth-constants.ts";
import { OAuthError } from "../http/oauth-error.ts";

const MAX_TOKEN_LENGTH = 8192;
const TOKEN_TYPES_ACCEPTED_FOR_ACTOR = new Set([ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt"]);

/** A token exchange request whose parameters are well formed. */
export interface ExchangeRequest {
  subjectToken: string;
  actor?: { token: string; type: string };
  /** `resource` and `audience` together, as sent (RFC 8693 §2.1: each may be sent more than once). */
  targets: string[];
  /** The scopes asked for, once each; undefined when the agent named none. */
  scopes?: string[];
  /** Deputy's own: why the agent asks, recorded as its unverified claim (agent_claim). */
  reasoning?: unknown;
}

const invalid = (description: string) => new OAuthError("invalid_request", description);

const strings = (value: unknown): string[] =>
  [value].flat().filter((item): item is string => typeof item === "string" && item.length > 0);

export function validateParameters(params: Record<string, unknown>): ExchangeRequest {
  const subjectToken = params.subject_token;
  // RFC 8693 §2.1: subject_token and subject_token_type are REQUIRED.
  if (typeof subjectToken !== "string" || !subjectToken)
    throw invalid("missing required parameter 'subject_token'");
  if (!params.subject_token_type) throw invalid("missing required parameter 'subject_token_type'");
  if (params.subject_token_type !== ACCESS_TOKEN_TYPE)
    throw invalid(`subject_token_type must be ${ACCESS_TOKEN_TYPE}`);
  if (subjectToken.length > MAX_TOKEN_LENGTH) throw invalid("subject_token is too long");
  if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
    throw invalid(`requested_token_type must be ${ACCESS_TOKEN_TYPE} (the only type Deputy issues)`);
  }
  return {
    subjectToken,
    actor: actorOf(params),
    targets: [...new Set([...strings(params.resource), ...strings(params.audience)])],
    scopes: scopesOf(params.scope),
    reasoning: params.reasoning,
  };
}

/** RFC 8693 §2.1: actor_token_type is REQUIRED when actor_token is present, and must not be sent without it. */
function actorOf(params: Record<string, unknown>): ExchangeRequest["actor"] {
  const { actor_token: token, actor_token_type: type } = params;
  if (token === undefined && type === undefined) return undefined;
  if (typeof token !== "string" || !token) throw invalid("actor_token_type was sent without an actor_token");
  if (!type) throw invalid("actor_token requires actor_token_type");
  if (!TOKEN_TYPES_ACCEPTED_FOR_ACTOR.has(String(type)))
    throw invalid("actor_token_type must be an access_token or jwt token type");
  if (token.length > MAX_TOKEN_LENGTH) throw invalid("actor_token is too long");
  return { token, type: String(type) };
}

function scopesOf(scope: unknown): string[] | undefined {
  if (scope === undefined) return undefined;
  const scopes = String(scope).split(" ").filter(Boolean);
  if (scopes.length === 0)
    throw new OAuthError("invalid_scope", "scope is empty; omit it to receive every scope you may have", {
      scope: "",
    });
  return [...new Set(scopes)];
}
