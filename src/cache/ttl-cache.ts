// A small in-process cache with a time-to-live and a size cap (oldest entries leave first), so lookups of
// unknown keys sent by unauthenticated callers cannot grow memory without bound.
export class TtlCache<V> {
  readonly #entries = new Map<string, { value: V; storedAt: number }>();
  readonly #ttlMs: number;
  readonly #maxEntries: number;
  /** Bumped by every invalidation: a load that raced with one is returned but not cached. */
  #generation = 0;

  constructor(options: { ttlMs: number; maxEntries: number }) {
    this.#ttlMs = options.ttlMs;
    this.#maxEntries = options.maxEntries;
  }

  /** The cached value, or `load(key)` (then cached) when absent or expired. */
  async get(key: string, load: (key: string) => Promise<V>): Promise<V> {
    const entry = this.#entries.get(key);
    if (entry && Date.now() - entry.storedAt < this.#ttlMs) return entry.value;
    const generation = this.#generation;
    const value = await load(key);
    if (generation !== this.#generation) return value;
    this.#entries.delete(key);
    this.#entries.set(key, { value, storedAt: Date.now() });
    if (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    return value;
  }

  /** Drops one key, or everything with "*". */
  invalidate(key: string): void {
    this.#generation++;
    if (key === "*") this.#entries.clear();
    else this.#entries.delete(key);
  }
}
