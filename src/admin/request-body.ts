import type { Context } from "koa";

/** The parsed JSON body of an admin request, or an empty object when none was sent. */
export function body(ctx: Context): unknown {
  return ctx.request.body ?? {};
}
