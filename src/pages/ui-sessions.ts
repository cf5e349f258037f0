// Deputy's browser sessions, kept server-side in Redis under a hash of the cookie value.
//
// Why a session of Deputy's own rather than oidc-provider's alone: the pages for people (/approvals,
// /delegations) are not oidc-provider routes, and oidc-provider has no supported way to read its session
// elsewhere. A server-side record also makes sign-out immediate (the record is deleted), lets every request
// re-check that the person is still active (offboarding signs them out at once), and carries the per-session
// CSRF secret. oidc-provider's session follows this one: its login prompt asks again whenever its account is
// not the person signed in here (see provider-hooks.ts), and signing out ends both.
import { createHash, randomBytes } from "node:crypto";
import type { Redis } from "ioredis";

export interface UiSession {
  /** The cookie value (never stored). */
  id: string;
  personId: string;
  csrfSecret: Buffer;
  createdAt: number;
}

export class UiSessionStore {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #ttlSeconds: number;

  constructor(redis: Redis, prefix: string, ttlSeconds: number) {
    this.#redis = redis;
    this.#prefix = `${prefix}ui:session:`;
    this.#ttlSeconds = ttlSeconds;
  }

  get ttlSeconds(): number {
    return this.#ttlSeconds;
  }

  /** A new session for a person who just signed in (a fresh id: no fixation of an earlier one). */
  async create(personId: string): Promise<UiSession> {
    const session: UiSession = {
      id: randomBytes(32).toString("base64url"),
      personId,
      csrfSecret: randomBytes(32),
      createdAt: Date.now(),
    };
    const record = JSON.stringify({
      personId,
      csrfSecret: session.csrfSecret.toString("base64url"),
      createdAt: session.createdAt,
    });
    await this.#redis.set(this.#key(session.id), record, "EX", this.#ttlSeconds);
    return session;
  }

  async find(id: string | undefined): Promise<UiSession | undefined> {
    if (!id) return undefined;
    const raw = await this.#redis.get(this.#key(id));
    if (!raw) return undefined;
    const record = JSON.parse(raw) as { personId: string; csrfSecret: string; createdAt: number };
    return {
      id,
      personId: record.personId,
      csrfSecret: Buffer.from(record.csrfSecret, "base64url"),
      createdAt: record.createdAt,
    };
  }

  async destroy(id: string): Promise<void> {
    await this.#redis.del(this.#key(id));
  }

  #key(id: string): string {
    return this.#prefix + createHash("sha256").update(id).digest("base64url");
  }
}
