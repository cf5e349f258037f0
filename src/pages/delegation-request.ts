// What an agent asked a person for, read from the stored request (authorization request or CIBA request):
// the agent, the scopes on each resource server, and the task. The same reading serves the consent page, the
// approvals page and the approval itself, so what the person sees is what gets approved.

import { type AgentTask, taskFromParams } from "../delegation/agent-task.ts";
import type { ResourceGrant } from "../delegation/resource-grants.ts";
import type {
  Agent,
  Person,
  PrismaClient,
  ResourceScope,
  ResourceServer,
} from "../generated/prisma/client.ts";
import { PageError } from "./page-error.ts";

export interface DelegationRequest {
  clientId: string;
  /** Delegable scope names asked for (OpenID scopes apart). */
  scopes: string[];
  openid: boolean;
  /** The resource indicators of the request: the grant records the person's answer under each. */
  indicators: string[];
  /**
   * What the delegation would grant if approved as asked: each asked scope on each resource server of the
   * request that defines it and for which the agent is registered with it. The person approves a part of it.
   */
  grants: ResourceGrant[];
  task?: AgentTask;
}

export type RequestingAgent = Agent & {
  owner: Person;
  scopeGrants: { scopes: string[]; resourceServer: ResourceServer & { scopes: ResourceScope[] } }[];
};

const OIDC_SCOPES = new Set(["openid"]);

function list(value: unknown): string[] {
  if (Array.isArray(value)) return value.filter((item): item is string => typeof item === "string");
  return typeof value === "string" && value ? [value] : [];
}

/** Loads the requesting agent (active only) and reads its request from the stored parameters. */
export async function loadDelegationRequest(
  prisma: PrismaClient,
  issuer: string,
  clientId: string,
  params: Record<string, unknown>,
): Promise<{ agent: RequestingAgent; request: DelegationRequest }> {
  const agent = await prisma.agent.findUnique({
    where: { clientId },
    include: { owner: true, scopeGrants: { include: { resourceServer: { include: { scopes: true } } } } },
  });
  if (agent?.status !== "active" || agent.owner.status !== "active") {
    throw new PageError(
      409,
      "Agent not active",
      "The agent that asked is no longer active, so it cannot be delegated to.",
    );
  }
  const asked = String(params.scope ?? "")
    .split(" ")
    .filter(Boolean);
  const scopes = [...new Set(asked.filter((scope) => !OIDC_SCOPES.has(scope)))];
  const indicators = [...new Set(list(params.resource))];
  const registered = new Map(agent.scopeGrants.map((grant) => [grant.resourceServer.uri, grant]));
  const named = indicators.filter((uri) => uri !== issuer && registered.has(uri));
  // Only Deputy itself named: the delegation covers the agent's resource servers that define an asked scope.
  const grants = (named.length ? named : [...registered.keys()]).flatMap((uri) => {
    const grant = registered.get(uri);
    const defined = new Set(grant?.resourceServer.scopes.map((scope) => scope.name));
    const offered = scopes.filter((scope) => defined.has(scope) && grant?.scopes.includes(scope));
    return offered.length ? [{ resource: uri, scopes: offered }] : [];
  });
  return {
    agent,
    request: {
      clientId,
      scopes,
      openid: asked.includes("openid"),
      indicators,
      grants,
      task: taskFromParams(params.authorization_details),
    },
  };
}

/** When the delegation would end if approved as asked: the task's end, or the untasked cap from now. */
export function askedEnd(request: DelegationRequest, untaskedSeconds: number, now = Date.now()): Date {
  return request.task ? request.task.endsAt : new Date(now + untaskedSeconds * 1000);
}
