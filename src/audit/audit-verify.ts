// `deputy audit verify`: walks the whole trail — every archive file in order, then the events in the database —
// recomputing each event's hash and checking that it links to the one before. The first event that does not
// check out is named (seq and id, and where it is), with what is wrong with it.
import type { AuditArchive, PrismaClient } from "../generated/prisma/client.ts";
import { archiveFileProblem, archiveLines } from "./audit-archive-read.ts";
import { eventHash, eventView } from "./audit-event.ts";

export interface BadEvent {
  seq: number | null;
  id: string | null;
  /** `database`, or `archive <file>`. */
  location: string;
  problem: string;
}

export interface VerifyReport {
  ok: boolean;
  checked: { archives: number; archived_events: number; events: number; unchained_legacy_events: number };
  /** The newest event: note its seq and hash somewhere else, and pass them back as `anchor` later. */
  head: { seq: number; id: string; hash: string } | null;
  first_bad?: BadEvent;
}

export interface Anchor {
  seq: number;
  hash: string;
}

class Failure extends Error {
  constructor(readonly bad: BadEvent) {
    super(bad.problem);
  }
}

interface Linkable {
  seq: number;
  id: string;
  time: string;
  prev_hash: string | null;
  hash: string | null;
}

/** Checks events one after another, in chain order. */
class ChainChecker {
  expectedPrev: string | null = null;
  lastSeq: number | null = null;
  head: VerifyReport["head"] = null;
  /** Seq of the last chained event checked. */
  lastSeqBefore: number | null = null;
  chained = 0;
  legacy = 0;
  anchorSeen = false;

  constructor(
    readonly chainStartedAt: Date | undefined,
    readonly anchor?: Anchor,
  ) {}

  check(event: Linkable & Record<string, unknown>, location: string): void {
    const fail = (problem: string): never => {
      throw new Failure({ seq: event.seq, id: event.id, location, problem });
    };
    if (this.lastSeq !== null && event.seq <= this.lastSeq)
      fail(`out of order: seq ${event.seq} comes after seq ${this.lastSeq}`);
    if (this.anchor && event.seq === this.anchor.seq) {
      this.anchorSeen = true;
      if (event.hash !== this.anchor.hash)
        fail("its hash is not the anchor's: the event was altered or replaced");
    }
    this.lastSeq = event.seq;
    if (event.hash === null) {
      // Events written before the chain existed (an upgraded database) have no hash; none may follow the chain.
      const before = this.chainStartedAt && Date.parse(event.time) < this.chainStartedAt.getTime();
      if (this.chained > 0 || this.expectedPrev !== null || !before)
        fail("it has no hash: the chain was stripped from it");
      this.legacy++;
      return;
    }
    if (eventHash(event.prev_hash, event) !== event.hash)
      fail("its content does not match its hash: the event was altered (or moved from another position)");
    if (event.prev_hash !== this.expectedPrev)
      fail(
        this.lastSeqBefore === null
          ? "it links to an event that is not there: events before it were deleted"
          : `it does not follow the event before it (seq ${this.lastSeqBefore}): events between them were deleted, inserted or reordered`,
      );
    this.expectedPrev = event.hash;
    this.lastSeqBefore = event.seq;
    this.chained++;
    this.head = { seq: event.seq, id: event.id, hash: event.hash };
  }
}

export interface VerifyOptions {
  archiveDir: string;
  anchor?: Anchor;
}

export async function verifyAuditTrail(prisma: PrismaClient, options: VerifyOptions): Promise<VerifyReport> {
  const checker = new ChainChecker(await chainStartedAt(prisma), options.anchor);
  const checked = { archives: 0, archived_events: 0, events: 0, unchained_legacy_events: 0 };
  const report = (first_bad?: BadEvent): VerifyReport => ({
    ok: !first_bad,
    checked: { ...checked, unchained_legacy_events: checker.legacy },
    head: checker.head,
    ...(first_bad ? { first_bad } : {}),
  });
  try {
    const archives = await prisma.auditArchive.findMany({ orderBy: { fromSeq: "asc" } });
    for (const archive of archives) {
      const location = `archive ${archive.file}`;
      const bad = (problem: string): never => {
        throw new Failure({ seq: Number(archive.fromSeq), id: null, location, problem });
      };
      if ((archive.firstPrevHash ?? null) !== checker.expectedPrev)
        bad(`the archive does not continue the chain from the one before it (first_prev_hash differs)`);
      const problem = await archiveFileProblem(options.archiveDir, archive);
      if (problem) bad(`the archive file ${problem}`);
      let count = 0;
      try {
        for await (const event of readArchive(options.archiveDir, archive, location)) {
          if (event.seq < Number(archive.fromSeq) || event.seq > Number(archive.toSeq))
            throw new Failure({
              seq: event.seq,
              id: event.id,
              location,
              problem: `outside the archive's range ${archive.fromSeq}–${archive.toSeq}`,
            });
          checker.check(event, location);
          count++;
        }
      } catch (error) {
        if (error instanceof Failure) throw error;
        bad(`the archive file cannot be read as gzip-compressed NDJSON (${(error as Error).message})`);
      }
      if (count !== archive.eventCount)
        bad(`the archive holds ${count} events; ${archive.eventCount} were written to it`);
      if ((checker.expectedPrev ?? "") !== archive.lastHash)
        bad("the archive's last event is not the one recorded");
      checked.archives++;
      checked.archived_events += count;
    }
    let after: bigint | undefined;
    for (;;) {
      const rows = await prisma.auditEvent.findMany({
        where: after === undefined ? {} : { seq: { gt: after } },
        orderBy: { seq: "asc" },
        take: 2000,
      });
      for (const row of rows) checker.check({ ...eventView(row) }, "database");
      checked.events += rows.length;
      if (rows.length < 2000) break;
      after = rows.at(-1)?.seq;
    }
    if (options.anchor && !checker.anchorSeen)
      throw new Failure({
        seq: options.anchor.seq,
        id: null,
        location: "database",
        problem: "the anchor event is gone: events were removed from the end of the trail",
      });
    return report();
  } catch (error) {
    if (error instanceof Failure) return report(error.bad);
    throw error;
  }
}

/** Checks an exported or archived NDJSON file on its own (no database): the chain within the file. */
export async function verifyEventLines(
  lines: AsyncIterable<string>,
  location = "file",
): Promise<{ ok: boolean; events: number; first_bad?: BadEvent; head: VerifyReport["head"] }> {
  const checker = new ChainChecker(undefined);
  let first = true;
  try {
    let lineNumber = 0;
    for await (const line of lines) {
      lineNumber++;
      if (!line.trim()) continue;
      const event = parseLine(line, `${location} line ${lineNumber}`);
      // The file may start anywhere in the chain: take its first link as given.
      if (first) checker.expectedPrev = event.prev_hash;
      first = false;
      checker.check(event, `${location} line ${lineNumber}`);
    }
    return { ok: true, events: checker.chained + checker.legacy, head: checker.head };
  } catch (error) {
    if (error instanceof Failure)
      return { ok: false, events: checker.chained, first_bad: error.bad, head: checker.head };
    throw error;
  }
}

function parseLine(line: string, location: string): Linkable & Record<string, unknown> {
  let event: unknown;
  try {
    event = JSON.parse(line);
  } catch {
    throw new Failure({ seq: null, id: null, location, problem: "not a JSON line" });
  }
  const record = event as Record<string, unknown>;
  if (
    !record ||
    typeof record.seq !== "number" ||
    typeof record.id !== "string" ||
    typeof record.time !== "string" ||
    !("hash" in record) ||
    !("prev_hash" in record)
  )
    throw new Failure({
      seq: typeof record?.seq === "number" ? record.seq : null,
      id: typeof record?.id === "string" ? record.id : null,
      location,
      problem: "not an audit event (seq, id, time, prev_hash and hash are required)",
    });
  return record as Linkable & Record<string, unknown>;
}

async function* readArchive(dir: string, archive: AuditArchive, location: string) {
  let lineNumber = 0;
  for await (const line of archiveLines(dir, archive)) {
    lineNumber++;
    if (line.trim()) yield parseLine(line, `${location} line ${lineNumber}`);
  }
}

/** When the chain began: the migration that added it. Events older than that may have no hash. */
async function chainStartedAt(prisma: PrismaClient): Promise<Date | undefined> {
  const rows = await prisma.$queryRawUnsafe<{ finished_at: Date | null }[]>(
    `SELECT finished_at FROM _prisma_migrations WHERE migration_name LIKE '%\\_audit\\_chain' ESCAPE '\\'
       AND rolled_back_at IS NULL ORDER BY finished_at LIMIT 1`,
  );
  return rows[0]?.finished_at ?? undefined;
}
