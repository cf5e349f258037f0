// The admin HTTP API under /admin/v1: JSON in and out, every body validated, every change audited.
import { bodyParser } from "@koa/bodyparser";
import { Router } from "@koa/router";
import type { Context, Next } from "koa";
import type Provider from "oidc-provider";
import type { AuditLog } from "../audit/audit-log.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { ApiError } from "../http/api-error.ts";
import type { ClientStore } from "../oauth/client-store.ts";
import { listSigningKeys, rotateSigningKey } from "../oauth/signing-keys.ts";
import type { AgentService, LifecycleAction } from "../registry/agents.ts";
import { type PeopleService, personView } from "../registry/people.ts";
import type { ResourceServerService } from "../registry/resource-servers.ts";
import { requireAdmin } from "./admin-auth.ts";
import {
  createAgentBody,
  createPersonBody,
  createResourceBody,
  optionalReasonBody,
  reasonBody,
  updateAgentBody,
  updatePersonBody,
  updateResourceBody,
} from "./schemas.ts";

export interface AdminDeps {
  provider: Provider;
  prisma: PrismaClient;
  audit: AuditLog;
  clients: ClientStore;
  people: PeopleService;
  resources: ResourceServerService;
  agents: AgentService;
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
  const { people, resources, agents } = deps;
  const router = new Router({ prefix: "/admin/v1" });
  router.use(requireAdmin(deps.provider, deps.clients));
  router.use(requireJson);
  router.use(bodyParser({ enableTypes: ["json"], jsonLimit: ADMIN_BODY_LIMIT, encoding: "utf-8" }));

  const body = (ctx: Context) => ctx.request.body ?? {};

  router.get("/people", async (ctx) => {
    ctx.body = { people: await people.list() };
  });
  router.post("/people", async (ctx) => {
    ctx.status = 201;
    ctx.body = await people.create(ctx.state.audit, createPersonBody.parse(body(ctx)));
  });
  router.get("/people/:id", async (ctx) => {
    ctx.body = personView(await people.find(ctx.params.id ?? ""));
  });
  router.patch("/people/:id", async (ctx) => {
    ctx.body = await people.update(ctx.state.audit, ctx.params.id ?? "", updatePersonBody.parse(body(ctx)));
  });
  router.post("/people/:id/offboard", async (ctx) => {
    const { reason } = reasonBody.parse(body(ctx));
    ctx.body = await people.offboard(ctx.state.audit, ctx.params.id ?? "", reason);
  });

  router.get("/resources", async (ctx) => {
    ctx.body = { resources: await resources.list() };
  });
  router.post("/resources", async (ctx) => {
    ctx.status = 201;
    ctx.body = await resources.create(ctx.state.audit, createResourceBody.parse(body(ctx)));
  });
  router.get("/resources/:id", async (ctx) => {
    ctx.body = await resources.get(ctx.params.id ?? "");
  });
  router.patch("/resources/:id", async (ctx) => {
    ctx.body = await resources.update(
      ctx.state.audit,
      ctx.params.id ?? "",
      updateResourceBody.parse(body(ctx)),
    );
  });
  router.post("/resources/:id/rotate-secret", async (ctx) => {
    ctx.body = await resources.rotateSecret(ctx.state.audit, ctx.params.id ?? "");
  });

  router.get("/agents", async (ctx) => {
    const status = ctx.query.status;
    const owner = ctx.query.owner;
    if (status !== undefined && !["pending", "active", "suspended", "retired"].includes(String(status))) {
      throw new ApiError(400, "invalid_request", "status must be one of pending, active, suspended, retired");
    }
    ctx.body = {
      agents: await agents.list({
        status: status as "pending" | "active" | "suspended" | "retired" | undefined,
        owner: typeof owner === "string" ? owner : undefined,
      }),
    };
  });
  router.post("/agents", async (ctx) => {
    ctx.status = 201;
    ctx.body = await agents.create(ctx.state.audit, createAgentBody.parse(body(ctx)));
  });
  router.get("/agents/:id", async (ctx) => {
    ctx.body = await agents.get(ctx.params.id ?? "");
  });
  router.patch("/agents/:id", async (ctx) => {
    ctx.body = await agents.update(ctx.state.audit, ctx.params.id ?? "", updateAgentBody.parse(body(ctx)));
  });
  for (const action of ["activate", "suspend", "retire"] as const satisfies LifecycleAction[]) {
    router.post(`/agents/:id/${action}`, async (ctx) => {
      const { reason } = (action === "activate" ? optionalReasonBody : reasonBody).parse(body(ctx));
      ctx.body = await agents.transition(ctx.state.audit, ctx.params.id ?? "", action, reason);
    });
  }
  router.post("/agents/:id/review", async (ctx) => {
    ctx.body = await agents.markReviewed(ctx.state.audit, ctx.params.id ?? "");
  });

  router.get("/keys", async (ctx) => {
    ctx.body = { keys: await listSigningKeys(deps.prisma) };
  });
  router.post("/keys/rotate", async (ctx) => {
    const key = await rotateSigningKey(deps.prisma);
    await deps.audit.record(ctx.state.audit, { type: "admin_change", action: "key.rotate", target: key.kid });
    ctx.status = 201;
    ctx.body = { key, note: "the new key signs after the servers restart" };
  });

  return router;
}
