import type { Router } from "@koa/router";
import { ApiError } from "../../http/api-error.ts";
import type { LifecycleAction } from "../../registry/agents.ts";
import { optionalReasonBody, reasonBody } from "../../registry/reason.ts";
import { body } from "../request-body.ts";
import type { AdminDeps } from "../routes.ts";
import { createAgentBody, updateAgentBody } from "../schemas.ts";

const STATUSES = ["pending", "active", "suspended", "retired"] as const;

export function agentRoutes(router: Router, { agents }: Pick<AdminDeps, "agents">): void {
  router.get("/agents", async (ctx) => {
    const { status, owner } = ctx.query;
    if (status !== undefined && !STATUSES.includes(String(status) as (typeof STATUSES)[number])) {
      throw new ApiError(400, "invalid_request", `status must be one of ${STATUSES.join(", ")}`);
    }
    ctx.body = {
      agents: await agents.list({
        status: status as (typeof STATUSES)[number] | undefined,
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
}
