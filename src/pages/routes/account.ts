// Signing in and out of Deputy's pages (outside any agent's request): /login and /logout.
import { Router } from "@koa/router";
import type { Context } from "koa";
import type { Person } from "../../generated/prisma/client.ts";
import { clearCookie, SESSION_COOKIE } from "../cookies.ts";
import {
  auditContext,
  endProviderSession,
  layoutVariables,
  loginCsrf,
  readForm,
  redirect,
  requireCsrf,
  requireLoginCsrf,
  secureCookies,
  signedIn,
  startSession,
  type WebDeps,
} from "../web.ts";

/** Where a person may be sent after signing in: only Deputy's own pages (no open redirect). */
const RETURN_TO = new Set(["/approvals", "/delegations", "/console/agents"]);
const returnTarget = (value: unknown) =>
  typeof value === "string" && RETURN_TO.has(value) ? value : "/delegations";

export const SIGN_IN_FAILED = "That email and password do not match an account that can sign in.";
export const TOO_MANY_ATTEMPTS = "Too many attempts. Try again later.";

/** Renders a login form (standalone or inside an agent's request). */
export function renderLogin(
  ctx: Context,
  deps: WebDeps,
  options: {
    action: string;
    purpose: string;
    status?: number;
    error?: string;
    notice?: string;
    email?: string;
    returnTo?: string;
    agentName?: string;
    formTargets?: string[];
  },
): void {
  deps.pages.render(
    ctx,
    "login.njk",
    {
      title: "Sign in",
      ...layoutVariables(ctx),
      action: options.action,
      csrf: loginCsrf(ctx, deps, options.purpose),
      error: options.error,
      notice: options.notice,
      email: options.email,
      returnTo: options.returnTo,
      agentName: options.agentName,
    },
    { status: options.status, formTargets: options.formTargets },
  );
}

/**
 * Checks a login form (CSRF bound to this browser's nonce) and the credentials. On failure the form is shown
 * again with one generic message; on success a fresh session starts and the person is returned.
 */
export async function handleLogin(
  ctx: Context,
  deps: WebDeps,
  form: URLSearchParams,
  options: { action: string; purpose: string; returnTo?: string; agentName?: string; formTargets?: string[] },
): Promise<Person | undefined> {
  requireLoginCsrf(ctx, deps, options.purpose, form);
  const email = form.get("email") ?? "";
  const result = await deps.authenticator.signIn(auditContext(ctx, "anonymous"), email, form.get("password"));
  const started = result.ok && (await startSession(ctx, deps, result.person));
  if (!result.ok || !started) {
    const throttled = !result.ok && result.reason === "throttled";
    renderLogin(ctx, deps, {
      ...options,
      status: throttled ? 429 : 401,
      error: throttled ? TOO_MANY_ATTEMPTS : SIGN_IN_FAILED,
      email: email.slice(0, 254),
    });
    return undefined;
  }
  return result.person;
}

export function accountRoutes(deps: WebDeps): Router {
  const router = new Router();

  router.get("/", (ctx) => redirect(ctx, signedIn(ctx) ? "/delegations" : "/login"));

  router.get("/login", (ctx) => {
    const returnTo = returnTarget(ctx.query.return_to);
    if (signedIn(ctx)) return redirect(ctx, returnTo);
    renderLogin(ctx, deps, {
      action: "/login",
      purpose: "login",
      returnTo,
      notice: ctx.query.signed_out === "1" ? "You have signed out." : undefined,
    });
  });

  router.post("/login", async (ctx) => {
    const form = await readForm(ctx);
    const returnTo = returnTarget(form.get("return_to"));
    const person = await handleLogin(ctx, deps, form, { action: "/login", purpose: "login", returnTo });
    if (!person) return;
    // The browser's oidc-provider session, if it belongs to someone else, ends with this sign-in.
    await endProviderSession(ctx, deps.provider, person.id);
    redirect(ctx, returnTo);
  });

  router.post("/logout", async (ctx) => {
    const form = await readForm(ctx);
    const current = signedIn(ctx);
    if (!current) return redirect(ctx, "/login");
    requireCsrf(current.session.csrfSecret, "logout", form);
    await deps.sessions.destroy(current.session);
    clearCookie(ctx, SESSION_COOKIE, secureCookies(deps.config));
    await endProviderSession(ctx, deps.provider);
    await deps.audit.record(auditContext(ctx, current.person.email), {
      action: "logout",
      decision: "allow",
      target: current.person.id,
    });
    ctx.state.visitor = {};
    redirect(ctx, "/login?signed_out=1");
  });

  return router;
}
