// Cedar, in-process (WebAssembly): compiling a policy text into named policies, validating it against the schema
// of Deputy's entities, and deciding requests against a policy set parsed once per version.
import { readFileSync } from "node:fs";
import path from "node:path";
import v8 from "node:v8";
import * as cedar from "@cedar-policy/cedar-wasm/nodejs";

/** Where the shipped schema and default policy set live. */
export const POLICY_DIR = path.resolve(import.meta.dirname, "../../policies");
export const DEFAULT_POLICY_FILE = "default.cedar";
export const SCHEMA_FILE = "schema.cedarschema";

// Node 20's V8 (11.3) aborts the process ("Fatal error … unreachable code" in
// Deoptimizer::DoComputeBuiltinContinuation) when optimized code that inlined a call into WebAssembly is lazily
// deoptimized while that call is on the stack — as happens under load when Cedar's bindings call back into
// JavaScript. Not inlining JS→Wasm calls avoids it, at no measurable cost here; set before any code is optimized.
v8.setFlagsFromString("--no-turbo-inline-js-wasm-calls");

export interface PolicySource {
  name: string;
  text: string;
}

/** One problem found in a policy set, located as `file:line:column` where Cedar says where. */
export interface PolicyProblem {
  policy?: string;
  location?: string;
  message: string;
}

export interface CompiledPolicySet {
  /** Policy id → policy text. The id is the `@id` annotation, or `file:line` of the policy. */
  policies: Record<string, string>;
  /** Policy id → its annotations (`@reason`, `@advice`, …). */
  annotations: Record<string, Record<string, string>>;
  /** Policy id → where it starts in the joined text (to locate validation problems). */
  offsets: Record<string, number>;
  /** Policy id → the actions / resource its scope is limited to (absent: any), for slicing the set. */
  scopes: Record<string, PolicyScope>;
  /** Policy id → what of a request it can observe, so a decision need not build (and Cedar parse) the rest. */
  inputs: Record<string, PolicyInputs>;
}

/**
 * The parts of a request a policy can observe: the context attributes it reads (`"all"` when it uses the
 * context otherwise than by `context.name` or `context has name`), and whether it reads any entity's data
 * (attributes or tags). Deputy's entities have no parents, so `in` and `is` need no entity data.
 */
export interface PolicyInputs {
  context: string[] | "all";
  entities: boolean;
}

export interface PolicyScope {
  actions?: string[];
  resource?: string;
}

export type CompileResult =
  | { ok: true; set: CompiledPolicySet; warnings: PolicyProblem[] }
  | { ok: false; errors: PolicyProblem[]; warnings: PolicyProblem[] };

const SOURCE_MARKER = /^\/\/ @source (.+)$/;

/** Sources are stored as one text, each preceded by a `// @source NAME` line so locations survive storage. */
export function joinSources(sources: PolicySource[]): string {
  return sources
    .map(
      ({ name, text }) =>
        `// @source ${name.replace(/[\r\n]/g, " ")}\n${text.endsWith("\n") ? text : `${text}\n`}`,
    )
    .join("\n");
}

/** `file:line:column` of an offset into a joined text. */
export function locate(text: string, offset: number): string {
  const before = text.slice(0, Math.max(0, Math.min(offset, text.length))).split("\n");
  let file = "policies";
  let markerLine = 0;
  for (let i = before.length - 1; i >= 0; i--) {
    const match = SOURCE_MARKER.exec(before[i] as string);
    if (match?.[1]) {
      file = match[1];
      markerLine = i + 1;
      break;
    }
  }
  return `${file}:${before.length - markerLine}:${(before.at(-1)?.length ?? 0) + 1}`;
}

function problem(text: string, error: cedar.DetailedError, policy?: string, base = 0): PolicyProblem {
  const where = error.sourceLocations?.[0];
  const help = error.help ? ` (${error.help})` : "";
  const label = where?.label ? `: ${where.label}` : "";
  return {
    policy,
    location: where ? locate(text, base + where.start) : undefined,
    message: `${error.message}${label}${help}`,
  };
}

/** Splits a joined text into policies with stable ids; refuses syntax errors and duplicate ids. */
export function compile(text: string): CompileResult {
  const parts = cedar.policySetTextToParts(text);
  if (parts.type === "failure") {
    return { ok: false, errors: parts.errors.map((error) => problem(text, error)), warnings: [] };
  }
  if (parts.policy_templates.length) {
    return {
      ok: false,
      errors: [
        { message: "policy templates (?principal, ?resource) are not supported: write static policies" },
      ],
      warnings: [],
    };
  }
  const policies: Record<string, string> = {};
  const annotations: Record<string, Record<string, string>> = {};
  const offsets: Record<string, number> = {};
  const scopes: Record<string, PolicyScope> = {};
  const inputs: Record<string, PolicyInputs> = {};
  const errors: PolicyProblem[] = [];
  let cursor = 0;
  for (const policy of parts.policies) {
    const found = text.indexOf(policy, cursor);
    const offset = found >= 0 ? found : cursor;
    cursor = found >= 0 ? found + policy.length : cursor;
    const json = cedar.policyToJson(policy);
    const notes = json.type === "success" ? (json.json.annotations ?? {}) : {};
    const id = notes.id?.trim() || locate(text, offset).replace(/:\d+$/, "");
    if (id in policies) {
      errors.push({
        policy: id,
        location: locate(text, offset),
        message: `two policies have the id "${id}"`,
      });
      continue;
    }
    policies[id] = policy;
    annotations[id] = notes;
    offsets[id] = offset;
    scopes[id] = json.type === "success" ? scopeOf(json.json) : {};
    inputs[id] = json.type === "success" ? inputsOf(json.json) : EVERYTHING;
  }
  if (errors.length) return { ok: false, errors, warnings: [] };
  if (Object.keys(policies).length === 0) {
    return {
      ok: false,
      errors: [{ message: "the policy set is empty: with no permit, Cedar denies everything" }],
      warnings: [],
    };
  }
  return { ok: true, set: { policies, annotations, offsets, scopes, inputs }, warnings: [] };
}

const uidOf = (value: cedar.EntityUidJson) => ("__entity" in value ? value.__entity : value);

/**
 * The actions and resource a policy's scope is limited to. Deputy's actions and resource servers have no
 * parents, so `in` means `==` for them; any other constraint is treated as "any" (never sliced away).
 */
function scopeOf(policy: cedar.PolicyJson): PolicyScope {
  const scope: PolicyScope = {};
  const { action, resource } = policy;
  if (action.op === "==" && "entity" in action) scope.actions = [uidOf(action.entity).id];
  if (action.op === "in") {
    scope.actions = ("entities" in action ? action.entities : [action.entity]).map((uid) => uidOf(uid).id);
  }
  if ((resource.op === "==" || resource.op === "in") && "entity" in resource) {
    const uid = uidOf(resource.entity);
    if (uid.type === "ResourceServer") scope.resource = uid.id;
  }
  return scope;
}

const EVERYTHING: PolicyInputs = { context: "all", entities: true };

/** Expression nodes that observe no entity data themselves (their operands are walked). */
const PURE_NODES = new Set([
  "!",
  "neg",
  "==",
  "!=",
  "in",
  "<",
  "<=",
  ">",
  ">=",
  "&&",
  "||",
  "+",
  "-",
  "*",
  "contains",
  "containsAll",
  "containsAny",
  "isEmpty",
  "like",
  "is",
  "if-then-else",
  "Set",
  "Record",
]);

/** What a policy's conditions read, from its JSON form; anything not understood counts as reading everything. */
function inputsOf(policy: cedar.PolicyJson): PolicyInputs {
  const context = new Set<string>();
  let allContext = false;
  let entities = false;
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const item of node) walk(item);
      return;
    }
    if (!node || typeof node !== "object") return;
    for (const [kind, value] of Object.entries(node)) {
      if (kind === "Value" || kind === "Slot" || kind === "Unknown") continue;
      if (kind === "Var") {
        if (value === "context") allContext = true;
      } else if (kind === "." || kind === "has") {
        const { left, attr } = value as { left: unknown; attr: string };
        if ((left as { Var?: unknown })?.Var === "context") context.add(attr);
        else {
          entities = true;
          walk(left);
        }
      } else if (kind === "Record") {
        walk(Object.values(value as object));
      } else if (kind === "like" || kind === "is") {
        walk((value as { left: unknown }).left);
        walk((value as { in?: unknown }).in);
      } else if (PURE_NODES.has(kind)) {
        walk(Object.values(value as object));
      } else {
        // Tags, extension functions and anything a later Cedar adds: assume they read everything.
        allContext = true;
        entities = true;
        walk(value);
      }
    }
  };
  for (const condition of policy.conditions) walk(condition.body);
  return { context: allContext ? "all" : [...context].sort(), entities };
}

/** What a set of policies can observe, together. */
export function inputsFor(set: CompiledPolicySet, ids: string[]): PolicyInputs {
  const context = new Set<string>();
  let allContext = false;
  let entities = false;
  for (const id of ids) {
    const inputs = set.inputs[id] ?? EVERYTHING;
    if (inputs.context === "all") allContext = true;
    else for (const name of inputs.context) context.add(name);
    entities ||= inputs.entities;
  }
  return { context: allContext ? "all" : [...context].sort(), entities };
}

/** The ids of the policies that can apply to `action` on `resource`: Cedar need not look at the others. */
export function sliceFor(set: CompiledPolicySet, action: string, resource: string): string[] {
  return Object.keys(set.policies).filter((id) => {
    const scope = set.scopes[id] ?? {};
    return (
      (!scope.actions || scope.actions.includes(action)) && (!scope.resource || scope.resource === resource)
    );
  });
}

/** Validates a compiled set against the schema (strict mode); errors block applying, warnings do not. */
export function validateSet(
  text: string,
  set: CompiledPolicySet,
  schema: string,
): { errors: PolicyProblem[]; warnings: PolicyProblem[] } {
  const answer = cedar.validate({
    schema,
    policies: { staticPolicies: set.policies },
    validationSettings: { mode: "strict" },
  });
  if (answer.type === "failure") {
    // The schema itself did not parse: that is Deputy's fault, not the policy author's.
    throw new Error(`the Cedar schema is invalid: ${answer.errors.map((e) => e.message).join("; ")}`);
  }
  const convert = (items: cedar.ValidationError[]) =>
    tidy(items.map((item) => problem(text, item.error, item.policyId, set.offsets[item.policyId] ?? 0)));
  return {
    errors: convert(answer.validationErrors),
    warnings: [
      ...convert(answer.validationWarnings),
      ...answer.otherWarnings.map((error) => problem(text, error)),
    ],
  };
}

/**
 * Cedar reports a problem once per action it applies to, in no fixed order: say each once (without the action
 * when it is the same for all of them), in the order of the source.
 */
function tidy(problems: PolicyProblem[]): PolicyProblem[] {
  const seen = new Map<string, PolicyProblem>();
  for (const item of problems) {
    const message = item.message.replace(/ (?:in context )?for Action::"(?:[^"\\]|\\.)*"/, "");
    const key = `${item.policy}\u0000${item.location}\u0000${message}`;
    if (!seen.has(key)) seen.set(key, { ...item, message });
  }
  const position = (p: PolicyProblem) => (p.location ?? "").split(":").map((part) => part.padStart(8, "0"));
  return [...seen.values()].sort((a, b) => position(a).join(":").localeCompare(position(b).join(":")));
}

/** The shipped schema plus one action per scope, each applying to an Agent acting on a ResourceServer. */
export function buildSchema(base: string, actions: Iterable<string>): string {
  const names = [...new Set(actions)].sort().map((name) => JSON.stringify(name));
  if (names.length === 0) return base;
  return `${base}\naction ${names.join(", ")} appliesTo {\n  principal: [Agent],\n  resource: [ResourceServer],\n  context: RequestContext,\n};\n`;
}

export function readPolicyFile(name: string): string {
  return readFileSync(path.join(POLICY_DIR, name), "utf8");
}

export function checkSchema(schema: string): void {
  const answer = cedar.checkParseSchema(schema);
  if (answer.type === "failure")
    throw new Error(`the Cedar schema is invalid: ${answer.errors.map((e) => e.message).join("; ")}`);
}

/** Parses a policy set once into Cedar's cache under `id`; decisions then name it instead of re-parsing. */
export function preparse(id: string, set: CompiledPolicySet, only?: string[]): void {
  const policies = only
    ? Object.fromEntries(only.map((key) => [key, set.policies[key] as string]))
    : set.policies;
  const answer = cedar.preparsePolicySet(id, { staticPolicies: policies });
  if (answer.type === "failure")
    throw new Error(`policy set ${id} did not parse: ${answer.errors.map((e) => e.message).join("; ")}`);
}

export type CedarEntity = cedar.EntityJson;
export type CedarContext = cedar.Context;

export interface CedarDecision {
  allow: boolean;
  /** Policies that determined the decision: matching permits for allow, matching forbids for deny. */
  policies: string[];
  /** Policies that failed to evaluate (they are skipped, as Cedar does). */
  errors: string[];
}

export function authorize(
  setId: string,
  request: {
    principal: cedar.EntityUid;
    action: string;
    resource: cedar.EntityUid;
    context: cedar.Context;
    entities: cedar.EntityJson[];
  },
): CedarDecision {
  const answer = cedar.statefulIsAuthorized({
    principal: request.principal,
    action: { type: "Action", id: request.action },
    resource: request.resource,
    context: request.context,
    entities: request.entities,
    preparsedPolicySetId: setId,
  });
  if (answer.type === "failure") {
    throw new Error(`Cedar could not decide: ${answer.errors.map((e) => e.message).join("; ")}`);
  }
  const { decision, diagnostics } = answer.response;
  return {
    allow: decision === "allow",
    policies: diagnostics.reason,
    errors: diagnostics.errors.map((e) => `${e.policyId}: ${e.error.message}`),
  };
}
