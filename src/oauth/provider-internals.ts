// The ONE place that reaches into oidc-provider beyond its documented configuration. Its internals change
// between minor versions (the package is pinned exactly); keep every such use here.
import type Provider from "oidc-provider";
import { errors, type KoaContextWithOIDC, type ResourceServer as ResourceServerInfo } from "oidc-provider";
import ResourceServer from "oidc-provider/lib/helpers/resource_server.js";
import validateDpop, { checkDpopReplay, type DpopResult } from "oidc-provider/lib/helpers/validate_dpop.js";
import { CIBA_GRANT } from "../http/oauth-constants.ts";
import { verifyClientSecret } from "../security/secrets.ts";

/**
 * Client secrets are stored hashed, so the `client_secret` oidc-provider sees is the stored hash; make its
 * comparison hash the presented secret first (constant time).
 */
export function useHashedClientSecrets(provider: Provider): void {
  const prototype = provider.Client.prototype as unknown as {
    compareClientSecret(this: { clientSecret?: string }, actual: string): Promise<boolean>;
  };
  prototype.compareClientSecret = async function compareHashed(actual) {
    return typeof this.clientSecret === "string" && verifyClientSecret(actual, this.clientSecret);
  };
}

/** Validates a DPoP proof sent to the token endpoint (RFC 9449 §4.3) and rejects a replayed one (§11.1). */
export async function checkDpopProof(
  provider: Provider,
  ctx: KoaContextWithOIDC,
): Promise<DpopResult | undefined> {
  const proof = await validateDpop(provider, ctx);
  if (proof)
    await checkDpopReplay(provider, ctx, proof, String(ctx.oidc.client?.clientId), errors.InvalidDpopProof);
  return proof;
}

/** The resource server object oidc-provider uses to pick an access token's audience and format. */
export function resourceServer(
  identifier: string,
  info: ResourceServerInfo,
): InstanceType<typeof ResourceServer> {
  return new ResourceServer(identifier, info);
}

/**
 * The endpoint, if this answer is oidc-provider refusing a JWT at introspection or revocation
 * (`unsupported_token_type`). It refuses one only once the client is authenticated (client_auth.js runs before
 * reject_structured_tokens.js in lib/actions/introspection.js and revocation.js), so `ctx.oidc.client` is.
 */
export function refusedJwtAt(ctx: KoaContextWithOIDC): "introspection" | "revocation" | undefined {
  const route = ctx.oidc?.route;
  if (route !== "introspection" && route !== "revocation") return undefined;
  const body = ctx.body as { error?: unknown } | undefined;
  return ctx.status === 400 && body?.error === "unsupported_token_type" ? route : undefined;
}

/**
 * The grant type, if this answer is oidc-provider refusing an authenticated client a grant it is not registered
 * for. It says `invalid_request` with these descriptions, after client authentication: allowedGrantTypeCheck in
 * lib/actions/token.js (client_auth.js runs first there) and checkClientGrantType in
 * lib/actions/authorization/client.js (after client_auth.js on the backchannel_authentication stack).
 */
export function refusedGrantType(ctx: KoaContextWithOIDC): string | undefined {
  const body = ctx.body as { error?: unknown; error_description?: unknown } | undefined;
  if (ctx.status !== 400 || body?.error !== "invalid_request" || !ctx.oidc?.client) return undefined;
  const route = ctx.oidc.route;
  if (route === "token" && body.error_description === "requested grant type is not allowed for this client")
    return String(ctx.oidc.params?.grant_type);
  if (
    route === "backchannel_authentication" &&
    body.error_description === `${CIBA_GRANT} is not allowed for this client`
  )
    return CIBA_GRANT;
  return undefined;
}
