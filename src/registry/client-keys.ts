// The public keys an agent authenticates with (private_key_jwt): each must be a key that can verify its client
// assertions in an algorithm oidc-provider accepts, or the agent could be registered but never authenticate.
import { importJWK, type JWK } from "jose";
import { invalidRequest } from "../http/api-error.ts";
import { errorText } from "../http/error-text.ts";
import { CLIENT_AUTH_ALGS } from "../http/oauth-constants.ts";

/** The accepted algorithms a key of each type verifies. */
const ALGS_BY_TYPE: Record<string, string[]> = {
  EC: ["ES256"],
  OKP: ["EdDSA"],
  RSA: ["PS256", "RS256"],
};
const ACCEPTED: readonly string[] = CLIENT_AUTH_ALGS;
/** RFC 7518 §3.3: RSA keys of 2048 bits or larger MUST be used (jose refuses smaller ones when verifying). */
const MIN_RSA_BITS = 2048;

/** Refuses (400 invalid_request, naming the key) any key that cannot verify an accepted algorithm. */
export async function checkClientKeys(keys: Record<string, unknown>[]): Promise<void> {
  for (const [index, key] of keys.entries()) {
    const problem = await keyProblem(key);
    if (problem) throw invalidRequest(`auth.jwks.keys[${index}] ${problem}`);
  }
}

async function keyProblem(key: Record<string, unknown>): Promise<string | undefined> {
  if (key.use !== undefined && key.use !== "sig")
    return 'is not a signing key: a client key has use "sig" (or no use)';
  const kty = String(key.kty);
  const fitting = (ALGS_BY_TYPE[kty] ?? []).filter((alg) => ACCEPTED.includes(alg));
  const algs = key.alg === undefined ? fitting : fitting.filter((alg) => alg === key.alg);
  const alg = algs[0];
  if (!alg)
    return `has alg ${errorText(String(key.alg))}: a ${kty} key may use ${fitting.join(" or ")} (accepted: ${CLIENT_AUTH_ALGS.join(", ")})`;
  let imported: Awaited<ReturnType<typeof importJWK>>;
  try {
    imported = await importJWK(key as JWK, alg);
  } catch (error) {
    return `is not a valid ${kty} public key for ${alg}: ${errorText(error instanceof Error ? error.message : String(error))}`;
  }
  const bits = (imported as { algorithm?: { modulusLength?: number } }).algorithm?.modulusLength ?? 0;
  if (kty === "RSA" && bits < MIN_RSA_BITS)
    return `is an RSA key of ${bits} bits: use at least ${MIN_RSA_BITS}`;
  return undefined;
}
