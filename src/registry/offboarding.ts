// What offboarding does to the agents the leaver owns or co-owns (retired ones aside), inside the offboarding's
// transaction once the leaver is marked offboarded. An agent with another active owner is handed over: its
// owners become its active ones without the leaver, in order, so its primary owner stays (or, if that was the
// leaver, its first active co-owner becomes the primary owner) and it keeps working. Any other agent is suspended
// and marked needs_owner for review. Offboardings reach this one at a time (the audit chain's lock, taken by the person's event), so each
// sees the owners the one before left.

import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { Person, Prisma } from "../generated/prisma/client.ts";
import { AGENT_INCLUDE, type AgentRow, agentView, owners, replaceCoOwners } from "./agents.ts";

export interface ReleasedAgents {
  /** Agents with another active owner, their owners now their active ones but the leaver. */
  handedOver: string[];
  /** Agents left without an active owner: suspended (`suspended`: by this offboarding) and needing an owner. */
  orphaned: { clientId: string; suspended: boolean }[];
}

/** Where the offboarding writes, and who does it. */
export interface Offboarding {
  tx: Prisma.TransactionClient;
  audit: AuditLog;
  context: AuditContext;
}

/** The offboarding, with why, as the agents' audit events and status reasons say it. */
type Release = Offboarding & { reason: string };

/** Hands over, or suspends as needing an owner, every agent `leaver` owns or co-owns. */
export async function releaseAgents(
  offboarding: Offboarding,
  leaver: Person,
  reason: string,
): Promise<ReleasedAgents> {
  const { tx } = offboarding;
  const agents = await tx.agent.findMany({
    where: {
      status: { not: "retired" },
      OR: [{ ownerId: leaver.id }, { coOwners: { some: { personId: leaver.id } } }],
    },
    include: AGENT_INCLUDE,
    orderBy: { createdAt: "asc" },
  });
  const release = { ...offboarding, reason: `owner ${leaver.email} offboarded: ${reason}` };
  const released: ReleasedAgents = { handedOver: [], orphaned: [] };
  for (const agent of agents) {
    const [heir, ...coOwners] = owners(agent).filter(
      (person) => person.id !== leaver.id && person.status === "active",
    );
    if (heir) {
      await handOver(release, agent, heir, coOwners);
      released.handedOver.push(agent.clientId);
    } else {
      released.orphaned.push({ clientId: agent.clientId, suspended: await markNeedsOwner(release, agent) });
    }
  }
  return released;
}

/** Makes `primary` the agent's primary owner and `coOwners`, in order, its co-owners. */
async function handOver(
  { tx, audit, context, reason }: Release,
  agent: AgentRow,
  primary: Person,
  coOwners: Person[],
): Promise<void> {
  await replaceCoOwners(
    tx,
    agent.id,
    coOwners.map((person) => person.id),
  );
  const row = await tx.agent.update({
    where: { id: agent.id },
    data: { ownerId: primary.id },
    include: AGENT_INCLUDE,
  });
  await audit.record(
    context,
    {
      action: "agent.owner_removed",
      target: agent.clientId,
      reason,
      before: agentView(agent),
      after: agentView(row),
    },
    tx,
  );
}

/** Suspends the agent (unless it is already) and marks it needs_owner; whether this suspended it. */
async function markNeedsOwner({ tx, audit, context, reason }: Release, agent: AgentRow): Promise<boolean> {
  const wasSuspended = agent.status === "suspended";
  await tx.agent.update({
    where: { id: agent.id },
    data: { needsOwner: true, ...(wasSuspended ? {} : { status: "suspended", statusReason: reason }) },
  });
  await audit.record(
    context,
    {
      action: wasSuspended ? "agent.needs_owner" : "agent.suspend",
      target: agent.clientId,
      reason,
      before: { status: agent.status, needs_owner: agent.needsOwner },
      after: { status: "suspended", needs_owner: true },
    },
    tx,
  );
  return !wasSuspended;
}
