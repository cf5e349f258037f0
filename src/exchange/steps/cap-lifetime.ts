import { errors } from "oidc-provider";
import { type ExchangeState, required } from "../exchange-state.ts";

/** The new token expires no later than its subject token, its delegation, the resource's lifetime and the cap. */
export async function capLifetime(state: ExchangeState): Promise<void> {
  const subject = required(state.subject, "subject");
  const delegation = required(state.delegation, "delegation");
  const resource = required(state.resource, "resource");
  const now = Math.floor(Date.now() / 1000);
  const expiresAt = Math.min(
    subject.exp,
    Math.floor(delegation.endsAt.getTime() / 1000),
    now + resource.tokenTtlSeconds,
    now + state.deps.config.tokenTtlCap,
  );
  if (expiresAt <= now)
    throw new errors.InvalidRequest("subject_token or its delegation expires too soon to exchange");
  state.expiresIn = expiresAt - now;
}
