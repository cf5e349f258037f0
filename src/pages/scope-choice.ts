// How one (resource, scope) pair travels in the consent and approvals forms: a checkbox whose value is
// "<resource URI> <scope>" (neither holds a space: RFC 3986 URIs and RFC 6749 §3.3 scope tokens). A value read
// back is only a claim of the browser's: the approval keeps it only if the agent asked for that very pair.
import type { ScopePair } from "../delegation/resource-grants.ts";
import { PageError } from "./page-error.ts";

/** The longest resource URI and scope name the registry accepts, with the space between them. */
const MAX_VALUE = 2048 + 1 + 128;
const PAIR = /^(\S+) (\S+)$/;

export function choiceValue({ resource, scope }: ScopePair): string {
  return `${resource} ${scope}`;
}

/** The pairs a form's `scope` values name; any value that is not one pair is a clear 400, never skipped. */
export function readChoices(values: string[]): ScopePair[] {
  return values.map((value) => {
    const match = value.length <= MAX_VALUE ? PAIR.exec(value) : null;
    if (!match)
      throw new PageError(
        400,
        "Unclear permission",
        "A permission sent with the form was not one of those shown. Go back to the request and try again.",
      );
    return { resource: match[1] as string, scope: match[2] as string };
  });
}
