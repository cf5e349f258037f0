// People approve delegation: sign-in, consent, CIBA approvals and "my delegations", and the admin console;
// assembled for app.ts.
// createPeopleUi is called before the provider exists (the provider needs its hooks); routes(provider) after.
import { Router } from "@koa/router";
import type { Redis } from "ioredis";
import type { Context, Middleware, Next } from "koa";
import compose from "koa-compose";
import type Provider from "oidc-provider";
import type { AuditLog } from "../audit/audit-log.ts";
import type { Config } from "../config.ts";
import type { DelegationStore } from "../delegation/delegations.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { ApiError } from "../http/api-error.ts";
import type { Logger } from "../logger.ts";
import type { ProviderHooks } from "../oauth/provider-hooks.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import type { SessionTerminator } from "../registry/people.ts";
import { Authenticator } from "./authenticate.ts";
import { PendingApprovals } from "./ciba.ts";
import { readCookie, SESSION_COOKIE } from "./cookies.ts";
import { csrfValid } from "./csrf.ts";
import type { CookieKeys } from "./keys.ts";
import { LoginThrottle } from "./login-throttle.ts";
import { Pages, STYLESHEET_PATH } from "./pages.ts";
import { createProviderHooks } from "./provider-hooks.ts";
import { accountRoutes } from "./routes/account.ts";
import { approvalsRoutes } from "./routes/approvals.ts";
import { consoleRoutes } from "./routes/console.ts";
import { delegationsRoutes } from "./routes/delegations.ts";
import { interactionRoutes } from "./routes/interaction.ts";
import { UiSessionStore } from "./ui-sessions.ts";
import { loadVisitor, type PeopleUiServices, pageErrors, type WebDeps } from "./web.ts";

export type { PeopleUiServices } from "./web.ts";

export interface PeopleUiDeps {
  config: Config;
  prisma: PrismaClient;
  redis: Redis;
  audit: AuditLog;
  bus: InvalidationBus;
  delegations: DelegationStore;
  cookieKeys: CookieKeys;
  log: Logger;
}

export interface PeopleUi {
  hooks: ProviderHooks;
  /** People's sessions, for the people service to end (registry/people.ts). */
  sessions: SessionTerminator;
  /** The pages' routes, for the paths isPagePath matches. */
  routes(provider: Provider, services: PeopleUiServices): Middleware;
  /**
   * The active person signed in on this request, for a form posted from Deputy's pages outside these routes
   * (e.g. "task is done"): undefined without a session; a 403 when the form's CSRF token is not this session's
   * for `purpose`.
   */
  personFor(ctx: Context, purpose: string, csrf: unknown): Promise<string | undefined>;
}

const PATHS =
  /^\/(?:$|login$|logout$|approvals(?:\/|$)|delegations(?:\/|$)|interaction(?:\/|$)|console(?:\/|$))/;

/** The paths the people's pages answer (app.ts mounts them there). */
export const isPagePath = (path: string) => path === STYLESHEET_PATH || PATHS.test(path);

export function createPeopleUi(deps: PeopleUiDeps): PeopleUi {
  const { config, prisma, redis, audit } = deps;
  const sessions = new UiSessionStore(redis, config.redisPrefix, config.sessionSeconds);
  const pending = new PendingApprovals(redis, config.redisPrefix, config.ciba);
  const pages = new Pages();
  const throttle = new LoginThrottle(redis, config.redisPrefix, config.login);
  const authenticator = new Authenticator(prisma, throttle, audit);
  const hooks = createProviderHooks({
    prisma,
    audit,
    sessions,
    pending,
    pages,
    cookieKeys: deps.cookieKeys,
  });

  return {
    hooks,
    sessions,
    async personFor(ctx, purpose, csrf) {
      const session = await sessions.find(readCookie(ctx.get("cookie"), SESSION_COOKIE));
      if (!session) return undefined;
      const person = await prisma.person.findUnique({ where: { id: session.personId } });
      if (person?.status !== "active") return undefined;
      if (!csrfValid(session.csrfSecret, purpose, csrf)) {
        throw new ApiError(403, "access_denied", "the form's CSRF token is missing or not this session's");
      }
      return person.id;
    },
    routes(provider, services) {
      const web: WebDeps = {
        ...deps,
        provider,
        sessions,
        pending,
        pages,
        authenticator,
        services,
      };
      const router = new Router();
      for (const routes of [
        accountRoutes(web),
        interactionRoutes(web),
        approvalsRoutes(web),
        delegationsRoutes(web),
        consoleRoutes(web),
      ]) {
        router.use(routes.routes());
      }
      const stack = compose([pageErrors(web), loadVisitor(web), router.routes(), router.allowedMethods()]);
      return async (ctx: Context, next: Next) => {
        if (ctx.path === STYLESHEET_PATH) {
          if (ctx.method !== "GET" && ctx.method !== "HEAD") return next();
          ctx.set("Cache-Control", "public, max-age=3600");
          ctx.set("X-Content-Type-Options", "nosniff");
          ctx.type = "text/css; charset=utf-8";
          ctx.body = pages.stylesheet;
          return;
        }
        await stack(ctx as never, async () => {});
        if (ctx.status === 404 && ctx.body === undefined) {
          pages.render(
            ctx,
            "error.njk",
            { title: "Not found", message: "There is no page here." },
            { status: 404 },
          );
        }
      };
    },
  };
}
