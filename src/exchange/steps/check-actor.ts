import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from "jose";
import { errors } from "oidc-provider";
import { actorChain } from "../../delegation/token-claims.ts";
import { ACCESS_TOKEN_TYPE } from "../../http/oauth-constants.ts";
import { type ExchangeState, required } from "../exchange-state.ts";

/**
 * The caller is the delegate of the subject token, or a sub-agent that the token's holder may delegate to
 * (by its registry entry and by the token's may_act). The new chain puts the caller first.
 */
export async function checkActor(state: ExchangeState): Promise<void> {
  const subject = required(state.subject, "subject");
  const caller = state.caller.clientId;
  const chain = actorChain(subject.claims.act);
  await checkActorToken(state);
  if (subject.clientId === caller) {
    state.chain = chain;
    return;
  }
  const holder = await state.deps.clients.find(subject.clientId);
  if (!holder)
    throw new errors.InvalidRequest(`the agent holding subject_token (${subject.clientId}) is not active`);
  const registered = holder.deputy_may_delegate_to ?? [];
  const mayAct = subject.claims.may_act?.client_ids ?? [];
  if (!registered.includes(caller) || !mayAct.includes(caller)) {
    throw new errors.InvalidRequest(
      `${caller} may not act on subject_token: it was issued to ${subject.clientId}, which is not registered to delegate to ${caller}`,
    );
  }
  if (chain.includes(caller))
    throw new errors.InvalidRequest(`${caller} is already in this delegation chain`);
  state.chain = [caller, ...chain];
}

/** RFC 8693 §2.1: an actor_token, when sent, must identify the authenticated caller — no splicing. */
async function checkActorToken(state: ExchangeState): Promise<void> {
  const params = state.ctx.oidc.params as Record<string, string | undefined>;
  const value = params.actor_token;
  if (value === undefined) return;
  const caller = state.caller.clientId;
  const identifies =
    params.actor_token_type === ACCESS_TOKEN_TYPE
      ? (await state.deps.provider.AccessToken.find(value))?.clientId === caller
      : await isCallerAssertion(state, value);
  if (!identifies)
    throw new errors.InvalidRequest(`actor_token does not identify the authenticated agent ${caller}`);
}

/** A JWT actor token must be signed by the caller's registered key, with iss = sub = the caller. */
async function isCallerAssertion(state: ExchangeState, value: string): Promise<boolean> {
  const jwks = state.ctx.oidc.client?.jwks as JSONWebKeySet | undefined;
  if (!jwks?.keys?.length) return false;
  try {
    const { payload } = await jwtVerify(value, createLocalJWKSet(jwks), {
      issuer: state.caller.clientId,
      subject: state.caller.clientId,
      audience: state.deps.provider.issuer,
      maxTokenAge: "5m",
    });
    return Boolean(payload.exp);
  } catch {
    return false;
  }
}
