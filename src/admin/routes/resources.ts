import type { Router } from "@koa/router";
import { body } from "../request-body.ts";
import type { AdminDeps } from "../routes.ts";
import { createResourceBody, updateResourceBody } from "../schemas.ts";

export function resourceRoutes(router: Router, { resources }: Pick<AdminDeps, "resources">): void {
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
}
