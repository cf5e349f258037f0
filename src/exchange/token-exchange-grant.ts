// RFC 8693 token exchange for delegation: the steps run in this order; any step may refuse.
import type { KoaContextWithOIDC } from "oidc-provider";
import type { AuditEventInput } from "../audit/audit-log.ts";
import { TOKEN_EXCHANGE_GRANT } from "../oauth/constants.ts";
import { auditContext, describeExchange } from "./exchange-audit.ts";
import type { ExchangeDeps, ExchangeState } from "./exchange-state.ts";
import { applyPolicy } from "./steps/apply-policy.ts";
import { bindDpop } from "./steps/bind-dpop.ts";
import { capLifetime } from "./steps/cap-lifetime.ts";
import { checkActor } from "./steps/check-actor.ts";
import { checkDelegation } from "./steps/check-delegation.ts";
import { checkDepth } from "./steps/check-depth.ts";
import { loadSubjectToken } from "./steps/load-subject-token.ts";
import { mintToken } from "./steps/mint-token.ts";
import { narrowScope } from "./steps/narrow-scope.ts";
import { recordIssuance } from "./steps/record-issuance.ts";
import { requireAgent } from "./steps/require-agent.ts";
import { resolveTarget } from "./steps/resolve-target.ts";
import { respond } from "./steps/respond.ts";
import { validateParameters } from "./steps/validate-parameters.ts";

export const EXCHANGE_STEPS = [
  requireAgent,
  validateParameters,
  loadSubjectToken,
  checkDelegation,
  checkActor,
  resolveTarget,
  narrowScope,
  checkDepth,
  capLifetime,
  bindDpop,
  applyPolicy,
  mintToken,
  recordIssuance,
  respond,
] as const;

const PARAMETERS = [
  "subject_token",
  "subject_token_type",
  "actor_token",
  "actor_token_type",
  "requested_token_type",
  "resource",
  "audience",
  "scope",
  // Deputy's own: why the agent asks, recorded in the audit trail as its unverified claim (agent_claim).
  "reasoning",
];
// RFC 8693 §2.1: resource and audience may each be sent more than once.
const DUPLICATES_ALLOWED = ["resource", "audience"];

export function registerTokenExchange(deps: ExchangeDeps): void {
  deps.provider.registerGrantType(
    TOKEN_EXCHANGE_GRANT,
    async (ctx: KoaContextWithOIDC) => {
      const client = ctx.oidc.client;
      const state: ExchangeState = {
        ctx,
        deps,
        caller: {
          clientId: String(client?.clientId),
          maxDepth: Number(client?.deputy_max_depth ?? 1),
          // oidc-provider exposes the metadata it knows in camelCase.
          dpopRequired: Boolean(client?.dpopBoundAccessTokens),
          grants: (client?.deputy_grants as Record<string, string[]> | undefined) ?? {},
        },
      };
      try {
        for (const step of EXCHANGE_STEPS) await step(state);
      } catch (error) {
        if (!state.issued) await recordRefusal(state, error);
        throw error;
      }
    },
    PARAMETERS,
    DUPLICATES_ALLOWED,
  );
}

/** Every refused exchange is an audit event too, with the reason the agent was given. */
async function recordRefusal(state: ExchangeState, error: unknown): Promise<void> {
  const { error: code, error_description: description } = error as {
    error?: string;
    error_description?: string;
  };
  const event: AuditEventInput = {
    ...describeExchange(state, "deny"),
    reason: code ? `${code}: ${description ?? ""}` : "server_error",
  };
  await state.deps.audit.commit(auditContext(state), event);
}
