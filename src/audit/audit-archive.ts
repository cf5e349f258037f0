// Retention: the database keeps a hot window of events (DEPUTY_AUDIT_HOT_DAYS). Older events are written to
// gzip-compressed NDJSON files (the export format, chain links included), recorded in an AuditArchive row and
// a manifest.json next to the files (first prev_hash, last hash, file sha-256), and only then removed — all in
// one transaction that holds the chain lock. While any legal hold is active nothing is removed.
import { createHash, randomUUID } from "node:crypto";
import {
  closeSync,
  createReadStream,
  createWriteStream,
  fsyncSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { PassThrough, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import type { AuditArchive, PrismaClient } from "../generated/prisma/client.ts";
import { lockChain, prismaTx } from "./audit-chain.ts";
import { eventView } from "./audit-event.ts";
import { type AuditContext, type AuditLog, TRANSACTION_OPTIONS } from "./audit-log.ts";

export const MANIFEST_FILE = "manifest.json";
/** How often the retention job runs (a BullMQ repeatable job in src/jobs, next to the revocation sweep). */
export const AUDIT_ARCHIVE_EVERY_SECONDS = 3_600;
const DEFAULT_EVENTS_PER_FILE = 100_000;
const PAGE = 2000;

export interface ArchiveOptions {
  prisma: PrismaClient;
  audit: AuditLog;
  /** Where archive files and manifest.json are written (DEPUTY_AUDIT_ARCHIVE_DIR). */
  dir: string;
  /** Events newer than this many days stay in the database (DEPUTY_AUDIT_HOT_DAYS). */
  hotDays: number;
  /** Who runs it (recorded in the trail); the scheduled job by default. */
  context?: AuditContext;
  now?: Date;
  eventsPerFile?: number;
}

export interface ArchiveView {
  id: string;
  file: string;
  from_seq: number;
  to_seq: number;
  from_time: string;
  to_time: string;
  event_count: number;
  file_sha256: string;
  first_prev_hash: string | null;
  last_hash: string;
  created_at: string;
}

export interface ArchiveResult {
  cutoff: string;
  /** Active legal holds: when there are any, nothing was archived or removed. */
  held_by: { id: string; reason: string }[];
  archives: ArchiveView[];
  archived_events: number;
}

export function archiveView(archive: AuditArchive): ArchiveView {
  return {
    id: archive.id,
    file: archive.file,
    from_seq: Number(archive.fromSeq),
    to_seq: Number(archive.toSeq),
    from_time: archive.fromTime.toISOString(),
    to_time: archive.toTime.toISOString(),
    event_count: archive.eventCount,
    file_sha256: archive.fileSha256,
    first_prev_hash: archive.firstPrevHash,
    last_hash: archive.lastHash,
    created_at: archive.createdAt.toISOString(),
  };
}

class Held extends Error {
  constructor(readonly holds: { id: string; reason: string }[]) {
    super("legal hold");
  }
}

/**
 * Moves every event older than the hot window out of the database into archive files. Events are archived as
 * a prefix of the chain (by seq), so the chain runs on unbroken from the last archive to the first hot event.
 */
export async function archiveAuditEvents(options: ArchiveOptions): Promise<ArchiveResult> {
  const { prisma, dir } = options;
  const now = options.now ?? new Date();
  const cutoff = new Date(now.getTime() - options.hotDays * 86_400_000);
  const eventsPerFile = options.eventsPerFile ?? DEFAULT_EVENTS_PER_FILE;
  const context = options.context ?? { actor: "deputy:audit-retention" };
  const result: ArchiveResult = {
    cutoff: cutoff.toISOString(),
    held_by: [],
    archives: [],
    archived_events: 0,
  };

  // Everything before the oldest event that is still hot (by seq) is old enough. The bound is fixed once, so
  // the events this run writes itself (audit.archive) wait for the next run.
  const firstHot = await prisma.auditEvent.findFirst({
    where: { time: { gte: cutoff } },
    orderBy: { seq: "asc" },
    select: { seq: true },
  });
  const newest = await prisma.auditEvent.findFirst({ orderBy: { seq: "desc" }, select: { seq: true } });
  const bound = firstHot?.seq ?? (newest ? newest.seq + 1n : 0n);
  for (;;) {
    const holds = await activeHolds(prisma);
    if (holds.length) {
      result.held_by = holds;
      break;
    }
    const below = { seq: { lt: bound } };
    const first = await prisma.auditEvent.findFirst({
      where: below,
      orderBy: { seq: "asc" },
      select: { seq: true },
    });
    if (!first) break;

    mkdirSync(dir, { recursive: true });
    const written = await writeArchiveFile(prisma, dir, first.seq, bound, eventsPerFile);
    try {
      const archive = await prisma.$transaction(async (tx) => {
        await lockChain(prismaTx(tx));
        // A hold placed while the file was being written still stops the removal.
        const lateHolds = await tx.legalHold.findMany({
          where: { releasedAt: null },
          select: { id: true, reason: true },
        });
        if (lateHolds.length) throw new Held(lateHolds);
        const range = { seq: { gte: written.fromSeq, lte: written.toSeq } };
        const count = await tx.auditEvent.count({ where: range });
        const last = await tx.auditEvent.findUnique({
          where: { seq: written.toSeq },
          select: { hash: true },
        });
        const overlapping = await tx.auditArchive.findFirst({ where: { toSeq: { gte: written.fromSeq } } });
        if (overlapping) throw new Error("another archiver has archived these events already");
        if (count !== written.eventCount || (last?.hash ?? "") !== written.lastHash)
          throw new Error("the events changed while they were being archived");
        const created = await tx.auditArchive.create({
          data: {
            id: written.id,
            fromSeq: written.fromSeq,
            toSeq: written.toSeq,
            fromTime: written.fromTime,
            toTime: written.toTime,
            eventCount: written.eventCount,
            file: written.file,
            fileSha256: written.sha256,
            firstPrevHash: written.firstPrevHash,
            lastHash: written.lastHash,
          },
        });
        await tx.auditEvent.deleteMany({ where: range });
        await options.audit.record(
          context,
          {
            action: "audit.archive",
            target: created.id,
            details: {
              file: created.file,
              from_seq: written.fromSeq.toString(),
              to_seq: written.toSeq.toString(),
              event_count: written.eventCount,
              file_sha256: written.sha256,
              cutoff: cutoff.toISOString(),
            },
          },
          tx,
        );
        return created;
      }, TRANSACTION_OPTIONS);
      result.archives.push(archiveView(archive));
      result.archived_events += archive.eventCount;
    } catch (error) {
      rmSync(path.join(dir, written.file), { force: true });
      if (error instanceof Held) {
        result.held_by = error.holds;
        break;
      }
      throw error;
    } finally {
      await writeManifest(prisma, dir);
    }
  }
  return result;
}

async function activeHolds(prisma: PrismaClient) {
  return prisma.legalHold.findMany({
    where: { releasedAt: null },
    select: { id: true, reason: true },
    orderBy: { createdAt: "asc" },
  });
}

interface WrittenArchive {
  id: string;
  file: string;
  fromSeq: bigint;
  toSeq: bigint;
  fromTime: Date;
  toTime: Date;
  eventCount: number;
  sha256: string;
  firstPrevHash: string | null;
  lastHash: string;
}

async function writeArchiveFile(
  prisma: PrismaClient,
  dir: string,
  fromSeq: bigint,
  bound: bigint,
  max: number,
): Promise<WrittenArchive> {
  const summary = {
    fromSeq,
    toSeq: fromSeq,
    fromTime: new Date(0),
    toTime: new Date(0),
    eventCount: 0,
    firstPrevHash: null as string | null,
    lastHash: "",
  };
  async function* lines() {
    let after = fromSeq - 1n;
    while (summary.eventCount < max) {
      const rows = await prisma.auditEvent.findMany({
        where: { seq: { gt: after, lt: bound } },
        orderBy: { seq: "asc" },
        take: Math.min(PAGE, max - summary.eventCount),
      });
      if (rows.length === 0) return;
      for (const row of rows) {
        if (summary.eventCount === 0) {
          summary.firstPrevHash = row.prevHash;
          summary.fromTime = row.time;
        }
        summary.eventCount++;
        summary.toSeq = row.seq;
        summary.lastHash = row.hash ?? "";
        if (row.time > summary.toTime) summary.toTime = row.time;
        if (row.time < summary.fromTime) summary.fromTime = row.time;
        yield `${JSON.stringify(eventView(row))}\n`;
      }
      after = rows.at(-1)?.seq ?? after;
    }
  }
  const temp = path.join(dir, `.writing-${process.pid}-${Date.now()}.ndjson.gz`);
  const hash = createHash("sha256");
  const hashing = new PassThrough();
  hashing.on("data", (chunk: Buffer) => hash.update(chunk));
  try {
    await pipeline(Readable.from(lines()), createGzip(), hashing, createWriteStream(temp, { flush: true }));
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
  const pad = (seq: bigint) => seq.toString().padStart(12, "0");
  // The archive's id in the name: two runs racing over the same events never write (or remove) one file.
  const id = randomUUID();
  const file = `audit-${pad(summary.fromSeq)}-${pad(summary.toSeq)}-${id.slice(0, 8)}.ndjson.gz`;
  renameSync(temp, path.join(dir, file));
  syncDirectory(dir);
  return { ...summary, id, file, sha256: hash.digest("hex") };
}

/** manifest.json: every archive with its chain hashes, for whoever holds the files without the database. */
export async function writeManifest(prisma: PrismaClient, dir: string): Promise<void> {
  const archives = await prisma.auditArchive.findMany({ orderBy: { fromSeq: "asc" } });
  if (archives.length === 0) return;
  const manifest = {
    format: "deputy-audit-archive/1",
    description:
      "gzip-compressed NDJSON, one audit event per line (export field names); " +
      'hash = sha256_hex((prev_hash ?? "") + canonical_json(event without prev_hash and hash))',
    updated_at: new Date().toISOString(),
    archives: archives.map(archiveView),
  };
  const temp = path.join(dir, `.${MANIFEST_FILE}.${process.pid}`);
  writeFileSync(temp, `${JSON.stringify(manifest, null, 2)}\n`, { flush: true });
  renameSync(temp, path.join(dir, MANIFEST_FILE));
  syncDirectory(dir);
}

function syncDirectory(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export async function fileSha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
