// oidc-provider configuration: which features are on, where clients, resources and keys come from.
import type { JWK } from "jose";
import Provider, { type Configuration, errors, interactionPolicy } from "oidc-provider";
import type { AuditLog } from "../audit/audit-log.ts";
import type { Config } from "../config.ts";
import { AGENT_TASK, validateAgentTask } from "../delegation/agent-task.ts";
import type { DelegationStore } from "../delegation/delegations.ts";
import { isDelegatedTokenClaims } from "../delegation/token-claims.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { ADMIN_RESOURCE, ADMIN_SCOPE, CLIENT_AUTH_ALGS } from "../http/oauth-constants.ts";
import { trustProxies } from "../http/proxy.ts";
import type { Adapter } from "../redis/redis-adapter.ts";
import type { ResourceCatalog } from "../registry/resource-catalog.ts";
import type { ClientStore } from "./client-store.ts";
import { mayIntrospect } from "./introspection.ts";
import { withProviderErrors } from "./provider-errors.ts";
import type { ProviderHooks } from "./provider-hooks.ts";
import { useHashedClientSecrets } from "./provider-internals.ts";
import type { PushedRequestClaims } from "./pushed-requests.ts";
import { authorizationRequestPolicy } from "./request-policy.ts";
import type { RevocationCascade } from "./rfc7009.ts";
import { type SubjectTokenDeps, subjectTokenClaims, subjectTokenResource } from "./subject-token-hook.ts";

export interface ProviderDeps {
  config: Config;
  prisma: PrismaClient;
  audit: AuditLog;
  delegations: DelegationStore;
  adapter: NonNullable<Configuration["adapter"]>;
  clients: ClientStore;
  resources: ResourceCatalog;
  signingKeys: JWK[];
  /** The people's side: accounts, sign-in, CIBA, error pages. */
  hooks: ProviderHooks;
  /** RFC 7009: what revoking a token reaches. */
  cascade: RevocationCascade;
  /** RFC 9126 §4: a request_uri is used once. */
  pushedRequests: PushedRequestClaims;
}

/** How long a CIBA request is kept after it expires, so that polling gets expired_token (CIBA Core §11). */
const CIBA_EXPIRED_GRACE_SECONDS = 600;

export function createProvider({
  config,
  prisma,
  audit,
  adapter,
  resources,
  delegations,
  signingKeys,
  hooks,
  cascade,
  pushedRequests,
}: ProviderDeps): Provider {
  const checkAgentRequest = authorizationRequestPolicy(config.issuer);
  const tokens: SubjectTokenDeps = {
    prisma,
    audit,
    delegations,
    issuer: config.issuer,
    maxDelegationSeconds: config.maxDelegationSeconds,
  };
  const provider = new Provider(config.issuer, {
    adapter: keepExpiredCibaRequests(adapter),
    jwks: { keys: signingKeys as never[] },
    cookies: { keys: hooks.cookieKeys },
    extraClientMetadata: {
      properties: [
        "deputy_kind",
        "deputy_resource",
        "deputy_max_depth",
        "deputy_may_delegate_to",
        "deputy_grants",
        "deputy_allow_untasked",
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
      clientAuthSigningAlgValues: [...CLIENT_AUTH_ALGS],
      idTokenSigningAlgValues: ["ES256"],
    },
    findAccount: hooks.findAccount,
    // RFC 9700 §2.1.1: PKCE for every authorization request of every client — S256, the only method accepted.
    pkce: { required: () => true },
    interactions: { policy: interactionPolicyFor(hooks) },
    // Every authorization request gets its own consent and its own delegation: no grant is ever reused.
    loadExistingGrant: async (ctx) => {
      const grantId = ctx.oidc.result?.consent?.grantId;
      return grantId ? ctx.oidc.provider.Grant.find(grantId) : undefined;
    },
    // The delegation, not the browser session, decides how long the agent's token lives; and the agent gets
    // no refresh token: it exchanges the subject token, and asks the person again when the delegation ends.
    // oidc-provider's own issueRefreshToken already never issues one (no client has the refresh_token grant, no
    // scope is offline_access); replacing it would make oidc-provider support, and advertise, the grant.
    expiresWithSession: async () => false,
    // oidc-provider validates this parameter on every authorization, PAR and CIBA request, sent or not: at the
    // authorization endpoint, after the pushed request (if any) is loaded and checked against the client.
    extraParams: {
      authorization_details: async (ctx, value, client) => {
        await pushedRequests.claim(ctx);
        await checkAgentRequest(ctx, value, client);
      },
    },
    features: {
      devInteractions: { enabled: false },
      // Deputy's own /logout ends the browser session; agents have no use for RP-initiated logout.
      rpInitiatedLogout: { enabled: false },
      // Every access token Deputy issues has an audience, which oidc-provider's userinfo endpoint refuses, so it
      // could never answer; the ID token says who the person is.
      userinfo: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // RFC 7662 §4: only tokens meant for the resource server, while their delegation is usable.
        allowedPolicy: (_ctx, client, token) => mayIntrospect(delegations, client, token),
      },
      revocation: {
        enabled: true,
        // RFC 7009 §2.1: only by the client the token was issued to; it reaches the token's subtree.
        allowedPolicy: (ctx, client, token) => cascade.revokeIssuedToken(ctx, client.clientId, token),
      },
      pushedAuthorizationRequests: { enabled: true },
      richAuthorizationRequests: {
        enabled: true,
        types: {
          [AGENT_TASK]: {
            validate: (_ctx, detail) =>
              withProviderErrors(() => void validateAgentTask(detail, config.maxDelegationSeconds)),
          },
        },
        // The details stored with the code are those the person approved (recorded in the grant).
        authorizationDetailsForGrantSource: async (ctx) => ctx.oidc.grant?.rar,
        // RFC 9396 §7: the token response carries the authorization details granted to the token.
        authorizationDetailsForAccessToken: async (_ctx, _token, source) => source?.rar,
        authorizationDetailsForIntrospection: async (_ctx, token) => token.rar,
      },
      ciba: {
        enabled: true,
        deliveryModes: ["poll"],
        ...hooks.ciba,
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => {
          if (client.deputy_kind === "service") return oneOf ?? ADMIN_RESOURCE;
          if (client.deputy_kind !== "agent") return oneOf;
          // At the token endpoint an agent's code or CIBA request yields one token, the subject token, whichever
          // of the indicators it was asked under.
          if (oneOf) return oneOf[0];
          // An agent that names no resource asks for its registered resource servers that define a scope it asks.
          const grants = (client.deputy_grants ?? {}) as Record<string, string[]>;
          const asked = new Set(String(ctx.oidc.params?.scope ?? "").split(" "));
          const uris = Object.keys(grants).filter((uri) => grants[uri]?.some((scope) => asked.has(scope)));
          return uris.length ? uris : undefined;
        },
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, indicator, client) => {
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
          const grants = (client.deputy_grants ?? {}) as Record<string, string[]>;
          if (indicator !== config.issuer) {
            if (!(await resources.findByUri(indicator)))
              throw new errors.InvalidTarget(`unknown resource server: ${indicator}`);
            if (!grants[indicator]?.length)
              throw new errors.InvalidTarget(
                `${client.clientId} may not be delegated access to ${indicator}`,
              );
          }
          // Tokens for resource servers come only from token exchange: what an agent gets here, under any
          // indicator, is the subject token of the delegation the person approves, for Deputy itself.
          return subjectTokenResource(tokens, ctx, [...new Set(Object.values(grants).flat())]);
        },
      },
    },
    // Delegated tokens minted by the exchange carry act/delegation claims in `extra`; re-emit them so the
    // opaque format stores them and the JWT format signs them. A token minted from a person's approval (code
    // or CIBA) gets its delegation's claims, found by its grant.
    extraTokenClaims: async (ctx, token) => {
      if ("extra" in token && isDelegatedTokenClaims(token.extra)) return token.extra;
      const claims = await subjectTokenClaims(tokens, ctx, token);
      return claims ? { ...claims } : "extra" in token ? token.extra : undefined;
    },
    ttl: {
      // A grant lives as long as the longest delegation it can carry; an exchanged token's own grant is given
      // the token's expiry instead (exchange/steps/mint-token.ts).
      Grant: config.maxDelegationSeconds,
      ClientCredentials: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.adminTokenTtl,
      AccessToken: (_ctx, token) => token.resourceServer?.accessTokenTTL ?? config.tokenTtlCap,
      AuthorizationCode: 60,
      IdToken: 300,
      Interaction: 3600,
      Session: config.sessionSeconds,
      BackchannelAuthenticationRequest: (ctx) => {
        const requested = Number(ctx?.oidc?.params?.requested_expiry);
        return Number.isSafeInteger(requested) && requested > 0 ? Math.min(600, requested) : 600;
      },
    },
    renderError: hooks.renderError,
  });
  useHashedClientSecrets(provider);
  trustProxies(provider, config.trustedProxies);
  return provider;
}

/**
 * oidc-provider's default policy, plus: the login prompt also asks whenever the browser's oidc-provider session
 * is not the person signed in to Deputy's pages (Deputy's session is the authority, see ui-sessions.ts), and the
 * consent prompt asks for every request that has not been answered by the person in this very interaction.
 */
function interactionPolicyFor(hooks: ProviderHooks) {
  const { Check, base } = interactionPolicy;
  const policy = base();
  policy
    .get("login")
    ?.checks.push(
      new Check(
        "deputy_session",
        "the person signed in to Deputy is not the one this session belongs to",
        async (ctx) => (await hooks.signedInPerson(ctx)) !== ctx.oidc.session?.accountId,
      ),
    );
  policy
    .get("consent")
    ?.checks.push(
      new Check(
        "deputy_delegation",
        "every delegation needs the person's approval",
        (ctx) => !ctx.oidc.result?.consent?.grantId,
      ),
    );
  return policy;
}

/** Keeps CIBA requests a while past their expiry so the token endpoint can say expired_token, not "not found". */
function keepExpiredCibaRequests(adapter: NonNullable<Configuration["adapter"]>): Configuration["adapter"] {
  const factory = adapter as unknown as (name: string) => Adapter;
  return ((name: string): Adapter => {
    const inner = factory(name);
    if (name !== "BackchannelAuthenticationRequest") return inner;
    return {
      upsert: (id, payload, expiresIn) =>
        inner.upsert(
          id,
          payload,
          expiresIn === undefined ? undefined : expiresIn + CIBA_EXPIRED_GRACE_SECONDS,
        ),
      find: (id) => inner.find(id),
      findByUid: (uid) => inner.findByUid(uid),
      findByUserCode: (code) => inner.findByUserCode(code),
      consume: (id) => inner.consume(id),
      destroy: (id) => inner.destroy(id),
      revokeByGrantId: (grantId) => inner.revokeByGrantId(grantId),
    };
  }) as unknown as Configuration["adapter"];
}
