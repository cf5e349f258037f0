// The ONE place that reaches into oidc-provider beyond its documented configuration. Its internals change
// between minor versions (the package is pinned exactly); keep every such use here.
import type Provider from "oidc-provider";
import { verifyClientSecret } from "../security/secrets.ts";

/**
 * Client secrets are stored hashed, so the `client_secret` oidc-provider sees is the stored hash; make its
 * comparison hash the presented secret first (constant time).
 */
export function useHashedClientSecrets(provider: Provider): void {
  const prototype = provider.Client.prototype as unknown as {
    compareClientSecret(this: { clientSecret?: string }, actual: string): Promise<boolean>;
  };
  prototype.compareClientSecret = async function compareHashed(actual) {
    return typeof this.clientSecret === "string" && verifyClientSecret(actual, this.clientSecret);
  };
}
