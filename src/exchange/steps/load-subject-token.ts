import { errors as joseErrors, jwtVerify } from "jose";
import { errors } from "oidc-provider";
import { DelegationStore } from "../../delegation/delegations.ts";
import { isDelegatedTokenClaims } from "../../delegation/token-claims.ts";
import { tokenRef } from "../../delegation/token-ref.ts";
import type { ExchangeState, SubjectToken } from "../exchange-state.ts";

const INACTIVE = "subject_token is not an active access token issued by Deputy for a delegation";
const JWT_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]+$/;

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

/** RFC 9068 tokens are not stored by oidc-provider: verify the signature, then ask the lineage if revoked. */
async function fromJwt(state: ExchangeState, value: string): Promise<SubjectToken | undefined> {
  const { deps } = state;
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(value, deps.signingKeys, {
      issuer: deps.provider.issuer,
      typ: "at+jwt",
      algorithms: ["ES256"],
    }));
  } catch (error) {
    if (error instanceof joseErrors.JOSEError) return undefined;
    throw error;
  }
  const { jti, client_id: clientId, sub, scope, aud, exp, cnf } = payload as Record<string, unknown>;
  if (typeof jti !== "string" || typeof clientId !== "string" || typeof sub !== "string") return undefined;
  if (!isDelegatedTokenClaims(payload)) return undefined;
  const lineage = await deps.prisma.issuedToken.findUnique({
    where: { jti: tokenRef(jti) },
    select: { revokedAt: true },
  });
  if (!lineage || lineage.revokedAt) return undefined;
  return {
    jti,
    clientId,
    accountId: sub,
    scopes: String(scope ?? "")
      .split(" ")
      .filter(Boolean),
    audience: typeof aud === "string" ? [aud] : Array.isArray(aud) ? aud.map(String) : [],
    exp: Number(exp),
    jkt: typeof (cnf as { jkt?: unknown })?.jkt === "string" ? (cnf as { jkt: string }).jkt : undefined,
    claims: { act: payload.act, delegation: payload.delegation, may_act: payload.may_act },
  };
}
