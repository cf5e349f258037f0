// RFC 7009 revocation at /token/revocation reaches the whole subtree: oidc-provider destroys the one token (and
// its own grant), and this cascade — called from the revocation allowedPolicy (provider.ts) once the caller is
// allowed, before the response — revokes what was derived from it:
//  - a delegation's subject token (a root of the lineage): the delegation is revoked, with all its tokens;
//  - any other token: it and every token exchanged from it, at any depth.
// Tokens Deputy has no lineage for (admin client-credentials tokens) are left to oidc-provider alone.
// RFC 9068 JWTs, which oidc-provider does not store, get the same check and cascade from jwt-endpoints.ts.
import { errors, type KoaContextWithOIDC } from "oidc-provider";
import { providerRequestContext } from "../audit/audit-log.ts";
import { tokenRef } from "../delegation/token-ref.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import type { RevocationService } from "../revocation/revocations.ts";

/** The token being revoked at /token/revocation, as oidc-provider hands it to the allowedPolicy. */
interface RevokedToken {
  jti: string;
  clientId?: string;
}

export interface RevocationCascadeDeps {
  prisma: PrismaClient;
  revocations: RevocationService;
}

export class RevocationCascade {
  readonly #deps: RevocationCascadeDeps;

  constructor(deps: RevocationCascadeDeps) {
    this.#deps = deps;
  }

  /** RFC 7009 §2.1: only the client the token was issued to may revoke it; others are refused (§2.2.1). */
  async revokeIssuedToken(ctx: KoaContextWithOIDC, clientId: string, token: RevokedToken): Promise<true> {
    if (token.clientId !== clientId)
      throw new errors.UnauthorizedClient("this token was not issued to the client asking to revoke it");
    // Revoking reaches the token's whole subtree (a subject token: its delegation), before the answer.
    await this.#cascade(ctx, token.jti);
    return true;
  }

  async #cascade(ctx: KoaContextWithOIDC, jti: string): Promise<void> {
    const ref = tokenRef(jti);
    const lineage = await this.#deps.prisma.issuedToken.findUnique({
      where: { jti: ref },
      select: { delegationId: true, parentJti: true, clientId: true },
    });
    if (!lineage) return;
    const context = providerRequestContext(ctx, lineage.clientId);
    if (lineage.parentJti === null) {
      await this.#deps.revocations.revoke(
        { delegations: [lineage.delegationId] },
        {
          trigger: "rfc7009",
          reason: "the agent revoked its subject token (RFC 7009)",
          target: lineage.delegationId,
        },
        context,
      );
      return;
    }
    await this.#deps.revocations.revoke(
      { tokens: [ref] },
      { trigger: "rfc7009", reason: "the agent revoked a token (RFC 7009)", target: lineage.clientId },
      context,
    );
  }
}
