// The revocation list: opaque tokens revoked while their delegation stays active (a subtree revoked by RFC 7009,
// by a narrowed agent, or by the sweep). Redis is where oidc-provider keeps opaque tokens, and a Redis restored
// from an older snapshot (or one that lost a cleanup) holds tokens the database has revoked. Tokens of an ended
// or revoked delegation are refused by the delegation's state wherever they are used; these, whose delegation
// is still active, would not be — so every server process keeps this list in memory and the storage adapter
// treats the tokens on it as absent (src/oauth/adapter.ts), whatever Redis says.
//
// The database holds the list (revoked_tokens) and its epoch (revocation_epoch), raised in the transaction that
// adds rows, after the audit chain's lock: every change to the list is numbered, and epochs commit in order. A
// process knows the highest epoch it has loaded and learns of newer ones from the bus (each revocation announces
// its epoch) and from a check of the database every few seconds; until it has loaded the epoch it last heard
// of, or while it cannot tell (just started, bus messages possibly lost, the database check failing), it
// catches up from the database before answering, and refuses the token if even that fails (fail closed).
import { AUDIT_CHAIN_LOCK_KEY } from "../audit/audit-chain.ts";
import { tokenRef } from "../delegation/token-ref.ts";
import type { Prisma, PrismaClient } from "../generated/prisma/client.ts";
import type { Logger } from "../logger.ts";
import { ALL, type InvalidationBus } from "../redis/invalidation-bus.ts";

export const REVOCATION_TOPIC = "revocation";
/** How often each process asks the database for the list's epoch, in case a bus message was lost. */
const CHECK_MS = 5_000;
/** Catch-up attempts before a token is refused for want of an answer. */
const ATTEMPTS = 3;

/**
 * Adds the unexpired opaque tokens among `refs` (lineage references) to the list and raises its epoch, inside
 * the revoking transaction; returns the new epoch, or undefined when nothing was added.
 */
export async function listRevokedTokens(
  tx: Prisma.TransactionClient,
  refs: readonly string[],
): Promise<number | undefined> {
  if (!refs.length) return undefined;
  // The chain's lock first (every revocation holds it for its audit events anyway): one lock order for all.
  await tx.$queryRawUnsafe(`SELECT 1 AS locked FROM pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK_KEY})`);
  const [row] = await tx.$queryRaw<{ epoch: bigint }[]>`
    UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch`;
  if (!row) throw new Error("the revocation_epoch row is missing (migration 20261201205931_revocation_list)");
  const added = await tx.$executeRaw`
    INSERT INTO revoked_tokens (ref, expires_at, epoch)
    SELECT jti, expires_at, ${row.epoch} FROM issued_tokens
    WHERE jti = ANY (${refs}::text[]) AND format = 'opaque' AND expires_at > now()
    ON CONFLICT (ref) DO NOTHING`;
  // Nothing added: the epoch raised here is rolled back with the caller's transaction if it fails, and is
  // otherwise harmless (a process that hears of it loads no rows).
  return added ? Number(row.epoch) : undefined;
}

/** Tells every process that the list has reached `epoch` (after the transaction that reached it committed). */
export async function announceEpoch(bus: InvalidationBus, epoch: number, log: Logger): Promise<void> {
  try {
    await bus.publish(REVOCATION_TOPIC, String(epoch));
  } catch (error) {
    // This process has it (publish delivers locally first); the others learn it at their next check.
    log.error({ err: error }, "revocation: could not announce the revocation list's epoch");
  }
}

/** Removes the rows of tokens that have expired (the sweep): nobody can present those any more. */
export async function pruneRevocationList(prisma: PrismaClient): Promise<number> {
  const { count } = await prisma.revokedToken.deleteMany({ where: { expiresAt: { lte: new Date() } } });
  return count;
}

/** This process's copy of the list. */
export class RevocationList {
  readonly #prisma: PrismaClient;
  readonly #log: Logger;
  /** Token reference → expiry (ms since epoch). */
  readonly #tokens = new Map<string, number>();
  /** The highest epoch whose rows are loaded, and the highest one heard of. */
  #loaded = 0;
  #heard = 0;
  /** False until the first load, and whenever bus messages may have been lost or the check failed. */
  #certain = false;
  /** Bumped whenever certainty is lost: a load that raced with that loss does not restore it. */
  #generation = 0;
  #loading: Promise<void> | undefined;
  readonly #timer: NodeJS.Timeout;

  constructor(prisma: PrismaClient, bus: InvalidationBus, log: Logger) {
    this.#prisma = prisma;
    this.#log = log;
    bus.on(REVOCATION_TOPIC, (key) => {
      if (key === ALL) this.#uncertain();
      else this.#hear(Number(key));
    });
    this.#timer = setInterval(() => this.#check(), CHECK_MS);
    this.#timer.unref();
  }

  /** Whether the opaque token with this id (its value) is on the list; true when that cannot be told. */
  async has(id: string): Promise<boolean> {
    for (let attempt = 0; !this.#current(); attempt++) {
      if (attempt === ATTEMPTS) return true;
      try {
        await this.#catchUp();
      } catch (error) {
        this.#log.warn(
          { err: error },
          "revocation list: cannot reach the database; opaque tokens are refused",
        );
        return true;
      }
    }
    return this.#tokens.has(tokenRef(id));
  }

  close(): void {
    clearInterval(this.#timer);
  }

  #current(): boolean {
    return this.#certain && this.#loaded >= this.#heard;
  }

  #hear(epoch: number): void {
    if (!Number.isSafeInteger(epoch) || epoch <= this.#heard) return;
    this.#heard = epoch;
    this.#catchUp().catch(() => this.#uncertain());
  }

  #uncertain(): void {
    this.#certain = false;
    this.#generation++;
  }

  async #check(): Promise<void> {
    this.#forgetExpired();
    try {
      await this.#catchUp();
    } catch (error) {
      this.#uncertain();
      this.#log.warn({ err: error }, "revocation list: the periodic check failed");
    }
  }

  /** One load at a time; callers arriving meanwhile wait for it. */
  #catchUp(): Promise<void> {
    this.#loading ??= this.#load().finally(() => {
      this.#loading = undefined;
    });
    return this.#loading;
  }

  async #load(): Promise<void> {
    const generation = this.#generation;
    // The epoch first: every row of an epoch up to it is committed (epochs commit in order), and the rows are
    // read by a later statement, which sees them.
    const [row] = await this.#prisma.$queryRaw<{ epoch: bigint }[]>`
      SELECT epoch FROM revocation_epoch WHERE id = 1`;
    const epoch = Number(row?.epoch ?? 0);
    if (epoch > this.#loaded) {
      const rows = await this.#prisma.$queryRaw<{ ref: string; expires: Date }[]>`
        SELECT ref, expires_at AS expires FROM revoked_tokens
        WHERE epoch > ${this.#loaded} AND expires_at > now()`;
      for (const { ref, expires } of rows) this.#tokens.set(ref, expires.getTime());
      this.#loaded = epoch;
    }
    this.#heard = Math.max(this.#heard, epoch);
    if (generation === this.#generation) this.#certain = true;
  }

  #forgetExpired(): void {
    const now = Date.now();
    for (const [ref, expires] of this.#tokens) if (expires <= now) this.#tokens.delete(ref);
  }
}
