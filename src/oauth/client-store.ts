// Serves OAuth clients to oidc-provider from the registry: agents, resource servers (which authenticate to
// introspect) and service clients (the admin client). Only active agents with an active owner are served;
// any other client id is unknown to the provider, which answers `invalid_client`.

import type { InvalidationBus } from "../events/invalidation-bus.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { TOKEN_EXCHANGE_GRANT } from "./constants.ts";

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

const CACHE_TTL_MS = 60_000;

export class ClientStore {
  readonly #prisma: PrismaClient;
  readonly #cache = new Map<string, { metadata: ClientMetadata | undefined; loadedAt: number }>();

  constructor(prisma: PrismaClient, bus: InvalidationBus) {
    this.#prisma = prisma;
    bus.on("client", (clientId) => {
      if (clientId === "*") this.#cache.clear();
      else this.#cache.delete(clientId);
    });
  }

  async find(clientId: string): Promise<ClientMetadata | undefined> {
    const cached = this.#cache.get(clientId);
    if (cached && Date.now() - cached.loadedAt < CACHE_TTL_MS) return cached.metadata;
    const metadata = await this.#load(clientId);
    this.#cache.set(clientId, { metadata, loadedAt: Date.now() });
    return metadata;
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
        grant_types: [TOKEN_EXCHANGE_GRANT, ...(agent.redirectUris.length ? ["authorization_code"] : [])],
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
