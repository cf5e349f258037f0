import { OAuthError } from "../../http/oauth-error.ts";
import type { ExchangeState } from "../exchange-state.ts";

/** The caller is an authenticated, active agent (inactive agents never authenticate: see client-store). */
export function requireAgent(state: ExchangeState): void {
  if (state.call.caller.kind !== "agent")
    throw new OAuthError("unauthorized_client", "only registered agents may exchange tokens");
}
