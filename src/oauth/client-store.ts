// Serves OAuth clients to oidc-provider from the registry: agents, resource servers (which authenticate to
// introspect) and service clients (the admin client). Only active agents with an active owner are served;
// any other client id is unknown to the provider, which answers `invalid_client`. The owner checked is the
// primary owner: offboarding it hands the agent to its first active co-owner, if it has one, which becomes the
// primary owner (src/registry/offboarding.ts), so the agent keeps authenticating.

import { TtlCache } from "../cache/ttl-cache.ts";
import { AGENT_TASK } from "../delegation/agent-task.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { CIBA_GRANT, TOKEN_EXCHANGE_GRANT } from "../http/oauth-constants.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";

export type ClientKind = "agent" | "resource_server" | "service";

export interface ClientMetadata {
  client_id: string;
  client_name: string;
  deputy_kind: ClientKind;
  deputy_resource?: string;
  deputy_max_depth?: number;
  deputy_may_delegate_to?: string[];
  /** Scopes the agent may ever hold, per resource server URI. */
  deputy_grants?: Record<string, string[]>;
  /** May ask a person for a delegation without naming a task (shown as such, and capped short). */
  deputy_allow_untasked?: boolean;
  token_endpoint_auth_method: "client_secret_basic" | "private_key_jwt";
  client_secret?: string;
  jwks?: { keys: unknown[] };
  grant_types: string[];
  response_types: string[];
  redirect_uris: string[];
  scope?: string;
  dpop_bound_access_tokens?: boolean;
  [key: string]: unknown;
}

const CLIENT_ID = /^[\x20-\x7E]{1,200}$/;

export class ClientStore {
  readonly #prisma: PrismaClient;
  readonly #cache = new TtlCache<ClientMetadata | undefined>({ ttlMs: 60_000, maxEntries: 10_000 });

  constructor(prisma: PrismaClient, bus: InvalidationBus) {
    this.#prisma = prisma;
    bus.on("client", (clientId) => this.#cache.invalidate(clientId));
  }

  async find(clientId: string): Promise<ClientMetadata | undefined> {
    // Client ids are printable ASCII (RFC 6749 Appendix A.1); anything else is unknown without a lookup.
    if (!CLIENT_ID.test(clientId)) return undefined;
    return this.#cache.get(clientId, (id) => this.#load(id));
  }

  async #load(clientId: string): Promise<ClientMetadata | undefined> {
    const agent = await this.#prisma.agent.findUnique({
      where: { clientId },
      include: { owner: true, scopeGrants: { include: { resourceServer: true } } },
    });
    if (agent) {
      if (agent.status !== "active" || agent.owner.status !== "active") return undefined;
      const usesKey = agent.authMethod === "private_key_jwt";
      return {
        client_id: agent.clientId,
        client_name: agent.name,
        deputy_kind: "agent",
        token_endpoint_auth_method: usesKey ? "private_key_jwt" : "client_secret_basic",
        ...(usesKey
          ? { jwks: agent.jwks as { keys: unknown[] } }
          : { client_secret: agent.clientSecretHash ?? undefined }),
        // Every agent may ask a person by CIBA (poll mode: headless agents need no callback endpoint); those
        // with redirect URIs may also send the person through the browser (authorization code + PKCE).
        grant_types: [
          TOKEN_EXCHANGE_GRANT,
          CIBA_GRANT,
          ...(agent.redirectUris.length ? ["authorization_code"] : []),
        ],
        backchannel_token_delivery_mode: "poll",
        authorization_details_types: [AGENT_TASK],
        deputy_allow_untasked: agent.allowUntasked,
        deputy_max_depth: agent.maxDepth,
        deputy_may_delegate_to: agent.mayDelegateTo,
        deputy_grants: Object.fromEntries(
          agent.scopeGrants.map((grant) => [grant.resourceServer.uri, grant.scopes]),
        ),
        response_types: agent.redirectUris.length ? ["code"] : [],
        redirect_uris: agent.redirectUris,
        dpop_bound_access_tokens: agent.dpopRequired,
      };
    }
    const resource = await this.#prisma.resourceServer.findUnique({ where: { clientId } });
    if (resource) {
      return {
        client_id: resource.clientId,
        client_name: resource.name,
        deputy_kind: "resource_server",
        deputy_resource: resource.uri,
        token_endpoint_auth_method: "client_secret_basic",
        client_secret: resource.clientSecretHash,
        grant_types: [],
        response_types: [],
        redirect_uris: [],
      };
    }
    const service = await this.#prisma.serviceClient.findUnique({ where: { clientId } });
    if (service) {
      return {
        client_id: service.clientId,
        client_name: service.name,
        deputy_kind: "service",
        token_endpoint_auth_method: "client_secret_basic",
        client_secret: service.clientSecretHash,
        grant_types: ["client_credentials"],
        response_types: [],
        redirect_uris: [],
        scope: service.scopes.join(" "),
      };
    }
    return undefined;
  }
}
