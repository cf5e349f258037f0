// The discovery document says only what works. oidc-provider writes its metadata from its features; where a
// feature is on but Deputy refuses part of it, this provider middleware corrects the document it answers.
import type { ProviderMiddleware } from "./provider-middlewares.ts";

/** Metadata oidc-provider states that is not true of Deputy, and what is. */
const CORRECTIONS = {
  // CIBA Core §4: every user_code is refused (pages/ciba.ts), so the parameter is not supported.
  backchannel_user_code_parameter_supported: false,
};

export function correctDiscovery(): ProviderMiddleware {
  return async (ctx, next) => {
    await next();
    if (ctx.oidc?.route === "discovery" && ctx.status === 200) Object.assign(ctx.body as object, CORRECTIONS);
  };
}
