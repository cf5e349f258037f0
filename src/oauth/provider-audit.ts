// Audit events for what oidc-provider itself answers, as one provider middleware:
//
// - Introspection refusals: every introspection that answers `active: false`, or fails (a resource server that
//   cannot authenticate, say), is an `introspection` event. When the token is one Deputy issued, the event names
//   the person and the agent chain behind it — a revoked token still being presented is exactly what an auditor
//   looks for. Tokens Deputy did not issue are never recorded (they may be anything). A refusal gives no token,
//   so its event goes through group commit without holding the response.
// - Client-credentials tokens (admin API access): issuing one is a `login` event, committed before the token
//   leaves, like every other token Deputy issues; if it cannot be recorded the token is destroyed and the
//   request fails. A failed client authentication at the token endpoint is a `login` refusal. The token value
//   is never recorded.

import { decodeJwt } from "jose";
import type Provider from "oidc-provider";
import type { KoaContextWithOIDC } from "oidc-provider";
import {
  type AuditContext,
  type AuditEventInput,
  type AuditLog,
  providerRequestContext,
} from "../audit/audit-log.ts";
import { tokenRef } from "../delegation/token-ref.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { answerDatabaseUnavailable, databaseOutage } from "../http/unavailable.ts";
import type { Logger } from "../logger.ts";
import type { ProviderMiddleware } from "./provider-middlewares.ts";

const INACTIVE = "inactive: the token is unknown, expired, revoked or not meant for this resource server";

interface Deps {
  audit: AuditLog;
  prisma: PrismaClient;
  log: Logger;
}

type Body = {
  active?: unknown;
  error?: unknown;
  error_description?: unknown;
  access_token?: unknown;
  scope?: unknown;
  expires_in?: unknown;
};

export function auditProviderEndpoints(deps: Deps): ProviderMiddleware {
  return async (ctx, next) => {
    await next();
    if (!ctx.oidc) return;
    const route = ctx.oidc.route;
    if (route === "introspection") introspection(ctx, deps);
    else if (route === "token" && ctx.oidc.params?.grant_type === "client_credentials")
      await clientCredentials(ctx.oidc.provider, ctx, deps);
  };
}

/** Who asked: a client that failed to authenticate is only who it claimed to be. */
function who(ctx: KoaContextWithOIDC, body: Body | undefined): { context: AuditContext; claimed?: string } {
  const clientId = ctx.oidc.client?.clientId;
  const authenticated = body?.error !== "invalid_client" && clientId;
  return {
    context: providerRequestContext(ctx, authenticated || "unauthenticated"),
    claimed: authenticated ? undefined : clientId,
  };
}

const errorReason = (body: Body | undefined) =>
  typeof body?.error === "string" ? `${body.error}: ${String(body.error_description ?? "")}` : undefined;

function introspection(ctx: KoaContextWithOIDC, deps: Deps): void {
  const body = ctx.body as Body | undefined;
  if (ctx.status < 400 && body?.active !== false) return;
  const token = ctx.oidc.params?.token;
  const { context, claimed } = who(ctx, body);
  const lookup = claimed || context.actor === "unauthenticated" ? undefined : token;
  void describeToken(deps.prisma, typeof lookup === "string" ? lookup : undefined)
    .then((about) =>
      deps.audit.commit(context, {
        action: "token.introspect",
        decision: "deny",
        reason: errorReason(body) ?? INACTIVE,
        ...about,
        ...(claimed ? { details: { claimed_client_id: claimed } } : {}),
      }),
    )
    .catch((error: unknown) => deps.log.error({ err: error }, "could not audit an introspection refusal"));
}

async function clientCredentials(provider: Provider, ctx: KoaContextWithOIDC, deps: Deps): Promise<void> {
  const body = ctx.body as Body | undefined;
  const { context, claimed } = who(ctx, body);
  if (ctx.status !== 200 || typeof body?.access_token !== "string") {
    void deps.audit
      .commit(context, {
        action: "client_credentials.issue",
        decision: "deny",
        reason: errorReason(body) ?? `HTTP ${ctx.status}`,
        ...(claimed ? { details: { claimed_client_id: claimed } } : {}),
      })
      .catch((error: unknown) => deps.log.error({ err: error }, "could not audit a refused token request"));
    return;
  }
  const value = body.access_token;
  try {
    await deps.audit.commit(context, {
      action: "client_credentials.issue",
      decision: "allow",
      scopesGranted: typeof body.scope === "string" ? body.scope.split(" ").filter(Boolean) : [],
      details: { expires_in: body.expires_in ?? null },
    });
  } catch (error) {
    const outage = databaseOutage(error);
    if (outage)
      deps.log.warn(
        { error: outage },
        "the database is unavailable: a client-credentials token was destroyed",
      );
    else deps.log.error({ err: error }, "could not record a client-credentials token; it was destroyed");
    const token = await provider.ClientCredentials.find(value).catch(() => undefined);
    await token?.destroy().catch(() => undefined);
    if (outage) return answerDatabaseUnavailable(ctx);
    ctx.status = 500;
    ctx.body = { error: "server_error", error_description: "the token could not be recorded; try again" };
  }
}

/** What Deputy knows about a token it issued (looked up by jti); nothing for any other string. */
async function describeToken(
  prisma: PrismaClient,
  token: string | undefined,
): Promise<Partial<AuditEventInput>> {
  const jti = token ? tokenId(token) : undefined;
  if (!jti) return {};
  const ref = tokenRef(jti);
  const issued = await prisma.issuedToken.findUnique({
    where: { jti: ref },
    include: { delegation: { include: { person: { select: { email: true } } } } },
  });
  if (!issued) return {};
  return {
    delegatedBy: issued.delegation.person.email,
    agentChain: issued.actorChain,
    resource: issued.resource ?? undefined,
    scopesAsked: issued.scopes,
    delegationId: issued.delegationId,
    taskId: issued.delegation.taskId ?? undefined,
    taskDescription: issued.delegation.taskDescription ?? undefined,
    details: {
      token_ref: ref,
      expired: issued.expiresAt.getTime() <= Date.now(),
      revoked: issued.revokedAt !== null,
    },
  };
}

/** An opaque token's value is its jti; a JWT carries it as a claim. */
function tokenId(token: string): string | undefined {
  if (token.length > 8192) return undefined;
  if (/^[\w-]{16,128}$/.test(token)) return token;
  if (token.split(".").length === 3) {
    try {
      const { jti } = decodeJwt(token);
      return typeof jti === "string" && jti.length <= 128 ? jti : undefined;
    } catch {
      return undefined;
    }
  }
  return undefined;
}
