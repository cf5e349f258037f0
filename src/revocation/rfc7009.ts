// RFC 7009 revocation at /token/revocation reaches the whole subtree: oidc-provider destroys the one token (and
// its own grant), and this cascade — called from the revocation allowedPolicy in src/oauth/provider.ts once the
// caller is allowed, before the response — revokes what was derived from it:
//  - a delegation's subject token (a root of the lineage): the delegation is revoked, with all its tokens;
//  - any other token: it and every token exchanged from it, at any depth.
// Tokens Deputy has no lineage for (admin client-credentials tokens) are left to oidc-provider alone.
// RFC 9068 JWTs, which oidc-provider does not store, get the same check and cascade through `revokeJwt`.
import type Provider from "oidc-provider";
import { errors, type KoaContextWithOIDC } from "oidc-provider";
import { providerRequestContext } from "../audit/audit-log.ts";
import { type JwtAccessTokenDeps, verifyJwtAccessToken } from "../delegation/jwt-access-token.ts";
import { tokenRef } from "../delegation/token-ref.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import type { RevocationService } from "./revocations.ts";

interface Cascade {
  prisma: PrismaClient;
  revocations: RevocationService;
}

const cascades = new WeakMap<Provider, Cascade>();

/** Connects a provider's revocation endpoint to the revocation service (called once when the server is built). */
export function registerRevocationCascade(provider: Provider, cascade: Cascade): void {
  cascades.set(provider, cascade);
}

/** The token being revoked at /token/revocation, as oidc-provider hands it to the allowedPolicy. */
interface RevokedToken {
  jti: string;
  clientId?: string;
}

/** RFC 7009 §2.1: only the client the token was issued to may revoke it; others are refused (§2.2.1). */
export async function revokeIssuedToken(
  ctx: KoaContextWithOIDC,
  clientId: string,
  token: RevokedToken,
): Promise<true> {
  if (token.clientId !== clientId)
    throw new errors.UnauthorizedClient("this token was not issued to the client asking to revoke it");
  // Revoking reaches the token's whole subtree (a subject token: its delegation), before the answer.
  return cascadeRevocation(ctx, token);
}

/** A JWT Deputy issued and has not revoked; any other token is no error and changes nothing (RFC 7009 §2.2). */
export async function revokeJwt(
  ctx: KoaContextWithOIDC,
  deps: JwtAccessTokenDeps & { provider: Provider },
  clientId: string,
  value: string,
): Promise<void> {
  const token = await verifyJwtAccessToken(deps, value);
  if (token) await revokeIssuedToken(ctx, clientId, { jti: token.jti, clientId: token.client_id });
}

/** Resolves true once the cascade is done. */
async function cascadeRevocation(ctx: KoaContextWithOIDC, token: RevokedToken): Promise<true> {
  const cascade = cascades.get(ctx.oidc.provider);
  if (!cascade) return true;
  const ref = tokenRef(token.jti);
  const lineage = await cascade.prisma.issuedToken.findUnique({
    where: { jti: ref },
    select: { delegationId: true, parentJti: true, clientId: true },
  });
  if (!lineage) return true;
  const context = providerRequestContext(ctx, lineage.clientId);
  if (lineage.parentJti === null) {
    await cascade.revocations.revoke(
      { delegations: [lineage.delegationId] },
      {
        trigger: "rfc7009",
        reason: "the agent revoked its subject token (RFC 7009)",
        target: lineage.delegationId,
      },
      context,
    );
    return true;
  }
  await cascade.revocations.revoke(
    { tokens: [ref] },
    { trigger: "rfc7009", reason: "the agent revoked a token (RFC 7009)", target: lineage.clientId },
    context,
  );
  return true;
}
