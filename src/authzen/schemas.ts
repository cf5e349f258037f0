// Request bodies of the AuthZEN Authorization API 1.0. Unknown members are ignored (the API may grow), but
// every member Deputy reads is checked for type, size and control characters.
import { z } from "zod";
import { plain } from "../http/plain-text.ts";

const properties = z.record(z.string(), z.unknown());
const text = (max: number) => plain(z.string().min(1).max(max));

export const subject = z.object({
  type: text(200),
  id: text(8192),
  properties: z.looseObject({ ip_address: plain(z.string()).optional() }).optional(),
});

export const resource = z.object({
  type: text(200),
  id: text(2048),
  properties: properties.optional(),
});

export const action = z.object({
  name: text(200),
  properties: properties.optional(),
});

export const evaluationBody = z.object({
  subject,
  resource,
  action,
  context: properties.optional(),
});

export type EvaluationRequest = z.infer<typeof evaluationBody>;

export const SEMANTICS = ["execute_all", "deny_on_first_deny", "permit_on_first_permit"] as const;
export const MAX_EVALUATIONS = 100;

const item = z.object({
  subject: subject.optional(),
  resource: resource.optional(),
  action: action.optional(),
  context: properties.optional(),
});

export const evaluationsBody = item.extend({
  evaluations: z.array(item).max(MAX_EVALUATIONS).optional(),
  options: z.object({ evaluations_semantic: z.enum(SEMANTICS).optional() }).optional(),
});

export type EvaluationItem = z.infer<typeof item>;
