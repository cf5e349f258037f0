// RFC 9068 JWT access tokens at /token/introspection and /token/revocation. oidc-provider stores only opaque
// tokens, and refuses any JWT at these endpoints once it has authenticated the client. This provider middleware
// replaces that refusal with what an opaque token gets: introspection under the same policy and in the same
// shape (introspection.ts), revocation with the same check and cascade (rfc7009.ts). It must come after the
// audit middleware (provider-audit.ts) in PROVIDER_MIDDLEWARES, so that the audit sees its answers.
import type { Client, KoaContextWithOIDC } from "oidc-provider";
import { errors } from "oidc-provider";
import { introspectJwt, type JwtIntrospectionDeps } from "./introspection.ts";
import { refusedJwtAt } from "./provider-internals.ts";
import type { ProviderMiddleware } from "./provider-middlewares.ts";
import type { RevocationCascade } from "./rfc7009.ts";

export interface JwtEndpointDeps extends JwtIntrospectionDeps {
  cascade: RevocationCascade;
}

type Endpoint = (ctx: KoaContextWithOIDC, deps: JwtEndpointDeps) => Promise<void>;

export function answerJwtAccessTokens(deps: JwtEndpointDeps): ProviderMiddleware {
  return async (ctx, next) => {
    await next();
    const endpoint = refusedJwtAt(ctx);
    if (!endpoint) return;
    try {
      await ENDPOINTS[endpoint](ctx, deps);
    } catch (error) {
      answerError(ctx, error);
    }
  };
}

const ENDPOINTS: Record<"introspection" | "revocation", Endpoint> = {
  async introspection(ctx, deps) {
    const body = await introspectJwt(deps, client(ctx), token(ctx));
    ctx.status = 200;
    ctx.body = body;
  },
  // RFC 7009 §2.2: 200 with an empty body, whether or not there was anything to revoke: a JWT Deputy issued
  // and has not revoked gets the cascade, any other token changes nothing.
  async revocation(ctx, deps) {
    const jwt = await deps.tokens.read(token(ctx));
    if (jwt?.format === "jwt") await deps.cascade.revokeIssuedToken(ctx, client(ctx).clientId, jwt);
    ctx.status = 200;
    ctx.body = "";
  },
};

const client = (ctx: KoaContextWithOIDC): Client => ctx.oidc.client as Client;
const token = (ctx: KoaContextWithOIDC): string => String(ctx.oidc.params?.token);

/** As oidc-provider's error handler answers: its own errors as they are, anything else as a reported server_error. */
function answerError(ctx: KoaContextWithOIDC, error: unknown): void {
  if (error instanceof errors.OIDCProviderError) {
    ctx.status = error.statusCode;
    ctx.body = { error: error.error, error_description: error.error_description };
    return;
  }
  ctx.oidc.provider.emit("server_error", ctx, error);
  ctx.status = 500;
  ctx.body = { error: "server_error", error_description: "oops! something went wrong" };
}
