import { tokenRef } from "../../delegation/token-ref.ts";
import type { Grounds, Known } from "../issuance-state.ts";

/**
 * The token's lineage (its parent, so a whole subtree can be revoked) and its audit event are committed
 * before the token leaves the server; if they cannot be, the token is destroyed and the request fails.
 */
export async function recordIssuance(state: Known<Grounds, "expiresIn" | "issued">): Promise<void> {
  const { issued, delegation, chain } = state;
  try {
    await state.deps.audit.commit(
      state.call.audit,
      { ...state.describe(), decision: "allow", details: { token_ref: tokenRef(issued.jti) } },
      {
        issuedTokens: [
          {
            jti: tokenRef(issued.jti),
            delegationId: delegation.id,
            parentJti: tokenRef(state.parent.jti),
            grantId: issued.grantId,
            clientId: state.call.caller.clientId,
            actorChain: chain,
            resource: state.resource.uri,
            scopes: state.scopes,
            depth: chain.length,
            format: issued.format,
            expiresAt: new Date(Date.now() + state.expiresIn * 1000),
          },
        ],
      },
    );
  } catch (error) {
    if (issued.format === "opaque") await state.call.destroy(issued.jti);
    throw error;
  }
}
