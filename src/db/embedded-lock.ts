// One process per embedded database. PGlite runs PostgreSQL inside one process and writes its files under the
// data directory; a second process opening the same files sees only its own writes, and the audit chain forks.
// So the data directory is locked before the database is opened: `database.lock`, created exclusively (O_EXCL)
// with the owner's pid. A lock whose process is gone (killed, crashed) is taken over; the lock is removed when
// the database is closed, or when the process exits.
//
// Taking over must not let two processes that both found the same stale lock both win: the one that removes it
// first creates `database.lock.takeover-<hash of the stale content>` exclusively, checks that the lock still holds
// that content, and only then removes it. Every process then competes for the lock itself, exclusively again.
import { createHash, randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const LOCK_FILE = "database.lock";
const ATTEMPTS = 40;
const RETRY_MS = 50;
/** A lock file still empty or unreadable after this long was left by a process that died writing it. */
const UNWRITTEN_STALE_MS = 2_000;
/** A takeover file this old was left by a process that died taking over. */
const TAKEOVER_STALE_MS = 10_000;

export class EmbeddedDatabaseInUseError extends Error {
  constructor(
    readonly dir: string,
    readonly pid: number,
  ) {
    super(
      `the embedded database in ${dir} is in use by process ${pid}; use DATABASE_URL for several processes`,
    );
  }
}

export interface EmbeddedLock {
  /** Removes the lock file, if it is still this process's. */
  release(): void;
}

/** Lock files held by this process: opening one data directory twice in one process is refused too. */
const held = new Set<string>();

/** Locks `dataDir` for this process, or throws EmbeddedDatabaseInUseError naming the process that holds it. */
export async function lockEmbeddedDatabase(dataDir: string): Promise<EmbeddedLock> {
  mkdirSync(dataDir, { recursive: true });
  // One name per directory, however it is reached (relative, through a symlink).
  const dir = realpathSync(dataDir);
  const file = path.join(dir, LOCK_FILE);
  if (held.has(file)) throw new EmbeddedDatabaseInUseError(dir, process.pid);
  const content = `${process.pid}\n${randomBytes(16).toString("hex")}\n`;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    if (create(file, content)) return holdLock(file, content);
    const current = read(file);
    if (current === undefined) continue; // removed meanwhile: try again
    const owner = ownerPid(current);
    if (owner !== undefined && isRunning(owner)) throw new EmbeddedDatabaseInUseError(dir, owner);
    if (owner === undefined && ageMs(file) < UNWRITTEN_STALE_MS) {
      await sleep(RETRY_MS); // being written by the process that has just created it
      continue;
    }
    if (!removeStale(file, current)) await sleep(RETRY_MS);
  }
  throw new Error(`could not lock ${file}: it keeps changing; is another process starting on ${dir}?`);
}

function holdLock(file: string, content: string): EmbeddedLock {
  held.add(file);
  const release = () => {
    process.removeListener("exit", release);
    if (!held.delete(file)) return;
    if (read(file) === content) unlinkSync(file);
  };
  process.on("exit", release);
  return { release };
}

/** Creates `file` holding `content`, only if it does not exist (O_CREAT | O_EXCL). */
function create(file: string, content: string): boolean {
  try {
    writeFileSync(file, content, { flag: "wx", mode: 0o600 });
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw error;
  }
}

/**
 * Removes the lock file if it still holds `stale`, as the only process doing so for that content; false when
 * another process is taking it over.
 */
function removeStale(file: string, stale: string): boolean {
  const takeover = `${file}.takeover-${createHash("sha256").update(stale).digest("hex").slice(0, 16)}`;
  if (!create(takeover, `${process.pid}\n`)) {
    if (ageMs(takeover) > TAKEOVER_STALE_MS) unlinkQuietly(takeover);
    return false;
  }
  try {
    if (read(file) === stale) unlinkQuietly(file);
  } finally {
    unlinkQuietly(takeover);
  }
  return true;
}

function ownerPid(content: string): number | undefined {
  const match = /^(\d+)\n[0-9a-f]+\n$/.exec(content);
  const pid = match ? Number(match[1]) : 0;
  return pid > 0 ? pid : undefined;
}

/**
 * Whether `pid` is a live process. This process's own pid, in a lock it does not hold, was a previous
 * process's: a container's server restarted with the same pid.
 */
function isRunning(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    // EPERM: it exists, under another user.
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
  // A killed process its parent has not reaped yet (a zombie, on Linux) is gone too.
  const stat = `/proc/${pid}/stat`;
  try {
    return !(existsSync(stat) && /^\d+ \(.*\) Z/s.test(readFileSync(stat, "utf8")));
  } catch {
    return true;
  }
}

function read(file: string): string | undefined {
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
}

function ageMs(file: string): number {
  try {
    return Date.now() - statSync(file).mtimeMs;
  } catch {
    return 0;
  }
}

function unlinkQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
}
