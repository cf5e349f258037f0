import { errors } from "oidc-provider";
import { DelegationStore } from "../../delegation/delegations.ts";
import { type ExchangeState, required } from "../exchange-state.ts";

/** The subject token's delegation is active, unexpired, and its person still active. */
export async function checkDelegation(state: ExchangeState): Promise<void> {
  const subject = required(state.subject, "subject");
  const delegation = await state.deps.delegations.state(subject.claims.delegation.id);
  const problem = DelegationStore.unusable(delegation);
  // RFC 8693 §2.2.2: an unacceptable subject token is invalid_request.
  if (problem || !delegation) throw new errors.InvalidRequest(`subject_token cannot be used: ${problem}`);
  if (delegation.personId !== subject.accountId)
    throw new errors.InvalidRequest("subject_token does not match its delegation");
  state.delegation = delegation;
}
