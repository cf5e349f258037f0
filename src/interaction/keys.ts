// Secrets for Deputy's browser cookies, derived from the signing keys kept in the database: every server process
// computes the same ones with nothing more to configure or store. Rotating the signing key rotates them too,
// which signs everyone out of the browser pages (tokens and delegations are not affected).
import { hkdfSync } from "node:crypto";
import type { JWK } from "jose";

/** One 32-byte secret per private signing key, newest active key first (oidc-provider signs with the first). */
export function deriveCookieKeys(signingKeys: JWK[]): Buffer[] {
  const keys = signingKeys
    .filter((jwk) => typeof jwk.d === "string")
    .map((jwk) =>
      Buffer.from(
        hkdfSync(
          "sha256",
          Buffer.from(String(jwk.d), "base64url"),
          "deputy",
          "deputy browser cookies v1",
          32,
        ),
      ),
    );
  if (!keys.length) throw new Error("no private signing key to derive cookie keys from");
  return keys;
}
