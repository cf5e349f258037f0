// Deputy's browser sessions, kept server-side in Redis under a hash of the cookie value.
//
// Why a session of Deputy's own rather than oidc-provider's alone: the pages for people (/approvals,
// /delegations) are not oidc-provider routes, and oidc-provider has no supported way to read its session
// elsewhere. A server-side record also makes sign-out immediate (the record is deleted), lets every request
// re-check that the person is still active (offboarding signs them out at once), and carries the per-session
// CSRF secret. oidc-provider's session follows this one: its login prompt asks again whenever its account is
// not the person signed in here (see provider-hooks.ts), and signing out ends both.
//
// Each person's sessions are listed in a set of their own, so that all of them can be ended at once: the people
// service does so when a password is changed, admin rights are removed or the person is offboarded
// (SessionTerminator). That ends their oidc-provider sessions' use too, since its login prompt then asks again.
import { createHash, randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import type { SessionTerminator } from "../registry/people.ts";

export interface UiSession {
  /** The cookie value (never stored). */
  id: string;
  personId: string;
  csrfSecret: Buffer;
  createdAt: number;
}

// KEYS[1] a person's set of sessions. ARGV[1] the sessions' key prefix. Deletes every session in the set and the
// set, in one step: a session created meanwhile is either in the set (and deleted) or created after.
const END_ALL = `
for _, session in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', ARGV[1] .. session) end
redis.call('DEL', KEYS[1])
return 1
`;

type SessionRedis = Redis & { deputyEndSessions(personSessions: string, prefix: string): Promise<number> };

export class UiSessionStore implements SessionTerminator {
  readonly #redis: SessionRedis;
  readonly #prefix: string;
  readonly #personPrefix: string;
  readonly #ttlSeconds: number;

  constructor(redis: Redis, prefix: string, ttlSeconds: number) {
    const scripted = redis as SessionRedis;
    if (typeof scripted.deputyEndSessions !== "function")
      scripted.defineCommand("deputyEndSessions", { numberOfKeys: 1, lua: END_ALL });
    this.#redis = scripted;
    this.#prefix = `${prefix}ui:session:`;
    this.#personPrefix = `${prefix}ui:person-sessions:`;
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
    const personSessions = this.#personPrefix + personId;
    // The person's set lasts as long as their newest session.
    await this.#redis
      .multi()
      .set(this.#prefix + this.#hash(session.id), record, "EX", this.#ttlSeconds)
      .sadd(personSessions, this.#hash(session.id))
      .expire(personSessions, this.#ttlSeconds)
      .exec();
    return session;
  }

  async find(id: string | undefined): Promise<UiSession | undefined> {
    if (!id) return undefined;
    const raw = await this.#redis.get(this.#prefix + this.#hash(id));
    if (!raw) return undefined;
    const record = JSON.parse(raw) as { personId: string; csrfSecret: string; createdAt: number };
    return {
      id,
      personId: record.personId,
      csrfSecret: Buffer.from(record.csrfSecret, "base64url"),
      createdAt: record.createdAt,
    };
  }

  async destroy(session: UiSession): Promise<void> {
    const hash = this.#hash(session.id);
    await this.#redis
      .multi()
      .del(this.#prefix + hash)
      .srem(this.#personPrefix + session.personId, hash)
      .exec();
  }

  /** Signs the person out everywhere: every session of theirs ends. */
  async endSessionsOf(personId: string): Promise<void> {
    await this.#redis.deputyEndSessions(this.#personPrefix + personId, this.#prefix);
  }

  #hash(id: string): string {
    return createHash("sha256").update(id).digest("base64url");
  }
}
