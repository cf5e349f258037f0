import { OAuthError } from "../../http/oauth-error.ts";

/**
 * The chain may be no longer than the least of the subject token's limit, the delegation's, the server's, and
 * what every agent in it allows now: an agent's max_depth counts from where it stands, so the chain may grow at
 * most max_depth − 1 agents past it. The agents' current registry entries are given (`chainAgents`, read by
 * `currentChain`), because a token's own limit was computed when it was minted and the registry may have lowered
 * one since. Returns the longest chain a token minted now may lead to.
 */
export function checkDepth(input: {
  chainLength: number;
  /** The subject token's delegation.max_depth claim. */
  tokenLimit: number;
  delegationLimit: number;
  serverLimit: number;
  callerMaxDepth: number;
  /** The agents of the chain after the caller (index 1 on), with their max_depth now. */
  chainAgents: { clientId: string; maxDepth: number }[];
}): number {
  const { chainLength } = input;
  const limit = Math.min(input.tokenLimit, input.delegationLimit, input.serverLimit);
  if (chainLength > limit) {
    throw new OAuthError(
      "invalid_request",
      `delegation chain would be ${chainLength} agents long; this delegation allows at most ${limit}`,
    );
  }
  let maxDepth = Math.min(limit, chainLength - 1 + input.callerMaxDepth);
  input.chainAgents.forEach((agent, offset) => {
    // The agent at index `offset + 1` held a token of a chain `chainLength - offset - 1` long.
    const allows = chainLength - offset - 2 + agent.maxDepth;
    if (chainLength > allows) {
      throw new OAuthError(
        "invalid_request",
        `delegation chain would be ${chainLength} agents long; ${agent.clientId} in it (max_depth ${agent.maxDepth}) allows at most ${allows}`,
      );
    }
    maxDepth = Math.min(maxDepth, allows);
  });
  return maxDepth;
}

/** The agents of `chain` after the caller, as the registry has them now; an inactive one is refused. */
export async function currentChain(
  chain: string[],
  activeAgent: (clientId: string) => Promise<{ maxDepth: number } | undefined>,
): Promise<{ clientId: string; maxDepth: number }[]> {
  const agents: { clientId: string; maxDepth: number }[] = [];
  for (const clientId of chain.slice(1)) {
    const agent = await activeAgent(clientId);
    if (!agent)
      throw new OAuthError(
        "invalid_request",
        `${clientId}, an agent in this delegation chain, is not active`,
      );
    agents.push({ clientId, maxDepth: agent.maxDepth });
  }
  return agents;
}
