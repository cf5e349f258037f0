// What a token exchange reads and finds, in the order its steps find it; the issuance tail (src/issuance) takes
// over once the grounds are established.
import type { DelegationStore } from "../delegation/delegations.ts";
import type { PresentedToken, PresentedTokens } from "../delegation/presented-token.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import type { IssuanceCall, IssuanceDeps, IssuanceState } from "../issuance/issuance-state.ts";
import type { ResourceCatalog } from "../registry/resource-catalog.ts";
import type { ExchangeRequest } from "./exchange-request.ts";

export interface ExchangeDeps extends IssuanceDeps {
  issuer: string;
  prisma: PrismaClient;
  /** The one reader of presented tokens (subject and actor tokens). */
  tokens: PresentedTokens;
  resources: ResourceCatalog;
  delegations: DelegationStore;
  /** An active agent as the registry has it now (cached); undefined when it is not an active agent. */
  activeAgent(clientId: string): Promise<{ mayDelegateTo: string[]; maxDepth: number } | undefined>;
  /** The server's limit on any chain's length (DEPUTY_MAX_DELEGATION_DEPTH). */
  maxDelegationDepth: number;
}

export interface ExchangeCall extends IssuanceCall {
  /** The request's parameters as the endpoint parsed them (RFC 8693 §2.1). */
  params: Record<string, unknown>;
  /** The client id of a stored opaque access token, for actor_token (any of the caller's tokens). */
  storedTokenClient(value: string): Promise<string | undefined>;
}

export interface ExchangeState extends IssuanceState {
  deps: ExchangeDeps;
  call: ExchangeCall;
  request?: ExchangeRequest;
  subject?: PresentedToken;
}
