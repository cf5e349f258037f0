// RFC 9068 JWT access tokens at /token/introspection and /token/revocation. oidc-provider stores only opaque
// tokens, and refuses any JWT at these endpoints once it has authenticated the client. This provider middleware
// replaces that refusal with what an opaque token gets: introspection under the same policy and in the same
// shape (introspection.ts), revocation with the same check and cascade (rfc7009.ts). It must be registered after
// the audit middleware (provider-audit.ts), so that the audit sees its answers.
import type Provider from "oidc-provider";
import { type Client, errors, type KoaContextWithOIDC } from "oidc-provider";
import { introspectJwt, type JwtIntrospectionDeps } from "./introspection.ts";
import { refusedJwtAt } from "./provider-internals.ts";
import { revokeJwt } from "./rfc7009.ts";

type Deps = Omit<JwtIntrospectionDeps, "provider">;
type Endpoint = (
  ctx: KoaContextWithOIDC,
  deps: JwtIntrospectionDeps & { provider: Provider },
) => Promise<void>;

export function answerJwtAccessTokens(provider: Provider, deps: Deps): void {
  const withProvider = { ...deps, provider };
  provider.use(async (ctx, next) => {
    await next();
    const oidcCtx = ctx as unknown as KoaContextWithOIDC;
    const endpoint = refusedJwtAt(oidcCtx);
    if (!endpoint) return;
    try {
      await ENDPOINTS[endpoint](oidcCtx, withProvider);
    } catch (error) {
      answerError(oidcCtx, error);
    }
  });
}

const ENDPOINTS: Record<"introspection" | "revocation", Endpoint> = {
  async introspection(ctx, deps) {
    const body = await introspectJwt(deps, client(ctx), token(ctx));
    ctx.status = 200;
    ctx.body = body;
  },
  // RFC 7009 §2.2: 200 with an empty body, whether or not there was anything to revoke.
  async revocation(ctx, deps) {
    await revokeJwt(ctx, deps, client(ctx).clientId, token(ctx));
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
