// A delegation's subject token minted directly through oidc-provider's models, for the service layer (tests and
// benchmarks set up delegations this way): the same claims, lineage and event as a person's approval gives.
import type Provider from "oidc-provider";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { DelegationRecord } from "../delegation/delegations.ts";
import { scopeNames } from "../delegation/resource-grants.ts";
import { recordSubjectToken, rootTokenClaims, SUBJECT_TOKEN_GTY } from "../delegation/subject-token.ts";

export interface IssuedSubjectToken {
  access_token: string;
  token_type: "Bearer";
  expires_in: number;
  scope: string;
}

export async function issueSubjectToken(
  deps: { provider: Provider; audit: AuditLog },
  context: AuditContext,
  delegation: DelegationRecord & { agentClientId: string; personEmail: string },
): Promise<IssuedSubjectToken> {
  const { provider, audit } = deps;
  const client = await provider.Client.find(delegation.agentClientId);
  if (!client) throw new Error(`agent ${delegation.agentClientId} cannot receive tokens`);
  const expiresIn = Math.floor((delegation.endsAt.getTime() - Date.now()) / 1000);
  if (expiresIn <= 0) throw new Error("the delegation has already ended");

  const grant = new provider.Grant({ accountId: delegation.personId, clientId: client.clientId });
  const grantId = await grant.save();
  const scopes = scopeNames(delegation.grants);
  const token = new provider.AccessToken({
    accountId: delegation.personId,
    client,
    grantId,
    gty: SUBJECT_TOKEN_GTY,
    scope: scopes.join(" "),
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
      scopes,
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
    scope: scopes.join(" "),
  };
}
