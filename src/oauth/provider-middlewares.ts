// Deputy's middlewares inside oidc-provider, in the one order they must have. Each awaits the provider and then
// looks at its answer, so a later one changes the answer before an earlier one sees it.
import type Provider from "oidc-provider";
import type { KoaContextWithOIDC } from "oidc-provider";
import { answerDatabaseOutages } from "./database-outage.ts";
import { correctDiscovery } from "./discovery.ts";
import { servePublishedKeys } from "./jwks-route.ts";
import { answerJwtAccessTokens } from "./jwt-endpoints.ts";
import { auditProviderEndpoints } from "./provider-audit.ts";
import { answerTokenRequests } from "./token-endpoint.ts";

export type ProviderMiddleware = (ctx: KoaContextWithOIDC, next: () => Promise<void>) => Promise<void>;

type Deps = Parameters<typeof auditProviderEndpoints>[0] &
  Parameters<typeof answerDatabaseOutages>[0] &
  Parameters<typeof answerJwtAccessTokens>[0] &
  Parameters<typeof servePublishedKeys>[0];

export const PROVIDER_MIDDLEWARES = [
  // First, so that it sees every answer, the JWT ones included.
  auditProviderEndpoints,
  // Pragma: no-cache on token responses; unauthorized_client for a grant the client may not use.
  answerTokenRequests,
  // A database outage answered 503 temporarily_unavailable, not 500 (the JWT endpoints' too).
  answerDatabaseOutages,
  // JWTs at introspection and revocation, which oidc-provider refuses.
  answerJwtAccessTokens,
  // /jwks as the database has it.
  servePublishedKeys,
  // Discovery says only what works.
  correctDiscovery,
] as const;

export function useProviderMiddlewares(provider: Provider, deps: Deps): void {
  for (const middleware of PROVIDER_MIDDLEWARES) provider.use(middleware(deps) as never);
}
