// An OAuth error response (RFC 6749 §5.2 and the codes of its extensions) raised below oauth/, which alone knows
// oidc-provider: oauth/provider-errors.ts turns it into the provider's own error at the endpoint.
import { ApiError } from "./api-error.ts";

export class OAuthError extends ApiError {
  /** invalid_scope: the scope the refusal is about (oidc-provider repeats it in the response). */
  readonly scope?: string;

  constructor(error: string, description: string, options: { scope?: string; status?: number } = {}) {
    super(options.status ?? 400, error, description);
    this.scope = options.scope;
  }
}
