// POST /tasks/{task_id}/complete: the delegate agent (its own client credentials, as at the token endpoint) or the
// person who delegated (a signed-in session, through the `authenticatePerson` port the pages implement) ends a
// task now. app.ts mounts it for the paths isTaskPath matches.
import { bodyParser } from "@koa/bodyparser";
import { Router } from "@koa/router";
import type { Context, Middleware } from "koa";
import compose from "koa-compose";
import type Provider from "oidc-provider";
import { ApiError } from "../http/api-error.ts";
import { jsonErrors, securityHeaders } from "../http/middleware.ts";
import { isPlainText } from "../http/plain-text.ts";
import type { Logger } from "../logger.ts";
import type { TaskService } from "../revocation/tasks.ts";
import { authenticateAgent } from "./agent-auth.ts";

/**
 * The person's path: the id of the person signed in on this request, checking the session and the form's CSRF
 * token for `purpose`; undefined when the request carries no session (then the agent path applies).
 */
export type PersonAuthenticator = (
  ctx: Context,
  purpose: string,
  csrf: unknown,
) => Promise<string | undefined>;

/** The CSRF purpose of the "task is done" form on the person's pages. */
export const completeTaskPurpose = (taskId: string) => `complete-task:${taskId}`;

export interface TaskRouteDeps {
  provider: Provider;
  tasks: TaskService;
  log: Logger;
  authenticatePerson: PersonAuthenticator;
}

export const isTaskPath = (path: string) => path.startsWith("/tasks/");

/** Task ids are what agent_task details may hold (agent-task.ts): 1 to 200 characters, no control character. */
const isTaskId = (value: string) => value.length >= 1 && value.length <= 200 && isPlainText(value);

export function taskRoutes(deps: TaskRouteDeps): Middleware {
  const router = new Router({ prefix: "/tasks" });
  router.post("/:task_id/complete", async (ctx) => {
    const taskId = ctx.params.task_id ?? "";
    if (!isTaskId(taskId)) throw new ApiError(400, "invalid_request", "task_id is not a valid task id");
    const body = (ctx.request.body ?? {}) as Record<string, unknown>;
    const context = { requestId: ctx.state.requestId, clientAddress: ctx.ip };
    const personId = await deps.authenticatePerson(ctx, completeTaskPurpose(taskId), body.csrf);
    if (personId) {
      const result = await deps.tasks.complete(
        taskId,
        { kind: "person", personId },
        { ...context, actor: personId },
      );
      // A form posted from "my delegations" goes back there; an API caller gets the JSON result.
      if (ctx.is("application/x-www-form-urlencoded")) {
        ctx.status = 303;
        ctx.redirect("/delegations?done=completed");
        return;
      }
      ctx.body = result;
      return;
    }
    const clientId = await authenticateAgent(ctx, body, {
      provider: deps.provider,
      endpointUrl: `${deps.provider.issuer}${ctx.path}`,
    });
    ctx.body = await deps.tasks.complete(
      taskId,
      { kind: "agent", clientId },
      { ...context, actor: clientId },
    );
  });
  return compose([
    jsonErrors(deps.log),
    securityHeaders,
    async (ctx: Context, next: () => Promise<unknown>) => {
      ctx.set("Cache-Control", "no-store");
      await next();
    },
    bodyParser({ enableTypes: ["form", "json"], formLimit: "16kb", jsonLimit: "16kb", encoding: "utf-8" }),
    router.routes(),
    router.allowedMethods(),
  ]) as Middleware;
}
