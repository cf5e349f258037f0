// ES256 signing keys: generated on first start, kept in the database, so `kid`s survive restarts. The one place
// that reads and writes them. Exactly one key is active (it signs); retired keys stay published. Creating the
// first key and rotating take the same lock, so concurrent starts or rotations, in any process, always leave
// exactly one active key.
import { randomUUID } from "node:crypto";
import { exportJWK, generateKeyPair, type JWK } from "jose";
import { type AuditContext, type AuditLog, TRANSACTION_OPTIONS } from "../audit/audit-log.ts";
import type { Prisma, PrismaClient } from "../generated/prisma/client.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";

export const SIGNING_ALG = "ES256";
/** The invalidation topic that tells every process the keys changed. */
export const SIGNING_KEY_TOPIC = "signing_key";
/** pg_advisory_xact_lock key of the signing keys ("DPTYSKEY"); distinct from the audit chain's and migrations'. */
const SIGNING_KEY_LOCK = 0x4450_5459_534b_4559n;
/** oidc-provider signs with the first key that fits: the active one. */
const ACTIVE_FIRST = [
  { active: "desc" },
  { createdAt: "desc" },
] satisfies Prisma.SigningKeyOrderByWithRelationInput[];
const SUMMARY = { kid: true, alg: true, active: true, createdAt: true, retiredAt: true } as const;
/** The members of a published key: named, so that no private member can ever be among them. */
const PUBLIC_MEMBERS = ["kty", "crv", "x", "y", "kid", "alg", "use"] as const;

export interface SigningKeySummary {
  kid: string;
  alg: string;
  active: boolean;
  createdAt: Date;
  retiredAt: Date | null;
}

/** Private JWKs for oidc-provider's `jwks` (the active key first), creating the first key when there is none. */
export async function loadSigningKeys(prisma: PrismaClient): Promise<JWK[]> {
  return prisma.$transaction(async (tx) => {
    await lockSigningKeys(tx);
    if (!(await tx.signingKey.count({ where: { active: true } }))) await createSigningKey(tx);
    return loadPrivateKeys(tx);
  });
}

/** The private JWKs of every key, the active one first: what the browser's cookie keys are derived from. */
export async function loadPrivateKeys(db: Prisma.TransactionClient): Promise<JWK[]> {
  const rows = await db.signingKey.findMany({ orderBy: ACTIVE_FIRST, select: { privateJwk: true } });
  return rows.map((row) => row.privateJwk as JWK);
}

/** The public JWKs of every key, the active one first: what /jwks publishes and Deputy's own verification accepts. */
export async function loadPublicKeys(prisma: PrismaClient): Promise<JWK[]> {
  const rows = await prisma.signingKey.findMany({ orderBy: ACTIVE_FIRST, select: { publicJwk: true } });
  return rows.map((row) => publicPart(row.publicJwk as JWK));
}

/**
 * Retires the active key and creates a new one, with its audit event (the active kids before and after), in one
 * transaction; then tells every process, which publishes and accepts the new key at once. Each process signs with
 * it from its next start: oidc-provider fixes its signing keys when it is constructed.
 */
export async function rotateSigningKey(
  deps: { prisma: PrismaClient; audit: AuditLog; bus: InvalidationBus },
  context: AuditContext,
): Promise<SigningKeySummary> {
  const key = await deps.prisma.$transaction(async (tx) => {
    await lockSigningKeys(tx);
    const retired = await tx.signingKey.findMany({ where: { active: true }, select: { kid: true } });
    const kids = retired.map((row) => row.kid);
    await tx.signingKey.updateMany({
      where: { kid: { in: kids } },
      data: { active: false, retiredAt: new Date() },
    });
    const created = await createSigningKey(tx);
    await deps.audit.record(
      context,
      {
        action: "key.rotate",
        target: created.kid,
        before: { active_kids: kids },
        after: { active_kids: [created.kid] },
      },
      tx,
    );
    return created;
  }, TRANSACTION_OPTIONS);
  await deps.bus.publish(SIGNING_KEY_TOPIC, key.kid);
  return key;
}

export function listSigningKeys(prisma: PrismaClient): Promise<SigningKeySummary[]> {
  return prisma.signingKey.findMany({ orderBy: { createdAt: "desc" }, select: SUMMARY });
}

/** Only the public members of a JWK. */
function publicPart(jwk: JWK): JWK {
  return Object.fromEntries(
    PUBLIC_MEMBERS.filter((name) => jwk[name] !== undefined).map((name) => [name, jwk[name]]),
  );
}

async function createSigningKey(tx: Prisma.TransactionClient): Promise<SigningKeySummary> {
  const { privateKey, publicKey } = await generateKeyPair(SIGNING_ALG, { extractable: true });
  const kid = randomUUID();
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: SIGNING_ALG, use: "sig" };
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: SIGNING_ALG, use: "sig" };
  return tx.signingKey.create({ data: { kid, alg: SIGNING_ALG, privateJwk, publicJwk }, select: SUMMARY });
}

/** Serializes key creation and rotation until the transaction ends, across processes sharing the database. */
async function lockSigningKeys(tx: Prisma.TransactionClient): Promise<void> {
  await tx.$queryRawUnsafe(`SELECT 1 AS locked FROM pg_advisory_xact_lock(${SIGNING_KEY_LOCK})`);
}
