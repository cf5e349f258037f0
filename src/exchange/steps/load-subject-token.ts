import { errors } from "oidc-provider";
import { DelegationStore } from "../../delegation/delegations.ts";
import { JWT_SHAPE, verifyJwtAccessToken } from "../../delegation/jwt-access-token.ts";
import { isDelegatedTokenClaims } from "../../delegation/token-claims.ts";
import { tokenRef } from "../../delegation/token-ref.ts";
import type { ExchangeState, SubjectToken } from "../exchange-state.ts";

const INACTIVE = "subject_token is not an active access token issued by Deputy for a delegation";

/** RFC 8693 §2.2.2: a subject_token that is not active, or not Deputy's, is invalid_request. */
export async function loadSubjectToken(state: ExchangeState): Promise<void> {
  const value = String(state.ctx.oidc.params?.subject_token);
  const jwt = JWT_SHAPE.test(value);
  const subject = jwt ? await fromJwt(state, value) : await fromOpaque(state, value);
  if (!subject) throw new errors.InvalidRequest((!jwt && (await revokedBecause(state, value))) || INACTIVE);
  state.subject = subject;
}

async function fromOpaque(state: ExchangeState, value: string): Promise<SubjectToken | undefined> {
  const token = await state.deps.provider.AccessToken.find(value);
  if (
    !token ||
    token.isExpired ||
    !token.accountId ||
    !token.clientId ||
    !isDelegatedTokenClaims(token.extra)
  ) {
    return undefined;
  }
  const audience = token.aud === undefined ? [] : Array.isArray(token.aud) ? token.aud : [token.aud];
  return {
    jti: token.jti,
    clientId: token.clientId,
    accountId: token.accountId,
    scopes: String(token.scope ?? "")
      .split(" ")
      .filter(Boolean),
    audience,
    exp: Number(token.exp),
    jkt: token.jkt,
    claims: token.extra,
  };
}

/**
 * A revoked opaque token is gone from Redis; its lineage (keyed by the hash of its id, which is its value) still says why, which
 * is worth telling the agent that holds it. Only on the refusal path.
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

/** RFC 9068 tokens are not stored by oidc-provider: recognised by their signature and lineage. */
async function fromJwt(state: ExchangeState, value: string): Promise<SubjectToken | undefined> {
  const token = await verifyJwtAccessToken(state.deps, value);
  if (!token) return undefined;
  const { aud } = token;
  return {
    jti: token.jti,
    clientId: token.client_id,
    accountId: token.sub,
    scopes: String(token.scope ?? "")
      .split(" ")
      .filter(Boolean),
    audience: typeof aud === "string" ? [aud] : Array.isArray(aud) ? aud : [],
    exp: Number(token.exp),
    jkt: typeof token.cnf?.jkt === "string" ? token.cnf.jkt : undefined,
    claims: { act: token.act, delegation: token.delegation, may_act: token.may_act },
  };
}
