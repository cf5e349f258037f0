// Text Deputy accepts from callers. PostgreSQL (and PGlite) refuse NUL in text, so a NUL reaching a query is a
// server error; no other control character belongs in a name, an email, an id or a URI either (they hide or
// reorder what a person reads). Free text may keep tabs and line breaks.
import type { z } from "zod";

const CONTROL = /\p{Cc}/u;
const CONTROL_BUT_LINE_BREAKS = /[^\P{Cc}\t\n\r]/u;
/** A control character percent-encoded as UTF-8: %00-%1F, %7F, %C2%80-%C2%9F. */
const ENCODED_CONTROL = /%(?:[01][0-9a-f]|7f|c2%[89][0-9a-f])/i;

/** True when `value` holds no control character (C0, DEL, C1); with `lineBreaks`, tab, LF and CR are allowed. */
export function isPlainText(value: string, options: { lineBreaks?: boolean } = {}): boolean {
  return !(options.lineBreaks ? CONTROL_BUT_LINE_BREAKS : CONTROL).test(value);
}

/**
 * True when a URI, or a component of one, holds no control character, raw or percent-encoded (RFC 3986 §7.3:
 * "%00" should be rejected where raw data is not expected).
 */
export function isPlainUri(value: string): boolean {
  return isPlainText(value) && !ENCODED_CONTROL.test(value);
}

/** `schema`, refusing control characters (but tabs and line breaks with `lineBreaks`). */
export function plain<T extends z.ZodType<string>>(schema: T, options: { lineBreaks?: boolean } = {}): T {
  const message = options.lineBreaks
    ? "must not contain control characters other than tabs and line breaks"
    : "must not contain control characters";
  return schema.refine((value) => isPlainText(value, options), message);
}
