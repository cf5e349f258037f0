import { errors } from "oidc-provider";
import { errorText } from "../../http/error-text.ts";
import { type ExchangeState, required } from "../exchange-state.ts";

/**
 * Scope never widens: granted ⊆ subject token's scope ∩ the delegation's scopes now (narrowing its agent may
 * have cut them since the token was minted) ∩ the caller's allowed scopes on the resource ∩ the resource's
 * scopes. Omitted → that whole intersection; empty or wider → invalid_scope (RFC 6749 §5.2).
 */
export async function narrowScope(state: ExchangeState): Promise<void> {
  const subject = required(state.subject, "subject");
  const resource = required(state.resource, "resource");
  const delegated = new Set(required(state.delegation, "delegation").scopes);
  const callerAllowed = new Set(state.caller.grants[resource.uri] ?? []);
  const resourceScopes = new Set(resource.scopes.map((scope) => scope.name));
  const available = subject.scopes.filter(
    (scope) => delegated.has(scope) && callerAllowed.has(scope) && resourceScopes.has(scope),
  );
  if (available.length === 0) {
    throw new errors.InvalidScope(
      `subject_token carries no scope that ${state.caller.clientId} may use on ${resource.uri}`,
      subject.scopes.join(" "),
    );
  }
  const asked = state.requestedScopes;
  if (!asked) {
    state.scopes = available;
    return;
  }
  const wider = asked.filter((scope) => !available.includes(scope));
  if (wider.length) {
    throw new errors.InvalidScope(
      `scope ${errorText(wider.join(" "))} is not available here; you may ask for at most: ${available.join(" ")}`,
      errorText(wider.join(" ")),
    );
  }
  state.scopes = asked;
}
