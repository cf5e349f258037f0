// Velocity rules: "more than `limit` uses of `action` on `resource` by the same (person, agent) within
// `windowSeconds` → deny". Counters are sliding-window logs in Redis (one sorted set per rule, person, agent,
// resource and action), checked and recorded by one Lua script, so concurrent calls — from any number of
// processes — are counted exactly. A refused call is not recorded: the script records a use only when no rule
// refuses it, and a use that something after the rules refuses (Cedar) is released again. An agent gets its
// capacity back as its earlier calls leave the window. Shadow rules never refuse; they report that they would have.
import { randomBytes } from "node:crypto";
import type { Redis } from "ioredis";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import { isUniqueViolation } from "../db/prisma-errors.ts";
import type { PrismaClient, VelocityRule } from "../generated/prisma/client.ts";
import { conflict, notFound } from "../http/api-error.ts";
import type { Logger } from "../logger.ts";
import { ALL, type InvalidationBus } from "../redis/invalidation-bus.ts";
import { POLICY_TOPIC } from "./policy-store.ts";

export const ANY = "*";
const RECHECK_MS = 30_000;

export interface VelocityRuleInput {
  name: string;
  resource: string;
  action: string;
  limit: number;
  window_seconds: number;
  shadow?: boolean;
  contain_on_breach?: boolean;
}

export interface VelocityRuleView extends Required<VelocityRuleInput> {
  id: string;
  created_at: string;
}

/** What a check found and, for a recorded use, how to give it back. */
export interface VelocityCheck {
  outcomes: VelocityOutcome[];
  /** Removes the use this check recorded (if any): for a call refused after the rules were checked. */
  release(): Promise<void>;
}

export interface VelocityOutcome {
  rule: VelocityRule;
  /** The action this outcome counts. */
  action: string;
  /** Uses within the window before this call. */
  count: number;
  /** This call would be one use too many. */
  breached: boolean;
}

// KEYS: one sorted set per rule. ARGV[1]: record this use (1) or only look (0); ARGV[2]: a unique member;
// then limit, window (ms) and shadow (1/0) for each key. Returns the count of each key before this call, then
// 1 if this use was recorded (0 if not). Time comes from Redis, so every process counts on one clock.
const SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local counts = {}
local blocked = false
for i, key in ipairs(KEYS) do
  local base = 2 + (i - 1) * 3
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - tonumber(ARGV[base + 2]))
  counts[i] = redis.call('ZCARD', key)
  if counts[i] >= tonumber(ARGV[base + 1]) and ARGV[base + 3] ~= '1' then blocked = true end
end
local recorded = ARGV[1] == '1' and not blocked
if recorded then
  for i, key in ipairs(KEYS) do
    local base = 2 + (i - 1) * 3
    if counts[i] < tonumber(ARGV[base + 1]) then
      redis.call('ZADD', key, now, ARGV[2])
      redis.call('PEXPIRE', key, tonumber(ARGV[base + 2]))
    end
  end
end
counts[#KEYS + 1] = recorded and 1 or 0
return counts
`;

const NOTHING_RECORDED = async (): Promise<void> => {};

type VelocityRedis = Redis & {
  deputyVelocity(keys: number, ...args: (string | number)[]): Promise<number[]>;
};

export function ruleView(rule: VelocityRule): VelocityRuleView {
  return {
    id: rule.id,
    name: rule.name,
    resource: rule.resource,
    action: rule.action,
    limit: rule.limit,
    window_seconds: rule.windowSeconds,
    shadow: rule.shadow,
    contain_on_breach: rule.containOnBreach,
    created_at: rule.createdAt.toISOString(),
  };
}

export class VelocityRules {
  readonly #prisma: PrismaClient;
  readonly #audit: AuditLog;
  readonly #bus: InvalidationBus;
  readonly #redis: VelocityRedis;
  readonly #prefix: string;
  readonly #log: Logger;
  #rules: VelocityRule[] = [];
  #loading: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #sequence = 0;
  readonly #process = randomBytes(6).toString("base64url");

  constructor(
    deps: { prisma: PrismaClient; audit: AuditLog; bus: InvalidationBus; redis: Redis; log: Logger },
    redisPrefix: string,
  ) {
    this.#prisma = deps.prisma;
    this.#audit = deps.audit;
    this.#bus = deps.bus;
    this.#log = deps.log;
    this.#prefix = `${redisPrefix}velocity:`;
    const redis = deps.redis as VelocityRedis;
    if (typeof redis.deputyVelocity !== "function") {
      redis.defineCommand("deputyVelocity", { lua: SCRIPT });
    }
    this.#redis = redis;
    deps.bus.on(POLICY_TOPIC, (key) => {
      if (key === "velocity" || key === ALL) void this.refresh();
    });
  }

  async start(): Promise<void> {
    await this.refresh();
    this.#timer = setInterval(() => void this.refresh(), RECHECK_MS);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** Reloads the rules; a call made during a load gets a load that starts after it. */
  refresh(): Promise<void> {
    const next = (this.#loading ?? Promise.resolve()).then(async () => {
      try {
        this.#rules = await this.#prisma.velocityRule.findMany({ orderBy: { createdAt: "asc" } });
      } catch (error) {
        this.#log.error({ err: error }, "could not load velocity rules");
      }
    });
    this.#loading = next;
    return next;
  }

  /** Rules that apply to `action` on `resource` (either may be `*` in a rule). */
  matching(resource: string, action: string): VelocityRule[] {
    return this.#rules.filter(
      (rule) =>
        (rule.resource === ANY || rule.resource === resource) &&
        (rule.action === ANY || rule.action === action),
    );
  }

  /**
   * Checks the rules for one use of each action by (person, agent), and records the uses when `record` is set
   * and no enforcing rule is breached. All keys are checked and updated in one atomic script, so the use is
   * reserved before the caller decides; a caller that then refuses the call releases it.
   */
  async check(
    input: { person: string; agent: string; resource: string; actions: string[] },
    record: boolean,
  ): Promise<VelocityCheck> {
    const pairs = input.actions.flatMap((action) =>
      this.matching(input.resource, action).map((rule) => ({ rule, action })),
    );
    if (pairs.length === 0) return { outcomes: [], release: NOTHING_RECORDED };
    // One hash tag per (person, agent): every key of a call lives in one Redis Cluster slot.
    const tag = `{${input.person}:${input.agent}}`;
    const keys = pairs.map(
      ({ rule, action }) => `${this.#prefix}${tag}:${rule.id}:${input.resource}:${action}`,
    );
    const args = pairs.flatMap(({ rule }) => [rule.limit, rule.windowSeconds * 1000, rule.shadow ? 1 : 0]);
    const member = `${this.#process}:${++this.#sequence}`;
    const counts = await this.#redis.deputyVelocity(keys.length, ...keys, record ? 1 : 0, member, ...args);
    const outcomes = pairs.map(({ rule, action }, i) => {
      const count = Number(counts[i] ?? 0);
      return { rule, action, count, breached: count >= rule.limit };
    });
    const recorded = Number(counts[keys.length]) === 1;
    return { outcomes, release: recorded ? () => this.#release(keys, member) : NOTHING_RECORDED };
  }

  async #release(keys: string[], member: string): Promise<void> {
    await Promise.all(keys.map((key) => this.#redis.zrem(key, member)));
  }

  list(): Promise<VelocityRuleView[]> {
    return this.#prisma.velocityRule
      .findMany({ orderBy: { createdAt: "asc" } })
      .then((rules) => rules.map(ruleView));
  }

  async add(context: AuditContext, input: VelocityRuleInput): Promise<VelocityRuleView> {
    let view: VelocityRuleView;
    try {
      view = await this.#prisma.$transaction(async (tx) => {
        const rule = await tx.velocityRule.create({
          data: {
            name: input.name,
            resource: input.resource,
            action: input.action,
            limit: input.limit,
            windowSeconds: input.window_seconds,
            shadow: input.shadow ?? false,
            containOnBreach: input.contain_on_breach ?? false,
          },
        });
        const created = ruleView(rule);
        await this.#audit.record(
          context,
          { action: "velocity_rule.add", target: rule.name, after: created },
          tx,
        );
        return created;
      });
    } catch (error) {
      if (isUniqueViolation(error)) throw conflict(`a velocity rule named ${input.name} already exists`);
      throw error;
    }
    await this.#changed();
    return view;
  }

  async remove(context: AuditContext, name: string): Promise<VelocityRuleView> {
    const view = await this.#prisma.$transaction(async (tx) => {
      const rule = await tx.velocityRule.findUnique({ where: { name } });
      if (!rule) throw notFound(`velocity rule ${name}`);
      await tx.velocityRule.delete({ where: { id: rule.id } });
      const removed = ruleView(rule);
      await this.#audit.record(
        context,
        { action: "velocity_rule.remove", target: rule.name, before: removed },
        tx,
      );
      return removed;
    });
    await this.#changed();
    return view;
  }

  async #changed(): Promise<void> {
    await this.#bus.publish(POLICY_TOPIC, "velocity");
    await this.refresh();
  }
}
