// Admin API authentication: a Deputy-issued, unexpired access token for the admin API carrying `deputy:admin`.
import type { Context, Next } from "koa";
import type Provider from "oidc-provider";
import type { AuditContext } from "../audit/audit-log.ts";
import { ApiError } from "../http/api-error.ts";
import { ADMIN_RESOURCE, ADMIN_SCOPE } from "../http/oauth-constants.ts";
import type { ClientStore } from "../oauth/client-store.ts";

declare module "koa" {
  interface DefaultState {
    audit: AuditContext;
  }
}

export function requireAdmin(provider: Provider, clients: ClientStore) {
  return async function checkAdminToken(ctx: Context, next: Next): Promise<void> {
    const header = ctx.get("authorization");
    const match = /^Bearer ([\w.~+/-]{1,4096}=*)$/i.exec(header);
    if (!match?.[1]) {
      ctx.set("WWW-Authenticate", 'Bearer realm="deputy-admin"');
      throw new ApiError(
        401,
        "invalid_token",
        "send an admin access token as 'Authorization: Bearer <token>'",
      );
    }
    const token = await provider.ClientCredentials.find(match[1]);
    // RFC 6750 §3.1: an expired, revoked or unknown token is invalid_token (401).
    if (!token?.clientId || token.isExpired || !(await clients.find(token.clientId))) {
      ctx.set("WWW-Authenticate", 'Bearer realm="deputy-admin", error="invalid_token"');
      throw new ApiError(401, "invalid_token", "the access token is unknown, expired or revoked");
    }
    const audience = Array.isArray(token.aud) ? token.aud : [token.aud];
    const scopes = new Set(String(token.scope ?? "").split(" "));
    // RFC 6750 §3.1: a valid token without the needed scope is insufficient_scope (403).
    if (!audience.includes(ADMIN_RESOURCE) || !scopes.has(ADMIN_SCOPE)) {
      ctx.set(
        "WWW-Authenticate",
        `Bearer realm="deputy-admin", error="insufficient_scope", scope="${ADMIN_SCOPE}"`,
      );
      throw new ApiError(403, "insufficient_scope", `the access token does not carry scope ${ADMIN_SCOPE}`);
    }
    ctx.state.audit = { actor: token.clientId, requestId: ctx.state.requestId, clientAddress: ctx.ip };
    await next();
  };
}
