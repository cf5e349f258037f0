// What a delegation grants: scopes per resource server. A person approves (resource, scope) pairs, never bare
// scope names, because two resource servers may define the same name with a different meaning and risk
// (`mail.send` on a mail server and on an outbox): approving one must not approve the other.

/** One scope on one resource server. */
export interface ScopePair {
  resource: string;
  scope: string;
}

/** The scopes granted on one resource server: how a delegation is stored in its state and shown. */
export interface ResourceGrant {
  resource: string;
  scopes: string[];
}

const byCodePoint = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Pairs grouped per resource server; resources and scopes in code-point order, duplicates dropped. */
export function groupByResource(pairs: Iterable<ScopePair>): ResourceGrant[] {
  const grouped = new Map<string, Set<string>>();
  for (const { resource, scope } of pairs) {
    const scopes = grouped.get(resource) ?? new Set<string>();
    grouped.set(resource, scopes.add(scope));
  }
  return [...grouped]
    .sort(([a], [b]) => byCodePoint(a, b))
    .map(([resource, scopes]) => ({ resource, scopes: [...scopes].sort(byCodePoint) }));
}

export function toPairs(grants: readonly ResourceGrant[]): ScopePair[] {
  return grants.flatMap(({ resource, scopes }) => scopes.map((scope) => ({ resource, scope })));
}

export function samePair(a: ScopePair, b: ScopePair): boolean {
  return a.resource === b.resource && a.scope === b.scope;
}

/** The pairs of `grants` that `kept` does not hold. */
export function pairsOutside(grants: readonly ResourceGrant[], kept: readonly ResourceGrant[]): ScopePair[] {
  return toPairs(grants).filter(({ resource, scope }) => !scopesOn(kept, resource).includes(scope));
}

/** The resource servers granted something (a grant always names at least one scope). */
export function resourcesOf(grants: readonly ResourceGrant[]): string[] {
  return grants.map((grant) => grant.resource);
}

/** The scopes granted on `resource`: none when it is not granted. */
export function scopesOn(grants: readonly ResourceGrant[], resource: string): string[] {
  return grants.find((grant) => grant.resource === resource)?.scopes ?? [];
}

/** Every scope name granted on some resource server: a subject token's `scope` (OAuth scopes are names). */
export function scopeNames(grants: readonly ResourceGrant[]): string[] {
  return [...new Set(grants.flatMap((grant) => grant.scopes))];
}
