// RFC 7662 introspection for resource servers, one policy for both token formats: oidc-provider answers for the
// opaque tokens it stores and asks `mayIntrospect` (its allowedPolicy); RFC 9068 JWTs, which it does not store,
// are answered by `introspectJwt` under the same policy and in the same shape.
import type { Client } from "oidc-provider";
import { DelegationStore } from "../delegation/delegations.ts";
import { audienceList, type PresentedTokens } from "../delegation/presented-token.ts";
import { isDelegatedTokenClaims } from "../delegation/token-claims.ts";

export interface JwtIntrospectionDeps {
  tokens: PresentedTokens;
  delegations: DelegationStore;
}

/**
 * RFC 7662 §4: a resource server learns only about tokens meant for it. A token whose delegation was revoked or
 * whose person left is inactive even before revocation has reached it (fail closed).
 */
export async function mayIntrospect(
  delegations: DelegationStore,
  client: Client,
  token: object,
): Promise<boolean> {
  if (client.deputy_kind !== "resource_server") return false;
  const aud = "aud" in token ? token.aud : undefined;
  if (!audienceList(aud).includes(String(client.deputy_resource))) return false;
  const extra = "extra" in token ? token.extra : undefined;
  if (!isDelegatedTokenClaims(extra)) return true;
  return DelegationStore.unusable(await delegations.state(extra.delegation.id)) === undefined;
}

/** RFC 7662 §2.2: a JWT Deputy issued that this resource server may see, with its claims; else only inactive. */
export async function introspectJwt(
  deps: JwtIntrospectionDeps,
  client: Client,
  value: string,
): Promise<Record<string, unknown>> {
  const token = await deps.tokens.read(value);
  const claims = token?.jwtClaims;
  if (!claims || !(await mayIntrospect(deps.delegations, client, { aud: claims.aud, extra: claims })))
    return { active: false };
  // A JWT signs exactly the claims oidc-provider answers for an opaque token (with its jti: it is not the token).
  return { ...claims, active: true, token_type: claims.cnf?.jkt ? "DPoP" : "Bearer" };
}
