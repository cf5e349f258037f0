// CSRF tokens: an HMAC of the form's purpose (e.g. "consent:<interaction uid>") under a secret bound to the
// browser — the signed-in session's own random secret, or for the login form a secret derived from the
// anonymous visitor's nonce cookie. A token is useless in another session and for another form; checked
// server-side on every POST (constant time).
import { createHmac, timingSafeEqual } from "node:crypto";

export function csrfToken(secret: Buffer, purpose: string): string {
  return createHmac("sha256", secret).update(purpose).digest("base64url");
}

export function csrfValid(secret: Buffer, purpose: string, presented: unknown): boolean {
  if (typeof presented !== "string" || presented.length > 100) return false;
  const expected = Buffer.from(csrfToken(secret, purpose));
  const actual = Buffer.from(presented);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/** The login form's secret for an anonymous visitor: derived from their nonce cookie and the server's key. */
export function anonymousSecret(serverKey: Buffer, nonce: string): Buffer {
  return createHmac("sha256", serverKey).update(`anonymous:${nonce}`).digest();
}
