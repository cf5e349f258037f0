// CIBA (OpenID CIBA Core 1.0, poll mode) for headless agents: the agent names the person by email
// (login_hint); the request waits on the person's /approvals page until they approve or deny it there.
import type { Redis } from "ioredis";
import type { Account, BackchannelAuthenticationRequest, Client, KoaContextWithOIDC } from "oidc-provider";
import { errors } from "oidc-provider";
import { type AuditLog, providerRequestContext } from "../audit/audit-log.ts";
import { taskFromParams } from "../delegation/agent-task.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { isPlainText } from "../http/plain-text.ts";

/** Pending requests per person: a sorted set of request ids scored by their expiry (epoch seconds). */
export class PendingApprovals {
  readonly #redis: Redis;
  readonly #prefix: string;

  constructor(redis: Redis, prefix: string) {
    this.#redis = redis;
    this.#prefix = `${prefix}ui:ciba-pending:`;
  }

  async add(personId: string, requestId: string, expiresAt: number): Promise<void> {
    const key = this.#prefix + personId;
    // The set outlives any request in it (CIBA requests live minutes); entries are filtered by their own expiry.
    await this.#redis.multi().zadd(key, expiresAt, requestId).expire(key, 86_400).exec();
  }

  /** Ids of requests not yet expired, oldest first; expired ones are dropped. */
  async list(personId: string, limit = 50): Promise<string[]> {
    const key = this.#prefix + personId;
    const now = Math.floor(Date.now() / 1000);
    await this.#redis.zremrangebyscore(key, "-inf", now);
    return this.#redis.zrangebyscore(key, now + 1, "+inf", "LIMIT", 0, limit);
  }

  async remove(personId: string, requestId: string): Promise<void> {
    await this.#redis.zrem(this.#prefix + personId, requestId);
  }
}

export interface CibaDeps {
  prisma: PrismaClient;
  audit: AuditLog;
  pending: PendingApprovals;
}

const BINDING_MESSAGE = /^[\p{L}\p{N}\p{P}\p{S} ]{1,64}$/u;

export function cibaHooks(deps: CibaDeps) {
  return {
    /** login_hint is the person's email; an unknown or offboarded person, or no email at all, is unknown_user_id. */
    async processLoginHint(_ctx: KoaContextWithOIDC, loginHint?: string): Promise<string | undefined> {
      if (!loginHint || loginHint.length > 254 || !isPlainText(loginHint)) return undefined;
      const person = await deps.prisma.person.findUnique({
        where: { email: loginHint.trim().toLowerCase() },
      });
      return person?.status === "active" ? person.id : undefined;
    },
    async processLoginHintToken(): Promise<string | undefined> {
      throw new errors.InvalidRequest(
        "login_hint_token is not supported: send login_hint with the person's email",
      );
    },
    // CIBA Core §7.1: the binding message is shown to the person; keep it short and printable.
    async validateBindingMessage(_ctx: KoaContextWithOIDC, message?: string): Promise<void> {
      if (message !== undefined && !BINDING_MESSAGE.test(message))
        throw new errors.InvalidBindingMessage("binding_message must be 1 to 64 printable characters");
    },
    async validateRequestContext(_ctx: KoaContextWithOIDC, context?: string): Promise<void> {
      if (context !== undefined) throw new errors.InvalidRequest("request_context is not supported");
    },
    async verifyUserCode(_ctx: KoaContextWithOIDC, _account: Account, userCode?: string): Promise<void> {
      if (userCode !== undefined) throw new errors.InvalidRequest("user_code is not supported");
    },
    /** Records the request where the person will see it, and in the audit trail. */
    async triggerAuthenticationDevice(
      ctx: KoaContextWithOIDC,
      request: BackchannelAuthenticationRequest,
      account: Account,
      client: Client,
    ): Promise<void> {
      const expiresAt = Number(request.exp) || Math.floor(Date.now() / 1000) + request.expiration;
      await deps.pending.add(account.accountId, request.jti, expiresAt);
      const person = await deps.prisma.person.findUnique({ where: { id: account.accountId } });
      const params = request.params as Record<string, unknown> | undefined;
      const task = taskFromParams(params?.authorization_details);
      await deps.audit.record(providerRequestContext(ctx, client.clientId), {
        action: "ciba.request",
        delegatedBy: person?.email,
        agentChain: [client.clientId],
        scopesAsked: String(request.scope ?? "")
          .split(" ")
          .filter(Boolean),
        taskId: task?.id,
        taskDescription: task?.description,
        target: request.jti,
        details: { binding_message: params?.binding_message ?? null },
      });
    },
  };
}
