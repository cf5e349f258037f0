// Everything oidc-provider calls back into for people and approvals: accounts, the sign-in check, task
// validation, the subject token, CIBA and error pages. provider.ts wires these into its configuration.

import type { Account, Client, KoaContextWithOIDC, ResourceServer } from "oidc-provider";
import type { AuditLog } from "../audit/audit-log.ts";
import type { Config } from "../config.ts";
import { isUuid } from "../db/ids.ts";
import { validateAgentTask } from "../delegation/agent-task.ts";
import type { DelegationStore } from "../delegation/delegations.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { authorizationRequestPolicy } from "../oauth/request-policy.ts";
import {
  type SubjectTokenDeps,
  subjectTokenClaims,
  subjectTokenResource,
} from "../oauth/subject-token-hook.ts";
import { cibaHooks, type PendingApprovals } from "./ciba.ts";
import { readCookie, SESSION_COOKIE } from "./cookies.ts";
import type { CookieKeys } from "./keys.ts";
import { type Pages, pageHeaders } from "./pages.ts";
import type { UiSessionStore } from "./ui-sessions.ts";

export interface ProviderHookDeps {
  config: Config;
  prisma: PrismaClient;
  audit: AuditLog;
  delegations: DelegationStore;
  sessions: UiSessionStore;
  pending: PendingApprovals;
  pages: Pages;
  cookieKeys: CookieKeys;
}

export type ProviderHooks = ReturnType<typeof createProviderHooks>;

export function createProviderHooks(deps: ProviderHookDeps) {
  const { config, prisma } = deps;
  const tokens: SubjectTokenDeps = {
    prisma,
    audit: deps.audit,
    delegations: deps.delegations,
    issuer: config.issuer,
    maxDelegationSeconds: config.maxDelegationSeconds,
  };
  return {
    cookieKeys: deps.cookieKeys.keygrip,

    /** People are accounts; only active people can be signed in or issued tokens for. */
    async findAccount(_ctx: KoaContextWithOIDC, id: string): Promise<Account | undefined> {
      if (!isUuid(id)) return undefined;
      const person = await prisma.person.findUnique({ where: { id } });
      if (person?.status !== "active") return undefined;
      return {
        accountId: person.id,
        claims: async () => ({ sub: person.id, email: person.email, name: person.name }),
      };
    },

    /** Who is signed in to Deputy's pages in this browser (an active person), if anyone. */
    async signedInPerson(ctx: KoaContextWithOIDC): Promise<string | undefined> {
      const session = await deps.sessions.find(readCookie(ctx.get("cookie"), SESSION_COOKIE));
      if (!session) return undefined;
      const person = await prisma.person.findUnique({
        where: { id: session.personId },
        select: { status: true },
      });
      return person?.status === "active" ? session.personId : undefined;
    },

    validateAgentTask: async (_ctx: KoaContextWithOIDC, detail: unknown) => {
      validateAgentTask(detail, config.maxDelegationSeconds);
    },
    checkAgentRequest: authorizationRequestPolicy(config.issuer),

    /** Any token oidc-provider mints for an agent is the delegation's subject token, for Deputy itself. */
    subjectTokenResource: (ctx: KoaContextWithOIDC, client: Client): Promise<ResourceServer> => {
      const grants = (client.deputy_grants ?? {}) as Record<string, string[]>;
      return subjectTokenResource(tokens, ctx, [...new Set(Object.values(grants).flat())]);
    },
    subjectTokenClaims: (
      ctx: KoaContextWithOIDC | undefined,
      token: Parameters<typeof subjectTokenClaims>[2],
    ) => subjectTokenClaims(tokens, ctx, token),

    ciba: cibaHooks({ prisma, audit: deps.audit, pending: deps.pending }),

    /** Errors a browser sees (a bad authorization request that cannot go back to the agent) get a page. */
    async renderError(
      ctx: KoaContextWithOIDC,
      out: { error: string; error_description?: string },
    ): Promise<void> {
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
