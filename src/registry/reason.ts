// Why an admin changes an agent's lifecycle or stops every agent: the one rule the admin API and the console
// both check, so that they accept exactly the same text. It is recorded in the audit trail.
import { z } from "zod";
import { plain } from "../http/plain-text.ts";

/** Free text, one to 1,000 characters; it may span lines. */
export const reason = plain(z.string().trim().min(1).max(1000), { lineBreaks: true });
export const reasonBody = z.strictObject({ reason });
export const optionalReasonBody = z.strictObject({ reason: reason.optional() });
