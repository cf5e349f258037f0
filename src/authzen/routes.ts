// OpenID AuthZEN Authorization API 1.0 for resource servers: POST /access/v1/evaluation, POST
// /access/v1/evaluations (batch) and the PDP metadata at /.well-known/authzen-configuration. Decisions are
// always about the calling resource server; its credentials are its registered client_id and client_secret.
import { bodyParser } from "@koa/bodyparser";
import { Router } from "@koa/router";
import type { Context, Next } from "koa";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import { ApiError } from "../http/api-error.ts";
import type { ClientStore } from "../oauth/client-store.ts";
import type { CatalogResource, ResourceCatalog } from "../registry/resource-catalog.ts";
import { authenticateResourceServer } from "./client-auth.ts";
import { EvaluationError, type EvaluationResult, type Evaluator } from "./evaluator.ts";
import { type EvaluationItem, type EvaluationRequest, evaluationBody, evaluationsBody } from "./schemas.ts";

export const AUTHZEN_METADATA_PATH = "/.well-known/authzen-configuration";
export const EVALUATION_PATH = "/access/v1/evaluation";
export const EVALUATIONS_PATH = "/access/v1/evaluations";
const BODY_LIMIT = "256kb";

export interface AuthzenDeps {
  issuer: string;
  clients: ClientStore;
  resources: ResourceCatalog;
  audit: AuditLog;
  evaluator: Evaluator;
}

declare module "koa" {
  interface DefaultState {
    resourceServer: CatalogResource;
  }
}

/** True for the paths this router serves (app.ts routes them here before oidc-provider). */
export function isAuthzenPath(path: string): boolean {
  return path === AUTHZEN_METADATA_PATH || path.startsWith("/access/v1/") || path === "/access/v1";
}

export function authzenRouter(deps: AuthzenDeps): Router {
  const router = new Router();
  router.get(AUTHZEN_METADATA_PATH, (ctx) => {
    ctx.body = {
      policy_decision_point: deps.issuer,
      access_evaluation_endpoint: `${deps.issuer}${EVALUATION_PATH}`,
      access_evaluations_endpoint: `${deps.issuer}${EVALUATIONS_PATH}`,
    };
  });

  const api = new Router({ prefix: "/access/v1" });
  api.use(async (ctx, next) => {
    const client = await authenticateResourceServer(ctx.get("authorization"), deps.clients);
    const resource = client ? await deps.resources.findByUri(client.deputy_resource) : undefined;
    if (!client || !resource) {
      ctx.set("WWW-Authenticate", 'Basic realm="deputy-authzen"');
      throw new ApiError(
        401,
        "invalid_client",
        "authenticate as a registered resource server: HTTP Basic with its client_id and client_secret",
      );
    }
    ctx.state.resourceServer = resource;
    ctx.state.audit = { actor: client.client_id, requestId: ctx.state.requestId, clientAddress: ctx.ip };
    ctx.set("Cache-Control", "no-store");
    await next();
  });
  api.use(requireJson);
  api.use(bodyParser({ enableTypes: ["json"], jsonLimit: BODY_LIMIT, encoding: "utf-8" }));

  api.post("/evaluation", async (ctx) => {
    const request = evaluationBody.parse(ctx.request.body ?? null);
    const { result, event } = await decideOrFail(deps, request, ctx.state.resourceServer, ctx.state.audit);
    await deps.audit.commit(ctx.state.audit, event);
    ctx.body = result;
  });

  api.post("/evaluations", async (ctx) => {
    const body = evaluationsBody.parse(ctx.request.body ?? null);
    const { evaluations, options, ...defaults } = body;
    if (!evaluations?.length) {
      // AuthZEN §7.1: without an `evaluations` array the request is a single evaluation.
      const request = evaluationBody.parse(defaults);
      const { result, event } = await decideOrFail(deps, request, ctx.state.resourceServer, ctx.state.audit);
      await deps.audit.commit(ctx.state.audit, event);
      ctx.body = result;
      return;
    }
    const semantic = options?.evaluations_semantic ?? "execute_all";
    const results: EvaluationResult[] = [];
    const writes: Promise<void>[] = [];
    let failure: unknown;
    try {
      for (const item of evaluations) {
        const result = await evaluateItem(
          deps,
          defaults,
          item,
          ctx.state.resourceServer,
          ctx.state.audit,
          writes,
        );
        results.push(result);
        if (semantic === "deny_on_first_deny" && !result.decision) break;
        if (semantic === "permit_on_first_permit" && result.decision) break;
      }
    } catch (error) {
      failure = error;
    }
    // Every decision made is recorded before the answer leaves, even if a later one failed.
    const settled = await Promise.allSettled(writes);
    const rejected = settled.find((outcome) => outcome.status === "rejected");
    if (failure !== undefined || rejected) throw failure ?? (rejected as PromiseRejectedResult).reason;
    ctx.body = { evaluations: results };
  });

  router.use(api.routes(), api.allowedMethods());
  return router;
}

async function decideOrFail(
  deps: AuthzenDeps,
  request: EvaluationRequest,
  resource: CatalogResource,
  audit: AuditContext,
) {
  try {
    return await deps.evaluator.decide(request, resource, audit);
  } catch (error) {
    if (error instanceof EvaluationError) throw new ApiError(400, "invalid_request", error.message);
    throw error;
  }
}

/** One item of a batch: top-level members are its defaults; a problem with it is its own decision (false). */
async function evaluateItem(
  deps: AuthzenDeps,
  defaults: EvaluationItem,
  item: EvaluationItem,
  resource: CatalogResource,
  audit: AuditContext,
  writes: Promise<void>[],
): Promise<EvaluationResult> {
  const merged = evaluationBody.safeParse({
    subject: item.subject ?? defaults.subject,
    resource: item.resource ?? defaults.resource,
    action: item.action ?? defaults.action,
    context: item.context ?? defaults.context,
  });
  if (!merged.success) {
    const missing = merged.error.issues.map((issue) => issue.path.join(".") || "body").join(", ");
    return {
      decision: false,
      context: { error: { status: 400, message: `missing or invalid: ${missing}` } },
    };
  }
  try {
    const { result, event } = await deps.evaluator.decide(merged.data, resource, audit);
    writes.push(deps.audit.commit(audit, event));
    return result;
  } catch (error) {
    if (error instanceof EvaluationError) {
      return { decision: false, context: { error: { status: error.status, message: error.message } } };
    }
    throw error;
  }
}

/** Bodies must be JSON: anything else is refused rather than read as empty. */
async function requireJson(ctx: Context, next: Next): Promise<void> {
  if (ctx.method === "POST") {
    if (!ctx.request.length && !ctx.get("transfer-encoding")) {
      throw new ApiError(400, "invalid_request", "send the request as a JSON object");
    }
    if (!ctx.is("application/json")) {
      throw new ApiError(415, "invalid_request", "send the body as application/json");
    }
  }
  await next();
}
