// oidc-provider answers every error it does not know as 500 server_error. When the error was the database being
// unreachable (http/unavailable.ts), the answer becomes 503 temporarily_unavailable with Retry-After: an outage
// that passes, which the client may retry. oidc-provider's error handler sits inside each of its routes, where no
// hook can change the error before it is rendered, and reports it through its `server_error` event: so
// `reportServerErrors` notes the requests whose error was an outage (and logs every report: an outage as one
// warning line, anything else as an error with its stack), and the provider middleware `answerDatabaseOutages`
// rewrites their answers. In PROVIDER_MIDDLEWARES it comes after the audit and token-endpoint middlewares, which
// then see the answer given, and before the JWT endpoints', whose errors it answers too.
import type Provider from "oidc-provider";
import type { KoaContextWithOIDC } from "oidc-provider";
import { answerDatabaseUnavailable, databaseOutage, type UnavailableBody } from "../http/unavailable.ts";
import type { Logger } from "../logger.ts";
import type { ProviderMiddleware } from "./provider-middlewares.ts";

/** Requests whose server_error was an outage (their contexts, shared by the event and the middleware). */
const outages = new WeakSet<object>();

export function reportServerErrors(provider: Provider, log: Logger): void {
  provider.on("server_error", (ctx, error) => {
    const outage = databaseOutage(error);
    if (!outage) return log.error({ err: error }, "oidc-provider server error");
    log.warn({ error: outage, path: ctx.path }, "request failed: the database is unavailable");
    outages.add(ctx);
  });
}

export function answerDatabaseOutages(deps: {
  renderError(ctx: KoaContextWithOIDC, out: UnavailableBody): Promise<void>;
}): ProviderMiddleware {
  return async (ctx, next) => {
    await next();
    if (!outages.has(ctx)) return;
    // An authorization request's error has been sent back to the client's redirect URI already.
    if (ctx.status >= 300 && ctx.status < 400) return;
    // A page rendered for a browser is rendered again, in its shape; every other answer is JSON.
    const page = typeof ctx.body === "string";
    answerDatabaseUnavailable(ctx);
    if (page) await deps.renderError(ctx, ctx.body as UnavailableBody);
  };
}
