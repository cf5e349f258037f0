// What Deputy adds to oidc-provider's answers at the token endpoint (and CIBA's backchannel endpoint), as one
// provider middleware; it comes after the audit's in PROVIDER_MIDDLEWARES, so the audit records the answer the
// client gets.
import { errorText } from "../http/error-text.ts";
import type { ClientKind } from "./client-store.ts";
import { refusedGrantType } from "./provider-internals.ts";
import type { ProviderMiddleware } from "./provider-middlewares.ts";

/** What each kind of client may do instead, for the description of a refused grant. */
const INSTEAD: Record<ClientKind, string> = {
  agent:
    "this agent is not registered for it (agents use token exchange and CIBA, and the authorization code flow when registered with redirect_uris)",
  resource_server: "resource servers only introspect tokens and ask for AuthZEN decisions",
  service: "service clients use client_credentials only",
};

export function answerTokenRequests(): ProviderMiddleware {
  return async (ctx, next) => {
    await next();
    const oidcCtx = ctx;
    // RFC 6749 §5.1: a token response carries Pragma: no-cache beside Cache-Control: no-store (oidc-provider's).
    if (oidcCtx.oidc?.route === "token") ctx.set("Pragma", "no-cache");
    const grantType = refusedGrantType(oidcCtx);
    if (grantType === undefined) return;
    // RFC 6749 §5.2 (CIBA Core §13 alike): an authenticated client that may not use the grant.
    const kind = oidcCtx.oidc.client?.deputy_kind as ClientKind | undefined;
    ctx.body = {
      error: "unauthorized_client",
      error_description: `${errorText(oidcCtx.oidc.client?.clientId ?? "")} may not use ${errorText(grantType)}: ${kind ? INSTEAD[kind] : "it is not registered for it"}`,
    };
  };
}
