// Resource servers: the APIs agents get tokens for, with their scopes and how tokens for them look.

import { randomBytes } from "node:crypto";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import { isUuid } from "../db/ids.ts";
import { isUniqueViolation } from "../db/prisma-errors.ts";
import type { PrismaClient, ResourceScope, ResourceServer } from "../generated/prisma/client.ts";
import { conflict, notFound } from "../http/api-error.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import { generateClientSecret, hashClientSecret } from "../security/secrets.ts";
import { refuseReservedResource } from "./reserved-resources.ts";

export interface ScopeInput {
  name: string;
  description: string;
  risk: "low" | "high";
}

export interface ResourceInput {
  uri: string;
  name: string;
  scopes: ScopeInput[];
  token_format?: "opaque" | "jwt";
  token_ttl_seconds?: number;
  dpop_required?: boolean;
}

export type ResourceUpdate = Partial<Omit<ResourceInput, "uri">>;

export interface ResourceView {
  id: string;
  uri: string;
  name: string;
  client_id: string;
  scopes: ScopeInput[];
  token_format: "opaque" | "jwt";
  token_ttl_seconds: number;
  dpop_required: boolean;
  created_at: string;
  updated_at: string;
}

type ResourceRow = ResourceServer & { scopes: ResourceScope[] };

function resourceView(row: ResourceRow): ResourceView {
  return {
    id: row.id,
    uri: row.uri,
    name: row.name,
    client_id: row.clientId,
    scopes: row.scopes
      .map(({ name, description, risk }) => ({ name, description, risk }))
      .sort((a, b) => a.name.localeCompare(b.name)),
    token_format: row.tokenFormat,
    token_ttl_seconds: row.tokenTtlSeconds,
    dpop_required: row.dpopRequired,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}

export class ResourceServerService {
  readonly #prisma: PrismaClient;
  readonly #audit: AuditLog;
  readonly #bus: InvalidationBus;
  readonly #issuer: string;

  /** `issuer`: Deputy's own URI, which no resource server may take (nor anything under it). */
  constructor(prisma: PrismaClient, audit: AuditLog, bus: InvalidationBus, issuer: string) {
    this.#prisma = prisma;
    this.#audit = audit;
    this.#bus = bus;
    this.#issuer = issuer;
  }

  /** Registers a resource server; the returned secret is shown once and stored only as a hash. */
  async create(
    context: AuditContext,
    input: ResourceInput,
  ): Promise<ResourceView & { client_secret: string }> {
    refuseReservedResource(input.uri, this.#issuer);
    const clientSecret = generateClientSecret();
    try {
      const view = await this.#prisma.$transaction(async (tx) => {
        const row = await tx.resourceServer.create({
          data: {
            uri: input.uri,
            name: input.name,
            tokenFormat: input.token_format,
            tokenTtlSeconds: input.token_ttl_seconds,
            dpopRequired: input.dpop_required,
            clientId: `rs_${randomBytes(12).toString("base64url")}`,
            clientSecretHash: hashClientSecret(clientSecret),
            scopes: { create: input.scopes },
          },
          include: { scopes: true },
        });
        const created = resourceView(row);
        await this.#audit.record(context, { action: "resource.create", target: row.id, after: created }, tx);
        return created;
      });
      await this.#bus.publish("resource", view.uri);
      return { ...view, client_secret: clientSecret };
    } catch (error) {
      if (isUniqueViolation(error)) throw conflict(`a resource server with URI ${input.uri} already exists`);
      throw error;
    }
  }

  async list(): Promise<ResourceView[]> {
    const rows = await this.#prisma.resourceServer.findMany({
      include: { scopes: true },
      orderBy: { createdAt: "asc" },
    });
    return rows.map(resourceView);
  }

  /** Finds a resource server by id, introspection client id or URI. */
  async find(key: string): Promise<ResourceRow> {
    const where = isUuid(key) ? { id: key } : key.startsWith("rs_") ? { clientId: key } : { uri: key };
    const row = await this.#prisma.resourceServer.findUnique({ where, include: { scopes: true } });
    if (!row) throw notFound(`resource server ${key}`);
    return row;
  }

  async get(key: string): Promise<ResourceView> {
    return resourceView(await this.find(key));
  }

  async update(context: AuditContext, key: string, input: ResourceUpdate): Promise<ResourceView> {
    const before = await this.find(key);
    const view = await this.#prisma.$transaction(async (tx) => {
      if (input.scopes) {
        await tx.resourceScope.deleteMany({ where: { resourceServerId: before.id } });
        await tx.resourceScope.createMany({
          data: input.scopes.map((scope) => ({ ...scope, resourceServerId: before.id })),
        });
      }
      const row = await tx.resourceServer.update({
        where: { id: before.id },
        data: {
          name: input.name,
          tokenFormat: input.token_format,
          tokenTtlSeconds: input.token_ttl_seconds,
          dpopRequired: input.dpop_required,
        },
        include: { scopes: true },
      });
      const after = resourceView(row);
      await this.#audit.record(
        context,
        {
          action: "resource.update",
          target: row.id,
          before: resourceView(before),
          after,
        },
        tx,
      );
      return after;
    });
    await this.#bus.publish("resource", view.uri);
    return view;
  }

  /** Issues a new introspection secret; the old one stops working at once. */
  async rotateSecret(
    context: AuditContext,
    key: string,
  ): Promise<{ client_id: string; client_secret: string }> {
    const row = await this.find(key);
    const clientSecret = generateClientSecret();
    await this.#prisma.$transaction(async (tx) => {
      await tx.resourceServer.update({
        where: { id: row.id },
        data: { clientSecretHash: hashClientSecret(clientSecret) },
      });
      await this.#audit.record(context, { action: "resource.rotate_secret", target: row.id }, tx);
    });
    await this.#bus.publish("client", row.clientId);
    return { client_id: row.clientId, client_secret: clientSecret };
  }
}
