// Secrets for the browser's cookies — oidc-provider's signed cookies (its session, the interaction in progress)
// and the binding of the login form's CSRF token to the visitor's nonce — derived from the private signing keys
// kept in the database: every process computes the same ones with nothing more to configure or store.
//
// They follow a rotation as tokens do: each process signs with the secret of the key that was active when it
// started, and accepts the secrets of every key in the database, reloaded when a rotation is announced on the
// invalidation bus (and whenever the bus may have missed a message). Every process therefore accepts a new key's
// secret before any process, restarted after the rotation, signs with it: during a rolling restart a cookie set
// by any process is accepted by every other, and a rotation signs nobody out. A retiring key's secret stays
// accepted until the key is removed (its removal time, or the announcement of an emergency removal).
import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import type { JWK } from "jose";
import type KeyGrip from "keygrip";
import type { Logger } from "../logger.ts";
import { type KeyEntry, SIGNING_KEY_TOPIC } from "../oauth/signing-keys.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";

/** A cookie secret, and when the key it derives from is removed (ms since epoch), if that is set. */
interface Secret {
  key: Buffer;
  removedAt?: number;
}

export class CookieKeys {
  /** The secret this process signs with: the one of the key active when it started. */
  readonly signing: Buffer;
  #accepted: Secret[];
  readonly #load: () => Promise<KeyEntry[]>;
  readonly #log: Logger;
  /** Reloads started; only the latest one's result is kept. */
  #reloads = 0;

  private constructor(secrets: Secret[], load: () => Promise<KeyEntry[]>, log: Logger) {
    this.signing = (secrets[0] as Secret).key;
    this.#accepted = secrets;
    this.#load = load;
    this.#log = log;
  }

  /** Listens for rotations first, then loads: no rotation can fall between the two. */
  static async create(
    load: () => Promise<KeyEntry[]>,
    bus: InvalidationBus,
    log: Logger,
  ): Promise<CookieKeys> {
    let keys: CookieKeys | undefined;
    bus.on(SIGNING_KEY_TOPIC, () => void keys?.reload());
    keys = new CookieKeys(deriveCookieKeys(await load()), load, log);
    return keys;
  }

  /** Every secret a cookie may be signed with now, this process's own first. */
  get accepted(): readonly Buffer[] {
    const now = Date.now();
    return this.#accepted
      .filter((secret, index) => index === 0 || now < (secret.removedAt ?? Number.POSITIVE_INFINITY))
      .map((secret) => secret.key);
  }

  /** Reads the keys again; on failure the secrets already accepted stay (logged). */
  async reload(): Promise<void> {
    const reload = ++this.#reloads;
    try {
      const secrets = deriveCookieKeys(await this.#load());
      if (reload !== this.#reloads) return;
      const own = this.#accepted[0] as Secret;
      this.#accepted = [own, ...secrets.filter((secret) => !secret.key.equals(this.signing))];
    } catch (error) {
      this.#log.error({ err: error }, "cookie keys: could not reload the signing keys; keeping those loaded");
    }
  }

  /**
   * The cookies' signer, for oidc-provider's `cookies.keys` (keygrip's interface): signs with this process's
   * secret, verifies with every accepted one. Its signatures are keygrip's own (HMAC-SHA1 keyed with the secret's
   * base64url text), so cookies signed by a keygrip over the same secrets stay valid.
   */
  readonly keygrip: KeyGrip = {
    sign: (data) => signCookie(data, this.signing),
    verify: (data, digest) => this.keygrip.index(data, digest) >= 0,
    index: (data, digest) => this.accepted.findIndex((key) => sameText(signCookie(data, key), digest)),
  };
}

/** One 32-byte secret per private signing key, in the keys' order. */
function deriveCookieKeys(signingKeys: KeyEntry[]): Secret[] {
  const secrets = signingKeys
    .filter(({ jwk }) => typeof jwk.d === "string")
    .map(({ jwk, removedAt }) => ({ key: deriveCookieKey(jwk), removedAt }));
  if (!secrets.length) throw new Error("no private signing key to derive cookie keys from");
  return secrets;
}

function deriveCookieKey(jwk: JWK): Buffer {
  return Buffer.from(
    hkdfSync("sha256", Buffer.from(String(jwk.d), "base64url"), "deputy", "deputy browser cookies v1", 32),
  );
}

function signCookie(data: string, key: Buffer): string {
  return createHmac("sha1", key.toString("base64url")).update(data).digest("base64url");
}

function sameText(expected: string, presented: string): boolean {
  const [a, b] = [Buffer.from(expected), Buffer.from(presented)];
  return a.length === b.length && timingSafeEqual(a, b);
}
