import { type DelegationState, DelegationStore } from "../../delegation/delegations.ts";
import { OAuthError } from "../../http/oauth-error.ts";
import type { Known } from "../../issuance/issuance-state.ts";
import type { ExchangeState } from "../exchange-state.ts";

/** The subject token's delegation is active, unexpired, and its person still active. */
export async function checkDelegation(state: Known<ExchangeState, "subject">): Promise<DelegationState> {
  const { subject } = state;
  const delegation = await state.deps.delegations.state(subject.claims.delegation.id);
  const problem = DelegationStore.unusable(delegation);
  // RFC 8693 §2.2.2: an unacceptable subject token is invalid_request.
  if (problem || !delegation)
    throw new OAuthError("invalid_request", `subject_token cannot be used: ${problem}`);
  if (delegation.personId !== subject.personId)
    throw new OAuthError("invalid_request", "subject_token does not match its delegation");
  return delegation;
}
