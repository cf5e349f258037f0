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

const ROTATED =
  "every server publishes the new key at /jwks and accepts tokens signed with it now; each server signs with it " +
  "from its next restart, and until then with the previous key, which stays published";

export function keyRoutes(
  router: Router,
  { prisma, audit, bus }: Pick<AdminDeps, "prisma" | "audit" | "bus">,
): void {
  router.get("/keys", async (ctx) => {
    ctx.body = { keys: (await listSigningKeys(prisma)).map(keyView) };
  });
  router.post("/keys/rotate", async (ctx) => {
    const key = await rotateSigningKey({ prisma, audit, bus }, ctx.state.audit);
    ctx.status = 201;
    ctx.body = { key: keyView(key), note: ROTATED };
  });
}
