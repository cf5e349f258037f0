// The token an agent receives at the token endpoint after a person approved (authorization code or CIBA) is the
// delegation's subject token: opaque, for Deputy itself (audience = the issuer, so no resource server accepts
// it), expiring no later than the delegation, carrying the delegation's claims, and recorded in the lineage
// before it leaves the server. The agent turns it into resource tokens by token exchange (RFC 8693).
import type { KoaContextWithOIDC, ResourceServer } from "oidc-provider";
import { errors } from "oidc-provider";
import type { AuditLog } from "../audit/audit-log.ts";
import { DelegationStore } from "../delegation/delegations.ts";
import { groupByResource, scopeNames } from "../delegation/resource-grants.ts";
import { recordSubjectToken, rootTokenClaims } from "../delegation/subject-token.ts";
import type { DelegatedTokenClaims } from "../delegation/token-claims.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";

export interface SubjectTokenDeps {
  prisma: PrismaClient;
  audit: AuditLog;
  delegations: DelegationStore;
  issuer: string;
  maxDelegationSeconds: number;
}

/**
 * What oidc-provider mints for an agent under any resource indicator it may ask for: a subject token for Deputy.
 * At the token endpoint its lifetime is what is left of the delegation behind the grant.
 */
export async function subjectTokenResource(
  deps: SubjectTokenDeps,
  ctx: KoaContextWithOIDC,
  agentScopes: string[],
): Promise<ResourceServer> {
  let ttl = deps.maxDelegationSeconds;
  if (ctx.oidc.route === "token") {
    const grantId = ctx.oidc.entities.Grant?.jti;
    const row = grantId
      ? await deps.prisma.delegation.findUnique({ where: { grantId }, select: { id: true } })
      : null;
    const state = row ? await deps.delegations.state(row.id) : undefined;
    const problem = DelegationStore.unusable(state);
    if (problem || !state) throw new errors.InvalidGrant(`no token can be issued: ${problem}`);
    ttl = Math.floor((state.endsAt.getTime() - Date.now()) / 1000);
    if (ttl < 1) throw new errors.InvalidGrant("no token can be issued: the delegation has ended");
  }
  return {
    scope: agentScopes.join(" "),
    audience: deps.issuer,
    accessTokenFormat: "opaque",
    accessTokenTTL: ttl,
  };
}

interface MintedToken {
  kind: string;
  jti: string;
  grantId?: string;
  clientId?: string;
  scope?: string;
  expiration: number;
}

/** The delegation's claims for a token minted from its grant; lineage and audit are committed first. */
export async function subjectTokenClaims(
  deps: SubjectTokenDeps,
  ctx: KoaContextWithOIDC | undefined,
  token: MintedToken,
): Promise<DelegatedTokenClaims | undefined> {
  if (token.kind !== "AccessToken" || !token.grantId || !token.clientId) return undefined;
  const row = await deps.prisma.delegation.findUnique({
    where: { grantId: token.grantId },
    include: { agent: true, person: true, scopes: true },
  });
  if (!row) return undefined;
  if (row.agent.clientId !== token.clientId) throw new errors.InvalidGrant("client mismatch");
  const delegation = { ...row, grants: groupByResource(row.scopes) };
  const clientId = token.clientId;
  const granted = scopeNames(delegation.grants);
  const scopes = String(token.scope ?? "")
    .split(" ")
    .filter((scope) => scope && granted.includes(scope));
  await recordSubjectToken(
    deps.audit,
    { actor: clientId, requestId: ctx?.response.get("x-request-id") || undefined, clientAddress: ctx?.ip },
    {
      delegation,
      personEmail: delegation.person.email,
      clientId,
      jti: token.jti,
      grantId: token.grantId,
      scopes,
      expiresIn: token.expiration,
      details: { grant_type: ctx?.oidc?.params?.grant_type },
    },
  );
  return rootTokenClaims(delegation, clientId, delegation.agent.mayDelegateTo);
}
