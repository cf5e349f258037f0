// Throttles failed sign-ins per account and per client address with Redis counters that expire: after too many
// failures within the window, sign-in is refused (without checking the password) until the window ends.
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

export interface ThrottleLimits {
  maxFailures: number;
  maxFailuresPerAddress: number;
  lockoutSeconds: number;
}

export class LoginThrottle {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #limits: ThrottleLimits;

  constructor(redis: Redis, prefix: string, limits: ThrottleLimits) {
    this.#redis = redis;
    this.#prefix = `${prefix}ui:login-failures:`;
    this.#limits = limits;
  }

  /** True when this account or this address has failed too often recently. */
  async blocked(email: string, address: string): Promise<boolean> {
    const [account, client] = await this.#redis.mget(this.#accountKey(email), this.#addressKey(address));
    return (
      Number(account ?? 0) >= this.#limits.maxFailures ||
      Number(client ?? 0) >= this.#limits.maxFailuresPerAddress
    );
  }

  /** Counts a failure; each counter's window starts at its first failure (SET NX EX, then INCR keeps the TTL). */
  async fail(email: string, address: string): Promise<void> {
    const ttl = this.#limits.lockoutSeconds;
    const account = this.#accountKey(email);
    const client = this.#addressKey(address);
    await this.#redis
      .multi()
      .set(account, 0, "EX", ttl, "NX")
      .incr(account)
      .set(client, 0, "EX", ttl, "NX")
      .incr(client)
      .exec();
  }

  /** A successful sign-in clears the account's counter (not the address's: one good password must not hide
   * guessing at other accounts from the same place). */
  async succeed(email: string): Promise<void> {
    await this.#redis.del(this.#accountKey(email));
  }

  #accountKey(email: string): string {
    return `${this.#prefix}account:${createHash("sha256").update(email).digest("base64url")}`;
  }

  #addressKey(address: string): string {
    return `${this.#prefix}address:${address}`;
  }
}
