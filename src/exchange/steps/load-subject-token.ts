import { DelegationStore } from "../../delegation/delegations.ts";
import { JWT_SHAPE, type PresentedToken } from "../../delegation/presented-token.ts";
import { tokenRef } from "../../delegation/token-ref.ts";
import { OAuthError } from "../../http/oauth-error.ts";
import type { Known } from "../../issuance/issuance-state.ts";
import type { ExchangeState } from "../exchange-state.ts";

const INACTIVE = "subject_token is not an active access token issued by Deputy for a delegation";

/** RFC 8693 §2.2.2: a subject_token that is not active, or not Deputy's, is invalid_request. */
export async function loadSubjectToken(state: Known<ExchangeState, "request">): Promise<PresentedToken> {
  const value = state.request.subjectToken;
  const subject = await state.deps.tokens.read(value);
  if (!subject)
    throw new OAuthError(
      "invalid_request",
      (!JWT_SHAPE.test(value) && (await revokedBecause(state, value))) || INACTIVE,
    );
  return subject;
}

/**
 * A revoked opaque token is gone from Redis; its lineage (keyed by the hash of its id, which is its value) still
 * says why, which is worth telling the agent that holds it. Only on the refusal path.
 */
async function revokedBecause(state: ExchangeState, value: string): Promise<string | undefined> {
  if (value.length > 256) return undefined;
  const lineage = await state.deps.prisma.issuedToken.findUnique({
    where: { jti: tokenRef(value) },
    select: { revokedAt: true, delegationId: true },
  });
  if (!lineage?.revokedAt) return undefined;
  const problem = DelegationStore.unusable(await state.deps.delegations.state(lineage.delegationId));
  return `subject_token has been revoked${problem ? `: ${problem}` : ""}`;
}
