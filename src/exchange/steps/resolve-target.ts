import { resourcesOf } from "../../delegation/resource-grants.ts";
import { errorText } from "../../http/error-text.ts";
import { OAuthError } from "../../http/oauth-error.ts";
import type { Known } from "../../issuance/issuance-state.ts";
import type { CatalogResource } from "../../registry/resource-catalog.ts";
import type { ExchangeState } from "../exchange-state.ts";

const invalidTarget = (description: string) => new OAuthError("invalid_target", description);

/**
 * RFC 8707 / RFC 8693 §2.1: one resource (or audience) per exchange, among those the person granted a scope on
 * and, for a token already bound to a resource, that same resource: a hop never moves to another resource.
 */
export async function resolveTarget(
  state: Known<ExchangeState, "request" | "subject" | "delegation">,
): Promise<CatalogResource> {
  const { subject, delegation } = state;
  const asked = state.request.targets;
  if (asked.length > 1) throw invalidTarget("ask for one resource per exchange");
  const boundTo = subject.audience.filter((aud) => aud !== state.deps.issuer);
  const delegated = resourcesOf(delegation.grants);
  let target = asked[0];
  if (!target) {
    const candidates = boundTo.length ? boundTo : delegated;
    if (candidates.length !== 1)
      throw invalidTarget(`name the resource: this delegation covers ${delegated.join(", ")}`);
    target = candidates[0] as string;
  }
  if (!delegated.includes(target))
    throw invalidTarget(`${errorText(target)} is not among the resources the person delegated`);
  if (boundTo.length && !boundTo.includes(target))
    throw invalidTarget(
      `subject_token is bound to ${boundTo.join(", ")}; a hop cannot move to ${errorText(target)}`,
    );
  const resource = await state.deps.resources.findByUri(target);
  if (!resource) throw invalidTarget(`${target} is not a registered resource server`);
  return resource;
}
