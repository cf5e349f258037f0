import { errorText } from "../../http/error-text.ts";
import { OAuthError } from "../../http/oauth-error.ts";
import type { Caller } from "../../issuance/issuance-state.ts";
import type { CatalogResource } from "../../registry/resource-catalog.ts";

/**
 * Scope never widens: granted ⊆ subject token's scope ∩ the scopes the delegation grants on this resource now
 * (`delegationScopes`: a scope of the same name approved on another resource server does not count, and
 * narrowing its agent may have cut them since the token was minted) ∩ the caller's allowed scopes on the
 * resource ∩ the resource's scopes. Omitted → that whole intersection; empty or wider → invalid_scope
 * (RFC 6749 §5.2).
 */
export function narrowScope(input: {
  caller: Pick<Caller, "clientId" | "grants">;
  subjectScopes: string[];
  /** The scopes the delegation grants on `resource` now. */
  delegationScopes: string[];
  resource: Pick<CatalogResource, "uri" | "scopes">;
  requested: string[] | undefined;
}): string[] {
  const { caller, subjectScopes, resource, requested } = input;
  const delegated = new Set(input.delegationScopes);
  const callerAllowed = new Set(caller.grants[resource.uri] ?? []);
  const resourceScopes = new Set(resource.scopes.map((scope) => scope.name));
  const available = subjectScopes.filter(
    (scope) => delegated.has(scope) && callerAllowed.has(scope) && resourceScopes.has(scope),
  );
  if (available.length === 0) {
    throw new OAuthError(
      "invalid_scope",
      `subject_token carries no scope that ${caller.clientId} may use on ${resource.uri}`,
      { scope: subjectScopes.join(" ") },
    );
  }
  if (!requested) return available;
  const wider = requested.filter((scope) => !available.includes(scope));
  if (wider.length) {
    throw new OAuthError(
      "invalid_scope",
      `scope ${errorText(wider.join(" "))} is not available here; you may ask for at most: ${available.join(" ")}`,
      { scope: errorText(wider.join(" ")) },
    );
  }
  return requested;
}
