// The composition root: the one module that knows every other. It opens the connections, builds the services
// bottom-up in the order of the layers (ARCHITECTURE.md), wires the ports (what oidc-provider asks of the pages,
// what the registry asks of revocation) and mounts the HTTP surfaces from one table.
import Koa, { type Context, type Next } from "koa";
import compose from "koa-compose";
import type Provider from "oidc-provider";
import { ensureBootstrapAdmin } from "./admin/bootstrap.ts";
import { adminRouter } from "./admin/routes.ts";
import { auditArchiveJob } from "./audit/archive-job.ts";
import { AuditLog } from "./audit/audit-log.ts";
import { AuditTrail } from "./audit/audit-trail.ts";
import { GroupCommitWriter } from "./audit/group-commit.ts";
import { Evaluator } from "./authzen/evaluator.ts";
import { authzenRouter, isAuthzenPath } from "./authzen/routes.ts";
import type { Config } from "./config.ts";
import { type Database, openDatabase } from "./db/connect.ts";
import { DelegationStore } from "./delegation/delegations.ts";
import { PresentedTokens } from "./delegation/presented-token.ts";
import { accessLog, jsonErrors, requestId, securityHeaders } from "./http/middleware.ts";
import { trustProxies } from "./http/proxy.ts";
import { issuancePolicy } from "./issuance/issuance-policy.ts";
import { createJobs, type Jobs } from "./jobs/jobs.ts";
import type { JobQueue } from "./jobs/queue.ts";
import type { Logger } from "./logger.ts";
import { createProviderAdapter } from "./oauth/adapter.ts";
import { ClientStore } from "./oauth/client-store.ts";
import { reportServerErrors } from "./oauth/database-outage.ts";
import { createProvider } from "./oauth/provider.ts";
import { useProviderMiddlewares } from "./oauth/provider-middlewares.ts";
import { PublishedKeys } from "./oauth/published-keys.ts";
import { PushedRequestClaims } from "./oauth/pushed-requests.ts";
import { RevocationCascade } from "./oauth/rfc7009.ts";
import { loadPrivateKeys, loadPublicKeys, loadSigningKeys } from "./oauth/signing-keys.ts";
import { storedAccessTokens } from "./oauth/stored-tokens.ts";
import { isTaskPath, taskRoutes } from "./oauth/task-route.ts";
import { registerTokenExchange } from "./oauth/token-exchange-grant.ts";
import { createPeopleUi, isPagePath } from "./pages/index.ts";
import { CookieKeys } from "./pages/keys.ts";
import { createPolicyService, type PolicyService } from "./policy/policy-service.ts";
import { connectRedis, type RedisConnection } from "./redis/connect.ts";
import { createInvalidationBus, type InvalidationBus } from "./redis/invalidation-bus.ts";
import { AgentService } from "./registry/agents.ts";
import { PeopleService } from "./registry/people.ts";
import { ResourceCatalog } from "./registry/resource-catalog.ts";
import { ResourceServerService } from "./registry/resource-servers.ts";
import { RevocationList } from "./revocation/revocation-list.ts";
import { createRevocationRuntime, type RevocationRuntime } from "./revocation/runtime.ts";

export interface Deputy {
  config: Config;
  app: Koa;
  provider: Provider;
  db: Database;
  redis: RedisConnection;
  bus: InvalidationBus;
  audit: AuditLog;
  auditTrail: AuditTrail;
  delegations: DelegationStore;
  policy: PolicyService;
  people: PeopleService;
  resources: ResourceServerService;
  agents: AgentService;
  revocation: RevocationRuntime;
  jobs: JobQueue;
  close(): Promise<void>;
}

export interface DeputyOptions {
  /** The audit writer over group commit (a benchmark prices auditing with one of its own; nothing else should). */
  auditLog?: (writer: GroupCommitWriter) => AuditLog;
}

export async function createDeputy(
  config: Config,
  log: Logger,
  options: DeputyOptions = {},
): Promise<Deputy> {
  const db = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    log: (msg, fields) => log.info(fields ?? {}, msg),
    warn: (msg, fields) => log.warn(fields ?? {}, msg),
  });
  let redis: RedisConnection | undefined;
  try {
    redis = await connectRedis({
      url: config.redisUrl,
      dataDir: config.dataDir,
      allowPrivate: config.env === "development",
      log: (msg, fields) => log.info(fields ?? {}, msg),
    });
    return await assemble(config, log, db, redis, options);
  } catch (error) {
    await redis?.close();
    await db.close();
    throw error;
  }
}

/** An HTTP surface of Deputy's own: the paths it answers and its middleware stack. */
interface Surface {
  name: string;
  answers(path: string): boolean;
  stack(ctx: Context, next: Next): Promise<unknown>;
  /** A request of its paths that it does not answer goes on to oidc-provider (else its own 404/405 stands). */
  fallsThrough?: true;
}

async function assemble(
  config: Config,
  log: Logger,
  db: Database,
  redis: RedisConnection,
  options: DeputyOptions,
): Promise<Deputy> {
  const { prisma } = db;
  if (config.issuer.startsWith("https://") && !config.trustedProxies)
    log.warn(
      "ISSUER is https but TRUST_PROXY is off: behind a TLS-terminating proxy, set TRUST_PROXY=on so that " +
        "endpoint URLs, DPoP checks and cookies follow the https the clients use",
    );

  // Infrastructure and the audit trail.
  const bus = await createInvalidationBus(redis.redis, redis.duplicate(), config.redisPrefix);
  const writer = new GroupCommitWriter(prisma, db.sql);
  const audit = options.auditLog?.(writer) ?? new AuditLog(writer);
  const auditTrail = new AuditTrail(prisma, audit, config.audit);
  const jobs: Jobs = createJobs(redis, config.redisPrefix, log);

  // Delegations and the registry.
  const delegations = new DelegationStore(prisma, audit, bus, config.maxDelegationDepth);
  const clients = new ClientStore(prisma, bus);
  const catalog = new ResourceCatalog(prisma, bus);
  await ensureBootstrapAdmin({
    prisma,
    audit,
    dataDir: config.dataDir,
    secret: config.bootstrapAdminSecret,
    log,
  });

  // Revocation: task ends, suspensions, offboarding, RFC 7009 cascades, the sweep. It reaches the tokens in Redis
  // through the storage adapter oidc-provider is given below.
  // Tokens revoked while their delegation stays active: absent whatever Redis holds (revocation-list.ts).
  const revocationList = new RevocationList(prisma, bus, log);
  const providerAdapter = createProviderAdapter(
    redis.redis,
    `${config.redisPrefix}oidc:`,
    clients,
    revocationList,
  );
  const revocation = createRevocationRuntime({
    settings: config,
    prisma,
    audit,
    bus,
    queue: jobs.queue,
    log,
    adapters: { accessTokens: providerAdapter("AccessToken"), grants: providerAdapter("Grant") },
    delegations,
  });
  const { revocations } = revocation;
  const resources = new ResourceServerService(prisma, audit, bus, config.issuer);
  const agents = new AgentService(prisma, audit, bus, revocations);

  // Policy. Containment takes the registry's suspension path, so whatever suspension triggers applies.
  const policy = await createPolicyService({
    prisma,
    audit,
    bus,
    redis: redis.redis,
    redisPrefix: config.redisPrefix,
    issuer: config.issuer,
    stepUpWindowSeconds: config.stepUpWindowSeconds,
    log,
    contain: async (context, clientId, reason) =>
      void (await agents.transition(context, clientId, "suspend", reason)),
  });

  // oidc-provider signs with the keys loaded at start, and the cookies with the secret of the active one; /jwks,
  // Deputy's own verification and the cookie secrets accepted follow the database.
  const signingKeys = await loadSigningKeys(prisma);
  const cookieKeys = await CookieKeys.create(() => loadPrivateKeys(prisma), bus, log);
  const published = new PublishedKeys(() => loadPublicKeys(prisma), bus);

  // The people's pages implement what oidc-provider asks of them (oauth/provider-hooks.ts).
  const peopleUi = createPeopleUi({
    config,
    prisma,
    redis: redis.redis,
    audit,
    bus,
    delegations,
    cookieKeys,
    log,
  });
  // A new password, lost admin rights and offboarding end the person's sessions (the pages keep them).
  const people = new PeopleService(prisma, audit, bus, revocations, peopleUi.sessions);
  const cascade = new RevocationCascade({ prisma, revocations });
  const provider = createProvider({
    config,
    prisma,
    audit,
    adapter: providerAdapter,
    clients,
    resources: catalog,
    delegations,
    signingKeys,
    hooks: peopleUi.hooks,
    cascade,
    pushedRequests: new PushedRequestClaims(redis.redis, config.redisPrefix),
  });
  reportServerErrors(provider, log);
  const tokens = new PresentedTokens({
    issuer: config.issuer,
    prisma,
    signingKeys: published.getKey,
    stored: storedAccessTokens(provider),
  });
  registerTokenExchange(provider, {
    issuer: config.issuer,
    prisma,
    audit,
    tokens,
    resources: catalog,
    delegations,
    activeAgent: async (clientId) => {
      const agent = await clients.find(clientId);
      if (agent?.deputy_kind !== "agent") return undefined;
      return {
        mayDelegateTo: (agent.deputy_may_delegate_to as string[] | undefined) ?? [],
        maxDepth: Number(agent.deputy_max_depth ?? 1),
      };
    },
    policy: issuancePolicy(policy.engine),
    policyVersion: policy.version,
    tokenTtlCap: config.tokenTtlCap,
    maxDelegationDepth: config.maxDelegationDepth,
  });
  useProviderMiddlewares(provider, {
    ...{ audit, prisma, log, tokens, delegations, cascade, published },
    renderError: peopleUi.hooks.renderError,
  });

  // The surfaces, each with its own stack; whatever none answers goes to oidc-provider.
  const evaluator = new Evaluator({
    tokens,
    delegations,
    engine: policy.engine,
    policyVersion: policy.version,
    audit,
  });
  const authzen = authzenRouter({ issuer: config.issuer, clients, resources: catalog, audit, evaluator });
  const admin = adminRouter({
    provider,
    prisma,
    audit,
    auditTrail,
    bus,
    clients,
    people,
    resources,
    agents,
    policy,
    revocations,
    jobs: jobs.queue,
    keyRetiringSeconds: config.keyRetiringSeconds,
  });
  const surfaces: Surface[] = [
    {
      name: "health",
      answers: (path) => path === "/healthz",
      fallsThrough: true,
      stack: compose([
        jsonErrors(log),
        securityHeaders,
        async (ctx, next) => {
          if (ctx.method !== "GET" && ctx.method !== "HEAD") return next();
          await Promise.all([db.sql.query("SELECT 1"), redis.redis.ping()]);
          ctx.body = { status: "ok" };
        },
      ]),
    },
    {
      name: "admin API",
      answers: (path) => path === "/admin/v1" || path.startsWith("/admin/v1/"),
      stack: compose([jsonErrors(log), securityHeaders, admin.routes()]),
    },
    {
      name: "AuthZEN",
      answers: isAuthzenPath,
      stack: compose([jsonErrors(log), securityHeaders, authzen.routes(), authzen.allowedMethods()]),
    },
    {
      name: "task completion",
      answers: isTaskPath,
      stack: taskRoutes({
        provider,
        tasks: revocation.tasks,
        log,
        authenticatePerson: (ctx, purpose, csrf) => peopleUi.personFor(ctx, purpose, csrf),
      }),
    },
    {
      name: "people's pages",
      answers: isPagePath,
      fallsThrough: true,
      stack: peopleUi.routes(provider, {
        revokeDelegation: async (context, id, reason) =>
          void (await revocations.revoke(
            { delegations: [id] },
            { trigger: "person", reason, target: id },
            context,
          )),
        recordStepUp: policy.recordStepUpApproval,
        agents,
      }),
    },
  ];
  const providerCallback = provider.callback();

  const app = new Koa();
  trustProxies(app, config.trustedProxies);
  app.silent = true;
  app.use(requestId);
  app.use(accessLog(log));
  app.use(async (ctx, next) => {
    const surface = surfaces.find((candidate) => candidate.answers(ctx.path));
    if (!surface) return next();
    return surface.stack(ctx, surface.fallsThrough ? next : async () => {});
  });
  app.use(async (ctx) => {
    // RFC 8414 §3: the OAuth metadata document carries the same content as OpenID discovery.
    if (ctx.path === "/.well-known/oauth-authorization-server")
      ctx.path = "/.well-known/openid-configuration";
    ctx.respond = false;
    await providerCallback(ctx.req, ctx.res);
  });

  // The jobs this process knows, from the modules that own them; run here unless DEPUTY_WORKERS=off.
  jobs.handle([
    ...revocation.jobHandlers,
    auditArchiveJob({ prisma, audit, dir: config.audit.archiveDir, hotDays: config.audit.hotDays }),
  ]);
  if (config.workers === "inline") {
    await jobs.startWorkers(config.sweepSeconds).catch(async (error: unknown) => {
      await jobs.close();
      throw error;
    });
  }

  return {
    config,
    app,
    provider,
    db,
    redis,
    bus,
    audit,
    auditTrail,
    delegations,
    policy,
    people,
    resources,
    agents,
    revocation,
    jobs: jobs.queue,
    async close() {
      await jobs.close();
      revocationList.close();
      policy.close();
      await writer.drain();
      await bus.close();
      await redis.close();
      await db.close();
    },
  };
}
