// /approvals: CIBA requests waiting for the signed-in person, with the same details as the consent page plus
// the binding message; approving or denying completes the agent's backchannel request.
import { Router } from "@koa/router";
import type { Context } from "koa";
import type { BackchannelAuthenticationRequest } from "oidc-provider";
import { errors } from "oidc-provider";
import { approveRequest, highRiskGranted, readDecision, recordDenial } from "../approve.ts";
import { csrfToken } from "../csrf.ts";
import { loadDelegationRequest } from "../delegation-request.ts";
import { formatTime } from "../format.ts";
import { PageError } from "../page-error.ts";
import { requestView } from "../request-view.ts";
import {
  answerOnce,
  auditContext,
  layoutVariables,
  personForm,
  redirect,
  redirectToLogin,
  signedIn,
  type WebDeps,
} from "../web.ts";

const REQUEST_ID = /^[\w-]{10,128}$/;

const NOTICES: Record<string, string> = {
  approved: "Approved. The agent can now pick up its token.",
  denied: "Denied. The agent has been told you declined.",
};

export function approvalsRoutes(deps: WebDeps): Router {
  const { provider } = deps;
  const router = new Router({ prefix: "/approvals" });

  /** A request still waiting for this person, or undefined. */
  async function pendingRequest(
    personId: string,
    id: string,
  ): Promise<BackchannelAuthenticationRequest | undefined> {
    if (!REQUEST_ID.test(id)) return undefined;
    const request = await provider.BackchannelAuthenticationRequest.find(id);
    if (!request || request.accountId !== personId || request.grantId || request.error) return undefined;
    return request;
  }

  const settings = () => ({
    untaskedSeconds: deps.config.untaskedDelegationSeconds,
    maxDepth: deps.config.maxDelegationDepth,
  });

  router.get("/", async (ctx: Context) => {
    const current = signedIn(ctx);
    if (!current) return redirectToLogin(ctx, "/approvals");
    const requests = [];
    const waiting = await deps.pending.list(current.person.id);
    for (const { clientId, id } of waiting.requests) {
      const request = await pendingRequest(current.person.id, id);
      if (!request || request.clientId !== clientId) {
        await deps.pending.remove(current.person.id, clientId, id);
        continue;
      }
      const params = (request.params ?? {}) as Record<string, unknown>;
      let loaded: Awaited<ReturnType<typeof loadDelegationRequest>>;
      try {
        loaded = await loadDelegationRequest(
          deps.prisma,
          deps.config.issuer,
          String(request.clientId),
          params,
        );
      } catch {
        continue; // the agent is no longer active: its request cannot be approved
      }
      requests.push({
        id,
        formId: `approval-${requests.length + 1}`,
        csrf: csrfToken(current.session.csrfSecret, `ciba:${id}`),
        bindingMessage: typeof params.binding_message === "string" ? params.binding_message : undefined,
        askedAt: formatTime(new Date(Number(request.iat) * 1000)),
        expiresAt: formatTime(new Date(Number(request.exp) * 1000)),
        view: await requestView(deps.prisma, settings(), loaded.agent, loaded.request),
      });
    }
    deps.pages.render(ctx, "approvals.njk", {
      title: "Approvals",
      ...layoutVariables(ctx, "approvals"),
      requests,
      hidden: waiting.hidden,
      notice: NOTICES[String(ctx.query.done)],
    });
  });

  router.post("/:id", async (ctx: Context) => {
    const id = ctx.params.id ?? "";
    const { form, current } = await personForm(ctx, `ciba:${id}`, "Sign in again to answer this request.");
    const decision = readDecision(form);
    const request = await pendingRequest(current.person.id, id);
    if (!request)
      throw new PageError(404, "Request not found", "This request has expired or was already answered.", {
        href: "/approvals",
        label: "Back to approvals",
      });
    const { agent, request: asked } = await loadDelegationRequest(
      deps.prisma,
      deps.config.issuer,
      String(request.clientId),
      (request.params ?? {}) as Record<string, unknown>,
    );
    const requestRef = `ciba:${id}`;
    const claim = await answerOnce(deps, requestRef);
    const context = auditContext(ctx, current.person.email);
    try {
      if (decision.approve) {
        await approveRequest(
          deps,
          context,
          { personId: current.person.id, request: asked, decision, requestRef },
          async (approval) => {
            await provider.backchannelResult(request, approval.grant, { rar: approval.rar });
            // A CIBA approval of high-risk scopes is also the person's fresh step-up approval of them (policy).
            for (const { resource, scopes } of highRiskGranted(agent, approval.delegation)) {
              await deps.services.recordStepUp?.(context, {
                personId: current.person.id,
                agentClientId: agent.clientId,
                resource,
                scopes,
                requestRef: request.jti,
                delegation: approval.delegation,
              });
            }
          },
          // The agent's next poll learns the approval failed (access_denied), and the request leaves /approvals.
          async (reason) => {
            await provider.backchannelResult(request, new errors.AccessDenied(reason));
            await deps.pending.remove(current.person.id, String(request.clientId), id);
          },
        );
      } else {
        await recordDenial(deps.audit, context, current.person.email, asked, "ciba");
        // CIBA Core §11: the agent polling the token endpoint learns of the refusal as access_denied.
        await provider.backchannelResult(
          request,
          new errors.AccessDenied("the person declined the delegation"),
        );
      }
    } catch (error) {
      await claim.release();
      if (error instanceof PageError && !error.link)
        throw new PageError(error.status, error.title, error.message, {
          href: "/approvals",
          label: "Back to approvals",
        });
      throw error;
    }
    await deps.pending.remove(current.person.id, String(request.clientId), id);
    redirect(ctx, `/approvals?done=${decision.approve ? "approved" : "denied"}`);
  });

  return router;
}
