// The issuance tail every delegated-token grant ends with (issue-token.ts): what it reads, in the order its
// steps find it. A grant (token exchange today) establishes the grounds — the token it derives from, the
// delegation, the agent chain, the resource, the scopes — and hands over; the tail caps the lifetime, binds
// DPoP, asks the policy, mints, records and answers.
import type { AuditContext, AuditEventInput, AuditLog } from "../audit/audit-log.ts";
import type { DelegationState } from "../delegation/delegations.ts";
import type { DelegatedTokenClaims } from "../delegation/token-claims.ts";
import type { CatalogResource } from "../registry/resource-catalog.ts";

/** The authenticated client asking, as the endpoint knows it. */
export interface Caller {
  /** Deputy's kind of client: agent, resource_server or service. */
  kind: string | undefined;
  clientId: string;
  /** How many agents the chain may grow by from this agent (its registered max_depth). */
  maxDepth: number;
  /** Registered as "DPoP required": it gets no bearer token. */
  dpopRequired: boolean;
  /** Scopes the caller may ever hold, per resource server URI. */
  grants: Record<string, string[]>;
  /** The agents it is registered to delegate to. */
  mayDelegateTo: string[];
  /** Its registered public keys (private_key_jwt), for actor assertions. */
  jwks?: { keys: object[] };
}

/** The token about to be minted, as the endpoint's minter takes it. */
export interface TokenToMint {
  personId: string;
  grantType: string;
  resource: CatalogResource;
  scope: string;
  /** Epoch seconds. */
  exp: number;
  claims: DelegatedTokenClaims;
  jkt?: string;
}

export interface MintedToken {
  value: string;
  jti: string;
  grantId: string;
}

/** One token request, as the endpoint that received it (oauth/) hands it over: who asks and its services. */
export interface IssuanceCall {
  caller: Caller;
  clientAddress: string;
  requestId?: string;
  audit: AuditContext;
  /** RFC 9449 §4.3: the request's DPoP proof, verified and checked for replay; undefined when none was sent. */
  dpopProof(): Promise<{ thumbprint: string } | undefined>;
  /** Mints and stores the token (opaque, or an RFC 9068 JWT when the resource asks for one). */
  mint(token: TokenToMint): Promise<MintedToken>;
  /** Destroys a minted opaque token that must not leave the server. */
  destroy(jti: string): Promise<void>;
}

/** The policy's decision about one issuance, with the version and what decided (for the audit). */
export type IssuancePolicy = (
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

export interface IssuanceDeps {
  audit: AuditLog;
  policy: IssuancePolicy;
  /** The policy version in force now: recorded on requests refused before the policy decides. */
  policyVersion: () => string;
  /** The server's cap on any delegated token's lifetime (DEPUTY_TOKEN_TTL_CAP). */
  tokenTtlCap: number;
}

/** The token the new one derives from (for token exchange: the subject token). */
export interface ParentToken {
  jti: string;
  clientId: string;
  personId: string;
  /** Epoch seconds. */
  exp: number;
  jkt?: string;
}

export interface IssuedToken extends MintedToken {
  tokenType: "Bearer" | "DPoP";
  format: "opaque" | "jwt";
}

export interface IssuanceState {
  deps: IssuanceDeps;
  call: IssuanceCall;
  /** The grant type recorded on the token (gty). */
  grantType: string;
  /** How this grant's audit events read, from what is known so far. */
  describe(): AuditEventInput;
  parent?: ParentToken;
  delegation?: DelegationState;
  chain?: string[];
  resource?: CatalogResource;
  scopes?: string[];
  /** The scopes the agent asked for; undefined when it named none. */
  requestedScopes?: string[];
  /** The longest chain a token minted now may lead to (its delegation.max_depth claim). */
  maxDepth?: number;
  expiresIn?: number;
  jkt?: string;
  policy?: PolicyVerdict;
  issued?: IssuedToken;
}

/** A state in which the fields K have been found: a step that needs them says so in its parameter's type. */
export type Known<S, K extends keyof S> = S & Required<Pick<S, K>>;

/** What a grant must have established before the tail runs. */
export type Grounds = Known<
  IssuanceState,
  "parent" | "delegation" | "chain" | "resource" | "scopes" | "maxDepth"
>;

/**
 * Adds what a step found to the state: the same object, so a refusal sees everything found so far, typed with
 * the addition from here on (so a step run before what it needs is a compile error).
 */
export function extend<S extends object, A extends object>(state: S, added: A): S & A {
  return Object.assign(state, added);
}

export interface TokenResponse {
  access_token: string;
  issued_token_type: string;
  token_type: "Bearer" | "DPoP";
  expires_in: number;
  scope: string;
}
