// RFC 9068 JWT access tokens Deputy issued. oidc-provider does not store them, so one is recognised by its
// signature (Deputy's keys, typ at+jwt, ES256, its issuer, unexpired) and by its lineage (issued, not revoked).
// Token exchange, introspection, RFC 7009 revocation and AuthZEN subjects all recognise JWTs here.
import { type JWTPayload, type JWTVerifyGetKey, errors as joseErrors, jwtVerify } from "jose";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { type DelegatedTokenClaims, isDelegatedTokenClaims } from "./token-claims.ts";
import { tokenRef } from "./token-ref.ts";

export const JWT_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]+$/;

export interface JwtAccessTokenDeps {
  provider: { issuer: string };
  prisma: PrismaClient;
  /** Deputy's own public keys. */
  signingKeys: JWTVerifyGetKey;
}

/** The verified claims of a delegated JWT access token. */
export type JwtAccessToken = JWTPayload &
  DelegatedTokenClaims & {
    jti: string;
    sub: string;
    client_id: string;
    scope?: string;
    cnf?: { jkt?: string };
  };

/**
 * The token's claims if Deputy issued it (for `audience`, when given), it is unexpired and its lineage is not
 * revoked; else undefined.
 */
export async function verifyJwtAccessToken(
  deps: JwtAccessTokenDeps,
  value: string,
  audience?: string,
): Promise<JwtAccessToken | undefined> {
  const payload = await verifiedPayload(deps, value, audience);
  if (!payload || !(await inLineage(deps.prisma, payload.jti))) return undefined;
  return payload;
}

async function verifiedPayload(
  deps: JwtAccessTokenDeps,
  value: string,
  audience: string | undefined,
): Promise<JwtAccessToken | undefined> {
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(value, deps.signingKeys, {
      issuer: deps.provider.issuer,
      audience,
      typ: "at+jwt",
      algorithms: ["ES256"],
    }));
  } catch (error) {
    if (error instanceof joseErrors.JOSEError) return undefined;
    throw error;
  }
  const { jti, sub, client_id: clientId } = payload;
  if (typeof jti !== "string" || typeof sub !== "string" || typeof clientId !== "string") return undefined;
  return isDelegatedTokenClaims(payload) ? (payload as JwtAccessToken) : undefined;
}

async function inLineage(prisma: PrismaClient, jti: string): Promise<boolean> {
  const lineage = await prisma.issuedToken.findUnique({
    where: { jti: tokenRef(jti) },
    select: { revokedAt: true },
  });
  return lineage !== null && lineage.revokedAt === null;
}
