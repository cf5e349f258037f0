// The opaque access tokens oidc-provider stores, as the presented-token reader (delegation/presented-token.ts)
// reads them.
import type Provider from "oidc-provider";
import type { StoredAccessTokens } from "../delegation/presented-token.ts";

export function storedAccessTokens(provider: Provider): StoredAccessTokens {
  return {
    async find(value) {
      const token = await provider.AccessToken.find(value);
      if (!token || token.isExpired) return undefined;
      // As oidc-provider's introspection does: the token's grant must still exist, for the same client and person.
      const grant = token.grantId ? await provider.Grant.find(token.grantId) : undefined;
      if (!grant || grant.clientId !== token.clientId || grant.accountId !== token.accountId)
        return undefined;
      return {
        jti: token.jti,
        clientId: token.clientId,
        accountId: token.accountId,
        scope: token.scope,
        aud: token.aud,
        exp: token.exp,
        jkt: token.jkt,
        extra: token.extra,
      };
    },
  };
}
