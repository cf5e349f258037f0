// The discovery document says only what works. oidc-provider writes its metadata from its features; where a
// feature is on but Deputy refuses part of it, this provider middleware corrects the document it answers.
import type Provider from "oidc-provider";
import type { KoaContextWithOIDC } from "oidc-provider";

/** Metadata oidc-provider states that is not true of Deputy, and what is. */
const CORRECTIONS = {
  // CIBA Core §4: every user_code is refused (interaction/ciba.ts), so the parameter is not supported.
  backchannel_user_code_parameter_supported: false,
};

export function correctDiscovery(provider: Provider): void {
  provider.use(async (ctx, next) => {
    await next();
    if ((ctx as unknown as KoaContextWithOIDC).oidc?.route === "discovery" && ctx.status === 200)
      Object.assign(ctx.body as object, CORRECTIONS);
  });
}
