// Server-rendered pages: nunjucks templates from views/ with auto-escaping on, so whatever an agent or a
// person typed (names, task descriptions) is shown as text. Every page gets the same strict headers: no
// framing, no inline script or style (one stylesheet from /static), no caching.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Context } from "koa";
import nunjucks from "nunjucks";
import { formatDuration, formatTime } from "./format.ts";

const VIEWS = fileURLToPath(new URL("../../views/", import.meta.url));

export const STYLESHEET_PATH = "/static/deputy.css";

export class Pages {
  readonly #env: nunjucks.Environment;
  readonly stylesheet: string;

  constructor() {
    this.#env = new nunjucks.Environment(new nunjucks.FileSystemLoader(VIEWS), {
      autoescape: true,
      throwOnUndefined: false,
    });
    this.#env.addFilter("time", (value: Date) => formatTime(value));
    this.#env.addFilter("duration", (seconds: number) => formatDuration(seconds));
    this.stylesheet = readFileSync(`${VIEWS}static/deputy.css`, "utf8");
  }

  /**
   * Renders a template as the response. `formTargets` are origins a form on the page may end up at through
   * redirects (the agent's redirect URI after consent): CSP form-action also governs those redirects.
   */
  render(
    ctx: Context,
    template: string,
    variables: Record<string, unknown>,
    options: { status?: number; formTargets?: string[] } = {},
  ): void {
    pageHeaders(ctx, options.formTargets ?? []);
    ctx.status = options.status ?? 200;
    ctx.type = "text/html; charset=utf-8";
    ctx.body = this.#env.render(template, { stylesheet: STYLESHEET_PATH, ...variables });
  }

  /** The same, for oidc-provider's own error rendering (which hands over its koa context). */
  html(template: string, variables: Record<string, unknown>): string {
    return this.#env.render(template, { stylesheet: STYLESHEET_PATH, ...variables });
  }
}

export function pageHeaders(
  ctx: { set(field: string, value: string): void },
  formTargets: string[] = [],
): void {
  const formAction = ["'self'", ...formTargets].join(" ");
  ctx.set(
    "Content-Security-Policy",
    `default-src 'none'; style-src 'self'; img-src 'self'; form-action ${formAction}; frame-ancestors 'none'; base-uri 'none'`,
  );
  ctx.set("X-Frame-Options", "DENY");
  ctx.set("X-Content-Type-Options", "nosniff");
  ctx.set("Referrer-Policy", "no-referrer");
  ctx.set("Cache-Control", "no-store");
}

/** A CSP source for a redirect URI: its origin, or its scheme for a native app's private-use scheme. */
export function cspSourceOf(url: unknown): string | undefined {
  if (typeof url !== "string") return undefined;
  const parsed = URL.parse(url);
  if (!parsed) return undefined;
  if (/^https?:$/.test(parsed.protocol)) return parsed.origin;
  return /^[a-z][a-z0-9+.-]*:$/.test(parsed.protocol) ? parsed.protocol : undefined;
}
