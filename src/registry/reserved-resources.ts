// URIs a resource server may not be registered under: Deputy's own. A resource server's credentials introspect
// the tokens whose audience is its URI, so one registered as the issuer would see every person's subject tokens,
// and one registered as urn:deputy:admin every admin token.
import { invalidRequest } from "../http/api-error.ts";

/** Deputy names its own audiences under this URN namespace (oauth/constants.ts: urn:deputy:admin). */
const DEPUTY_URN = "urn:deputy:";
const SCHEMES = new Set(["https:", "http:", "urn:"]);
/** RFC 3986 §2.3 unreserved characters, percent-encoded: equivalent to the character itself (§6.2.2.2). */
const ENCODED_UNRESERVED = /%(?:[46][1-9a-f]|[57][0-9a]|3[0-9]|2d|2e|5f|7e)/gi;

/** Refuses (400 invalid_request) a resource server URI that is not http(s) or urn, or that Deputy itself is. */
export function refuseReservedResource(uri: string, issuer: string): void {
  const url = URL.canParse(uri) ? new URL(uri) : undefined;
  if (!url || !SCHEMES.has(url.protocol))
    throw invalidRequest(
      `uri must be an https, http or urn URI identifying the resource server (got ${url ? url.protocol : "no scheme"})`,
    );
  if (url.protocol === "urn:") {
    if (decodeUnreserved(uri).toLowerCase().startsWith(DEPUTY_URN))
      throw invalidRequest(
        `uri ${DEPUTY_URN}… names Deputy's own audiences (${DEPUTY_URN}admin is the admin API)`,
      );
    return;
  }
  if (isUnder(url, new URL(issuer)))
    throw invalidRequest(
      `uri ${url.href} is Deputy itself (the issuer ${issuer}, or under it): register the resource server's own URI`,
    );
}

/** Whether `url` is served by the issuer: its host and port, at the issuer's path or below (both normalised). */
function isUnder(url: URL, issuer: URL): boolean {
  if (hostAndPort(url) !== hostAndPort(issuer)) return false;
  const base = path(issuer).replace(/\/$/, "");
  const own = path(url);
  return own === base || own.startsWith(`${base}/`);
}

/** Host (without a trailing dot) and port, the scheme's default when none is given: WHATWG URL lowercases the
 * host and writes IPv4 addresses in any notation as dotted decimal. */
function hostAndPort(url: URL): string {
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  return `${url.hostname.replace(/\.$/, "")}:${port}`;
}

/** The path with dot segments resolved (by URL) and unreserved characters decoded. */
function path(url: URL): string {
  return decodeUnreserved(url.pathname);
}

function decodeUnreserved(value: string): string {
  return value.replace(ENCODED_UNRESERVED, (encoded) =>
    String.fromCharCode(Number.parseInt(encoded.slice(1), 16)),
  );
}
