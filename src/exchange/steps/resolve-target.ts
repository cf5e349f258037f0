import { errors } from "oidc-provider";
import { errorText } from "../../http/error-text.ts";
import { type ExchangeState, required } from "../exchange-state.ts";

/**
 * RFC 8707 / RFC 8693 §2.1: one resource (or audience) per exchange, within what the delegation granted and,
 * for a token already bound to a resource, that same resource: a hop never moves to another resource.
 */
export async function resolveTarget(state: ExchangeState): Promise<void> {
  const subject = required(state.subject, "subject");
  const delegation = required(state.delegation, "delegation");
  const params = state.ctx.oidc.params as Record<string, string | string[] | undefined>;
  const asked = [
    ...new Set([params.resource, params.audience].flat().filter((v): v is string => Boolean(v))),
  ];
  if (asked.length > 1) throw new errors.InvalidTarget("ask for one resource per exchange");
  const boundTo = subject.audience.filter((aud) => aud !== state.deps.provider.issuer);
  let target = asked[0];
  if (!target) {
    const candidates = boundTo.length ? boundTo : delegation.resources;
    if (candidates.length !== 1) {
      throw new errors.InvalidTarget(
        `name the resource: this delegation covers ${delegation.resources.join(", ")}`,
      );
    }
    target = candidates[0] as string;
  }
  if (!delegation.resources.includes(target)) {
    throw new errors.InvalidTarget(`${errorText(target)} is not among the resources the person delegated`);
  }
  if (boundTo.length && !boundTo.includes(target)) {
    throw new errors.InvalidTarget(
      `subject_token is bound to ${boundTo.join(", ")}; a hop cannot move to ${errorText(target)}`,
    );
  }
  const resource = await state.deps.resources.findByUri(target);
  if (!resource) throw new errors.InvalidTarget(`${target} is not a registered resource server`);
  state.resource = resource;
}
