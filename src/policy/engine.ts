// The runtime decision: velocity rules, then the Cedar policy set in force, for one or more actions (scopes)
// of one agent chain acting for one person on one resource server. Token exchange and AuthZEN evaluation both
// come here. Besides the decision it records the facts a decision creates: an agent's first use of an action
// (drift), a shadow rule's would-deny, and containment of an agent that breached a rule.
import type { AuditContext, AuditEventInput, AuditLog } from "../audit/audit-log.ts";
import type { Logger } from "../logger.ts";
import type { CatalogResource } from "../registry/resource-catalog.ts";
import { authorize, type CedarContext, type CedarEntity } from "./cedar.ts";
import type { AgentDirectory, AgentFacts } from "./directory.ts";
import type { LoadedPolicy, PolicyStore } from "./policy-store.ts";
import type { StepUpService } from "./step-up.ts";
import type { UsageTracker } from "./usage.ts";
import type { VelocityOutcome, VelocityRules } from "./velocity.ts";

/** Suspends an agent through the registry (so whatever suspension triggers — revocation cascades — applies). */
export type ContainAgent = (context: AuditContext, clientId: string, reason: string) => Promise<void>;

export interface DecisionInput {
  kind: "exchange" | "evaluation";
  personId: string;
  personEmail: string;
  /** The agent chain, the acting agent first. */
  chain: string[];
  resource: CatalogResource;
  /** Scopes for an exchange; the one action of an evaluation. */
  actions: string[];
  task?: { id: string; description: string | null };
  clientAddress: string;
  /** The AuthZEN resource, passed to policies as `context.target`. */
  target?: { type: string; id: string };
  delegationId?: string;
  /** Who asked, for the events the decision causes. */
  audit: AuditContext;
}

export interface Decision {
  allow: boolean;
  /** The policy version in force when the decision was made. */
  version: number;
  /** What decided: `policy:<id>` (matching permits, or the forbids that refused), `velocity:<rule>`, or
   * `default-deny` (no permit matched). */
  decidedBy: string[];
  /** A sentence for the agent or resource server: why it was refused, or what allowed it. */
  message: string;
  /** High-risk scopes that need the person's approval (CIBA) before they are allowed. */
  stepUp: string[];
  /** Shadow velocity rules this request breached (allowed, but they would have refused). */
  shadow: string[];
  /** Actions this agent used here for the first time. */
  drift: string[];
  /** Policies that failed to evaluate (skipped, as Cedar does). */
  errors: string[];
}

export interface PolicyEngineDeps {
  policies: PolicyStore;
  velocity: VelocityRules;
  usage: UsageTracker;
  stepUp: StepUpService;
  agents: AgentDirectory;
  audit: AuditLog;
  contain: ContainAgent;
  issuer: string;
  log: Logger;
}

export class PolicyEngine {
  readonly #deps: PolicyEngineDeps;
  readonly #containing = new Set<string>();

  constructor(deps: PolicyEngineDeps) {
    this.#deps = deps;
  }

  async decide(input: DecisionInput): Promise<Decision> {
    const { velocity, stepUp, usage, agents } = this.#deps;
    const policy = this.#deps.policies.current();
    const agent = input.chain[0] as string;
    const uri = input.resource.uri;
    const riskOf = (action: string) => input.resource.scopes.find((s) => s.name === action)?.risk ?? "low";
    const record = input.kind === "evaluation";

    const [outcomes, approved, drifting, facts] = await Promise.all([
      velocity.check({ person: input.personId, agent, resource: uri, actions: input.actions }, record),
      input.actions.some((action) => riskOf(action) === "high")
        ? stepUp.approvedScopes(input.personId, agent, uri)
        : new Set<string>(),
      Promise.all(input.actions.map((action) => usage.isNew(agent, uri, action))),
      Promise.all([...new Set(input.chain)].map((id) => agents.find(id))),
    ]);
    const base = this.#baseEvent(input, policy);
    const sideEvents: AuditEventInput[] = [];

    const shadow = outcomes.filter((o) => o.breached && o.rule.shadow);
    for (const outcome of shadow) {
      sideEvents.push({
        ...base,
        type: "velocity",
        action: "velocity.would_deny",
        reason: `shadow velocity rule ${outcome.rule.name} would refuse: ${velocityText(outcome, agent, uri)}`,
        details: {
          during: input.kind,
          rule: outcome.rule.name,
          count: outcome.count,
          limit: outcome.rule.limit,
        },
      });
    }
    const blocking = outcomes.filter((o) => o.breached && !o.rule.shadow);
    const empty = { stepUp: [], shadow: shadow.map((o) => o.rule.name), drift: [], errors: [] };

    if (blocking.length) {
      const first = blocking[0] as VelocityOutcome;
      await Promise.all([
        this.#commit(input.audit, sideEvents),
        ...blocking.filter((o) => o.rule.containOnBreach).map((o) => this.#containAgent(input, base, o)),
      ]);
      return {
        allow: false,
        version: policy.version,
        decidedBy: blocking.map((o) => `velocity:${o.rule.name}`),
        message: `velocity rule ${first.rule.name}: ${velocityText(first, agent, uri)}`,
        ...empty,
      };
    }

    const missing = input.chain.filter((_, i) => !facts[i]);
    if (missing.length) {
      await this.#commit(input.audit, sideEvents);
      return {
        allow: false,
        version: policy.version,
        decidedBy: ["unknown-agent"],
        message: `agent ${missing.join(", ")} is not registered`,
        ...empty,
      };
    }
    const entities = this.#entities(input, facts as AgentFacts[]);
    const now = new Date();
    const time = {
      epoch: Math.floor(now.getTime() / 1000),
      hour: now.getUTCHours(),
      weekday: now.getUTCDay(),
    };

    const decidedBy = new Set<string>();
    const stepUpScopes: string[] = [];
    const refusals: string[] = [];
    const errors: string[] = [];
    let allow = true;
    // A plain loop (not forEach) around the calls into WebAssembly: fewer builtin frames for V8 to deoptimize.
    for (let i = 0; i < input.actions.length; i++) {
      const action = input.actions[i] as string;
      const counted = outcomes.filter((o) => o.action === action);
      const count = Math.max(0, ...counted.map((o) => o.count));
      const context: CedarContext = {
        kind: input.kind,
        person: { __entity: { type: "Person", id: input.personId } },
        chain: input.chain.map((id) => ({ __entity: { type: "Agent", id } })),
        chain_depth: input.chain.length,
        risk: riskOf(action),
        step_up: approved.has(action),
        drift: drifting[i] === true,
        velocity_count: count + (record && counted.length ? 1 : 0),
        client_address: input.clientAddress,
        time,
        ...(input.task ? { task: { __entity: { type: "Task", id: input.task.id } } } : {}),
        ...(input.target ? { target: input.target } : {}),
      };
      const result = authorize(policy.setFor(action, uri), {
        principal: { type: "Agent", id: agent },
        action,
        resource: { type: "ResourceServer", id: uri },
        context,
        entities,
      });
      errors.push(...result.errors);
      if (result.allow) {
        for (const id of result.policies) decidedBy.add(`policy:${id}`);
        continue;
      }
      allow = false;
      if (result.policies.length === 0) {
        decidedBy.add("default-deny");
        refusals.push(`no policy permits ${action} on ${uri}`);
        continue;
      }
      for (const id of result.policies) decidedBy.add(`policy:${id}`);
      const notes = result.policies.map((id) => policy.set.annotations[id] ?? {});
      if (notes.some((note) => note.advice === "step_up")) stepUpScopes.push(action);
      else {
        const why = notes.find((note) => note.reason)?.reason;
        refusals.push(
          `${action} on ${uri} is refused by policy ${result.policies.join(", ")}${why ? `: ${why}` : ""}`,
        );
      }
    }
    if (errors.length)
      this.#deps.log.warn({ errors, version: policy.version }, "policies failed to evaluate");

    const drift: string[] = [];
    if (allow) {
      const firsts = await Promise.all(
        input.actions.map((action, i) => (drifting[i] ? usage.record(agent, uri, action) : false)),
      );
      input.actions.forEach((action, i) => {
        if (!firsts[i]) return;
        drift.push(action);
        sideEvents.push({
          ...base,
          type: "drift",
          action: "drift.first_use",
          reason: `first use of ${action} on ${uri} by ${agent}`,
          scopesAsked: [action],
          details: { during: input.kind },
        });
      });
    }
    await this.#commit(input.audit, sideEvents);

    const message = allow
      ? `allowed by ${[...decidedBy].join(", ")}`
      : [...refusals, ...(stepUpScopes.length ? [this.#stepUpText(input, stepUpScopes)] : [])].join("; ");
    return {
      allow,
      version: policy.version,
      decidedBy: [...decidedBy],
      message,
      stepUp: stepUpScopes,
      shadow: shadow.map((o) => o.rule.name),
      drift,
      errors,
    };
  }

  #stepUpText(input: DecisionInput, scopes: string[]): string {
    const window = Math.round(this.#deps.stepUp.windowSeconds / 60);
    return (
      `scope ${scopes.join(" ")} on ${input.resource.uri} is high risk and needs ${input.personEmail}'s approval: ` +
      `start a CIBA request at ${this.#deps.issuer}/backchannel (login_hint=${input.personEmail}, ` +
      `scope=${scopes.join(" ")}, resource=${input.resource.uri}), then exchange again within ${window} minutes of the approval`
    );
  }

  #entities(input: DecisionInput, facts: AgentFacts[]): CedarEntity[] {
    const people = new Map<string, string>([[input.personId, input.personEmail]]);
    const entities: CedarEntity[] = facts.map((agent) => {
      if (!people.has(agent.ownerId)) people.set(agent.ownerId, agent.ownerEmail);
      return {
        uid: { type: "Agent", id: agent.clientId },
        attrs: {
          name: agent.name,
          purpose: agent.purpose,
          owner: { __entity: { type: "Person", id: agent.ownerId } },
        },
        parents: [],
      };
    });
    for (const [id, email] of people)
      entities.push({ uid: { type: "Person", id }, attrs: { email }, parents: [] });
    entities.push({
      uid: { type: "ResourceServer", id: input.resource.uri },
      attrs: { uri: input.resource.uri, name: input.resource.name },
      parents: [],
    });
    if (input.task) {
      entities.push({
        uid: { type: "Task", id: input.task.id },
        attrs: { description: input.task.description ?? "" },
        parents: [],
      });
    }
    return entities;
  }

  #baseEvent(input: DecisionInput, policy: LoadedPolicy): Omit<AuditEventInput, "action" | "type"> {
    return {
      delegatedBy: input.personEmail,
      agentChain: input.chain,
      resource: input.resource.uri,
      scopesAsked: input.actions,
      delegationId: input.delegationId,
      taskId: input.task?.id,
      policyVersion: String(policy.version),
    };
  }

  async #commit(context: AuditContext, events: AuditEventInput[]): Promise<void> {
    await Promise.all(events.map((event) => this.#deps.audit.commit(context, event)));
  }

  /** Suspends the acting agent once, however many of its requests breach at the same moment. */
  async #containAgent(
    input: DecisionInput,
    base: Omit<AuditEventInput, "action" | "type">,
    outcome: VelocityOutcome,
  ) {
    const agent = input.chain[0] as string;
    if (this.#containing.has(agent)) return;
    this.#containing.add(agent);
    const reason = `velocity rule ${outcome.rule.name} breached: ${velocityText(outcome, agent, input.resource.uri)}`;
    try {
      await this.#deps.audit.commit(input.audit, {
        ...base,
        type: "velocity",
        action: "velocity.contain",
        decision: "deny",
        reason: `suspending ${agent}: ${reason}`,
        details: { rule: outcome.rule.name },
      });
      await this.#deps.contain({ ...input.audit, actor: "deputy:velocity" }, agent, reason);
    } catch (error) {
      this.#deps.log.error({ err: error, agent }, "could not suspend an agent that breached a velocity rule");
    } finally {
      this.#containing.delete(agent);
    }
  }
}

function velocityText(outcome: VelocityOutcome, agent: string, uri: string): string {
  const { rule, count, action } = outcome;
  return (
    `${agent} already used ${action} on ${uri} ${count} times ` +
    `for this person in the last ${rule.windowSeconds} s (limit ${rule.limit})`
  );
}
