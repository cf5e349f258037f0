// Deputy's own browser cookies: HttpOnly, SameSite=Lax, Path=/, and Secure whenever the issuer is https (even
// behind a TLS-terminating proxy, where the connection Deputy sees is plain HTTP). Built by hand because koa
// refuses to set a Secure cookie on a connection it does not see as secure.
import type { Context } from "koa";

export const SESSION_COOKIE = "deputy_session";
/** Anonymous visitors' nonce, which binds the login form's CSRF token to this browser. */
export const LOGIN_NONCE_COOKIE = "deputy_login";

export interface CookieOptions {
  secure: boolean;
  /** Seconds; omitted → a browser-session cookie; 0 → delete. */
  maxAge?: number;
}

export function serializeCookie(name: string, value: string, options: CookieOptions): string {
  const parts = [`${name}=${value}`, "Path=/", "HttpOnly", "SameSite=Lax"];
  if (options.maxAge !== undefined) {
    parts.push(`Max-Age=${options.maxAge}`);
    if (options.maxAge === 0) parts.push("Expires=Thu, 01 Jan 1970 00:00:00 GMT");
  }
  if (options.secure) parts.push("Secure");
  return parts.join("; ");
}

export function setCookie(ctx: Context, name: string, value: string, options: CookieOptions): void {
  const existing = ctx.response.get("Set-Cookie") as unknown as string[] | string | undefined;
  const list = Array.isArray(existing) ? existing : existing ? [existing] : [];
  ctx.set("Set-Cookie", [...list, serializeCookie(name, value, options)]);
}

export function clearCookie(ctx: Context, name: string, secure: boolean): void {
  setCookie(ctx, name, "", { secure, maxAge: 0 });
}

/** A cookie's value as the browser sent it, if it looks like one of Deputy's (base64url, bounded length). */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(";")) {
    const separator = part.indexOf("=");
    if (separator < 0 || part.slice(0, separator).trim() !== name) continue;
    const value = part.slice(separator + 1).trim();
    return /^[\w-]{16,128}$/.test(value) ? value : undefined;
  }
  return undefined;
}
