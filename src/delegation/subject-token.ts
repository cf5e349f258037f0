// The subject token of a delegation: the opaque token an agent holds for a person and exchanges (RFC 8693)
// for resource tokens. Its audience is Deputy itself, so no resource server accepts it directly.
// People's approvals mint it through oidc-provider (src/interaction/subject-token-hook.ts); `issueSubjectToken`
// mints one directly, for the service layer. Both build the same claims and record the same lineage and event.
import type Provider from "oidc-provider";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { Delegation } from "../generated/prisma/client.ts";
import { actClaim, type DelegatedTokenClaims, mayAct } from "./token-claims.ts";
import { tokenRef } from "./token-ref.ts";

export const SUBJECT_TOKEN_GTY = "delegation";

type DelegationFacts = Pick<
  Delegation,
  "id" | "taskId" | "taskDescription" | "endsAt" | "maxDepth" | "resources" | "scopes"
>;

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
      type: "consent",
      action: "subject_token.issue",
      decision: "allow",
      delegatedBy: issued.personEmail,
      agentChain: [clientId],
      scopesGranted: issued.scopes,
      resource: delegation.resources.join(" "),
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

export interface IssuedSubjectToken {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  scope: string;
}

export async function issueSubjectToken(
  deps: { provider: Provider; audit: AuditLog },
  context: AuditContext,
  delegation: Delegation & { agentClientId: string; personEmail: string },
): Promise<IssuedSubjectToken> {
  const { provider, audit } = deps;
  const client = await provider.Client.find(delegation.agentClientId);
  if (!client) throw new Error(`agent ${delegation.agentClientId} cannot receive tokens`);
  const expiresIn = Math.floor((delegation.endsAt.getTime() - Date.now()) / 1000);
  if (expiresIn <= 0) throw new Error("the delegation has already ended");

  const grant = new provider.Grant({ accountId: delegation.personId, clientId: client.clientId });
  const grantId = await grant.save();
  const token = new provider.AccessToken({
    accountId: delegation.personId,
    client,
    grantId,
    gty: SUBJECT_TOKEN_GTY,
    scope: delegation.scopes.join(" "),
    expiresIn,
    extra: rootTokenClaims(delegation, client.clientId, client.deputy_may_delegate_to),
  });
  token.setAudience(provider.issuer);
  const value = await token.save();
  try {
    await recordSubjectToken(audit, context, {
      delegation,
      personEmail: delegation.personEmail,
      clientId: client.clientId,
      jti: token.jti,
      grantId,
      scopes: delegation.scopes,
      expiresIn,
    });
  } catch (error) {
    await token.destroy();
    throw error;
  }
  return {
    access_token: value,
    token_type: "Bearer",
    expires_in: expiresIn,
    scope: delegation.scopes.join(" "),
  };
}
