// /jwks as the database has it. oidc-provider fixes the JWKS it serves when it is constructed; this provider
// middleware answers its jwks route with the published keys instead (published-keys.ts), so a rotation made in
// any process is served by every process at once. The route, its CORS and its content type stay oidc-provider's.
import type { ProviderMiddleware } from "./provider-middlewares.ts";
import type { PublishedKeys } from "./published-keys.ts";

export function servePublishedKeys(deps: { published: PublishedKeys }): ProviderMiddleware {
  return async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === "jwks" && ctx.status === 200) ctx.body = await deps.published.jwks();
  };
}
