// The sweep: the database is the truth, and Redis (tokens, jobs) is made to agree with it, every
// DEPUTY_SWEEP_SECONDS. It is what makes a lost job or a lost (or restored) Redis harmless:
//  1. delegations past their end time that are still active are ended (their task-end job may have been lost);
//  2. tokens of delegations that are no longer active, and tokens exchanged from revoked tokens, that the
//     lineage does not yet mark revoked (minted by exchanges in flight during a revocation) are revoked — the
//     latter, whose delegation is still active, also on the revocation list;
//  3. every revoked, unexpired opaque token still present in Redis is destroyed (a Redis restored from a
//     snapshot brings tokens back), and so are the grants of delegations that ended recently;
//  4. task-end jobs are re-armed for delegations ending before the next sweep or two (they may have been lost);
//  5. the revocation list forgets tokens that have expired.
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import type { Logger } from "../logger.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import type { RevocationJobs } from "./jobs.ts";
import { announceEpoch, listRevokedTokens, pruneRevocationList } from "./revocation-list.ts";
import type { RevocationService } from "./revocations.ts";
import type { TokenStore } from "./token-store.ts";

const BATCH = 1_000;
/** As a revocation's: over a large lineage the strays' update may take a while. */
const TRANSACTION_OPTIONS = { maxWait: 10_000, timeout: 60_000 } as const;
const CONTEXT: AuditContext = { actor: "deputy:sweep" };

export interface SweepResult {
  /** Delegations found active past their end time, now ended. */
  ended: number;
  /** Tokens the lineage had not yet marked revoked although their delegation or parent was. */
  strayTokens: number;
  /** Revoked tokens that were still (or again) in Redis, now destroyed. */
  redisLeftovers: number;
  /** Task-end jobs (re-)armed for delegations about to end. */
  armed: number;
}

export interface SweepDeps {
  prisma: PrismaClient;
  audit: AuditLog;
  revocations: RevocationService;
  tokens: TokenStore;
  jobs: RevocationJobs;
  bus: InvalidationBus;
  log: Logger;
  sweepSeconds: number;
  /** Grants live at most this long: older ended delegations have none left to remove. */
  maxDelegationSeconds: number;
}

export class Sweeper {
  readonly #deps: SweepDeps;

  constructor(deps: SweepDeps) {
    this.#deps = deps;
  }

  async run(): Promise<SweepResult> {
    const { prisma, revocations } = this.#deps;
    const result: SweepResult = { ended: 0, strayTokens: 0, redisLeftovers: 0, armed: 0 };

    for (;;) {
      const expired = await prisma.delegation.findMany({
        where: { status: "active", endsAt: { lte: new Date() } },
        select: { id: true },
        take: BATCH,
      });
      if (!expired.length) break;
      const summary = await revocations.revoke(
        { delegations: expired.map((row) => row.id) },
        { trigger: "sweep", outcome: "ended", reason: "its end time passed (ended by the sweep)" },
        CONTEXT,
      );
      result.ended += summary.delegations;
      if (expired.length < BATCH || summary.delegations === 0) break;
    }

    result.strayTokens = await this.#reviseLineage();
    result.redisLeftovers = await this.#cleanRedis();
    result.armed = await this.#armTaskEnds();
    await pruneRevocationList(this.#deps.prisma);

    if (result.strayTokens || result.redisLeftovers) {
      await this.#deps.audit.record(CONTEXT, {
        action: "revocation.sweep",
        decision: "allow",
        reason: "the sweep found revoked tokens the lineage or Redis did not reflect",
        details: {
          trigger: "sweep",
          delegations: 0,
          tokens: result.strayTokens,
          redis_tokens_destroyed: result.redisLeftovers,
        },
      });
    }
    return result;
  }

  /** Marks revoked the tokens whose delegation is over or whose parent is revoked, at any depth. */
  async #reviseLineage(): Promise<number> {
    const { prisma, bus, log } = this.#deps;
    const now = new Date();
    const underEnded = await prisma.$executeRaw`
      UPDATE issued_tokens t SET revoked_at = ${now}
      FROM delegations d
      WHERE t.delegation_id = d.id AND d.status <> 'active' AND t.revoked_at IS NULL`;
    const { orphans, epoch } = await prisma.$transaction(async (tx) => {
      const rows = await tx.$queryRaw<{ jti: string }[]>`
        WITH RECURSIVE doomed AS (
          SELECT child.jti FROM issued_tokens child JOIN issued_tokens parent ON parent.jti = child.parent_jti
          WHERE child.revoked_at IS NULL AND parent.revoked_at IS NOT NULL AND child.expires_at > ${now}
          UNION
          SELECT child.jti FROM issued_tokens child JOIN doomed ON child.parent_jti = doomed.jti
          WHERE child.revoked_at IS NULL
        )
        UPDATE issued_tokens SET revoked_at = ${now}
        WHERE jti IN (SELECT jti FROM doomed) AND revoked_at IS NULL
        RETURNING jti`;
      const refs = rows.map((row) => row.jti);
      return { orphans: refs.length, epoch: await listRevokedTokens(tx, refs) };
    }, TRANSACTION_OPTIONS);
    if (epoch !== undefined) await announceEpoch(bus, epoch, log);
    return underEnded + orphans;
  }

  /** Removes from Redis the grants (and so the tokens) of revoked, unexpired tokens, and of recently ended
   * delegations; returns how many token grants were still there. */
  async #cleanRedis(): Promise<number> {
    const { prisma, tokens, maxDelegationSeconds } = this.#deps;
    const now = new Date();
    let destroyed = 0;
    let after = "";
    for (;;) {
      const rows = await prisma.issuedToken.findMany({
        where: {
          revokedAt: { not: null },
          expiresAt: { gt: now },
          grantId: { not: null },
          jti: { gt: after },
        },
        select: { jti: true, grantId: true },
        orderBy: { jti: "asc" },
        take: BATCH,
      });
      if (!rows.length) break;
      destroyed += await tokens.revokeGrants(rows.flatMap((row) => (row.grantId ? [row.grantId] : [])));
      after = rows[rows.length - 1]?.jti ?? after;
      if (rows.length < BATCH) break;
    }
    const grants = await prisma.delegation.findMany({
      where: {
        status: { not: "active" },
        grantId: { not: null },
        endedAt: { gt: new Date(now.getTime() - maxDelegationSeconds * 1_000) },
      },
      select: { grantId: true },
    });
    await tokens.revokeGrants(grants.flatMap((row) => (row.grantId ? [row.grantId] : [])));
    return destroyed;
  }

  /** Task-end jobs for delegations ending before the sweep after next (adding an existing job is a no-op). */
  async #armTaskEnds(): Promise<number> {
    const { prisma, jobs, sweepSeconds } = this.#deps;
    const horizon = new Date(Date.now() + 2 * sweepSeconds * 1_000);
    const soon = await prisma.delegation.findMany({
      where: { status: "active", endsAt: { lte: horizon } },
      select: { id: true, endsAt: true },
      take: 10_000,
    });
    for (const delegation of soon) await jobs.scheduleTaskEnd(delegation.id, delegation.endsAt);
    return soon.length;
  }
}
