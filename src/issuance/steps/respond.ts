import { ACCESS_TOKEN_TYPE } from "../../http/oauth-constants.ts";
import type { Grounds, Known, TokenResponse } from "../issuance-state.ts";

/** RFC 8693 §2.2.1: issued_token_type is REQUIRED; token_type is Bearer or, when bound, DPoP (RFC 9449 §5). */
export function respond(state: Known<Grounds, "expiresIn" | "issued">): TokenResponse {
  return {
    access_token: state.issued.value,
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: state.issued.tokenType,
    expires_in: state.expiresIn,
    scope: state.scopes.join(" "),
  };
}
