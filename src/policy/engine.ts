// The runtime decision: velocity rules, then the Cedar policy set in force, for one or more actions (scopes)
// of one agent chain acting for one person on one resource server. Token exchange and AuthZEN evaluation both
// come here. Besides the decision it records the facts a decision creates: an agent's first use of an action
// (drift), a shadow rule's would-deny, and containment of an agent that breached a rule.
import type { AuditContext, AuditEventInput, AuditLog } from "../audit/audit-log.ts";
import type { Logger } from "../logger.ts";
import type { CatalogResource } from "../registry/resource-catalog.ts";
import { authorize, type CedarContext, type CedarEntity, type PolicyInputs } from "./cedar.ts";
import type { AgentDirectory, AgentFacts } from "./directory.ts";
import type { LoadedPolicy, PolicyStore } from "./policy-store.ts";
import type { StepUpService } from "./step-up.ts";
import type { UsageTracker } from "./usage.ts";
import type { VelocityCheck, VelocityOutcome, VelocityRules } from "./velocity.ts";

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

interface Facts {
  agent: string;
  uri: string;
  risks: ("low" | "high")[];
  outcomes: VelocityOutcome[];
  approved: Set<string>;
  drifting: boolean[];
  agents: AgentFacts[];
  unknownAgents: string[];
}

interface Verdict {
  allow: boolean;
  decidedBy: string[];
  refusals: string[];
  stepUp: string[];
  errors: string[];
}

const EMPTY_SET: Set<string> = new Set();

function riskOf(resource: CatalogResource, action: string): "low" | "high" {
  for (const scope of resource.scopes) if (scope.name === action) return scope.risk;
  return "low";
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
    const policy = this.#deps.policies.current();
    // The velocity check reserves an evaluation's use before Cedar decides, so concurrent calls are counted
    // exactly; a call refused after the check, or failing, gives its use back.
    const uses = this.#checkVelocity(input);
    try {
      const decision = await this.#conclude(input, policy, await this.#gather(input, uses));
      if (!decision.allow) await this.#release(uses);
      return decision;
    } catch (error) {
      await this.#release(uses);
      throw error;
    }
  }

  #checkVelocity(input: DecisionInput): Promise<VelocityCheck> {
    const { personId: person, resource, actions } = input;
    return this.#deps.velocity.check(
      { person, agent: input.chain[0] as string, resource: resource.uri, actions },
      input.kind === "evaluation",
    );
  }

  /** Gives back a refused evaluation's use. A failure is logged: the use then counts until it leaves the window. */
  async #release(uses: Promise<VelocityCheck>): Promise<void> {
    const checked = await uses.catch(() => undefined); // a failed check recorded nothing
    try {
      await checked?.release();
    } catch (error) {
      this.#deps.log.error({ err: error }, "could not release the velocity use of a refused call");
    }
  }

  /** The decision on what was gathered, and the events it causes. */
  async #conclude(input: DecisionInput, policy: LoadedPolicy, facts: Facts): Promise<Decision> {
    const base = this.#baseEvent(input, policy);
    const sideEvents: AuditEventInput[] = [];
    const shadow: string[] = [];
    const blocking: VelocityOutcome[] = [];
    for (const outcome of facts.outcomes) {
      if (!outcome.breached) continue;
      if (!outcome.rule.shadow) {
        blocking.push(outcome);
        continue;
      }
      shadow.push(outcome.rule.name);
      sideEvents.push({
        ...base,
        action: "velocity.would_deny",
        reason: `shadow velocity rule ${outcome.rule.name} would refuse: ${velocityText(outcome, facts.agent, facts.uri)}`,
        details: {
          during: input.kind,
          rule: outcome.rule.name,
          count: outcome.count,
          limit: outcome.rule.limit,
        },
      });
    }
    const refused = (decidedBy: string[], message: string): Decision => ({
      allow: false,
      version: policy.version,
      decidedBy,
      message,
      stepUp: [],
      shadow,
      drift: [],
      errors: [],
    });

    if (blocking.length) {
      const containing: Promise<void>[] = [];
      const names: string[] = [];
      for (const outcome of blocking) {
        names.push(`velocity:${outcome.rule.name}`);
        if (outcome.rule.containOnBreach) containing.push(this.#containAgent(input, base, outcome));
      }
      await Promise.all([this.#commit(input.audit, sideEvents), ...containing]);
      const first = blocking[0] as VelocityOutcome;
      return refused(
        names,
        `velocity rule ${first.rule.name}: ${velocityText(first, facts.agent, facts.uri)}`,
      );
    }
    if (facts.unknownAgents.length) {
      await this.#commit(input.audit, sideEvents);
      return refused(["unknown-agent"], `agent ${facts.unknownAgents.join(", ")} is not registered`);
    }

    const verdict = this.#judge(input, policy, facts);
    if (verdict.errors.length) {
      this.#deps.log.warn({ errors: verdict.errors, version: policy.version }, "policies failed to evaluate");
    }
    const drift = verdict.allow ? await this.#recordFirstUses(input, facts, base, sideEvents) : [];
    await this.#commit(input.audit, sideEvents);
    let message = `allowed by ${verdict.decidedBy.join(", ")}`;
    if (!verdict.allow) {
      const parts = verdict.refusals.slice();
      if (verdict.stepUp.length) parts.push(this.#stepUpText(input, verdict.stepUp));
      message = parts.join("; ");
    }
    return {
      allow: verdict.allow,
      version: policy.version,
      decidedBy: verdict.decidedBy,
      message,
      stepUp: verdict.stepUp,
      shadow,
      drift,
      errors: verdict.errors,
    };
  }

  /** What the decision needs from Redis and the database, fetched at once. */
  async #gather(input: DecisionInput, uses: Promise<VelocityCheck>): Promise<Facts> {
    const { stepUp, usage, agents } = this.#deps;
    const agent = input.chain[0] as string;
    const uri = input.resource.uri;
    const risks: ("low" | "high")[] = [];
    let highRisk = false;
    const firstUse: Promise<boolean>[] = [];
    for (const action of input.actions) {
      const risk = riskOf(input.resource, action);
      risks.push(risk);
      if (risk === "high") highRisk = true;
      firstUse.push(usage.isNew(agent, uri, action));
    }
    const chain = [...new Set(input.chain)];
    const lookups: Promise<AgentFacts | undefined>[] = [];
    for (const id of chain) lookups.push(agents.find(id));
    const [{ outcomes }, approved, drifting, found] = await Promise.all([
      uses,
      highRisk ? stepUp.approvedScopes(input.personId, agent, uri) : EMPTY_SET,
      Promise.all(firstUse),
      Promise.all(lookups),
    ]);
    const known: AgentFacts[] = [];
    const unknownAgents: string[] = [];
    for (let i = 0; i < chain.length; i++) {
      const facts = found[i];
      if (facts) known.push(facts);
      else unknownAgents.push(chain[i] as string);
    }
    return { agent, uri, risks, outcomes, approved, drifting, agents: known, unknownAgents };
  }

  /** Cedar, once per action, against the slice of the policy set that can apply to it. */
  #judge(input: DecisionInput, policy: LoadedPolicy, facts: Facts): Verdict {
    let entities: CedarEntity[] | undefined;
    const now = new Date();
    const time = {
      epoch: Math.floor(now.getTime() / 1000),
      hour: now.getUTCHours(),
      weekday: now.getUTCDay(),
    };
    const chain: CedarContext[] = [];
    for (const id of input.chain) chain.push({ __entity: { type: "Agent", id } });
    const decidedBy = new Set<string>();
    const verdict: Verdict = { allow: true, decidedBy: [], refusals: [], stepUp: [], errors: [] };
    const recorded = input.kind === "evaluation";
    for (let i = 0; i < input.actions.length; i++) {
      const action = input.actions[i] as string;
      let count = 0;
      let counted = false;
      for (const outcome of facts.outcomes) {
        if (outcome.action !== action) continue;
        counted = true;
        if (outcome.count > count) count = outcome.count;
      }
      const context: CedarContext = {
        kind: input.kind,
        person: { __entity: { type: "Person", id: input.personId } },
        chain,
        chain_depth: input.chain.length,
        risk: facts.risks[i] as string,
        step_up: facts.approved.has(action),
        drift: facts.drifting[i] === true,
        velocity_count: count + (recorded && counted ? 1 : 0),
        client_address: input.clientAddress,
        time,
      };
      if (input.task) context.task = { __entity: { type: "Task", id: input.task.id } };
      if (input.target) context.target = input.target;
      // Cedar is handed only what the applicable policies can observe: parsing the rest costs more than deciding.
      const slice = policy.setFor(action, facts.uri);
      if (slice.inputs.entities) entities ??= this.#entities(input, facts.agents);
      const result = authorize(slice.id, {
        principal: { type: "Agent", id: facts.agent },
        action,
        resource: { type: "ResourceServer", id: facts.uri },
        context: observable(context, slice.inputs.context),
        entities: slice.inputs.entities && entities ? entities : [],
      });
      for (const error of result.errors) verdict.errors.push(error);
      for (const id of result.policies) decidedBy.add(`policy:${id}`);
      if (result.allow) continue;
      verdict.allow = false;
      if (result.policies.length === 0) {
        decidedBy.add("default-deny");
        verdict.refusals.push(`no policy permits ${action} on ${facts.uri}`);
        continue;
      }
      let stepUp = false;
      let why: string | undefined;
      for (const id of result.policies) {
        const note = policy.set.annotations[id];
        if (note?.advice === "step_up") stepUp = true;
        if (!why && note?.reason) why = note.reason;
      }
      if (stepUp) verdict.stepUp.push(action);
      else {
        verdict.refusals.push(
          `${action} on ${facts.uri} is refused by policy ${result.policies.join(", ")}${why ? `: ${why}` : ""}`,
        );
      }
    }
    verdict.decidedBy = [...decidedBy];
    return verdict;
  }

  /** After an allow: an action this agent had never used here is recorded, and audited as drift, once. */
  async #recordFirstUses(
    input: DecisionInput,
    facts: Facts,
    base: Omit<AuditEventInput, "action" | "type">,
    sideEvents: AuditEventInput[],
  ): Promise<string[]> {
    const drift: string[] = [];
    for (let i = 0; i < input.actions.length; i++) {
      if (!facts.drifting[i]) continue;
      const action = input.actions[i] as string;
      if (!(await this.#deps.usage.record(facts.agent, facts.uri, action))) continue;
      drift.push(action);
      sideEvents.push({
        ...base,
        action: "drift.first_use",
        reason: `first use of ${action} on ${facts.uri} by ${facts.agent}`,
        scopesAsked: [action],
        details: { during: input.kind },
      });
    }
    return drift;
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
      taskDescription: input.task?.description ?? undefined,
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

function observable(context: CedarContext, names: PolicyInputs["context"]): CedarContext {
  if (names === "all") return context;
  const kept: CedarContext = {};
  for (const name of names) if (name in context) kept[name] = context[name] as CedarContext[string];
  return kept;
}

function velocityText(outcome: VelocityOutcome, agent: string, uri: string): string {
  const { rule, count, action } = outcome;
  return (
    `${agent} already used ${action} on ${uri} ${count} times ` +
    `for this person in the last ${rule.windowSeconds} s (limit ${rule.limit})`
  );
}
