import { errors } from "oidc-provider";
import type { ExchangeState } from "../exchange-state.ts";

/** The caller is an authenticated, active agent (inactive agents never authenticate: see client-store). */
export async function requireAgent(state: ExchangeState): Promise<void> {
  const client = state.ctx.oidc.client;
  if (client?.deputy_kind !== "agent") {
    throw new errors.UnauthorizedClient("only registered agents may exchange tokens");
  }
}
