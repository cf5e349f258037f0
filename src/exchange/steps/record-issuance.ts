import { tokenRef } from "../../delegation/token-ref.ts";
import { auditContext, describeExchange } from "../exchange-audit.ts";
import { type ExchangeState, required } from "../exchange-state.ts";

/**
 * The token's lineage (its parent, so a whole subtree can be revoked) and its audit event are committed
 * before the token leaves the server; if they cannot be, the token is destroyed and the exchange fails.
 */
export async function recordIssuance(state: ExchangeState): Promise<void> {
  const issued = required(state.issued, "issued");
  const subject = required(state.subject, "subject");
  const delegation = required(state.delegation, "delegation");
  const chain = required(state.chain, "chain");
  const expiresIn = required(state.expiresIn, "expiresIn");
  try {
    await state.deps.audit.commit(
      auditContext(state),
      {
        ...describeExchange(state, "allow"),
        details: { token_ref: tokenRef(issued.jti) },
      },
      {
        issuedTokens: [
          {
            jti: tokenRef(issued.jti),
            delegationId: delegation.id,
            parentJti: tokenRef(subject.jti),
            grantId: issued.grantId,
            clientId: state.caller.clientId,
            actorChain: chain,
            resource: state.resource?.uri,
            scopes: required(state.scopes, "scopes"),
            depth: chain.length,
            format: issued.format,
            expiresAt: new Date(Date.now() + expiresIn * 1000),
          },
        ],
      },
    );
  } catch (error) {
    if (issued.format === "opaque") await state.deps.provider.AccessToken.adapter.destroy(issued.jti);
    throw error;
  }
}
