// What the consent and approvals pages show about a request: who asks (agent, owner, purpose, registration),
// for what (each resource server with its scopes and their risk: one choice per pair), for which task (the
// agent's own words, marked as its claim), until when, and to whom it could pass a narrower part on.
import type { PrismaClient } from "../generated/prisma/client.ts";
import { askedEnd, type DelegationRequest, type RequestingAgent } from "./delegation-request.ts";
import { formatDuration, formatTime } from "./format.ts";
import { choiceValue } from "./scope-choice.ts";

export interface RequestView {
  agent: {
    name: string;
    clientId: string;
    ownerName: string;
    ownerEmail: string;
    purpose: string;
    status: string;
    registeredAt: string;
    lastReviewedAt: string | null;
    reviewDueAt: string;
    reviewOverdue: boolean;
    blastRadius: string;
  };
  resources: {
    name: string;
    uri: string;
    /** `value`: the form's value for this scope on this resource. */
    scopes: { name: string; description: string; high: boolean; value: string }[];
  }[];
  highRisk: boolean;
  task: { id: string; description: string } | null;
  untaskedLimit: string;
  endsAt: { iso: string; text: string; duration: string };
  durations: { value: string; label: string }[];
  delegates: { name: string; clientId: string }[];
  maxDepth: number;
}

/** Shorter lengths a person may pick instead of the one asked for (seconds). */
const SHORTER = [15 * 60, 30 * 60, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 24 * 3600, 3 * 86400];

export async function requestView(
  prisma: PrismaClient,
  settings: { untaskedSeconds: number; maxDepth: number },
  agent: RequestingAgent,
  request: DelegationRequest,
  now = Date.now(),
): Promise<RequestView> {
  const end = askedEnd(request, settings.untaskedSeconds, now);
  const seconds = Math.max(0, Math.floor((end.getTime() - now) / 1000));
  const resources = request.grants.flatMap(({ resource: uri, scopes: asked }) => {
    const server = agent.scopeGrants.find((g) => g.resourceServer.uri === uri)?.resourceServer;
    if (!server) return [];
    const scopes = server.scopes
      .filter((scope) => asked.includes(scope.name))
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((scope) => ({
        name: scope.name,
        description: scope.description,
        high: scope.risk === "high",
        value: choiceValue({ resource: uri, scope: scope.name }),
      }));
    return [{ name: server.name, uri, scopes }];
  });
  const delegates = agent.mayDelegateTo.length
    ? await prisma.agent.findMany({
        where: { clientId: { in: agent.mayDelegateTo } },
        select: { name: true, clientId: true },
        orderBy: { name: "asc" },
      })
    : [];
  const maxDepth = Math.min(agent.maxDepth, settings.maxDepth);
  return {
    agent: {
      name: agent.name,
      clientId: agent.clientId,
      ownerName: agent.owner.name,
      ownerEmail: agent.owner.email,
      purpose: agent.purpose,
      status: agent.status,
      registeredAt: formatTime(agent.createdAt),
      lastReviewedAt: agent.lastReviewedAt ? formatTime(agent.lastReviewedAt) : null,
      reviewDueAt: formatTime(agent.reviewDueAt),
      reviewOverdue: agent.reviewDueAt.getTime() < now,
      blastRadius: agent.blastRadius,
    },
    resources,
    highRisk: resources.some((resource) => resource.scopes.some((scope) => scope.high)),
    task: request.task ? { id: request.task.id, description: request.task.description } : null,
    untaskedLimit: formatDuration(settings.untaskedSeconds),
    endsAt: { iso: end.toISOString(), text: formatTime(end), duration: formatDuration(seconds) },
    durations: [
      { value: "asked", label: `As asked: until ${formatTime(end)} (${formatDuration(seconds)})` },
      ...SHORTER.filter((option) => option < seconds - 60)
        .reverse()
        .map((option) => ({ value: String(option), label: `${formatDuration(option)} from approval` })),
    ],
    delegates: maxDepth > 1 ? delegates : [],
    maxDepth,
  };
}
