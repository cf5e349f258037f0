import { errors } from "oidc-provider";
import { type ExchangeState, required } from "../exchange-state.ts";

/**
 * The chain may be no longer than the least of the subject token's limit, the delegation's and the server's.
 * An agent's own max_depth counts from where it stands: the chain may grow at most max_depth − 1 agents past it.
 */
export async function checkDepth(state: ExchangeState): Promise<void> {
  const chain = required(state.chain, "chain");
  const limit = inheritedLimit(state);
  if (chain.length > limit) {
    throw new errors.InvalidRequest(
      `delegation chain would be ${chain.length} agents long; this delegation allows at most ${limit}`,
    );
  }
}

function inheritedLimit(state: ExchangeState): number {
  const subject = required(state.subject, "subject");
  const delegation = required(state.delegation, "delegation");
  return Math.min(
    subject.claims.delegation.max_depth,
    delegation.maxDepth,
    state.deps.config.maxDelegationDepth,
  );
}

/** The longest chain a token minted now may lead to. */
export function depthLimit(state: ExchangeState): number {
  const chain = required(state.chain, "chain");
  return Math.min(inheritedLimit(state), chain.length - 1 + state.caller.maxDepth);
}
