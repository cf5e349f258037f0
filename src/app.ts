// Assembles a Deputy server: connections, registry services, oidc-provider and the HTTP routes.
import { Router } from "@koa/router";
import { createLocalJWKSet } from "jose";
import Koa from "koa";
import compose from "koa-compose";
import type Provider from "oidc-provider";
import { ensureBootstrapAdmin } from "./admin/bootstrap.ts";
import { adminRouter } from "./admin/routes.ts";
import { AuditLog } from "./audit/audit-log.ts";
import type { Config } from "./config.ts";
import { type Database, openDatabase } from "./db/connect.ts";
import { GroupCommitWriter } from "./db/group-commit.ts";
import { DelegationStore } from "./delegation/delegations.ts";
import { createInvalidationBus, type InvalidationBus } from "./events/invalidation-bus.ts";
import { registerTokenExchange } from "./exchange/token-exchange-grant.ts";
import { accessLog, jsonErrors, requestId, securityHeaders } from "./http/middleware.ts";
import type { Logger } from "./logger.ts";
import { createProviderAdapter } from "./oauth/adapter.ts";
import { ClientStore } from "./oauth/client-store.ts";
import { createProvider } from "./oauth/provider.ts";
import { loadSigningKeys, publicPart } from "./oauth/signing-keys.ts";
import { connectRedis, type RedisConnection } from "./redis/connect.ts";
import { AgentService } from "./registry/agents.ts";
import { PeopleService } from "./registry/people.ts";
import { ResourceCatalog } from "./registry/resource-catalog.ts";
import { ResourceServerService } from "./registry/resource-servers.ts";

export interface Deputy {
  config: Config;
  app: Koa;
  provider: Provider;
  db: Database;
  redis: RedisConnection;
  bus: InvalidationBus;
  audit: AuditLog;
  delegations: DelegationStore;
  people: PeopleService;
  resources: ResourceServerService;
  agents: AgentService;
  close(): Promise<void>;
}

export async function createDeputy(config: Config, log: Logger): Promise<Deputy> {
  const db = await openDatabase({
    databaseUrl: config.databaseUrl,
    dataDir: config.dataDir,
    log: (msg, fields) => log.info(fields ?? {}, msg),
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
  const writer = new GroupCommitWriter(prisma);
  const audit = new AuditLog(prisma, writer);
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

  const signingKeys = await loadSigningKeys(prisma);
  const provider = createProvider({
    config,
    adapter: createProviderAdapter(redis.redis, `${config.redisPrefix}oidc:`, clients),
    clients,
    resources: catalog,
    delegations,
    signingKeys,
  });
  registerTokenExchange({
    config,
    provider,
    prisma,
    audit,
    clients,
    resources: catalog,
    delegations,
    signingKeys: createLocalJWKSet({ keys: signingKeys.map(publicPart) }),
    // The policy issue replaces this with Cedar policies and velocity rules.
    policy: async () => ({ allow: true }),
  });
  provider.on("server_error", (_ctx, error) => log.error({ err: error }, "oidc-provider server error"));

  const people = new PeopleService(prisma, audit, bus);
  const resources = new ResourceServerService(prisma, audit, bus);
  const agents = new AgentService(prisma, audit, bus);

  const own = new Router();
  own.use(jsonErrors(log), securityHeaders);
  own.get("/healthz", async (ctx) => {
    await Promise.all([db.sql.query("SELECT 1"), redis.redis.ping()]);
    ctx.body = { status: "ok" };
  });
  const admin = adminRouter({ provider, prisma, audit, clients, people, resources, agents });

  const adminStack = compose([jsonErrors(log), securityHeaders, admin.routes(), admin.allowedMethods()]);
  const providerCallback = provider.callback();

  const app = new Koa({ proxy: false });
  app.silent = true;
  app.use(requestId);
  app.use(accessLog(log));
  app.use(own.routes());
  app.use(async (ctx, next) => {
    if (ctx.path === "/admin/v1" || ctx.path.startsWith("/admin/v1/"))
      return adminStack(ctx as never, async () => {});
    await next();
  });
  app.use(async (ctx) => {
    // RFC 8414 §3: the OAuth metadata document carries the same content as OpenID discovery.
    if (ctx.path === "/.well-known/oauth-authorization-server")
      ctx.path = "/.well-known/openid-configuration";
    ctx.respond = false;
    await providerCallback(ctx.req, ctx.res);
  });

  return {
    config,
    app,
    provider,
    db,
    redis,
    bus,
    audit,
    delegations,
    people,
    resources,
    agents,
    async close() {
      await writer.drain();
      await bus.close();
      await redis.close();
      await db.close();
    },
  };
}
