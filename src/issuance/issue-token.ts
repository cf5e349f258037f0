// The issuance tail, shared by every grant that mints a delegated token: lifetime cap → DPoP → policy → mint →
// record → respond. Each step's parameter type names what it needs, so the order below is checked by the compiler.
import { extend, type Grounds, type TokenResponse } from "./issuance-state.ts";
import { applyPolicy } from "./steps/apply-policy.ts";
import { bindDpop } from "./steps/bind-dpop.ts";
import { capLifetime } from "./steps/cap-lifetime.ts";
import { mintToken } from "./steps/mint-token.ts";
import { recordIssuance } from "./steps/record-issuance.ts";
import { respond } from "./steps/respond.ts";

export async function issueToken(grounds: Grounds): Promise<TokenResponse> {
  const capped = extend(grounds, { expiresIn: capLifetime(grounds) });
  const bound = extend(capped, { jkt: await bindDpop(capped) });
  const allowed = extend(bound, await applyPolicy(bound));
  const minted = extend(allowed, { issued: await mintToken(allowed) });
  await recordIssuance(minted);
  return respond(minted);
}
