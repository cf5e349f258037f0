// Versions of the Cedar policy set. The highest version is in force; each process keeps it parsed in memory
// (once per version) and reloads it when any process applies a new one (invalidation bus, with a periodic
// check as a safety net for a missed message). Applying validates first: an invalid set is never stored.
import { createHash } from "node:crypto";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import { isUniqueViolation } from "../db/prisma-errors.ts";
import type { PolicyVersion, PrismaClient } from "../generated/prisma/client.ts";
import { ApiError, notFound } from "../http/api-error.ts";
import type { Logger } from "../logger.ts";
import { ALL, type InvalidationBus } from "../redis/invalidation-bus.ts";
import {
  buildSchema,
  type CompiledPolicySet,
  checkSchema,
  compile,
  DEFAULT_POLICY_FILE,
  inputsFor,
  joinSources,
  type PolicyInputs,
  type PolicyProblem,
  type PolicySource,
  preparse,
  readPolicyFile,
  SCHEMA_FILE,
  sliceFor,
  validateSet,
} from "./cedar.ts";

/** The policy set in force in this process. */
export interface LoadedPolicy {
  version: number;
  sha256: string;
  set: CompiledPolicySet;
  /** The id of the parsed set in Cedar's cache. */
  cedarId: string;
  /** The parsed set holding only the policies that can apply to this action on this resource. */
  setFor(action: string, resource: string): PolicySlice;
}

/** A parsed set in Cedar's cache (its id), and what of a request its policies can observe. */
export interface PolicySlice {
  id: string;
  inputs: PolicyInputs;
}

const MAX_SLICES = 2000;

/** Slices of a version's set per (action, resource), parsed on first use: Cedar skips what cannot apply. */
function slicer(cedarId: string, set: CompiledPolicySet): LoadedPolicy["setFor"] {
  const slices = new Map<string, PolicySlice>();
  const allIds = Object.keys(set.policies);
  const whole: PolicySlice = { id: cedarId, inputs: inputsFor(set, allIds) };
  return (action, resource) => {
    const key = `${action}\u0000${resource}`;
    let slice = slices.get(key);
    if (slice) return slice;
    if (slices.size >= MAX_SLICES) return whole;
    const ids = sliceFor(set, action, resource);
    if (ids.length === allIds.length) slice = whole;
    else {
      slice = { id: `${cedarId}#${slices.size + 1}`, inputs: inputsFor(set, ids) };
      preparse(slice.id, set, ids);
    }
    slices.set(key, slice);
    return slice;
  };
}

export interface PolicyVersionView {
  version: number;
  sha256: string;
  created_by: string;
  created_at: string;
  in_force: boolean;
}

export interface ValidationReport {
  valid: boolean;
  policies: string[];
  errors: PolicyProblem[];
  warnings: PolicyProblem[];
}

export const POLICY_TOPIC = "policy";
const RECHECK_MS = 30_000;
const SYSTEM_ACTOR = "deputy";

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

export class PolicyStore {
  readonly #prisma: PrismaClient;
  readonly #audit: AuditLog;
  readonly #bus: InvalidationBus;
  readonly #log: Logger;
  readonly #baseSchema: string;
  #current: LoadedPolicy | undefined;
  #loading: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(prisma: PrismaClient, audit: AuditLog, bus: InvalidationBus, log: Logger) {
    this.#prisma = prisma;
    this.#audit = audit;
    this.#bus = bus;
    this.#log = log;
    this.#baseSchema = readPolicyFile(SCHEMA_FILE);
    checkSchema(this.#baseSchema);
    bus.on(POLICY_TOPIC, (key) => {
      if (key === "version" || key === ALL) this.#refreshInBackground();
    });
  }

  /** Applies the shipped default set as version 1 when no version exists, then loads the one in force. */
  async start(): Promise<void> {
    if ((await this.#prisma.policyVersion.count()) === 0) {
      const text = joinSources([{ name: DEFAULT_POLICY_FILE, text: readPolicyFile(DEFAULT_POLICY_FILE) }]);
      const compiled = compile(text);
      if (!compiled.ok) throw new Error(`the default policy set is invalid: ${describe(compiled.errors)}`);
      try {
        await this.#store({ actor: SYSTEM_ACTOR }, text, compiled.set, 1, undefined, "policy.default");
      } catch (error) {
        // Another process started at the same moment and stored it first.
        if (!isUniqueViolation(error)) throw error;
      }
    }
    await this.refresh();
    this.#timer = setInterval(() => this.#refreshInBackground(), RECHECK_MS);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  #refreshInBackground(): void {
    this.refresh().catch((error: unknown) => this.#log.error({ err: error }, "could not load policies"));
  }

  /** The set in force: always loaded after start(). */
  current(): LoadedPolicy {
    if (!this.#current) throw new Error("policies are not loaded yet (PolicyStore.start)");
    return this.#current;
  }

  /** Loads the highest version if it is not the one in memory; a call made during a load gets a later one. */
  refresh(): Promise<void> {
    const next = (this.#loading ?? Promise.resolve()).then(() => this.#load());
    this.#loading = next.catch(() => {});
    return next;
  }

  async #load(): Promise<void> {
    try {
      const latest = await this.#prisma.policyVersion.findFirst({ orderBy: { version: "desc" } });
      if (!latest || latest.version === this.#current?.version) return;
      const compiled = compile(latest.text);
      if (!compiled.ok) throw new Error(`stored policy version ${latest.version} does not compile`);
      const cedarId = `v${latest.version}`;
      preparse(cedarId, compiled.set);
      this.#current = {
        version: latest.version,
        sha256: latest.sha256,
        set: compiled.set,
        cedarId,
        setFor: slicer(cedarId, compiled.set),
      };
      this.#log.info({ version: latest.version }, "policy version in force");
    } catch (error) {
      // Keep deciding with the version already loaded; the next check tries again.
      if (!this.#current) throw error;
      this.#log.error({ err: error }, "could not load the latest policy version");
    }
  }

  /** The schema policies are validated against: the shipped one plus one action per registered scope. */
  async schema(): Promise<string> {
    const scopes = await this.#prisma.resourceScope.findMany({ select: { name: true }, distinct: ["name"] });
    return buildSchema(
      this.#baseSchema,
      scopes.map((scope) => scope.name),
    );
  }

  async validate(
    sources: PolicySource[],
  ): Promise<ValidationReport & { text: string; set?: CompiledPolicySet }> {
    const text = joinSources(sources);
    const compiled = compile(text);
    if (!compiled.ok) return { valid: false, policies: [], errors: compiled.errors, warnings: [], text };
    const { errors, warnings } = validateSet(text, compiled.set, await this.schema());
    return {
      valid: errors.length === 0,
      policies: Object.keys(compiled.set.policies),
      errors,
      warnings,
      text,
      set: compiled.set,
    };
  }

  /** Validates and stores a new version, audited; every process switches to it. Invalid → 400, nothing stored. */
  async apply(
    context: AuditContext,
    sources: PolicySource[],
  ): Promise<PolicyVersionView & { policies: string[]; warnings: PolicyProblem[] }> {
    const report = await this.validate(sources);
    if (!report.valid || !report.set) {
      throw new PolicyInvalidError(report.errors);
    }
    const previous = await this.#prisma.policyVersion.findFirst({ orderBy: { version: "desc" } });
    if (previous && previous.sha256 === sha256(report.text)) {
      throw new ApiError(409, "conflict", `this policy set is already version ${previous.version}`);
    }
    let row: PolicyVersion | undefined;
    for (let attempt = 0; !row; attempt++) {
      const latest = await this.#prisma.policyVersion.aggregate({ _max: { version: true } });
      try {
        row = await this.#store(
          context,
          report.text,
          report.set,
          (latest._max.version ?? 0) + 1,
          latest._max.version ?? undefined,
          "policy.apply",
        );
      } catch (error) {
        // Two versions applied at once: the second takes the next number.
        if (!isUniqueViolation(error) || attempt >= 5) throw error;
      }
    }
    await this.#bus.publish(POLICY_TOPIC, "version");
    await this.refresh();
    return {
      ...versionView(row, this.#current?.version),
      policies: report.policies,
      warnings: report.warnings,
    };
  }

  async #store(
    context: AuditContext,
    text: string,
    set: CompiledPolicySet,
    version: number,
    previous: number | undefined,
    action: "policy.default" | "policy.apply",
  ): Promise<PolicyVersion> {
    const digest = sha256(text);
    return this.#prisma.$transaction(async (tx) => {
      const row = await tx.policyVersion.create({
        data: { version, text, sha256: digest, createdBy: context.actor },
      });
      await this.#audit.record(
        context,
        {
          action,
          target: `policy version ${version}`,
          policyVersion: String(version),
          before: previous === undefined ? undefined : { version: previous },
          after: { version, sha256: digest, policies: Object.keys(set.policies) },
        },
        tx,
      );
      return row;
    });
  }

  async list(): Promise<PolicyVersionView[]> {
    const rows = await this.#prisma.policyVersion.findMany({
      select: { version: true, sha256: true, createdBy: true, createdAt: true },
      orderBy: { version: "asc" },
    });
    const inForce = rows.at(-1)?.version;
    return rows.map((row) => versionView(row, inForce));
  }

  /** One version with its text; the one in force when `version` is omitted. */
  async get(version?: number): Promise<PolicyVersionView & { text: string; policies: string[] }> {
    const [row, latest] = await Promise.all([
      version === undefined
        ? this.#prisma.policyVersion.findFirst({ orderBy: { version: "desc" } })
        : this.#prisma.policyVersion.findUnique({ where: { version } }),
      this.#prisma.policyVersion.aggregate({ _max: { version: true } }),
    ]);
    if (!row) throw notFound(`policy version ${version ?? "(none)"}`);
    const compiled = compile(row.text);
    return {
      ...versionView(row, latest._max.version ?? undefined),
      text: row.text,
      policies: compiled.ok ? Object.keys(compiled.set.policies) : [],
    };
  }
}

export class PolicyInvalidError extends ApiError {
  readonly problems: PolicyProblem[];

  constructor(problems: PolicyProblem[]) {
    super(400, "invalid_policy", `the policy set is invalid: ${describe(problems)}`);
    this.problems = problems;
  }
}

export function describe(problems: PolicyProblem[]): string {
  const shown = problems.slice(0, 5).map((p) => {
    const where = [p.location, p.policy ? `policy ${p.policy}` : undefined].filter(Boolean).join(", ");
    return where ? `${where}: ${p.message}` : p.message;
  });
  return `${shown.join("; ")}${problems.length > 5 ? `; and ${problems.length - 5} more` : ""}`;
}

function versionView(
  row: { version: number; sha256: string; createdBy: string; createdAt: Date },
  inForce: number | undefined,
): PolicyVersionView {
  return {
    version: row.version,
    sha256: row.sha256,
    created_by: row.createdBy,
    created_at: row.createdAt.toISOString(),
    in_force: row.version === inForce,
  };
}
