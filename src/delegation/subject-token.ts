// The subject token of a delegation: the opaque token an agent holds for a person and exchanges (RFC 8693)
// for resource tokens. Its audience is Deputy itself, so no resource server accepts it directly.
// People's approvals mint it through oidc-provider (src/oauth/subject-token-hook.ts); oauth/issue-subject-token.ts
// mints one directly, for the service layer. Both build the same claims and record the same lineage and event.
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { Delegation } from "../generated/prisma/client.ts";
import { type ResourceGrant, resourcesOf } from "./resource-grants.ts";
import { actClaim, type DelegatedTokenClaims, mayAct } from "./token-claims.ts";
import { tokenRef } from "./token-ref.ts";

export const SUBJECT_TOKEN_GTY = "delegation";

type DelegationFacts = Pick<Delegation, "id" | "taskId" | "taskDescription" | "endsAt" | "maxDepth"> & {
  grants: ResourceGrant[];
};

/** The claims of a delegation's subject token, held by the agent the person delegated to. */
export function rootTokenClaims(
  delegation: DelegationFacts,
  clientId: string,
  delegates: unknown,
): DelegatedTokenClaims {
  return {
    act: actClaim([clientId]),
    delegation: {
      id: delegation.id,
      task_id: delegation.taskId,
      task: delegation.taskDescription,
      ends_at: Math.floor(delegation.endsAt.getTime() / 1000),
      depth: 1,
      max_depth: delegation.maxDepth,
      grants: delegation.grants,
    },
    ...mayAct(delegates),
  };
}

/** Commits the subject token's lineage row and audit event; the token may leave only after this resolves. */
export async function recordSubjectToken(
  audit: AuditLog,
  context: AuditContext,
  issued: {
    delegation: DelegationFacts;
    personEmail: string;
    clientId: string;
    jti: string;
    grantId: string;
    scopes: string[];
    expiresIn: number;
    details?: Record<string, unknown>;
  },
): Promise<void> {
  const { delegation, clientId } = issued;
  await audit.commit(
    context,
    {
      action: "subject_token.issue",
      decision: "allow",
      delegatedBy: issued.personEmail,
      agentChain: [clientId],
      scopesGranted: issued.scopes,
      resource: resourcesOf(delegation.grants).join(" "),
      delegationId: delegation.id,
      taskId: delegation.taskId ?? undefined,
      taskDescription: delegation.taskDescription ?? undefined,
      details: { token_ref: tokenRef(issued.jti), expires_in: issued.expiresIn, ...issued.details },
    },
    {
      issuedTokens: [
        {
          jti: tokenRef(issued.jti),
          grantId: issued.grantId,
          delegationId: delegation.id,
          clientId,
          actorChain: [clientId],
          scopes: issued.scopes,
          depth: 1,
          format: "opaque",
          expiresAt: new Date(Date.now() + issued.expiresIn * 1000),
        },
      ],
    },
  );
}
