// /delegations: the signed-in person's active delegations — agent, task, permissions, end, and the chains of
// sub-agents acting under each (from the token lineage) — each with a Revoke button.

import { Router } from "@koa/router";
import type { Context } from "koa";
import { isUuid } from "../../db/ids.ts";
import { groupByResource } from "../../delegation/resource-grants.ts";
import { completeTaskPurpose } from "../../oauth/task-route.ts";
import { csrfToken } from "../csrf.ts";
import { revokeOwnDelegation } from "../end-delegation.ts";
import { formatDuration, formatTime } from "../format.ts";
import { PageError } from "../page-error.ts";
import {
  auditContext,
  layoutVariables,
  personForm,
  redirect,
  redirectToLogin,
  signedIn,
  type WebDeps,
} from "../web.ts";

const NOTICES: Record<string, string> = {
  revoked: "Revoked. The agent and every sub-agent acting under it can no longer use it.",
  completed: "Task marked done. Its delegation has ended, for the agent and every sub-agent acting under it.",
};

export function delegationsRoutes(deps: WebDeps): Router {
  const router = new Router({ prefix: "/delegations" });

  router.get("/", async (ctx: Context) => {
    const current = signedIn(ctx);
    if (!current) return redirectToLogin(ctx, "/delegations");
    const now = Date.now();
    const rows = await deps.prisma.delegation.findMany({
      where: { personId: current.person.id, status: "active", endsAt: { gt: new Date(now) } },
      include: {
        agent: { select: { name: true, clientId: true } },
        scopes: { select: { resource: true, scope: true } },
        tokens: { where: { depth: { gt: 1 } }, select: { actorChain: true } },
      },
      orderBy: { createdAt: "desc" },
      take: 200,
    });
    const clientIds = [...new Set(rows.flatMap((row) => row.tokens.flatMap((token) => token.actorChain)))];
    const names = new Map(
      (
        await deps.prisma.agent.findMany({
          where: { clientId: { in: clientIds } },
          select: { clientId: true, name: true },
        })
      ).map((agent) => [agent.clientId, agent.name]),
    );
    const uris = [...new Set(rows.flatMap((row) => row.scopes.map((pair) => pair.resource)))];
    const resourceNames = new Map(
      (
        await deps.prisma.resourceServer.findMany({
          where: { uri: { in: uris } },
          select: { uri: true, name: true },
        })
      ).map((resource) => [resource.uri, resource.name]),
    );
    const delegations = rows.map((row) => {
      // actorChain is [current, …, first]; shown first → … → current. Distinct chains only.
      const chains = [
        ...new Map(
          row.tokens.map((token) => {
            const chain = [...token.actorChain].reverse().map((id) => names.get(id) ?? id);
            return [chain.join("\u0000"), chain] as const;
          }),
        ).values(),
      ];
      return {
        id: row.id,
        agentName: row.agent.name,
        agentClientId: row.agent.clientId,
        taskId: row.taskId,
        taskDescription: row.taskDescription,
        grants: groupByResource(row.scopes).map(({ resource, scopes }) => ({
          name: resourceNames.get(resource) ?? resource,
          uri: resource,
          scopes,
        })),
        createdAt: formatTime(row.createdAt),
        endsAt: formatTime(row.endsAt),
        endsAtIso: row.endsAt.toISOString(),
        remaining: formatDuration((row.endsAt.getTime() - now) / 1000),
        chains,
        csrf: csrfToken(current.session.csrfSecret, `revoke:${row.id}`),
        completeCsrf: row.taskId
          ? csrfToken(current.session.csrfSecret, completeTaskPurpose(row.taskId))
          : undefined,
      };
    });
    deps.pages.render(ctx, "delegations.njk", {
      title: "My delegations",
      ...layoutVariables(ctx, "delegations"),
      delegations,
      notice: NOTICES[String(ctx.query.done)],
    });
  });

  router.post("/:id/revoke", async (ctx: Context) => {
    const id = ctx.params.id ?? "";
    const { current } = await personForm(ctx, `revoke:${id}`, "Sign in again to revoke a delegation.");
    const revoked =
      isUuid(id) &&
      (await revokeOwnDelegation(
        deps.prisma,
        deps.services.revokeDelegation,
        auditContext(ctx, current.person.email),
        current.person.id,
        id,
      ));
    if (!revoked)
      throw new PageError(404, "Not found", "You have no active delegation with this id.", {
        href: "/delegations",
        label: "Back to my delegations",
      });
    redirect(ctx, "/delegations?done=revoked");
  });

  return router;
}
