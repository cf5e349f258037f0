// Wires revocation together for one process: the service, task completion, its jobs' producer and handlers, and
// the sweep. The server builds it in app.ts; `deputy worker` builds it in src/worker.ts without oidc-provider (it
// reaches Redis through the same storage adapter).
import type { AuditLog } from "../audit/audit-log.ts";
import type { DelegationStore } from "../delegation/delegations.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import type { JobHandler } from "../jobs/handler.ts";
import type { JobQueue } from "../jobs/queue.ts";
import type { Logger } from "../logger.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import { RevocationJobs, revocationJobHandlers } from "./jobs.ts";
import { RevocationService } from "./revocations.ts";
import { Sweeper } from "./sweep.ts";
import { TaskService } from "./tasks.ts";
import { createTokenStore, type TokenAdapters, type TokenStore } from "./token-store.ts";

export interface RevocationRuntimeOptions {
  settings: { sweepSeconds: number; maxDelegationSeconds: number };
  prisma: PrismaClient;
  audit: AuditLog;
  bus: InvalidationBus;
  queue: JobQueue;
  log: Logger;
  /** oidc-provider's storage adapters for access tokens and grants. */
  adapters: TokenAdapters;
  /** In the server: new delegations get their task-end job. */
  delegations?: DelegationStore;
}

export interface RevocationRuntime {
  revocations: RevocationService;
  tasks: TaskService;
  jobs: RevocationJobs;
  sweeper: Sweeper;
  tokens: TokenStore;
  /** The handlers of revocation's jobs, for whichever process runs workers. */
  jobHandlers: JobHandler[];
}

export function createRevocationRuntime(options: RevocationRuntimeOptions): RevocationRuntime {
  const { settings, prisma, audit, bus, log, delegations } = options;
  const jobs = new RevocationJobs(options.queue, log);
  const tokens = createTokenStore(options.adapters);
  const revocations = new RevocationService({ prisma, audit, bus, tokens, jobs, log });
  const sweeper = new Sweeper({
    prisma,
    audit,
    revocations,
    tokens,
    jobs,
    bus,
    log,
    sweepSeconds: settings.sweepSeconds,
    maxDelegationSeconds: settings.maxDelegationSeconds,
  });
  const tasks = new TaskService(prisma, revocations);
  delegations?.onCreated((delegation) => jobs.scheduleTaskEnd(delegation.id, delegation.endsAt));
  const jobHandlers = revocationJobHandlers({
    prisma,
    revocations,
    sweeper,
    tokens,
    sweepSeconds: settings.sweepSeconds,
  });
  return { revocations, tasks, jobs, sweeper, tokens, jobHandlers };
}
