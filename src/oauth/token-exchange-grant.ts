// The token endpoint's side of RFC 8693 token exchange: oidc-provider authenticates the client and parses the
// request; this hands the grant (src/exchange) the request and the endpoint's services — the client as Deputy
// knows it, DPoP proof checking, minting through oidc-provider's models — and answers with what it returns.
import { randomBytes } from "node:crypto";
import type Provider from "oidc-provider";
import type { KoaContextWithOIDC } from "oidc-provider";
import { providerRequestContext } from "../audit/audit-log.ts";
import type { ExchangeCall, ExchangeDeps } from "../exchange/exchange-state.ts";
import {
  EXCHANGE_DUPLICATES_ALLOWED,
  EXCHANGE_PARAMETERS,
  exchangeToken,
} from "../exchange/token-exchange.ts";
import { TOKEN_EXCHANGE_GRANT } from "../http/oauth-constants.ts";
import type { Caller, MintedToken, TokenToMint } from "../issuance/issuance-state.ts";
import { toProviderError } from "./provider-errors.ts";
import { checkDpopProof, resourceServer } from "./provider-internals.ts";

export function registerTokenExchange(provider: Provider, deps: ExchangeDeps): void {
  provider.registerGrantType(
    TOKEN_EXCHANGE_GRANT,
    async (ctx: KoaContextWithOIDC) => {
      try {
        ctx.body = await exchangeToken(deps, exchangeCall(provider, ctx));
      } catch (error) {
        throw toProviderError(error);
      }
    },
    EXCHANGE_PARAMETERS,
    EXCHANGE_DUPLICATES_ALLOWED,
  );
}

/** The authenticated client as the grants read it (oidc-provider exposes the metadata it knows in camelCase). */
function callerOf(ctx: KoaContextWithOIDC): Caller {
  const client = ctx.oidc.client;
  return {
    kind: client?.deputy_kind as string | undefined,
    clientId: String(client?.clientId),
    maxDepth: Number(client?.deputy_max_depth ?? 1),
    dpopRequired: Boolean(client?.dpopBoundAccessTokens),
    grants: (client?.deputy_grants as Record<string, string[]> | undefined) ?? {},
    mayDelegateTo: (client?.deputy_may_delegate_to as string[] | undefined) ?? [],
    jwks: client?.jwks as Caller["jwks"],
  };
}

function exchangeCall(provider: Provider, ctx: KoaContextWithOIDC): ExchangeCall {
  const caller = callerOf(ctx);
  return {
    caller,
    params: (ctx.oidc.params ?? {}) as Record<string, unknown>,
    clientAddress: ctx.ip,
    requestId: ctx.response.get("x-request-id") || undefined,
    audit: providerRequestContext(ctx, caller.clientId),
    dpopProof: () => checkDpopProof(provider, ctx),
    mint: (token) => mint(provider, ctx, token),
    destroy: (jti) => provider.AccessToken.adapter.destroy(jti),
    storedTokenClient: async (value) => (await provider.AccessToken.find(value))?.clientId,
  };
}

/**
 * Mints through oidc-provider's models, so the token is stored, introspected and revoked like its own. Each token
 * gets a grant of its own, since oidc-provider's introspection requires the grant's client and account to match.
 */
async function mint(provider: Provider, ctx: KoaContextWithOIDC, token: TokenToMint): Promise<MintedToken> {
  const client = ctx.oidc.client;
  if (!client) throw new Error("token exchange without an authenticated client");
  const { resource } = token;
  // The grant serves this token alone, so both expire at the same second: `ttl.Grant` (sized for the
  // delegations that consent and CIBA grants carry) would keep every exchange's grant in Redis for hours.
  const grant = new provider.Grant({ accountId: token.personId, clientId: client.clientId });
  grant.exp = token.exp;
  grant.addResourceScope(resource.uri, token.scope);
  // oidc-provider assigns a grant's id only when it is saved: name it now, so the token can refer to it and
  // both can be saved at once (a token without its grant is inactive at introspection).
  grant.jti = randomBytes(24).toString("base64url");
  const grantId = grant.jti;
  const accessToken = new provider.AccessToken({
    accountId: token.personId,
    client,
    grantId,
    gty: token.grantType,
    scope: token.scope,
    exp: token.exp,
    extra: token.claims,
    resourceServer: resourceServer(resource.uri, {
      audience: resource.uri,
      scope: resource.scopes.map((s) => s.name).join(" "),
      accessTokenFormat: resource.tokenFormat,
      ...(resource.tokenFormat === "jwt" ? { jwt: { sign: { alg: "ES256" } } } : {}),
    }),
  });
  if (token.jkt) accessToken.setThumbprint("jkt", token.jkt);
  const [value] = await Promise.all([accessToken.save(), grant.save()]);
  return { value, jti: accessToken.jti, grantId };
}
