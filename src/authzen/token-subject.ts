// An AuthZEN subject given as the access token the agent presented ({"type": "token", "id": <token>}),
// introspected in-process: an opaque token through oidc-provider's AccessToken model (and its grant, as the
// introspection endpoint checks), a JWT by its signature and lineage. Either way the asking resource server
// must be its audience and the delegation behind it must still be usable.
import type { JWTVerifyGetKey } from "jose";
import type Provider from "oidc-provider";
import { type DelegationState, DelegationStore } from "../delegation/delegations.ts";
import { JWT_SHAPE, verifyJwtAccessToken } from "../delegation/jwt-access-token.ts";
import { actorChain, isDelegatedTokenClaims } from "../delegation/token-claims.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";

export interface TokenSubject {
  jti: string;
  personId: string;
  /** The agent chain, the agent holding the token first. */
  chain: string[];
  scopes: string[];
  delegation: DelegationState;
}

export interface TokenSubjectDeps {
  provider: Provider;
  prisma: PrismaClient;
  delegations: DelegationStore;
  signingKeys: JWTVerifyGetKey;
}

const OPAQUE_SHAPE = /^[\w-]{1,512}$/;

/** The token's subject, or why it is not active for this resource server. */
export async function tokenSubject(
  deps: TokenSubjectDeps,
  value: string,
  audience: string,
): Promise<TokenSubject | { inactive: string }> {
  const found = JWT_SHAPE.test(value)
    ? await fromJwt(deps, value, audience)
    : OPAQUE_SHAPE.test(value)
      ? await fromOpaque(deps, value, audience)
      : undefined;
  if (!found) return { inactive: "the token is not an active access token for this resource server" };
  const delegation = await deps.delegations.state(found.delegationId);
  const unusable = DelegationStore.unusable(delegation);
  if (unusable || !delegation) return { inactive: `the token is no longer active: ${unusable}` };
  return { jti: found.jti, personId: found.personId, chain: found.chain, scopes: found.scopes, delegation };
}

interface Found {
  jti: string;
  personId: string;
  chain: string[];
  scopes: string[];
  delegationId: string;
}

const words = (scope: unknown) =>
  String(scope ?? "")
    .split(" ")
    .filter(Boolean);

async function fromOpaque(
  deps: TokenSubjectDeps,
  value: string,
  audience: string,
): Promise<Found | undefined> {
  const token = await deps.provider.AccessToken.find(value);
  if (
    !token ||
    token.isExpired ||
    !token.accountId ||
    !token.clientId ||
    !isDelegatedTokenClaims(token.extra)
  ) {
    return undefined;
  }
  const aud = token.aud === undefined ? [] : Array.isArray(token.aud) ? token.aud : [token.aud];
  if (!aud.includes(audience)) return undefined;
  // As oidc-provider's introspection does: the token's grant must still exist, for the same client and person.
  const grant = token.grantId ? await deps.provider.Grant.find(token.grantId) : undefined;
  if (!grant || grant.clientId !== token.clientId || grant.accountId !== token.accountId) return undefined;
  return {
    jti: token.jti,
    personId: token.accountId,
    chain: actorChain(token.extra.act),
    scopes: words(token.scope),
    delegationId: token.extra.delegation.id,
  };
}

async function fromJwt(deps: TokenSubjectDeps, value: string, audience: string): Promise<Found | undefined> {
  const token = await verifyJwtAccessToken(deps, value, audience);
  if (!token) return undefined;
  return {
    jti: token.jti,
    personId: token.sub,
    chain: actorChain(token.act),
    scopes: words(token.scope),
    delegationId: token.delegation.id,
  };
}
