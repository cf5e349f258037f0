// /console: the admin console, for people whose account is an admin's. /console/agents lists every agent (owners,
// status, review date) to suspend with a reason or activate, and offers the emergency stop, confirmed on a page
// of its own. Every action calls the registry's AgentService, as the admin API does, so the revocation cascade,
// the audit event (the admin's email as its actor) and the cache invalidation are the same.
import { Router } from "@koa/router";
import type { Context } from "koa";
import { isUuid } from "../../db/ids.ts";
import type { Person } from "../../generated/prisma/client.ts";
import { ApiError } from "../../http/api-error.ts";
import { canTransition, type LifecycleAction } from "../../registry/agents.ts";
import { REASON_MAX, readReason } from "../console-reason.ts";
import { csrfToken } from "../csrf.ts";
import { formatTime } from "../format.ts";
import { PageError } from "../page-error.ts";
import type { UiSession } from "../ui-sessions.ts";
import {
  auditContext,
  layoutVariables,
  readForm,
  redirect,
  redirectToLogin,
  requireCsrf,
  signedIn,
  type WebDeps,
} from "../web.ts";

const HOME = "/console/agents";
const BACK = { href: HOME, label: "Back to the agents" };
const STOP = "console:emergency-stop";
const STOP_CONFIRMED = "console:emergency-stop:confirmed";
const actionPurpose = (action: LifecycleAction, agentId: string) => `console:${action}:${agentId}`;

const NOTICES = new Map([
  [
    "suspended",
    "Agent suspended. Every delegation it held or acted in is revoked, and its requests are refused.",
  ],
  ["activated", "Agent activated. It can authenticate again; the delegations it had stay revoked."],
  [
    "stopped",
    "Emergency stop done: every agent is suspended and every active delegation revoked. Activate agents one by one below.",
  ],
]);

type Admin = { person: Person; session: UiSession };

function requireAdmin(person: Person): void {
  if (!person.isAdmin)
    throw new PageError(
      403,
      "Admins only",
      "The console is for Deputy's administrators; your account is not one.",
    );
}

/** The admin sending a console form: anyone else's form is refused. */
function formAdmin(ctx: Context): Admin {
  const current = signedIn(ctx);
  if (!current)
    throw new PageError(403, "Signed out", "Sign in again as an admin to use the console.", {
      href: `/login?return_to=${encodeURIComponent(HOME)}`,
      label: "Sign in",
    });
  requireAdmin(current.person);
  return current;
}

/** Where a failed action is shown: at the top of the console, marking the form it came from. */
interface Failure {
  status: number;
  message: string;
  form?: string;
}

export function consoleRoutes(deps: WebDeps): Router {
  const router = new Router({ prefix: "/console" });
  const { agents } = deps.services;

  async function renderAgents(ctx: Context, admin: Admin, failure?: Failure): Promise<void> {
    const now = Date.now();
    const token = (purpose: string) => csrfToken(admin.session.csrfSecret, purpose);
    const rows = (await agents.list()).map((agent) => ({
      id: agent.id,
      clientId: agent.client_id,
      name: agent.name,
      owner: agent.owner,
      coOwners: agent.co_owners,
      status: agent.status,
      statusReason: agent.status_reason,
      needsOwner: agent.needs_owner,
      reviewDue: formatTime(new Date(agent.review_due_at)),
      reviewDueIso: agent.review_due_at,
      reviewOverdue: Date.parse(agent.review_due_at) < now,
      suspendCsrf: canTransition(agent.status, "suspend")
        ? token(actionPurpose("suspend", agent.id))
        : undefined,
      activateCsrf: canTransition(agent.status, "activate")
        ? token(actionPurpose("activate", agent.id))
        : undefined,
    }));
    deps.pages.render(
      ctx,
      "console-agents.njk",
      {
        title: "Agents",
        ...layoutVariables(ctx, "console"),
        agents: rows,
        stopCsrf: token(STOP),
        reasonMax: REASON_MAX,
        notice: failure ? undefined : NOTICES.get(String(ctx.query.done)),
        failure,
      },
      { status: failure?.status },
    );
  }

  router.get("/agents", async (ctx: Context) => {
    const current = signedIn(ctx);
    if (!current) return redirectToLogin(ctx, HOME);
    requireAdmin(current.person);
    await renderAgents(ctx, current);
  });

  for (const [action, done] of [
    ["suspend", "suspended"],
    ["activate", "activated"],
  ] as const) {
    router.post(`/agents/:id/${action}`, async (ctx: Context) => {
      const form = await readForm(ctx);
      const admin = formAdmin(ctx);
      const id = ctx.params.id ?? "";
      if (!isUuid(id)) throw new PageError(404, "No such agent", "There is no agent with this id.", BACK);
      requireCsrf(admin.session.csrfSecret, actionPurpose(action, id), form);
      const checked = action === "suspend" ? readReason(form) : { reason: undefined };
      if ("error" in checked)
        return renderAgents(ctx, admin, {
          status: 400,
          message: `Not suspended: ${checked.error}`,
          form: id,
        });
      try {
        await agents.transition(auditContext(ctx, admin.person.email), id, action, checked.reason);
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        return renderAgents(ctx, admin, { status: error.status, message: `Not ${done}: ${error.message}.` });
      }
      redirect(ctx, `${HOME}?done=${done}`);
    });
  }

  /** A form of the emergency stop: the admin's, with this session's token for `purpose`, and a valid reason. */
  async function stopForm(
    ctx: Context,
    purpose: string,
  ): Promise<{ admin: Admin; reason: string } | undefined> {
    const form = await readForm(ctx);
    const admin = formAdmin(ctx);
    requireCsrf(admin.session.csrfSecret, purpose, form);
    const checked = readReason(form);
    if ("error" in checked) {
      await renderAgents(ctx, admin, {
        status: 400,
        message: `Nothing stopped: ${checked.error}`,
        form: "stop",
      });
      return undefined;
    }
    return { admin, reason: checked.reason };
  }

  // The emergency stop, in two steps: the first form shows what it will reach; only the confirmation's own form
  // (a token of another purpose) suspends.
  router.post("/emergency-stop", async (ctx: Context) => {
    const stop = await stopForm(ctx, STOP);
    if (!stop) return;
    const reached = (await agents.list()).filter((agent) => canTransition(agent.status, "suspend"));
    deps.pages.render(ctx, "console-stop.njk", {
      title: "Suspend every agent?",
      ...layoutVariables(ctx, "console"),
      reason: stop.reason,
      agents: reached.length,
      delegations: await deps.prisma.delegation.count({ where: { status: "active" } }),
      csrf: csrfToken(stop.admin.session.csrfSecret, STOP_CONFIRMED),
    });
  });

  router.post("/emergency-stop/confirm", async (ctx: Context) => {
    const stop = await stopForm(ctx, STOP_CONFIRMED);
    if (!stop) return;
    await agents.suspendAll(auditContext(ctx, stop.admin.person.email), stop.reason);
    redirect(ctx, `${HOME}?done=stopped`);
  });

  return router;
}
