// Issues the subject token of a delegation: the opaque token an agent holds for a person and exchanges
// (RFC 8693) for resource tokens. Its audience is Deputy itself, so no resource server accepts it directly.
import type Provider from "oidc-provider";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { Delegation } from "../generated/prisma/client.ts";
import { actClaim, type DelegatedTokenClaims, mayAct } from "./token-claims.ts";

export const SUBJECT_TOKEN_GTY = "delegation";

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
  const claims: DelegatedTokenClaims = {
    act: actClaim([client.clientId]),
    delegation: {
      id: delegation.id,
      task_id: delegation.taskId,
      task: delegation.taskDescription,
      ends_at: Math.floor(delegation.endsAt.getTime() / 1000),
      depth: 1,
      max_depth: delegation.maxDepth,
    },
    ...mayAct(client.deputy_may_delegate_to),
  };
  const token = new provider.AccessToken({
    accountId: delegation.personId,
    client,
    grantId,
    gty: SUBJECT_TOKEN_GTY,
    scope: delegation.scopes.join(" "),
    expiresIn,
    extra: claims,
  });
  token.setAudience(provider.issuer);
  const value = await token.save();
  try {
    await audit.commit(
      context,
      {
        type: "consent",
        action: "subject_token.issue",
        decision: "allow",
        delegatedBy: delegation.personEmail,
        agentChain: [client.clientId],
        scopesGranted: delegation.scopes,
        resource: delegation.resources.join(" "),
        delegationId: delegation.id,
        taskId: delegation.taskId ?? undefined,
        details: { jti: token.jti, expires_in: expiresIn },
      },
      {
        issuedTokens: [
          {
            jti: token.jti,
            delegationId: delegation.id,
            clientId: client.clientId,
            actorChain: [client.clientId],
            scopes: delegation.scopes,
            depth: 1,
            format: "opaque",
            expiresAt: new Date(Date.now() + expiresIn * 1000),
          },
        ],
      },
    );
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
