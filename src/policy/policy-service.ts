// Runtime policy, assembled: the versioned Cedar policy set, velocity rules, drift, human step-up and the
// engine that decides with them. app.ts creates one per process; the issuance policy, the AuthZEN endpoints,
// the admin API and the CIBA approval handler use it.
import type { Redis } from "ioredis";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { PrismaClient, StepUpApproval } from "../generated/prisma/client.ts";
import type { Logger } from "../logger.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import { AgentDirectory } from "./directory.ts";
import { type ContainAgent, PolicyEngine } from "./engine.ts";
import { PolicyStore } from "./policy-store.ts";
import { type StepUpApprovalInput, StepUpService } from "./step-up.ts";
import { UsageTracker } from "./usage.ts";
import { VelocityRules } from "./velocity.ts";

export interface PolicyService {
  store: PolicyStore;
  velocity: VelocityRules;
  stepUp: StepUpService;
  engine: PolicyEngine;
  /** The version in force now, as audit events record it. */
  version(): string;
  /**
   * The hook for the CIBA approval handler: call it when a person approves a backchannel request that asked
   * for high-risk scopes, with the person, the requesting agent, the resource and the approved scopes.
   */
  recordStepUpApproval(context: AuditContext, input: StepUpApprovalInput): Promise<StepUpApproval>;
  close(): void;
}

export async function createPolicyService(deps: {
  prisma: PrismaClient;
  audit: AuditLog;
  bus: InvalidationBus;
  redis: Redis;
  redisPrefix: string;
  issuer: string;
  stepUpWindowSeconds: number;
  contain: ContainAgent;
  log: Logger;
}): Promise<PolicyService> {
  const { prisma, audit, bus, log } = deps;
  const store = new PolicyStore(prisma, audit, bus, log);
  const velocity = new VelocityRules({ prisma, audit, bus, redis: deps.redis, log }, deps.redisPrefix);
  const stepUp = new StepUpService(prisma, audit, deps.stepUpWindowSeconds);
  await Promise.all([store.start(), velocity.start()]);
  const engine = new PolicyEngine({
    policies: store,
    velocity,
    usage: new UsageTracker(prisma),
    stepUp,
    agents: new AgentDirectory(prisma, bus),
    audit,
    contain: deps.contain,
    issuer: deps.issuer,
    log,
  });
  return {
    store,
    velocity,
    stepUp,
    engine,
    version: () => String(store.current().version),
    recordStepUpApproval: (context, input) => stepUp.record(context, input),
    close() {
      store.stop();
      velocity.stop();
    },
  };
}
