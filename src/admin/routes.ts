// The admin HTTP API under /admin/v1: JSON in and out, every body validated, every change audited.
// Each area registers its routes from its own module in routes/ (ROUTE_GROUPS).
import { bodyParser } from "@koa/bodyparser";
import { Router, type RouterMiddleware } from "@koa/router";
import type { Context, Next } from "koa";
import type Provider from "oidc-provider";
import type { AuditLog } from "../audit/audit-log.ts";
import type { AuditTrail } from "../audit/audit-trail.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { ApiError, invalidRequest } from "../http/api-error.ts";
import { isPlainUri } from "../http/plain-text.ts";
import type { JobQueue } from "../jobs/queue.ts";
import type { ClientStore } from "../oauth/client-store.ts";
import type { PolicyService } from "../policy/policy-service.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import type { AgentService } from "../registry/agents.ts";
import type { PeopleService } from "../registry/people.ts";
import type { ResourceServerService } from "../registry/resource-servers.ts";
import type { RevocationService } from "../revocation/revocations.ts";
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
  bus: InvalidationBus;
  clients: ClientStore;
  people: PeopleService;
  resources: ResourceServerService;
  agents: AgentService;
  revocations: RevocationService;
  jobs: JobQueue;
  policy: PolicyService;
  /** How long a key retired by a rotation stays published (DEPUTY_KEY_RETIRING_SECONDS). */
  keyRetiringSeconds: number;
}

/** The API's areas, each registering its routes with what it reads of AdminDeps. */
const ROUTE_GROUPS = [
  peopleRoutes,
  resourceRoutes,
  agentRoutes,
  keyRoutes,
  policyRoutes,
  auditRoutes,
  revocationRoutes,
] as const;

export const ADMIN_BODY_LIMIT = "64kb";

/** Bodies must be JSON: anything else is refused rather than silently read as empty. */
async function requireJson(ctx: Context, next: Next): Promise<void> {
  if (["POST", "PATCH", "PUT"].includes(ctx.method) && ctx.request.length && !ctx.is("application/json")) {
    throw new ApiError(415, "invalid_request", "send the body as application/json");
  }
  await next();
}

/** Path segments and query parameters become lookups: no control character may reach the database in one. */
async function requirePlainTarget(ctx: Context, next: Next): Promise<void> {
  if (!isPlainUri(ctx.path) || !isPlainUri(ctx.querystring))
    throw invalidRequest("the path and query must not contain control characters, even percent-encoded");
  await next();
}

/** What no route serves: a method the API never implements, an unknown path, or a method the path refuses. */
function unrouted(ctx: Context, implemented: string[], allowed: string[]): never {
  if (!implemented.includes(ctx.method))
    throw new ApiError(501, "not_implemented", `${ctx.method} is not a method of this API`);
  if (!allowed.length) throw new ApiError(404, "not_found", `no route for ${ctx.method} ${ctx.path}`);
  // RFC 9110 §15.5.6: a 405 response MUST list the methods the resource supports in Allow.
  ctx.set("Allow", allowed.join(", "));
  throw new ApiError(405, "method_not_allowed", `${ctx.path} accepts ${allowed.join(", ")}`);
}

/**
 * Registered right after authentication for every path and method, so that a request no route serves is answered
 * there, in the API's JSON error shape, and a caller without a valid token learns nothing from it.
 */
function answerUnrouted(router: Router): void {
  const answer: RouterMiddleware = async (ctx, next) => {
    const routes = (ctx.matched ?? []).filter(
      (layer) => layer.methods.length && !layer.stack.includes(answer),
    );
    if (routes.some((layer) => layer.methods.includes(ctx.method))) return next();
    const allowed = [...new Set(routes.flatMap((layer) => layer.methods))];
    if (ctx.method === "OPTIONS" && allowed.length) {
      ctx.set("Allow", allowed.join(", "));
      ctx.status = 204;
      return;
    }
    unrouted(ctx, router.methods, allowed);
  };
  router.all("{/*rest}", answer);
}

export function adminRouter(deps: AdminDeps): Router {
  const router = new Router({ prefix: "/admin/v1" });
  router.use(requireAdmin(deps.provider, deps.clients));
  answerUnrouted(router);
  router.use(requirePlainTarget);
  router.use(requireJson);
  router.use(bodyParser({ enableTypes: ["json"], jsonLimit: ADMIN_BODY_LIMIT, encoding: "utf-8" }));
  for (const routes of ROUTE_GROUPS) routes(router, deps);
  return router;
}
