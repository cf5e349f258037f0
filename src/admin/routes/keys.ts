import type { Router } from "@koa/router";
import {
  keyStatus,
  listSigningKeys,
  retireSigningKey,
  rotateSigningKey,
  type SigningKeySummary,
} from "../../oauth/signing-keys.ts";
import { optionalReasonBody } from "../../registry/reason.ts";
import { body } from "../request-body.ts";
import type { AdminDeps } from "../routes.ts";

const keyView = (key: SigningKeySummary) => ({
  kid: key.kid,
  alg: key.alg,
  status: keyStatus(key),
  active: key.active,
  created_at: key.createdAt.toISOString(),
  retired_at: key.retiredAt?.toISOString() ?? null,
  removed_at: key.removedAt?.toISOString() ?? null,
});

const ROTATED =
  "every server publishes the new key at /jwks and accepts tokens signed with it now; each server signs with it " +
  "from its next restart, and until then with the previous key, which stays published and accepted until its " +
  "removed_at (restart every server before then)";

const RETIRED =
  "removed from /jwks on every server now; no server accepts a token or cookie signed with it any more. A server " +
  "that started while it was active still signs with it (tokens nobody accepts): restart those now";

export function keyRoutes(
  router: Router,
  {
    prisma,
    audit,
    bus,
    keyRetiringSeconds,
  }: Pick<AdminDeps, "prisma" | "audit" | "bus" | "keyRetiringSeconds">,
): void {
  router.get("/keys", async (ctx) => {
    ctx.body = { keys: (await listSigningKeys(prisma)).map(keyView) };
  });
  router.post("/keys/rotate", async (ctx) => {
    const { retired, ...key } = await rotateSigningKey(
      { prisma, audit, bus, retiringSeconds: keyRetiringSeconds },
      ctx.state.audit,
    );
    ctx.status = 201;
    ctx.body = { key: keyView(key), retiring: retired.map(keyView), note: ROTATED };
  });
  // An emergency: the key must stop being trusted now, not at the end of its retiring period.
  router.post("/keys/:kid/retire", async (ctx) => {
    const { reason } = optionalReasonBody.parse(body(ctx));
    const key = await retireSigningKey({ prisma, audit, bus }, ctx.state.audit, ctx.params.kid ?? "", reason);
    ctx.body = { key: keyView(key), note: RETIRED };
  });
}
