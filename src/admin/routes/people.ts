import type { Router } from "@koa/router";
import { personView } from "../../registry/people.ts";
import { reasonBody } from "../../registry/reason.ts";
import { body } from "../request-body.ts";
import type { AdminDeps } from "../routes.ts";
import { createPersonBody, updatePersonBody } from "../schemas.ts";

export function peopleRoutes(router: Router, { people }: Pick<AdminDeps, "people">): void {
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
}
