// The admin HTTP API under /admin/v1: JSON in and out, every body validated, every change audited.
// Each area registers its routes from its own module in routes/.
import { bodyParser } from "@koa/bodyparser";
import { Router } from "@koa/router";
import type { Context, Next } from "koa";
import type Provider from "oidc-provider";
import type { AuditLog } from "../audit/audit-log.ts";
import type { AuditTrail } from "../audit/audit-trail.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { ApiError } from "../http/api-error.ts";
import type { ClientStore } from "../oauth/client-store.ts";
import type { PolicyService } from "../policy/policy-service.ts";
import type { AgentService } from "../registry/agents.ts";
import type { PeopleService } from "../registry/people.ts";
import type { ResourceServerService } from "../registry/resource-servers.ts";
import type { RevocationRuntime } from "../revocation/runtime.ts";
import { requireAdmin } from "./admin-auth.ts";
import { agentRoutes } from "./routes/agents.ts";
import { auditRoutes } from "./routes/audit.ts";
import { keyRoutes } from "./routes/keys.ts";
import { peopleRoutes } from "./routes/people.ts";
import { policyRoutes } from "./routes/policy.ts";
import { resourceRoutes } from "./routes/resources.ts";
import { revocationRoutes } from "./routes/revocation.ts";

export interface AdminDeps {
  provider: Provider;
  prisma: PrismaClient;
  audit: AuditLog;
  auditTrail: AuditTrail;
  clients: ClientStore;
  people: PeopleService;
  resources: ResourceServerService;
  agents: AgentService;
  revocation: RevocationRuntime;
  policy: PolicyService;
}

export const ADMIN_BODY_LIMIT = "64kb";

/** Bodies must be JSON: anything else is refused rather than silently read as empty. */
async function requireJson(ctx: Context, next: Next): Promise<void> {
  if (["POST", "PATCH", "PUT"].includes(ctx.method) && ctx.request.length && !ctx.is("application/json")) {
    throw new ApiError(415, "invalid_request", "send the body as application/json");
  }
  await next();
}

export function adminRouter(deps: AdminDeps): Router {
  const router = new Router({ prefix: "/admin/v1" });
  router.use(requireAdmin(deps.provider, deps.clients));
  router.use(requireJson);
  router.use(bodyParser({ enableTypes: ["json"], jsonLimit: ADMIN_BODY_LIMIT, encoding: "utf-8" }));
  peopleRoutes(router, deps);
  resourceRoutes(router, deps);
  agentRoutes(router, deps);
  keyRoutes(router, deps);
  policyRoutes(router, deps);
  auditRoutes(router, deps);
  revocationRoutes(router, deps);
  return router;
}
