import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from "jose";
import { ACCESS_TOKEN_TYPE } from "../../http/oauth-constants.ts";
import { OAuthError } from "../../http/oauth-error.ts";
import type { Known } from "../../issuance/issuance-state.ts";
import type { ExchangeState } from "../exchange-state.ts";

/**
 * The caller is the delegate of the subject token, or a sub-agent that the token's holder may delegate to
 * (by its registry entry and by the token's may_act). The new chain puts the caller first.
 */
export async function checkActor(state: Known<ExchangeState, "request" | "subject">): Promise<string[]> {
  const { subject } = state;
  const caller = state.call.caller.clientId;
  await checkActorToken(state);
  if (subject.clientId === caller) return subject.chain;
  const registered = (await state.deps.activeAgent(subject.clientId))?.mayDelegateTo;
  if (!registered)
    throw new OAuthError(
      "invalid_request",
      `the agent holding subject_token (${subject.clientId}) is not active`,
    );
  const mayAct = subject.claims.may_act?.client_ids ?? [];
  if (!registered.includes(caller) || !mayAct.includes(caller)) {
    throw new OAuthError(
      "invalid_request",
      `${caller} may not act on subject_token: it was issued to ${subject.clientId}, which is not registered to delegate to ${caller}`,
    );
  }
  if (subject.chain.includes(caller))
    throw new OAuthError("invalid_request", `${caller} is already in this delegation chain`);
  return [caller, ...subject.chain];
}

/** RFC 8693 §2.1: an actor_token, when sent, must identify the authenticated caller — no splicing. */
async function checkActorToken(state: Known<ExchangeState, "request">): Promise<void> {
  const { actor } = state.request;
  if (!actor) return;
  const caller = state.call.caller.clientId;
  const identifies =
    actor.type === ACCESS_TOKEN_TYPE
      ? (await state.call.storedTokenClient(actor.token)) === caller
      : await isCallerAssertion(state, actor.token);
  if (!identifies)
    throw new OAuthError(
      "invalid_request",
      `actor_token does not identify the authenticated agent ${caller}`,
    );
}

/** A JWT actor token must be signed by the caller's registered key, with iss = sub = the caller. */
async function isCallerAssertion(state: ExchangeState, value: string): Promise<boolean> {
  const { caller } = state.call;
  const jwks = caller.jwks as JSONWebKeySet | undefined;
  if (!jwks?.keys?.length) return false;
  try {
    const { payload } = await jwtVerify(value, createLocalJWKSet(jwks), {
      issuer: caller.clientId,
      subject: caller.clientId,
      audience: state.deps.issuer,
      maxTokenAge: "5m",
    });
    return Boolean(payload.exp);
  } catch {
    return false;
  }
}
