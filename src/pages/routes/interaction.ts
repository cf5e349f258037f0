// The browser side of an agent's authorization request (oidc-provider's interactions): sign-in, then the
// consent page, then the person's answer. Everything shown and approved is read from the interaction stored
// server-side; the form carries only the person's choices and its CSRF token.
import { Router } from "@koa/router";
import type { Context } from "koa";
import type { Interaction } from "oidc-provider";
import type { Person } from "../../generated/prisma/client.ts";
import { approveRequest, readDecision, recordDenial } from "../approve.ts";
import { csrfToken } from "../csrf.ts";
import { loadDelegationRequest } from "../delegation-request.ts";
import { expiredRequest, PageError } from "../page-error.ts";
import { cspSourceOf } from "../pages.ts";
import { requestView } from "../request-view.ts";
import {
  answerOnce,
  auditContext,
  layoutVariables,
  readForm,
  redirect,
  requireCsrf,
  signedIn,
  type WebDeps,
} from "../web.ts";
import { handleLogin, renderLogin } from "./account.ts";

const UID = /^[\w-]{10,64}$/;
/** Reasons for the login prompt that a live Deputy session satisfies without asking for the password again. */
const SESSION_SATISFIES = new Set(["no_session", "deputy_session"]);

export function interactionRoutes(deps: WebDeps): Router {
  const { provider } = deps;
  const router = new Router({ prefix: "/interaction" });

  /** The interaction this browser is in (bound by oidc-provider's cookie); anything else is not found. */
  async function load(ctx: Context): Promise<Interaction> {
    const uid = ctx.params.uid ?? "";
    if (!UID.test(uid)) throw expiredRequest();
    let details: Interaction;
    try {
      details = await provider.interactionDetails(ctx.req, ctx.res);
    } catch {
      throw expiredRequest();
    }
    if (details.uid !== uid) throw expiredRequest();
    return details;
  }

  /** Pages of an interaction may end in a redirect to the agent: CSP form-action must allow it. */
  const formTargets = (details: Interaction) =>
    [cspSourceOf(details.params.redirect_uri)].filter((s): s is string => Boolean(s));

  async function agentName(details: Interaction): Promise<string | undefined> {
    const agent = await deps.prisma.agent.findUnique({
      where: { clientId: String(details.params.client_id) },
      select: { name: true },
    });
    return agent?.name;
  }

  async function showLogin(ctx: Context, details: Interaction, extra: { status?: number } = {}) {
    renderLogin(ctx, deps, {
      action: `/interaction/${details.uid}/login`,
      purpose: `login:${details.uid}`,
      agentName: await agentName(details),
      formTargets: formTargets(details),
      ...extra,
    });
  }

  /** Finishes the login step as `person`; a browser session of someone else's is ended first. */
  async function finishLogin(ctx: Context, details: Interaction, person: Person): Promise<void> {
    if (details.session?.accountId && details.session.accountId !== person.id) {
      const stale = details.session.uid ? await provider.Session.findByUid(details.session.uid) : undefined;
      await stale?.destroy();
      details.session = undefined;
      await details.persist();
    }
    const returnTo = await provider.interactionResult(
      ctx.req,
      ctx.res,
      { login: { accountId: person.id } },
      { mergeWithLastSubmission: false },
    );
    redirect(ctx, returnTo);
  }

  router.get("/:uid", async (ctx) => {
    const details = await load(ctx);
    const current = signedIn(ctx);
    const reasons = details.prompt.reasons;
    if (details.prompt.name === "login") {
      if (current && reasons.every((reason) => SESSION_SATISFIES.has(reason)))
        return finishLogin(ctx, details, current.person);
      return showLogin(ctx, details);
    }
    if (details.prompt.name !== "consent") throw expiredRequest();
    if (!current) return showLogin(ctx, details);
    if (details.session?.accountId !== current.person.id) return finishLogin(ctx, details, current.person);

    const { agent, request } = await loadDelegationRequest(
      deps.prisma,
      deps.config.issuer,
      String(details.params.client_id),
      details.params,
    );
    const view = await requestView(
      deps.prisma,
      { untaskedSeconds: deps.config.untaskedDelegationSeconds, maxDepth: deps.config.maxDelegationDepth },
      agent,
      request,
    );
    deps.pages.render(
      ctx,
      "consent.njk",
      {
        title: `${agent.name} asks to act for you`,
        ...layoutVariables(ctx),
        view,
        action: `/interaction/${details.uid}/consent`,
        csrf: csrfToken(current.session.csrfSecret, `consent:${details.uid}`),
      },
      { formTargets: formTargets(details) },
    );
  });

  router.post("/:uid/login", async (ctx) => {
    const details = await load(ctx);
    const form = await readForm(ctx);
    const person = await handleLogin(ctx, deps, form, {
      action: `/interaction/${details.uid}/login`,
      purpose: `login:${details.uid}`,
      agentName: await agentName(details),
      formTargets: formTargets(details),
    });
    if (person) await finishLogin(ctx, details, person);
  });

  router.post("/:uid/consent", async (ctx) => {
    const details = await load(ctx);
    const form = await readForm(ctx);
    const current = signedIn(ctx);
    if (!current)
      throw new PageError(
        403,
        "Signed out",
        "You are no longer signed in. Go back to the agent and start again.",
      );
    requireCsrf(current.session.csrfSecret, `consent:${details.uid}`, form);
    if (details.prompt.name !== "consent" || details.session?.accountId !== current.person.id)
      throw new PageError(
        403,
        "Not your request",
        "This request is not waiting for your approval in this browser.",
      );
    const decision = readDecision(form);
    const { request } = await loadDelegationRequest(
      deps.prisma,
      deps.config.issuer,
      String(details.params.client_id),
      details.params,
    );
    const requestRef = `interaction:${details.uid}`;
    const claim = await answerOnce(deps, requestRef);
    const context = auditContext(ctx, current.person.email);
    try {
      let returnTo: string;
      if (decision.approve) {
        returnTo = await approveRequest(
          deps,
          context,
          { personId: current.person.id, request, decision, requestRef },
          (approval) =>
            provider.interactionResult(ctx.req, ctx.res, { consent: { grantId: approval.grant.jti } }),
        );
      } else {
        await recordDenial(deps.audit, context, current.person.email, request, "browser");
        // RFC 6749 §4.1.2.1: the person's refusal reaches the agent as access_denied.
        returnTo = await provider.interactionResult(
          ctx.req,
          ctx.res,
          { error: "access_denied", error_description: "the person declined the delegation" },
          { mergeWithLastSubmission: false },
        );
      }
      redirect(ctx, returnTo);
    } catch (error) {
      await claim.release();
      if (error instanceof PageError && error.status === 400 && !error.link) {
        throw new PageError(error.status, error.title, error.message, {
          href: `/interaction/${details.uid}`,
          label: "Back to the request",
        });
      }
      throw error;
    }
  });

  return router;
}
