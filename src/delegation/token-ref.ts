import { createHash } from "node:crypto";

/**
 * How the lineage and the audit trail refer to a token: the SHA-256 of its id. An opaque token's id is the
 * bearer token itself, so the id is never stored in the database.
 */
export function tokenRef(jti: string): string {
  return createHash("sha256").update(jti).digest("base64url");
}
