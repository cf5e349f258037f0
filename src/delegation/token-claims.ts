// The claims that bind a Deputy token to a person, an agent chain and a delegation (RFC 8693 §4.1, §4.4).
import type { ResourceGrant } from "./resource-grants.ts";

export interface ActClaim {
  sub: string;
  act?: ActClaim;
}

export interface DelegationClaim {
  id: string;
  task_id: string | null;
  task: string | null;
  /** Epoch seconds. */
  ends_at: number;
  /** How many agents the chain holds (1 for the agent the person delegated to). */
  depth: number;
  /** The longest chain any token derived from this one may have. */
  max_depth: number;
  /**
   * On a subject token only: what the person granted, per resource server (its `scope` lists the names alone).
   * An exchanged token is for one resource server, which its `aud` and `scope` name.
   */
  grants?: ResourceGrant[];
}

/** Claims Deputy adds to delegated tokens (stored as oidc-provider's `extra`, spread into JWTs and introspection). */
export interface DelegatedTokenClaims {
  act: ActClaim;
  delegation: DelegationClaim;
  /** RFC 8693 §4.4: who may act next. Deputy lists agent client ids, since more than one may be allowed. */
  may_act?: { client_ids: string[] };
}

/** `[current, previous, …, first]` → nested `act`, current actor outermost. */
export function actClaim(chain: string[]): ActClaim {
  const [current, ...rest] = chain;
  if (!current) throw new Error("an agent chain has at least one agent");
  return rest.length ? { sub: current, act: actClaim(rest) } : { sub: current };
}

/** Nested `act` → `[current, previous, …, first]`. */
export function actorChain(act: ActClaim | undefined): string[] {
  const chain: string[] = [];
  for (let link = act; link; link = link.act) chain.push(link.sub);
  return chain;
}

export function isDelegatedTokenClaims(value: unknown): value is DelegatedTokenClaims {
  if (!value || typeof value !== "object") return false;
  const claims = value as Partial<DelegatedTokenClaims>;
  return typeof claims.act?.sub === "string" && typeof claims.delegation?.id === "string";
}

/** The `may_act` claim for an agent's registered delegates, omitted when it may delegate to nobody. */
export function mayAct(delegates: unknown): Pick<DelegatedTokenClaims, "may_act"> {
  const clientIds = Array.isArray(delegates)
    ? delegates.filter((id): id is string => typeof id === "string")
    : [];
  return clientIds.length ? { may_act: { client_ids: clientIds } } : {};
}
