import type { Router } from "@koa/router";
import { isUuid } from "../../db/ids.ts";
import { groupByResource } from "../../delegation/resource-grants.ts";
import type { Prisma } from "../../generated/prisma/client.ts";
import { ApiError, notFound } from "../../http/api-error.ts";
import { reasonBody } from "../../registry/reason.ts";
import { body } from "../request-body.ts";
import type { AdminDeps } from "../routes.ts";

const DELEGATION_STATUSES = ["active", "revoked", "ended"] as const;

const INCLUDE = {
  person: { select: { email: true } },
  agent: { select: { clientId: true } },
  scopes: { select: { resource: true, scope: true } },
  _count: { select: { tokens: true } },
} as const;

type DelegationRow = Prisma.DelegationGetPayload<{ include: typeof INCLUDE }>;

function delegationView(row: DelegationRow) {
  return {
    id: row.id,
    person: row.person.email,
    agent: row.agent.clientId,
    task_id: row.taskId,
    task: row.taskDescription,
    /** What the person approved: the scopes on each resource server. */
    grants: groupByResource(row.scopes),
    status: row.status,
    created_at: row.createdAt.toISOString(),
    ends_at: row.endsAt.toISOString(),
    ended_at: row.endedAt?.toISOString() ?? null,
    end_reason: row.endReason,
    tokens: row._count.tokens,
  };
}

/** Delegations, revocation by an admin, the emergency stop, and the revocation jobs' failures. */
export function revocationRoutes(
  router: Router,
  { prisma, agents, revocations, jobs }: Pick<AdminDeps, "prisma" | "agents" | "revocations" | "jobs">,
): void {
  router.get("/delegations", async (ctx) => {
    const { status, person, agent, task } = ctx.query;
    if (status !== undefined && !DELEGATION_STATUSES.includes(String(status) as never))
      throw new ApiError(400, "invalid_request", `status must be one of ${DELEGATION_STATUSES.join(", ")}`);
    const rows = await prisma.delegation.findMany({
      where: {
        status: status as (typeof DELEGATION_STATUSES)[number] | undefined,
        person: typeof person === "string" ? { email: person.toLowerCase() } : undefined,
        agent: typeof agent === "string" ? { clientId: agent } : undefined,
        taskId: typeof task === "string" ? task : undefined,
      },
      include: INCLUDE,
      orderBy: { createdAt: "desc" },
      take: 500,
    });
    ctx.body = { delegations: rows.map(delegationView) };
  });
  router.get("/delegations/:id", async (ctx) => {
    const id = ctx.params.id ?? "";
    const row = isUuid(id) ? await prisma.delegation.findUnique({ where: { id }, include: INCLUDE }) : null;
    if (!row) throw notFound(`delegation ${id}`);
    ctx.body = delegationView(row);
  });
  router.post("/delegations/:id/revoke", async (ctx) => {
    const id = ctx.params.id ?? "";
    const { reason } = reasonBody.parse(body(ctx));
    const exists = isUuid(id) && (await prisma.delegation.count({ where: { id } }));
    if (!exists) throw notFound(`delegation ${id}`);
    const revoked = await revocations.revoke(
      { delegations: [id] },
      { trigger: "admin", reason, target: id },
      ctx.state.audit,
    );
    const row = await prisma.delegation.findUniqueOrThrow({ where: { id }, include: INCLUDE });
    ctx.body = { ...delegationView(row), revocation: revoked };
  });
  // The emergency stop. Reversible per agent: POST /agents/{id}/activate.
  router.post("/agents/suspend-all", async (ctx) => {
    const { reason } = reasonBody.parse(body(ctx));
    ctx.body = await agents.suspendAll(ctx.state.audit, reason);
  });
  router.get("/jobs/failed", async (ctx) => {
    const limit = ctx.query.limit === undefined ? 100 : Number(ctx.query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 1000)
      throw new ApiError(400, "invalid_request", "limit must be a whole number from 1 to 1000");
    ctx.body = { jobs: await jobs.failed(limit) };
  });
  router.post("/jobs/:id/retry", async (ctx) => {
    const job = await jobs.retry(ctx.params.id ?? "");
    if (!job) throw notFound(`failed job ${ctx.params.id}`);
    ctx.body = { retried: job };
  });
}
