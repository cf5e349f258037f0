import { OAuthError } from "../../http/oauth-error.ts";
import type { Grounds } from "../issuance-state.ts";

/** The new token expires no later than its parent token, its delegation, the resource's lifetime and the cap. */
export function capLifetime(state: Grounds): number {
  const now = Math.floor(Date.now() / 1000);
  const expiresAt = Math.min(
    state.parent.exp,
    Math.floor(state.delegation.endsAt.getTime() / 1000),
    now + state.resource.tokenTtlSeconds,
    now + state.deps.tokenTtlCap,
  );
  if (expiresAt <= now)
    throw new OAuthError("invalid_request", "subject_token or its delegation expires too soon to exchange");
  return expiresAt - now;
}
