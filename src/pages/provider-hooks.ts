// The people's side of what oidc-provider calls (the port src/oauth/provider-hooks.ts declares): accounts, who
// is signed in to Deputy's pages, CIBA requests shown on /approvals, and error pages.
import type { Account, KoaContextWithOIDC } from "oidc-provider";
import type { AuditLog } from "../audit/audit-log.ts";
import { isUuid } from "../db/ids.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import type { ProviderHooks } from "../oauth/provider-hooks.ts";
import { cibaHooks, type PendingApprovals } from "./ciba.ts";
import { readCookie, SESSION_COOKIE } from "./cookies.ts";
import type { CookieKeys } from "./keys.ts";
import { type Pages, pageHeaders } from "./pages.ts";
import type { UiSessionStore } from "./ui-sessions.ts";

export interface ProviderHookDeps {
  prisma: PrismaClient;
  audit: AuditLog;
  sessions: UiSessionStore;
  pending: PendingApprovals;
  pages: Pages;
  cookieKeys: CookieKeys;
}

export function createProviderHooks(deps: ProviderHookDeps): ProviderHooks {
  const { prisma } = deps;
  return {
    cookieKeys: deps.cookieKeys.keygrip,

    async findAccount(_ctx: KoaContextWithOIDC, id: string): Promise<Account | undefined> {
      if (!isUuid(id)) return undefined;
      const person = await prisma.person.findUnique({ where: { id } });
      if (person?.status !== "active") return undefined;
      return {
        accountId: person.id,
        claims: async () => ({ sub: person.id, email: person.email, name: person.name }),
      };
    },

    async signedInPerson(ctx: KoaContextWithOIDC): Promise<string | undefined> {
      const session = await deps.sessions.find(readCookie(ctx.get("cookie"), SESSION_COOKIE));
      if (!session) return undefined;
      const person = await prisma.person.findUnique({
        where: { id: session.personId },
        select: { status: true },
      });
      return person?.status === "active" ? session.personId : undefined;
    },

    ciba: cibaHooks({ prisma, audit: deps.audit, pending: deps.pending }),

    /** A bad authorization request that cannot go back to the agent. */
    async renderError(ctx, out): Promise<void> {
      if (!ctx.accepts("json", "html") || ctx.accepts("json", "html") === "json") {
        ctx.type = "application/json";
        ctx.body = out;
        return;
      }
      pageHeaders(ctx);
      ctx.type = "text/html; charset=utf-8";
      ctx.body = deps.pages.html("error.njk", {
        title: "The agent's request cannot be processed",
        message: out.error_description ?? "The request was not valid.",
        code: out.error,
      });
    },
  };
}
