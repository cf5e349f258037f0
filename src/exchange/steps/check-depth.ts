import { errors } from "oidc-provider";
import { type ExchangeState, required } from "../exchange-state.ts";

/**
 * The chain may be no longer than the least of the subject token's limit, the delegation's, the server's, and
 * what every agent in it allows now: an agent's max_depth counts from where it stands, so the chain may grow at
 * most max_depth − 1 agents past it. The agents' current registry entries are read (cached, invalidated on
 * change), because a token's own limit was computed when it was minted and the registry may have lowered one.
 * Sets the longest chain a token minted now may lead to.
 */
export async function checkDepth(state: ExchangeState): Promise<void> {
  const chain = required(state.chain, "chain");
  const subject = required(state.subject, "subject");
  const delegation = required(state.delegation, "delegation");
  const limit = Math.min(
    subject.claims.delegation.max_depth,
    delegation.maxDepth,
    state.deps.config.maxDelegationDepth,
  );
  if (chain.length > limit) {
    throw new errors.InvalidRequest(
      `delegation chain would be ${chain.length} agents long; this delegation allows at most ${limit}`,
    );
  }
  // The caller (index 0) is the authenticated client, as the registry has it now.
  let maxDepth = Math.min(limit, chain.length - 1 + state.caller.maxDepth);
  for (let index = 1; index < chain.length; index++) {
    const clientId = chain[index] as string;
    const agent = await state.deps.clients.find(clientId);
    if (agent?.deputy_kind !== "agent")
      throw new errors.InvalidRequest(`${clientId}, an agent in this delegation chain, is not active`);
    // It held a token of a chain `chain.length - index` long.
    const allows = chain.length - index - 1 + Number(agent.deputy_max_depth ?? 1);
    if (chain.length > allows) {
      throw new errors.InvalidRequest(
        `delegation chain would be ${chain.length} agents long; ${clientId} in it (max_depth ${agent.deputy_max_depth ?? 1}) allows at most ${allows}`,
      );
    }
    maxDepth = Math.min(maxDepth, allows);
  }
  state.maxDepth = maxDepth;
}
