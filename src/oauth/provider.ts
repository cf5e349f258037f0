// oidc-provider configuration: which features are on, where clients, resources and keys come from.
import type { JWK } from "jose";
import Provider, { type Configuration, errors } from "oidc-provider";
import type { Config } from "../config.ts";
import { DelegationStore } from "../delegation/delegations.ts";
import { isDelegatedTokenClaims } from "../delegation/token-claims.ts";
import type { ResourceCatalog } from "../registry/resource-catalog.ts";
import type { ClientStore } from "./client-store.ts";
import { ADMIN_RESOURCE, ADMIN_SCOPE } from "./constants.ts";
import { useHashedClientSecrets } from "./provider-internals.ts";

export interface ProviderDeps {
  config: Config;
  delegations: DelegationStore;
  adapter: NonNullable<Configuration["adapter"]>;
  clients: ClientStore;
  resources: ResourceCatalog;
  signingKeys: JWK[];
}

export function createProvider({
  config,
  adapter,
  resources,
  delegations,
  signingKeys,
}: ProviderDeps): Provider {
  const provider = new Provider(config.issuer, {
    adapter,
    jwks: { keys: signingKeys as never[] },
    extraClientMetadata: {
      properties: [
        "deputy_kind",
        "deputy_resource",
        "deputy_max_depth",
        "deputy_may_delegate_to",
        "deputy_grants",
      ],
    },
    scopes: ["openid", ADMIN_SCOPE],
    responseTypes: ["code"],
    clientDefaults: {
      grant_types: ["authorization_code"],
      id_token_signed_response_alg: "ES256",
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
    clientAuthMethods: ["client_secret_basic", "client_secret_post", "private_key_jwt"],
    enabledJWA: {
      clientAuthSigningAlgValues: ["ES256", "EdDSA", "PS256", "RS256"],
      idTokenSigningAlgValues: ["ES256"],
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // RFC 7662 §4: a resource server learns only about tokens meant for it. A token whose delegation was
        // revoked or whose person left is inactive even before revocation has reached it (fail closed).
        allowedPolicy: async (_ctx, client, token) => {
          if (client.deputy_kind !== "resource_server") return false;
          if (!audienceOf(token).includes(String(client.deputy_resource))) return false;
          const extra = "extra" in token ? token.extra : undefined;
          if (!isDelegatedTokenClaims(extra)) return true;
          return DelegationStore.unusable(await delegations.state(extra.delegation.id)) === undefined;
        },
      },
      revocation: {
        enabled: true,
        // RFC 7009 §2.1: only the client the token was issued to may revoke it; others are refused (§2.2.1).
        allowedPolicy: async (_ctx, client, token) => {
          if (token.clientId !== client.clientId) {
            throw new errors.UnauthorizedClient(
              "this token was not issued to the client asking to revoke it",
            );
          }
          return true;
        },
      },
      pushedAuthorizationRequests: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, client, oneOf) =>
          oneOf ?? (client.deputy_kind === "service" ? ADMIN_RESOURCE : undefined),
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, indicator, client) => {
          if (indicator === ADMIN_RESOURCE) {
            if (client.deputy_kind !== "service")
              throw new errors.InvalidTarget("this client may not ask for the admin API");
            return {
              scope: ADMIN_SCOPE,
              audience: ADMIN_RESOURCE,
              accessTokenTTL: config.adminTokenTtl,
              accessTokenFormat: "opaque",
            };
          }
          if (client.deputy_kind !== "agent")
            throw new errors.InvalidTarget("only agents get tokens for resource servers");
          const resource = await resources.findByUri(indicator);
          if (!resource) throw new errors.InvalidTarget(`unknown resource server: ${indicator}`);
          return {
            scope: resource.scopes.map((scope) => scope.name).join(" "),
            audience: resource.uri,
            accessTokenTTL: Math.min(resource.tokenTtlSeconds, config.tokenTtlCap),
            accessTokenFormat: resource.tokenFormat === "jwt" ? "jwt" : "opaque",
            ...(resource.tokenFormat === "jwt" ? { jwt: { sign: { alg: "ES256" } } } : {}),
          };
        },
      },
    },
    // Delegated tokens carry act/delegation claims set by whoever minted them; re-emit them so the opaque
    // format stores them and the JWT format signs them.
    extraTokenClaims: async (_ctx, token) => ("extra" in token ? token.extra : undefined),
    ttl: {
      // A grant lives as long as the longest delegation it can carry.
      Grant: config.maxDelegationSeconds,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.adminTokenTtl,
    },
    renderError: async (ctx, out) => {
      ctx.type = "application/json";
      ctx.body = out;
    },
  });
  useHashedClientSecrets(provider);
  return provider;
}

function audienceOf(token: object): string[] {
  const aud = "aud" in token ? token.aud : undefined;
  if (typeof aud === "string") return [aud];
  return Array.isArray(aud) ? aud : [];
}
