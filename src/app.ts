// Assembles a Deputy server: connections, registry services, oidc-provider and the HTTP routes.
import { Router } from "@koa/router";
import Koa from "koa";
import compose from "koa-compose";
import type Provider from "oidc-provider";
import { ensureBootstrapAdmin } from "./admin/bootstrap.ts";
import { adminRouter } from "./admin/routes.ts";
import { AuditLog } from "./audit/audit-log.ts";
import { AuditTrail } from "./audit/audit-trail.ts";
import { auditProviderEndpoints } from "./audit/provider-audit.ts";
import { Evaluator } from "./authzen/evaluator.ts";
import { authzenRouter, isAuthzenPath } from "./authzen/routes.ts";
import type { Config } from "./config.ts";
import { type Database, openDatabase } from "./db/connect.ts";
import { GroupCommitWriter } from "./db/group-commit.ts";
import { DelegationStore } from "./delegation/delegations.ts";
import { createInvalidationBus, type InvalidationBus } from "./events/invalidation-bus.ts";
import { registerTokenExchange } from "./exchange/token-exchange-grant.ts";
import { accessLog, jsonErrors, requestId, securityHeaders } from "./http/middleware.ts";
import { trustProxies } from "./http/proxy.ts";
import { createPeopleUi } from "./interaction/index.ts";
import { CookieKeys } from "./interaction/keys.ts";
import type { Logger } from "./logger.ts";
import { createProviderAdapter } from "./oauth/adapter.ts";
import { ClientStore } from "./oauth/client-store.ts";
import { servePublishedKeys } from "./oauth/jwks-route.ts";
import { answerJwtAccessTokens } from "./oauth/jwt-endpoints.ts";
import { createProvider } from "./oauth/provider.ts";
import { PublishedKeys } from "./oauth/published-keys.ts";
import { PushedRequestClaims } from "./oauth/pushed-requests.ts";
import { loadPrivateKeys, loadPublicKeys, loadSigningKeys } from "./oauth/signing-keys.ts";
import { answerTokenRequests } from "./oauth/token-endpoint.ts";
import { createPolicyService, type PolicyService } from "./policy/policy-service.ts";
import { connectRedis, type RedisConnection } from "./redis/connect.ts";
import { AgentService } from "./registry/agents.ts";
import { PeopleService } from "./registry/people.ts";
import { ResourceCatalog } from "./registry/resource-catalog.ts";
import { ResourceServerService } from "./registry/resource-servers.ts";
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
  close(): Promise<void>;
}

export async function createDeputy(config: Config, log: Logger): Promise<Deputy> {
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
    return await assemble(config, log, db, redis);
  } catch (error) {
    await redis?.close();
    await db.close();
    throw error;
  }
}

async function assemble(config: Config, log: Logger, db: Database, redis: RedisConnection): Promise<Deputy> {
  const { prisma } = db;
  const bus = await createInvalidationBus(redis.redis, redis.duplicate(), config.redisPrefix);
  const writer = new GroupCommitWriter(prisma, db.sql);
  const audit = new AuditLog(prisma, writer, {
    measurementOnlySkipCommitEvents: config.audit.benchSkipEvents,
  });
  if (config.audit.benchSkipEvents)
    log.warn("DEPUTY_BENCH_AUDIT_OFF: exchanges write NO audit events (benchmark measurement only)");
  if (config.issuer.startsWith("https://") && !config.trustedProxies)
    log.warn(
      "ISSUER is https but TRUST_PROXY is off: behind a TLS-terminating proxy, set TRUST_PROXY=on so that " +
        "endpoint URLs, DPoP checks and cookies follow the https the clients use",
    );
  const auditTrail = new AuditTrail(prisma, audit, config.audit);
  const clients = new ClientStore(prisma, bus);
  const catalog = new ResourceCatalog(prisma, bus);
  const delegations = new DelegationStore(prisma, audit, bus, config.maxDelegationDepth);
  await ensureBootstrapAdmin({
    prisma,
    audit,
    dataDir: config.dataDir,
    secret: config.bootstrapAdminSecret,
    log,
  });

  // oidc-provider signs with the keys loaded at start, and the cookies with the secret of the active one; /jwks,
  // Deputy's own verification and the cookie secrets accepted follow the database.
  const signingKeys = await loadSigningKeys(prisma);
  const cookieKeys = await CookieKeys.create(() => loadPrivateKeys(prisma), bus, log);
  const published = new PublishedKeys(() => loadPublicKeys(prisma), bus);
  const publicKeys = published.getKey;
  const policy = await createPolicyService({
    prisma,
    audit,
    bus,
    redis: redis.redis,
    redisPrefix: config.redisPrefix,
    issuer: config.issuer,
    stepUpWindowSeconds: config.stepUpWindowSeconds,
    log,
    // Containment takes the registry's suspension path, so whatever suspension triggers applies.
    contain: async (context, clientId, reason) =>
      void (await agents.transition(context, clientId, "suspend", reason)),
  });
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
  const provider = createProvider({
    config,
    adapter: createProviderAdapter(redis.redis, `${config.redisPrefix}oidc:`, clients),
    clients,
    resources: catalog,
    delegations,
    signingKeys,
    hooks: peopleUi.hooks,
    pushedRequests: new PushedRequestClaims(redis.redis, config.redisPrefix),
  });
  registerTokenExchange({
    config,
    provider,
    prisma,
    audit,
    clients,
    resources: catalog,
    delegations,
    signingKeys: publicKeys,
    policy: policy.exchangePolicy,
    policyVersion: policy.version,
  });
  provider.on("server_error", (_ctx, error) => log.error({ err: error }, "oidc-provider server error"));
  auditProviderEndpoints(provider, { audit, prisma, log });
  // Inside the audit middleware, so that the audit sees the answers it corrects.
  answerTokenRequests(provider);
  // After the audit middleware, so that the audit sees the answers it gives for JWTs.
  answerJwtAccessTokens(provider, { prisma, delegations, signingKeys: publicKeys });
  servePublishedKeys(provider, published);

  // Revocation: task ends, suspensions, offboarding, RFC 7009 cascades, the sweep, and their BullMQ jobs.
  const revocation = createRevocationRuntime({
    ...{ config, prisma, audit, bus, redis, log, delegations, provider },
    adapters: { accessTokens: provider.AccessToken.adapter, grants: provider.Grant.adapter },
  });
  const people = new PeopleService(prisma, audit, bus, revocation.revocations);
  const resources = new ResourceServerService(prisma, audit, bus, config.issuer);
  const agents = new AgentService(prisma, audit, bus, revocation.revocations);

  const own = new Router();
  own.use(jsonErrors(log), securityHeaders);
  own.get("/healthz", async (ctx) => {
    await Promise.all([db.sql.query("SELECT 1"), redis.redis.ping()]);
    ctx.body = { status: "ok" };
  });
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
    revocation,
    keyRetiringSeconds: config.keyRetiringSeconds,
  });
  const evaluator = new Evaluator({
    provider,
    prisma,
    delegations,
    signingKeys: publicKeys,
    engine: policy.engine,
    policyVersion: policy.version,
    audit,
  });
  const authzen = authzenRouter({ issuer: config.issuer, clients, resources: catalog, audit, evaluator });
  const authzenStack = compose([
    jsonErrors(log),
    securityHeaders,
    authzen.routes(),
    authzen.allowedMethods(),
  ]);

  const adminStack = compose([jsonErrors(log), securityHeaders, admin.routes()]);
  const providerCallback = provider.callback();

  const app = new Koa();
  trustProxies(app, config.trustedProxies);
  app.silent = true;
  app.use(requestId);
  app.use(accessLog(log));
  app.use(own.routes());
  app.use(async (ctx, next) => {
    if (ctx.path === "/admin/v1" || ctx.path.startsWith("/admin/v1/"))
      return adminStack(ctx as never, async () => {});
    // AuthZEN: per-action decisions for resource servers.
    if (isAuthzenPath(ctx.path)) return authzenStack(ctx as never, async () => {});
    await next();
  });
  app.use(
    revocation.routes({ authenticatePerson: (ctx, purpose, csrf) => peopleUi.personFor(ctx, purpose, csrf) }),
  );
  // Pages for people: sign-in, consent, approvals, my delegations; the admin console.
  app.use(
    peopleUi.routes(provider, {
      revokeDelegation: async (context, id, reason) =>
        void (await revocation.revocations.revoke(
          { delegations: [id] },
          { trigger: "person", reason, target: id },
          context,
        )),
      recordStepUp: policy.recordStepUpApproval,
      agents,
    }),
  );
  app.use(async (ctx) => {
    // RFC 8414 §3: the OAuth metadata document carries the same content as OpenID discovery.
    if (ctx.path === "/.well-known/oauth-authorization-server")
      ctx.path = "/.well-known/openid-configuration";
    ctx.respond = false;
    await providerCallback(ctx.req, ctx.res);
  });

  if (config.workers === "inline") {
    await revocation.startWorkers().catch(async (error: unknown) => {
      await revocation.close();
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
    async close() {
      await revocation.close();
      policy.close();
      await writer.drain();
      await bus.close();
      await redis.close();
      await db.close();
    },
  };
}
