// Policies and velocity rules in the admin API: versions of the Cedar policy set (validate, apply, show) and
// the velocity rules that count uses per (person, agent). Every change is audited as a policy_change.
import type { Router } from "@koa/router";
import { z } from "zod";
import { invalidRequest } from "../../http/api-error.ts";
import { plain } from "../../http/plain-text.ts";
import { ANY } from "../../policy/velocity.ts";
import { body } from "../request-body.ts";
import type { AdminDeps } from "../routes.ts";
import { resourceUri, scopeName, text } from "../schemas.ts";

const source = z.strictObject({
  name: text(200),
  text: plain(z.string().max(60_000), { lineBreaks: true }),
});

export const policySourcesBody = z.strictObject({
  sources: z
    .array(source)
    .min(1)
    .max(50)
    .refine(
      (items) => new Set(items.map((s) => s.name)).size === items.length,
      "source names must be unique",
    ),
});

export const velocityRuleBody = z.strictObject({
  name: z
    .string()
    .min(1)
    .max(100)
    .regex(/^[A-Za-z0-9][\w.:-]*$/, "letters, digits and . _ : - (starting with a letter or digit)"),
  resource: z.union([z.literal(ANY), resourceUri]),
  action: z.union([z.literal(ANY), scopeName]),
  limit: z.number().int().min(1).max(100_000),
  window_seconds: z
    .number()
    .int()
    .min(1)
    .max(7 * 86400),
  shadow: z.boolean().optional(),
  contain_on_breach: z.boolean().optional(),
});

function versionParam(value: string | undefined): number {
  if (!value || !/^\d{1,9}$/.test(value)) throw invalidRequest("a policy version is a positive whole number");
  return Number(value);
}

export function policyRoutes(router: Router, { policy }: Pick<AdminDeps, "policy">): void {
  router.get("/policies", async (ctx) => {
    ctx.body = { in_force: policy.store.current().version, versions: await policy.store.list() };
  });
  router.get("/policies/current", async (ctx) => {
    ctx.body = await policy.store.get();
  });
  router.post("/policies/validate", async (ctx) => {
    const { sources } = policySourcesBody.parse(body(ctx));
    const { valid, policies, errors, warnings } = await policy.store.validate(sources);
    ctx.body = { valid, policies, errors, warnings };
  });
  router.post("/policies", async (ctx) => {
    const { sources } = policySourcesBody.parse(body(ctx));
    ctx.status = 201;
    ctx.body = await policy.store.apply(ctx.state.audit, sources);
  });
  router.get("/policies/:version", async (ctx) => {
    ctx.body = await policy.store.get(versionParam(ctx.params.version));
  });

  router.get("/velocity-rules", async (ctx) => {
    ctx.body = { rules: await policy.velocity.list() };
  });
  router.post("/velocity-rules", async (ctx) => {
    ctx.status = 201;
    ctx.body = await policy.velocity.add(ctx.state.audit, velocityRuleBody.parse(body(ctx)));
  });
  router.delete("/velocity-rules/:name", async (ctx) => {
    ctx.body = await policy.velocity.remove(ctx.state.audit, ctx.params.name ?? "");
  });
}
