// What every page route shares: who the visitor is, form reading, CSRF checks, one-time answers and error pages.
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import type { Context, Next } from "koa";
import type Provider from "oidc-provider";
import { errors } from "oidc-provider";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { Config } from "../config.ts";
import type { DelegationStore } from "../delegation/delegations.ts";
import type { Person, PrismaClient } from "../generated/prisma/client.ts";
import { ApiError } from "../http/api-error.ts";
import { databaseOutage, RETRY_AFTER_SECONDS } from "../http/unavailable.ts";
import type { Logger } from "../logger.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import type { AgentService } from "../registry/agents.ts";
import type { Authenticator } from "./authenticate.ts";
import type { PendingApprovals } from "./ciba.ts";
import { clearCookie, LOGIN_NONCE_COOKIE, readCookie, SESSION_COOKIE, setCookie } from "./cookies.ts";
import { anonymousSecret, csrfToken, csrfValid } from "./csrf.ts";
import type { RevokeDelegation } from "./end-delegation.ts";
import type { CookieKeys } from "./keys.ts";
import { alreadyAnswered, badForm, expiredRequest, PageError, unavailable } from "./page-error.ts";
import type { Pages } from "./pages.ts";
import type { UiSession, UiSessionStore } from "./ui-sessions.ts";

/** Services of other parts of Deputy that the pages act through. */
export interface PeopleUiServices {
  revokeDelegation: RevokeDelegation;
  /** The registry's agents, for the admin console: the same service, cascade and audit as the admin API's. */
  agents: Pick<AgentService, "list" | "transition" | "suspendAll">;
  /**
   * Records a person's fresh approval of high-risk scopes for an agent on a resource (policy step-up): called
   * when a CIBA approval grants such scopes.
   */
  recordStepUp?: (
    context: AuditContext,
    input: {
      personId: string;
      agentClientId: string;
      resource: string;
      scopes: string[];
      requestRef?: string;
      delegation?: { id: string; taskId: string | null; taskDescription: string | null };
    },
  ) => Promise<unknown>;
}

export interface WebDeps {
  config: Config;
  provider: Provider;
  prisma: PrismaClient;
  redis: Redis;
  audit: AuditLog;
  bus: InvalidationBus;
  delegations: DelegationStore;
  sessions: UiSessionStore;
  pending: PendingApprovals;
  pages: Pages;
  authenticator: Authenticator;
  /** Derived from the signing keys: bind the login form's CSRF token to the visitor's nonce. */
  cookieKeys: CookieKeys;
  log: Logger;
  services: PeopleUiServices;
}

export interface Visitor {
  session?: UiSession;
  person?: Person;
}

declare module "koa" {
  interface DefaultState {
    visitor: Visitor;
  }
}

export const secureCookies = (config: Config) => config.issuer.startsWith("https://");

/** Loads the signed-in person; a session whose person is no longer active is ended on the spot. */
export function loadVisitor(deps: WebDeps) {
  return async function visitor(ctx: Context, next: Next): Promise<void> {
    ctx.state.visitor = {};
    const session = await deps.sessions.find(readCookie(ctx.get("cookie"), SESSION_COOKIE));
    if (session) {
      const person = await deps.prisma.person.findUnique({ where: { id: session.personId } });
      if (person?.status === "active") {
        ctx.state.visitor = { session, person };
      } else {
        await deps.sessions.destroy(session);
        clearCookie(ctx, SESSION_COOKIE, secureCookies(deps.config));
      }
    }
    await next();
  };
}

/** The signed-in person and session, or a redirect to sign in (for GET) / a refusal (for forms). */
export function signedIn(ctx: Context): { person: Person; session: UiSession } | undefined {
  const { person, session } = ctx.state.visitor;
  return person && session ? { person, session } : undefined;
}

export function redirectToLogin(ctx: Context, returnTo: string): void {
  ctx.status = 303;
  ctx.redirect(`/login?return_to=${encodeURIComponent(returnTo)}`);
  ctx.status = 303;
}

export function redirect(ctx: Context, url: string): void {
  ctx.redirect(url);
  ctx.status = 303;
}

export function auditContext(ctx: Context, actor: string): AuditContext {
  return { actor, requestId: ctx.state.requestId, clientAddress: ctx.ip };
}

const FORM_LIMIT = 16 * 1024;

/** Reads an urlencoded form body (bounded); repeated fields stay repeated, nothing is nested. */
export async function readForm(ctx: Context): Promise<URLSearchParams> {
  if (!ctx.is("application/x-www-form-urlencoded"))
    throw new PageError(415, "Not a form", "This address only accepts forms sent from Deputy's pages.");
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > FORM_LIMIT) throw new PageError(413, "Form too large", "The form sent was too large.");
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

/** Refuses (403) a form whose CSRF token is missing or not the one this session issued for this purpose. */
export function requireCsrf(secret: Buffer, purpose: string, form: URLSearchParams): void {
  if (!csrfValid(secret, purpose, form.get("csrf"))) throw badForm();
}

/**
 * A form the signed-in person posted, its CSRF token checked for `purpose`; a visitor who is no longer signed
 * in is told `signedOut` (what to sign in again for).
 */
export async function personForm(
  ctx: Context,
  purpose: string,
  signedOut: string,
): Promise<{ form: URLSearchParams; current: { person: Person; session: UiSession } }> {
  const form = await readForm(ctx);
  const current = signedIn(ctx);
  if (!current) throw new PageError(403, "Signed out", signedOut);
  requireCsrf(current.session.csrfSecret, purpose, form);
  return { form, current };
}

/** The anonymous visitor's nonce for the login form, creating their nonce cookie when they have none. */
function loginNonce(ctx: Context, deps: WebDeps): string {
  const nonce = readCookie(ctx.get("cookie"), LOGIN_NONCE_COOKIE);
  if (nonce) return nonce;
  const created = randomBytes(24).toString("base64url");
  setCookie(ctx, LOGIN_NONCE_COOKIE, created, { secure: secureCookies(deps.config) });
  return created;
}

/**
 * Refuses (403) a login form whose CSRF token is not bound to this browser's nonce under one of the cookie keys
 * (whichever process rendered the form).
 */
export function requireLoginCsrf(ctx: Context, deps: WebDeps, purpose: string, form: URLSearchParams): void {
  const nonce = readCookie(ctx.get("cookie"), LOGIN_NONCE_COOKIE);
  if (!nonce) throw badForm();
  const bound = (key: Buffer) => csrfValid(anonymousSecret(key, nonce), purpose, form.get("csrf"));
  if (!deps.cookieKeys.accepted.some(bound)) throw badForm();
}

/** Variables every signed-in page's layout needs: the person and the sign-out form's token. */
export function layoutVariables(ctx: Context, section?: string): Record<string, unknown> {
  const { person, session } = ctx.state.visitor;
  return {
    person,
    section,
    logoutCsrf: session ? csrfToken(session.csrfSecret, "logout") : undefined,
  };
}

export function loginCsrf(ctx: Context, deps: WebDeps, purpose: string): string {
  return csrfToken(anonymousSecret(deps.cookieKeys.signing, loginNonce(ctx, deps)), purpose);
}

/** Claims the right to answer a request once: a second answer (replay, double click, race) is refused. */
export async function answerOnce(deps: WebDeps, key: string): Promise<{ release(): Promise<void> }> {
  const redisKey = `${deps.config.redisPrefix}ui:answered:${key}`;
  const claimed = await deps.redis.set(redisKey, "1", "EX", 3600, "NX");
  if (claimed !== "OK") throw alreadyAnswered();
  return {
    release: async () => {
      await deps.redis.del(redisKey);
    },
  };
}

/**
 * Starts a fresh session for a person who just signed in (never reusing an earlier id). Undefined when the
 * person's password, admin rights or status changed while the sign-in checked them: the change ended the
 * person's sessions (registry/people.ts) perhaps before this one was created, so it must not survive it.
 */
export async function startSession(
  ctx: Context,
  deps: WebDeps,
  person: Person,
): Promise<UiSession | undefined> {
  const secure = secureCookies(deps.config);
  const previous = ctx.state.visitor.session;
  if (previous) await deps.sessions.destroy(previous);
  const session = await deps.sessions.create(person.id);
  // Read after the session is listed: a change committed before this read is seen here, one committed after it
  // ends this session with the person's others.
  const now = await deps.prisma.person.findUnique({ where: { id: person.id } });
  if (
    now?.status !== "active" ||
    now.passwordHash !== person.passwordHash ||
    now.isAdmin !== person.isAdmin
  ) {
    await deps.sessions.destroy(session);
    ctx.state.visitor = {};
    return undefined;
  }
  setCookie(ctx, SESSION_COOKIE, session.id, { secure, maxAge: deps.sessions.ttlSeconds });
  clearCookie(ctx, LOGIN_NONCE_COOKIE, secure);
  ctx.state.visitor = { session, person };
  return session;
}

/** Ends the browser's oidc-provider session too, unless it already belongs to `keepFor`. */
export async function endProviderSession(ctx: Context, provider: Provider, keepFor?: string): Promise<void> {
  const session = await provider.Session.get(ctx as never);
  if (session.accountId && session.accountId !== keepFor) await session.destroy();
}

/** Renders failures as pages: known ones with their message, unexpected ones logged and shown generically. */
export function pageErrors(deps: WebDeps) {
  return async function renderPageErrors(ctx: Context, next: Next): Promise<void> {
    try {
      await next();
    } catch (error) {
      const page = asPageError(error);
      const outage = page ? undefined : databaseOutage(error);
      if (outage) {
        deps.log.warn(
          { error: outage, requestId: ctx.state.requestId },
          "page request failed: the database is unavailable",
        );
        ctx.set("Retry-After", RETRY_AFTER_SECONDS);
      } else if (!page) {
        deps.log.error({ err: error, requestId: ctx.state.requestId }, "page request failed");
      }
      const shown =
        page ??
        (outage
          ? unavailable()
          : new PageError(
              500,
              "Something went wrong",
              "Deputy could not complete this. Please try again shortly.",
            ));
      deps.pages.render(
        ctx,
        "error.njk",
        {
          title: shown.title,
          message: shown.message,
          link: shown.link,
          person: ctx.state.visitor?.person,
          requestId: ctx.state.requestId,
        },
        { status: shown.status },
      );
    }
  };
}

function asPageError(error: unknown): PageError | undefined {
  if (error instanceof PageError) return error;
  if (error instanceof ApiError) return new PageError(error.status, "Cannot do that", error.message);
  // oidc-provider's "no such interaction / cookie mismatch" and similar: the request is gone or not this browser's.
  if (error instanceof errors.SessionNotFound || error instanceof errors.InvalidRequest)
    return expiredRequest();
  if (error instanceof errors.OIDCProviderError)
    return new PageError(400, "Cannot do that", error.error_description ?? error.message);
  return undefined;
}
