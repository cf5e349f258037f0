// ES256 signing keys: generated on first start, kept in the database, so `kid`s survive restarts. The one place
// that reads and writes them. A key's life: active (exactly one: it signs) → retiring, once a rotation replaces
// it (still published and accepted until the tokens it signed have expired: `removed_at`) → removed (neither
// published nor accepted). `deputy keys retire` removes a retiring key at once, in an emergency. Creating the
// first key, rotating and retiring take the same lock, so concurrent ones, in any process, always leave exactly
// one active key.
import { randomUUID } from "node:crypto";
import { exportJWK, generateKeyPair, type JWK } from "jose";
import { type AuditContext, type AuditLog, TRANSACTION_OPTIONS } from "../audit/audit-log.ts";
import type { Prisma, PrismaClient } from "../generated/prisma/client.ts";
import { ApiError, notFound } from "../http/api-error.ts";
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
const SUMMARY = {
  kid: true,
  alg: true,
  active: true,
  createdAt: true,
  retiredAt: true,
  removedAt: true,
} as const;
/** The members of a published key: named, so that no private member can ever be among them. */
const PUBLIC_MEMBERS = ["kty", "crv", "x", "y", "kid", "alg", "use"] as const;

export interface SigningKeySummary {
  kid: string;
  alg: string;
  active: boolean;
  createdAt: Date;
  retiredAt: Date | null;
  removedAt: Date | null;
}

export type SigningKeyStatus = "active" | "retiring" | "removed";

/** A published key as its readers get it: the JWK, and when it is removed (ms since epoch), if that is set. */
export interface KeyEntry {
  jwk: JWK;
  removedAt?: number;
}

export interface SigningKeyDeps {
  prisma: PrismaClient;
  audit: AuditLog;
  bus: InvalidationBus;
}

export function keyStatus(key: SigningKeySummary, now = Date.now()): SigningKeyStatus {
  if (key.active) return "active";
  return key.removedAt && key.removedAt.getTime() <= now ? "removed" : "retiring";
}

/** Keys not removed at `now`: the active one and the retiring ones. */
const published = (now: Date) => ({ OR: [{ removedAt: null }, { removedAt: { gt: now } }] });

/** Private JWKs for oidc-provider's `jwks` (the active key first), creating the first key when there is none. */
export async function loadSigningKeys(prisma: PrismaClient): Promise<JWK[]> {
  const keys = await prisma.$transaction(async (tx) => {
    await lockSigningKeys(tx);
    if (!(await tx.signingKey.count({ where: { active: true } }))) await createSigningKey(tx);
    return loadPrivateKeys(tx);
  });
  return keys.map((key) => key.jwk);
}

/** The private JWKs of the published keys, the active one first: what the browser's cookie keys derive from. */
export async function loadPrivateKeys(db: Prisma.TransactionClient): Promise<KeyEntry[]> {
  const rows = await db.signingKey.findMany({
    where: published(new Date()),
    orderBy: ACTIVE_FIRST,
    select: { privateJwk: true, removedAt: true },
  });
  return rows.map((row) => entry(row.privateJwk as JWK, row.removedAt));
}

/** The public JWKs of the published keys, the active one first: what /jwks publishes and Deputy accepts. */
export async function loadPublicKeys(prisma: PrismaClient): Promise<KeyEntry[]> {
  const rows = await prisma.signingKey.findMany({
    where: published(new Date()),
    orderBy: ACTIVE_FIRST,
    select: { publicJwk: true, removedAt: true },
  });
  return rows.map((row) => entry(publicPart(row.publicJwk as JWK), row.removedAt));
}

function entry(jwk: JWK, removedAt: Date | null): KeyEntry {
  return removedAt ? { jwk, removedAt: removedAt.getTime() } : { jwk };
}

/**
 * Retires the active key and creates a new one, with its audit event (the active kids before and after, and when
 * the retired key will be removed), in one transaction; then tells every process, which publishes and accepts
 * the new key at once. Each process signs with it from its next start: oidc-provider fixes its signing keys when
 * it is constructed. The retired key stays published and accepted for `retiringSeconds`: long enough for every
 * process to restart and for what they signed with it meanwhile to expire.
 */
export async function rotateSigningKey(
  deps: SigningKeyDeps & { retiringSeconds: number },
  context: AuditContext,
): Promise<SigningKeySummary & { retired: SigningKeySummary[] }> {
  const key = await deps.prisma.$transaction(async (tx) => {
    await lockSigningKeys(tx);
    const active = await tx.signingKey.findMany({ where: { active: true }, select: { kid: true } });
    const kids = active.map((row) => row.kid);
    const now = new Date();
    const removedAt = new Date(now.getTime() + deps.retiringSeconds * 1000);
    await tx.signingKey.updateMany({
      where: { kid: { in: kids } },
      data: { active: false, retiredAt: now, removedAt },
    });
    const retired = await tx.signingKey.findMany({ where: { kid: { in: kids } }, select: SUMMARY });
    const created = await createSigningKey(tx);
    await deps.audit.record(
      context,
      {
        action: "key.rotate",
        target: created.kid,
        before: { active_kids: kids },
        after: {
          active_kids: [created.kid],
          retiring: kids.map((kid) => ({ kid, removed_at: removedAt.toISOString() })),
        },
      },
      tx,
    );
    return { ...created, retired };
  }, TRANSACTION_OPTIONS);
  await deps.bus.publish(SIGNING_KEY_TOPIC, key.kid);
  return key;
}

/**
 * Removes a retiring key at once (an emergency: it leaked), with its audit event, in one transaction; then tells
 * every process, which stops publishing it and refuses every token signed with it. The active key cannot be
 * removed (rotate first); a removed one is refused, as is an unknown kid.
 */
export async function retireSigningKey(
  deps: SigningKeyDeps,
  context: AuditContext,
  kid: string,
  reason?: string,
): Promise<SigningKeySummary> {
  const key = await deps.prisma.$transaction(async (tx) => {
    await lockSigningKeys(tx);
    const before = await tx.signingKey.findUnique({ where: { kid }, select: SUMMARY });
    if (!before) throw notFound(`signing key ${kid}`);
    const now = new Date();
    const status = keyStatus(before, now.getTime());
    if (status === "active")
      throw new ApiError(
        409,
        "invalid_transition",
        `${kid} is the active key: rotate first (deputy keys rotate), then retire it`,
      );
    if (status === "removed")
      throw new ApiError(
        409,
        "invalid_transition",
        `${kid} was already removed at ${before.removedAt?.toISOString()}`,
      );
    const after = await tx.signingKey.update({ where: { kid }, data: { removedAt: now }, select: SUMMARY });
    await deps.audit.record(
      context,
      {
        action: "key.retire",
        target: kid,
        reason,
        before: { status, removed_at: before.removedAt?.toISOString() ?? null },
        after: { status: "removed", removed_at: now.toISOString() },
      },
      tx,
    );
    return after;
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

/** Serializes key creation, rotation and retirement until the transaction ends, across processes sharing the database. */
async function lockSigningKeys(tx: Prisma.TransactionClient): Promise<void> {
  await tx.$queryRawUnsafe(`SELECT 1 AS locked FROM pg_advisory_xact_lock(${SIGNING_KEY_LOCK})`);
}
