// Deputy's rules for an agent's authorization or CIBA request, checked by oidc-provider on every such request
// (as the validator of the `authorization_details` parameter, which runs whether or not it was sent): the
// agent names exactly one task unless it is registered to ask untasked, and asks only for scopes it may be
// delegated on the resources it names.
import type { Client, KoaContextWithOIDC } from "oidc-provider";
import { errors } from "oidc-provider";
import { agentTaskDetails } from "../delegation/agent-task.ts";

export function authorizationRequestPolicy(issuer: string) {
  return async function checkAgentRequest(
    ctx: KoaContextWithOIDC,
    value: string | undefined,
    client: Client,
  ): Promise<void> {
    if (client.deputy_kind !== "agent") return;
    const tasks = agentTaskDetails(value);
    // RFC 9396 §5: details the server cannot accept are invalid_authorization_details.
    if (tasks.length > 1) throw new errors.InvalidAuthorizationDetails("name one agent_task per request");
    if (!tasks.length && client.deputy_allow_untasked !== true) {
      throw new errors.InvalidRequest(
        "name the task: send authorization_details with one detail of type agent_task (task_id, description, ends_at)",
      );
    }
    const grants = (client.deputy_grants ?? {}) as Record<string, string[]>;
    const named = Object.keys(ctx.oidc.resourceServers ?? {}).filter((uri) => uri !== issuer);
    const allowed = new Set((named.length ? named : Object.keys(grants)).flatMap((uri) => grants[uri] ?? []));
    const asked = [...ctx.oidc.requestParamScopes].filter((scope) => scope !== "openid");
    if (!asked.length) throw new errors.InvalidScope("ask for at least one scope to be delegated", "");
    const refused = asked.filter((scope) => !allowed.has(scope));
    if (refused.length) {
      throw new errors.InvalidScope(
        `${client.clientId} may not be delegated ${refused.join(" ")} on the requested resources`,
        refused.join(" "),
      );
    }
  };
}
