import { OAuthError } from "../../http/oauth-error.ts";

/**
 * The chain may be no longer than the least of the subject token's limit, the delegation's and the server's.
 * An agent's own max_depth counts from where it stands: the chain may grow at most max_depth − 1 agents past it.
 * Returns the longest chain a token minted now may lead to.
 */
export function checkDepth(input: {
  chainLength: number;
  /** The subject token's delegation.max_depth claim. */
  tokenLimit: number;
  delegationLimit: number;
  serverLimit: number;
  callerMaxDepth: number;
}): number {
  const limit = Math.min(input.tokenLimit, input.delegationLimit, input.serverLimit);
  if (input.chainLength > limit) {
    throw new OAuthError(
      "invalid_request",
      `delegation chain would be ${input.chainLength} agents long; this delegation allows at most ${limit}`,
    );
  }
  return Math.min(limit, input.chainLength - 1 + input.callerMaxDepth);
}
