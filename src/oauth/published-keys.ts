// The public signing keys as the database has them, in every process: what /jwks serves (jwks-route.ts) and what
// Deputy's own JWT verification accepts (`getKey`). Cached; dropped when a rotation or removal is announced on the
// invalidation bus, when the bus may have missed a message, and when a key it holds reaches its removal time (so
// a retiring key leaves /jwks and stops being accepted then, with no message). A token naming a kid the cache
// does not know makes it reload, at most once every UNKNOWN_KID_RELOAD_MS, so a lost message cannot leave a
// process refusing tokens signed with a newer key, and tokens with made-up kids cannot hammer the database.
import { createLocalJWKSet, type JWK, type JWTVerifyGetKey, errors as joseErrors } from "jose";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import { type KeyEntry, SIGNING_KEY_TOPIC } from "./signing-keys.ts";

const TTL_MS = 60_000;
const UNKNOWN_KID_RELOAD_MS = 5_000;

interface KeySet {
  jwks: { keys: JWK[] };
  verify: ReturnType<typeof createLocalJWKSet>;
}

interface Entry {
  loadedAt: number;
  set: Promise<KeySet>;
  /** The set, once loaded. */
  loaded?: KeySet;
  /** When the first of its keys is removed (ms since epoch; Infinity if none is): the set is stale from then on. */
  staleAt?: number;
}

export class PublishedKeys {
  readonly #load: () => Promise<KeyEntry[]>;
  #current: Entry | undefined;

  /** `load` gives the keys not removed yet, each with its removal time if it has one. */
  constructor(load: () => Promise<KeyEntry[]>, bus: InvalidationBus) {
    this.#load = load;
    bus.on(SIGNING_KEY_TOPIC, () => {
      this.#current = undefined;
    });
  }

  /** The JWKS document: public members only. */
  async jwks(): Promise<{ keys: JWK[] }> {
    return (await this.#keySet()).jwks;
  }

  /** A jose key resolver over the published keys. */
  readonly getKey: JWTVerifyGetKey = async (header, token) => {
    const tried = await this.#keySet();
    try {
      return await tried.verify(header, token);
    } catch (error) {
      if (!(error instanceof joseErrors.JWKSNoMatchingKey)) throw error;
      const latest = await this.#newerThan(tried);
      if (!latest) throw error;
      return latest.verify(header, token);
    }
  };

  /**
   * A set loaded after `tried`: one loaded or loading meanwhile, else a reload if `tried` is old enough (only the
   * first of concurrent callers starts it; the others wait for it); undefined when there is none.
   */
  async #newerThan(tried: KeySet): Promise<KeySet | undefined> {
    const current = this.#current;
    if (current?.loaded === tried && Date.now() - current.loadedAt >= UNKNOWN_KID_RELOAD_MS)
      this.#current = undefined;
    const latest = await this.#keySet();
    return latest === tried ? undefined : latest;
  }

  #keySet(): Promise<KeySet> {
    const cached = this.#current;
    const now = Date.now();
    if (cached && now - cached.loadedAt < TTL_MS && now < (cached.staleAt ?? Number.POSITIVE_INFINITY))
      return cached.set;
    const set = this.#load().then((entries) => {
      entry.staleAt = Math.min(...entries.map((key) => key.removedAt ?? Number.POSITIVE_INFINITY));
      const keys = entries.map((key) => key.jwk);
      return { jwks: { keys }, verify: createLocalJWKSet({ keys }) };
    });
    const entry: Entry = { loadedAt: now, set };
    this.#current = entry;
    // Registered before any caller's: `loaded` is set by the time they resume. A failed load is not kept.
    set.then(
      (loaded) => {
        entry.loaded = loaded;
      },
      () => {
        if (this.#current === entry) this.#current = undefined;
      },
    );
    return set;
  }
}
