// ES256 signing keys: generated on first start, kept in the database, so `kid`s survive restarts.
// The newest active key signs; retired keys stay published until their tokens have expired.
import { randomUUID } from "node:crypto";
import { exportJWK, generateKeyPair, type JWK } from "jose";
import type { PrismaClient } from "../generated/prisma/client.ts";

export const SIGNING_ALG = "ES256";

export interface SigningKeySummary {
  kid: string;
  alg: string;
  active: boolean;
  createdAt: Date;
  retiredAt: Date | null;
}

/** Private JWKs for oidc-provider's `jwks`, newest active first (oidc-provider signs with the first match). */
export async function loadSigningKeys(prisma: PrismaClient): Promise<JWK[]> {
  let keys = await prisma.signingKey.findMany({ orderBy: [{ active: "desc" }, { createdAt: "desc" }] });
  if (!keys.some((key) => key.active)) {
    await createSigningKey(prisma);
    keys = await prisma.signingKey.findMany({ orderBy: [{ active: "desc" }, { createdAt: "desc" }] });
  }
  return keys.map((key) => key.privateJwk as JWK);
}

export async function createSigningKey(prisma: PrismaClient): Promise<SigningKeySummary> {
  const { privateKey, publicKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
  const kid = randomUUID();
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: SIGNING_ALG, use: "sig" };
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: SIGNING_ALG, use: "sig" };
  return prisma.signingKey.create({
    data: { kid, alg: SIGNING_ALG, privateJwk, publicJwk },
    select: { kid: true, alg: true, active: true, createdAt: true, retiredAt: true },
  });
}

/** Makes a new key the signer; the previous ones stay published (inactive) for verification. */
export async function rotateSigningKey(prisma: PrismaClient): Promise<SigningKeySummary> {
  await prisma.signingKey.updateMany({
    where: { active: true },
    data: { active: false, retiredAt: new Date() },
  });
  return createSigningKey(prisma);
}

export function listSigningKeys(prisma: PrismaClient): Promise<SigningKeySummary[]> {
  return prisma.signingKey.findMany({
    orderBy: { createdAt: "desc" },
    select: { kid: true, alg: true, active: true, createdAt: true, retiredAt: true },
  });
}

/** A private JWK without its private members. */
export function publicPart(jwk: JWK): JWK {
  const { d, p, q, dp, dq, qi, k, ...rest } = jwk;
  return rest;
}
