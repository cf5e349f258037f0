// Trust in a reverse proxy's X-Forwarded-* headers (TRUST_PROXY), applied alike to Deputy's Koa app and to
// oidc-provider's (a Koa app of its own): the protocol and host decide the URLs in discovery, the DPoP `htu`
// check and whether cookies are Secure; the address is what the login throttle counts and the audit trail records.
import type Koa from "koa";

/**
 * Trusts the headers of `proxies` reverse proxies in front (0: the headers are ignored, so a client cannot
 * claim another address). The client's address is the X-Forwarded-For entry the outermost trusted proxy
 * added — the `proxies`-th from the right — never an entry the client sent itself.
 */
export function trustProxies(app: Koa, proxies: number): void {
  app.proxy = proxies > 0;
  app.maxIpsCount = proxies;
}
