// What the token-exchange steps read and fill in, in the order they run.
import type { JWTVerifyGetKey } from "jose";
import type { KoaContextWithOIDC, Provider } from "oidc-provider";
import type { AuditLog } from "../audit/audit-log.ts";
import type { Config } from "../config.ts";
import type { DelegationState, DelegationStore } from "../delegation/delegations.ts";
import type { DelegatedTokenClaims } from "../delegation/token-claims.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import type { ClientStore } from "../oauth/client-store.ts";
import type { CatalogResource, ResourceCatalog } from "../registry/resource-catalog.ts";

/** The decision a policy makes about one exchange, with the policy version and what decided (for the audit). */
export type ExchangePolicy = (
  input: PolicyInput,
) => Promise<({ allow: true } | { allow: false; reason: string }) & PolicyVerdict>;

export interface PolicyVerdict {
  version?: string;
  decidedBy?: string[];
  /** When the agent named no scope, the policy may narrow the default (never widen it). */
  scopes?: string[];
}

export interface PolicyInput {
  personId: string;
  chain: string[];
  resource: CatalogResource;
  scopes: string[];
  delegation: DelegationState;
  clientAddress: string;
  requestId?: string;
  /** The scopes the agent asked for; undefined when it named none. */
  requestedScopes?: string[];
}

export interface ExchangeDeps {
  config: Config;
  provider: Provider;
  prisma: PrismaClient;
  audit: AuditLog;
  clients: ClientStore;
  resources: ResourceCatalog;
  delegations: DelegationStore;
  /** Deputy's own public keys, to verify JWT subject tokens. */
  signingKeys: JWTVerifyGetKey;
  policy: ExchangePolicy;
  /** The policy version in force now: recorded on exchanges refused before the policy decides. */
  policyVersion: () => string;
}

/** The token presented as subject_token, whichever format it has. */
export interface SubjectToken {
  jti: string;
  clientId: string;
  accountId: string;
  scopes: string[];
  audience: string[];
  exp: number;
  jkt?: string;
  claims: DelegatedTokenClaims;
}

export interface Caller {
  clientId: string;
  maxDepth: number;
  dpopRequired: boolean;
  /** Scopes the caller may ever hold, per resource server URI. */
  grants: Record<string, string[]>;
}

export interface ExchangeState {
  ctx: KoaContextWithOIDC;
  deps: ExchangeDeps;
  caller: Caller;
  requestedScopes?: string[];
  subject?: SubjectToken;
  delegation?: DelegationState;
  chain?: string[];
  /** The longest chain a token minted now may lead to. */
  maxDepth?: number;
  resource?: CatalogResource;
  scopes?: string[];
  expiresIn?: number;
  jkt?: string;
  policy?: PolicyVerdict;
  issued?: {
    value: string;
    jti: string;
    grantId: string;
    tokenType: "Bearer" | "DPoP";
    format: "opaque" | "jwt";
  };
}

/** Narrows a field the previous steps must have set. */
export function required<T>(value: T | undefined, name: string): T {
  if (value === undefined) throw new Error(`token exchange step order: ${name} is not set yet`);
  return value;
}
