// Small OAuth client helpers for tests: form posts with client authentication, over real HTTP; DPoP proofs.
import { randomUUID } from "node:crypto";
import { exportJWK, type GenerateKeyPairResult, SignJWT } from "jose";

export function basicAuth(clientId: string, secret: string): string {
  return `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString("base64")}`;
}

export async function postForm(
  url: string,
  form: Record<string, string | string[]>,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: any; headers: Headers }> {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(form)) {
    for (const item of Array.isArray(value) ? value : [value]) params.append(key, item);
  }
  const response = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
    body: params.toString(),
  });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: response.status, body, headers: response.headers };
}

/** A DPoP proof (RFC 9449 §4.2) for a POST to `url`, signed by the key pair whose public key it carries. */
export async function dpopProof(url: string, key: GenerateKeyPairResult): Promise<string> {
  return new SignJWT({ jti: randomUUID(), htm: "POST", htu: url, iat: Math.floor(Date.now() / 1000) })
    .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk: await exportJWK(key.publicKey) })
    .sign(key.privateKey);
}
