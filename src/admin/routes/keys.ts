import type { Router } from "@koa/router";
import { listSigningKeys, rotateSigningKey, type SigningKeySummary } from "../../oauth/signing-keys.ts";
import type { AdminDeps } from "../routes.ts";

const keyView = (key: SigningKeySummary) => ({
  kid: key.kid,
  alg: key.alg,
  active: key.active,
  created_at: key.createdAt.toISOString(),
  retired_at: key.retiredAt?.toISOString() ?? null,
});

export function keyRoutes(router: Router, { prisma, audit }: AdminDeps): void {
  router.get("/keys", async (ctx) => {
    ctx.body = { keys: (await listSigningKeys(prisma)).map(keyView) };
  });
  router.post("/keys/rotate", async (ctx) => {
    const key = await rotateSigningKey(prisma);
    await audit.record(ctx.state.audit, { type: "admin_change", action: "key.rotate", target: key.kid });
    ctx.status = 201;
    ctx.body = { key: keyView(key), note: "the new key signs after the servers restart" };
  });
}
