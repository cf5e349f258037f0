import { randomBytes } from "node:crypto";
import { actClaim, type DelegatedTokenClaims, mayAct } from "../../delegation/token-claims.ts";
import { TOKEN_EXCHANGE_GRANT } from "../../oauth/constants.ts";
import { resourceServer } from "../../oauth/provider-internals.ts";
import { type ExchangeState, required } from "../exchange-state.ts";

/**
 * Mints the new token: opaque by default (stored, introspectable, revocable), RFC 9068 JWT (`typ: at+jwt`, ES256)
 * when the resource server asks for it. Each token gets a grant of its own, since oidc-provider's
 * introspection requires the grant's client and account to match the token's.
 */
export async function mintToken(state: ExchangeState): Promise<void> {
  const { provider } = state.deps;
  const subject = required(state.subject, "subject");
  const delegation = required(state.delegation, "delegation");
  const resource = required(state.resource, "resource");
  const chain = required(state.chain, "chain");
  const scope = required(state.scopes, "scopes").join(" ");
  const client = required(state.ctx.oidc.client, "client");

  const claims: DelegatedTokenClaims = {
    act: actClaim(chain),
    delegation: {
      id: delegation.id,
      task_id: delegation.taskId,
      task: delegation.taskDescription,
      ends_at: Math.floor(delegation.endsAt.getTime() / 1000),
      depth: chain.length,
      max_depth: required(state.maxDepth, "maxDepth"),
    },
    ...mayAct(client.deputy_may_delegate_to),
  };
  const format = resource.tokenFormat;
  // The grant serves this token alone, so both expire at the same second: `ttl.Grant` (sized for the
  // delegations that consent and CIBA grants carry) would keep every exchange's grant in Redis for hours.
  const exp = Math.floor(Date.now() / 1000) + required(state.expiresIn, "expiresIn");
  const grant = new provider.Grant({ accountId: subject.accountId, clientId: client.clientId });
  grant.exp = exp;
  grant.addResourceScope(resource.uri, scope);
  // oidc-provider assigns a grant's id only when it is saved: name it now, so the token can refer to it and
  // both can be saved at once (a token without its grant is inactive at introspection).
  grant.jti = randomBytes(24).toString("base64url");
  const grantId = grant.jti;
  const token = new provider.AccessToken({
    accountId: subject.accountId,
    client,
    grantId,
    gty: TOKEN_EXCHANGE_GRANT,
    scope,
    exp,
    extra: claims,
    resourceServer: resourceServer(resource.uri, {
      audience: resource.uri,
      scope: resource.scopes.map((s) => s.name).join(" "),
      accessTokenFormat: format,
      ...(format === "jwt" ? { jwt: { sign: { alg: "ES256" } } } : {}),
    }),
  });
  if (state.jkt) token.setThumbprint("jkt", state.jkt);
  const [value] = await Promise.all([token.save(), grant.save()]);
  state.issued = { value, jti: token.jti, grantId, tokenType: state.jkt ? "DPoP" : "Bearer", format };
}
