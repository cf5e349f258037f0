// CIBA (OpenID CIBA Core 1.0, poll mode) for headless agents: the agent names the person by email
// (login_hint); the request waits on the person's /approvals page until they approve or deny it there.
import type { Redis } from "ioredis";
import type { Account, BackchannelAuthenticationRequest, Client, KoaContextWithOIDC } from "oidc-provider";
import { errors } from "oidc-provider";
import { type AuditLog, providerRequestContext } from "../audit/audit-log.ts";
import { taskFromParams } from "../delegation/agent-task.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { isPlainText } from "../http/plain-text.ts";

/** How many CIBA requests an agent may have waiting, and make (config.ts: DEPUTY_CIBA_*). */
export interface CibaLimits {
  /** Requests one agent may have waiting for one person. */
  maxPendingPerPerson: number;
  /** Requests one agent may have waiting, for everyone. */
  maxPendingPerAgent: number;
  /** Requests one agent may make in a minute, admitted or not. */
  requestsPerMinute: number;
}

/** A request waiting for a person: which agent asked, its id, and when it expires (epoch seconds). */
export interface PendingRequest {
  clientId: string;
  id: string;
  expiresAt: number;
}

/** Why a request was not admitted; `retryAfter`: seconds until the agent's rate window ends. */
export type Refusal = { reason: "rate"; retryAfter: number } | { reason: "person" | "agent" };

/** The most requests /approvals shows at once. */
const SHOWN = 50;

// The sets outlive any request in them (CIBA requests live minutes); entries are filtered by their own expiry.
const SET_SECONDS = 86_400;

// KEYS[1] the agent's request counter for this minute, KEYS[2] its requests waiting for this person, KEYS[3] all
// its waiting requests, KEYS[4] the agents with requests waiting for this person (scored by the newest expiry).
// ARGV: now, the request's expiry, its id, the agent, then the limits: per minute, per person, per agent.
// Counts the request in the agent's minute, then admits it (adding it to the three sets) only within every limit,
// in one step: concurrent requests, from any process, cannot pass a limit together.
const ADMIT = `
local used = redis.call('INCR', KEYS[1])
if used == 1 then redis.call('EXPIRE', KEYS[1], 60) end
if used > tonumber(ARGV[5]) then return {'rate', redis.call('TTL', KEYS[1])} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then return {'person', 0} end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[7]) then return {'agent', 0} end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
local newest = redis.call('ZSCORE', KEYS[4], ARGV[4])
if not newest or tonumber(newest) < tonumber(ARGV[2]) then redis.call('ZADD', KEYS[4], ARGV[2], ARGV[4]) end
for i = 2, 4 do redis.call('EXPIRE', KEYS[i], ${SET_SECONDS}) end
return {'admitted', 0}
`;

type CibaRedis = Redis & {
  deputyCibaAdmit(...args: (string | number)[]): Promise<[string, number]>;
};

const epochSeconds = () => Math.floor(Date.now() / 1000);

/**
 * Requests waiting for people, per agent: each agent's requests for each person, each agent's in all, and for
 * each person the agents that asked. Bounded per agent and person, per agent, and per agent and minute, so that
 * no agent can bury a person's other requests; listed fairly across agents.
 */
export class PendingApprovals {
  readonly #redis: CibaRedis;
  readonly #prefix: string;
  readonly #limits: CibaLimits;

  constructor(redis: Redis, prefix: string, limits: CibaLimits) {
    const scripted = redis as CibaRedis;
    if (typeof scripted.deputyCibaAdmit !== "function")
      scripted.defineCommand("deputyCibaAdmit", { numberOfKeys: 4, lua: ADMIT });
    this.#redis = scripted;
    this.#prefix = `${prefix}ui:ciba-pending:`;
    this.#limits = limits;
  }

  get limits(): CibaLimits {
    return this.#limits;
  }

  /** Admits a request to wait for the person, or says which limit refuses it (then nothing is added). */
  async admit(request: PendingRequest & { personId: string }): Promise<Refusal | undefined> {
    const { personId, clientId, id, expiresAt } = request;
    const { requestsPerMinute, maxPendingPerPerson, maxPendingPerAgent } = this.#limits;
    const [outcome, retryAfter] = await this.#redis.deputyCibaAdmit(
      `${this.#prefix}rate:${clientId}`,
      this.#pairKey(personId, clientId),
      this.#agentKey(clientId),
      this.#personKey(personId),
      epochSeconds(),
      expiresAt,
      id,
      clientId,
      requestsPerMinute,
      maxPendingPerPerson,
      maxPendingPerAgent,
    );
    if (outcome === "admitted") return undefined;
    if (outcome === "rate") return { reason: "rate", retryAfter: Math.max(1, Number(retryAfter)) };
    return { reason: outcome === "person" ? "person" : "agent" };
  }

  /**
   * Requests not yet expired, at most 50, soonest to expire first; expired ones are dropped. They are picked
   * round-robin across agents — every agent's first before any agent's second — so one agent's requests never
   * push another's out of view. `hidden`: how many more are waiting.
   */
  async list(personId: string): Promise<{ requests: PendingRequest[]; hidden: number }> {
    const now = epochSeconds();
    const personKey = this.#personKey(personId);
    await this.#redis.zremrangebyscore(personKey, "-inf", now);
    const agents = await this.#redis.zrange(personKey, 0, -1);
    const queues = await Promise.all(
      agents.map(async (clientId) => {
        const key = this.#pairKey(personId, clientId);
        await this.#redis.zremrangebyscore(key, "-inf", now);
        const flat = await this.#redis.zrangebyscore(key, now + 1, "+inf", "WITHSCORES");
        const queue: PendingRequest[] = [];
        for (let i = 0; i < flat.length; i += 2)
          queue.push({ clientId, id: String(flat[i]), expiresAt: Number(flat[i + 1]) });
        return queue;
      }),
    );
    const requests: PendingRequest[] = [];
    for (let rank = 0; requests.length < SHOWN && queues.some((queue) => rank < queue.length); rank++) {
      for (const queue of queues) {
        const request = queue[rank];
        if (request && requests.length < SHOWN) requests.push(request);
      }
    }
    const waiting = queues.reduce((sum, queue) => sum + queue.length, 0);
    requests.sort((a, b) => a.expiresAt - b.expiresAt);
    return { requests, hidden: waiting - requests.length };
  }

  /** The request no longer waits (answered, or gone): it leaves the person's and the agent's counts. */
  async remove(personId: string, clientId: string, requestId: string): Promise<void> {
    await this.#redis
      .multi()
      .zrem(this.#pairKey(personId, clientId), requestId)
      .zrem(this.#agentKey(clientId), requestId)
      .exec();
  }

  #personKey(personId: string): string {
    return `${this.#prefix}person:${personId}`;
  }

  #pairKey(personId: string, clientId: string): string {
    return `${this.#prefix}pair:${personId}:${clientId}`;
  }

  #agentKey(clientId: string): string {
    return `${this.#prefix}agent:${clientId}`;
  }
}

/**
 * The refusal an agent gets. CIBA Core 1.0 §13 lists the authentication request's errors; of them only
 * access_denied (HTTP 403) says that the OpenID Provider denied the request, which is what a limit does:
 * invalid_request would tell the agent its request is malformed, and slow_down is an answer to polling the
 * token endpoint (§11), not to asking.
 */
function refusalError(refusal: Refusal, limits: CibaLimits): errors.AccessDenied {
  const description =
    refusal.reason === "rate"
      ? `this agent made more than ${limits.requestsPerMinute} backchannel requests in a minute: retry in ` +
        `${refusal.retryAfter} seconds`
      : refusal.reason === "person"
        ? `this agent already has ${limits.maxPendingPerPerson} requests waiting for this person: wait for ` +
          "the person to answer them or for them to expire"
        : `this agent already has ${limits.maxPendingPerAgent} requests waiting for people: wait for answers ` +
          "or for requests to expire";
  return Object.assign(new errors.AccessDenied(description), { status: 403, statusCode: 403 });
}

const REFUSAL_REASONS = {
  rate: "too many requests from this agent in a minute",
  person: "too many requests from this agent waiting for this person",
  agent: "too many requests from this agent waiting",
} as const;

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
    /**
     * Records the request where the person will see it, and in the audit trail; or, beyond a limit of the
     * agent's (PendingApprovals), removes the stored request and refuses it.
     */
    async triggerAuthenticationDevice(
      ctx: KoaContextWithOIDC,
      request: BackchannelAuthenticationRequest,
      account: Account,
      client: Client,
    ): Promise<void> {
      const expiresAt = Number(request.exp) || Math.floor(Date.now() / 1000) + request.expiration;
      const refusal = await deps.pending.admit({
        personId: account.accountId,
        clientId: client.clientId,
        id: request.jti,
        expiresAt,
      });
      const person = await deps.prisma.person.findUnique({ where: { id: account.accountId } });
      const params = request.params as Record<string, unknown> | undefined;
      const task = taskFromParams(params?.authorization_details);
      if (refusal) {
        await request.destroy();
        await deps.audit.record(providerRequestContext(ctx, client.clientId), {
          action: "ciba.refused",
          decision: "deny",
          reason: REFUSAL_REASONS[refusal.reason],
          delegatedBy: person?.email,
          agentChain: [client.clientId],
          taskId: task?.id,
        });
        if (refusal.reason === "rate") ctx.set("Retry-After", String(refusal.retryAfter));
        throw refusalError(refusal, deps.pending.limits);
      }
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
