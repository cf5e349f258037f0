// Middleware shared by every route of Deputy's own (non-oidc-provider) HTTP surface.
import { randomUUID } from "node:crypto";
import type { Context, Next } from "koa";
import { ZodError } from "zod";
import type { Logger } from "../logger.ts";
import { ApiError } from "./api-error.ts";
import { answerDatabaseUnavailable, databaseOutage } from "./unavailable.ts";

declare module "koa" {
  interface DefaultState {
    requestId: string;
  }
}

/** Gives every request an id (echoed as X-Request-Id) that audit events and logs carry. */
export async function requestId(ctx: Context, next: Next): Promise<void> {
  const given = ctx.get("x-request-id");
  ctx.state.requestId = /^[\w.-]{1,100}$/.test(given) ? given : randomUUID();
  ctx.set("X-Request-Id", ctx.state.requestId);
  await next();
}

/** One log line per request: method, path (never the query, which may carry codes), status, duration. */
export function accessLog(log: Logger) {
  return async function logRequest(ctx: Context, next: Next): Promise<void> {
    const started = performance.now();
    const write = () =>
      log.info(
        {
          requestId: ctx.state.requestId,
          method: ctx.method,
          path: ctx.path,
          status: ctx.res.statusCode,
          ms: Math.round((performance.now() - started) * 10) / 10,
        },
        "request",
      );
    try {
      await next();
    } finally {
      if (ctx.res.writableFinished) write();
      else ctx.res.once("finish", write);
    }
  };
}

/** Baseline response headers: no framing, no sniffing, no referrer leaks. */
export async function securityHeaders(ctx: Context, next: Next): Promise<void> {
  ctx.set("X-Content-Type-Options", "nosniff");
  ctx.set("X-Frame-Options", "DENY");
  ctx.set("Referrer-Policy", "no-referrer");
  ctx.set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'");
  await next();
}

/** Renders every failure as `{error, error_description}`; unexpected ones are logged, never shown. */
export function jsonErrors(log: Logger) {
  return async function renderJsonErrors(ctx: Context, next: Next): Promise<void> {
    try {
      await next();
      if (ctx.body === undefined) throwRouterStatus(ctx);
    } catch (error) {
      const outage = databaseOutage(error);
      if (outage) {
        log.warn(
          { error: outage, requestId: ctx.state.requestId },
          "request failed: the database is unavailable",
        );
        answerDatabaseUnavailable(ctx);
        return;
      }
      const { status, body } = describe(error);
      if (status >= 500 && status !== 501)
        log.error({ err: error, requestId: ctx.state.requestId }, "request failed");
      ctx.status = status;
      ctx.body = body;
    }
  };
}

/** The router's own answers (no route, method not allowed or not implemented) in the same JSON shape. */
function throwRouterStatus(ctx: Context): void {
  const where = `${ctx.method} ${ctx.path}`;
  if (ctx.status === 404) throw new ApiError(404, "not_found", `no route for ${where}`);
  // RFC 9110 §15.5.6: the router has set Allow, which the error answer keeps.
  if (ctx.status === 405)
    throw new ApiError(
      405,
      "method_not_allowed",
      `${where}: allowed methods are ${ctx.response.get("Allow")}`,
    );
  if (ctx.status === 501) throw new ApiError(501, "not_implemented", `${ctx.method} is not supported`);
}

function describe(error: unknown): { status: number; body: { error: string; error_description: string } } {
  if (error instanceof ApiError) {
    return { status: error.status, body: { error: error.error, error_description: error.message } };
  }
  if (error instanceof ZodError) {
    const issues = error.issues.slice(0, 5).map((issue) => {
      const where = issue.path.length ? issue.path.join(".") : "body";
      return `${where}: ${issue.message}`;
    });
    return { status: 400, body: { error: "invalid_request", error_description: issues.join("; ") } };
  }
  // Errors thrown by koa/co-body (malformed JSON, body too large, bad charset) carry a 4xx status.
  const status = (error as { status?: number })?.status;
  if (typeof status === "number" && status >= 400 && status < 500) {
    const description =
      status === 413 ? "request body is too large" : "request body could not be read as JSON";
    return { status, body: { error: "invalid_request", error_description: description } };
  }
  return {
    status: 500,
    body: { error: "server_error", error_description: "internal error; see the server log" },
  };
}
