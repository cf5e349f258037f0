// Throttles sign-ins per account and per client address with Redis counters that expire: after too many failures
// within the window, sign-in is refused (without checking the password) until the window ends.
//
// An attempt is counted before its password is checked, not after: one Lua script checks both counters and, when
// neither is at its limit, counts the attempt in both. Checking first and counting after the password check (tens
// of milliseconds of scrypt) let every concurrent attempt through — 41 at once all had their password checked
// against a limit of 5. Counted first, at most the limits' worth of passwords are checked in a window however the
// attempts arrive, on one process or many, and the scrypt work spent on guesses is bounded with them. The outcome
// then settles the count: a failure keeps it; a success clears the account's count and takes the attempt back
// from the address's (a good password is not a failure there).
import { createHash } from "node:crypto";
import type { Redis } from "ioredis";

export interface ThrottleLimits {
  maxFailures: number;
  maxFailuresPerAddress: number;
  lockoutSeconds: number;
}

/** An attempt counted in advance: `succeeded` settles it when the password was right. */
export interface SignInAttempt {
  succeeded(): Promise<void>;
}

// KEYS[1] the account's counter, KEYS[2] the address's. ARGV: the account's limit, the address's, the window.
// Refuses (0) when either counter is at its limit, counting nothing; else counts the attempt in both (1). Each
// counter's window starts with its first attempt.
const RESERVE = `
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1])
  or tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then
  return 0
end
for i = 1, 2 do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end
end
return 1
`;

// KEYS[1] the account's counter, KEYS[2] the address's. Clears the first and takes one attempt back from the
// second, unless its window has already ended (a new window's counter is not this attempt's).
const SUCCEED = `
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
return 1
`;

type ThrottleRedis = Redis & {
  deputyLoginReserve(account: string, address: string, ...limits: number[]): Promise<number>;
  deputyLoginSucceed(account: string, address: string): Promise<number>;
};

export class LoginThrottle {
  readonly #redis: ThrottleRedis;
  readonly #prefix: string;
  readonly #limits: ThrottleLimits;

  constructor(redis: Redis, prefix: string, limits: ThrottleLimits) {
    const scripted = redis as ThrottleRedis;
    if (typeof scripted.deputyLoginReserve !== "function") {
      scripted.defineCommand("deputyLoginReserve", { numberOfKeys: 2, lua: RESERVE });
      scripted.defineCommand("deputyLoginSucceed", { numberOfKeys: 2, lua: SUCCEED });
    }
    this.#redis = scripted;
    this.#prefix = `${prefix}ui:login-failures:`;
    this.#limits = limits;
  }

  /**
   * Counts an attempt on this account from this address before its password is checked; undefined (nothing
   * counted) when either has failed too often recently. The attempt stays counted as a failure unless it
   * `succeeded`.
   */
  async attempt(email: string, address: string): Promise<SignInAttempt | undefined> {
    const account = this.#accountKey(email);
    const client = this.#addressKey(address);
    const { maxFailures, maxFailuresPerAddress, lockoutSeconds } = this.#limits;
    const counted = await this.#redis.deputyLoginReserve(
      account,
      client,
      maxFailures,
      maxFailuresPerAddress,
      lockoutSeconds,
    );
    if (counted !== 1) return undefined;
    return {
      // A successful sign-in clears the account's counter (not the address's: one good password must not hide
      // guessing at other accounts from the same place).
      succeeded: async () => void (await this.#redis.deputyLoginSucceed(account, client)),
    };
  }

  #accountKey(email: string): string {
    return `${this.#prefix}account:${createHash("sha256").update(email).digest("base64url")}`;
  }

  #addressKey(address: string): string {
    return `${this.#prefix}address:${address}`;
  }
}
