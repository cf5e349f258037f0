// Deputy's OAuth errors (http/oauth-error.ts) as oidc-provider's, so that its error handler renders them (status,
// `error`, `error_description`, `scope`) and emits them like its own.
import { errors } from "oidc-provider";
import { OAuthError } from "../http/oauth-error.ts";

export function toProviderError(error: unknown): unknown {
  if (!(error instanceof OAuthError)) return error;
  if (error.error === "invalid_scope") return new errors.InvalidScope(error.message, error.scope ?? "");
  if (error.error === "invalid_request") return new errors.InvalidRequest(error.message, error.status);
  return new errors.CustomOIDCProviderError(error.error, error.message);
}

/** Runs `fn`, raising any OAuthError it throws as oidc-provider's. */
export async function withProviderErrors<T>(fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    throw toProviderError(error);
  }
}
