import { ACCESS_TOKEN_TYPE } from "../../http/oauth-constants.ts";
import { type ExchangeState, required } from "../exchange-state.ts";

/** RFC 8693 §2.2.1: issued_token_type is REQUIRED; token_type is Bearer or, when bound, DPoP (RFC 9449 §5). */
export async function respond(state: ExchangeState): Promise<void> {
  const issued = required(state.issued, "issued");
  state.ctx.body = {
    access_token: issued.value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: issued.tokenType,
    expires_in: required(state.expiresIn, "expiresIn"),
    scope: required(state.scopes, "scopes").join(" "),
  };
}
