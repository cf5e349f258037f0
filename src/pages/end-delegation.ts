// A person revokes one of their own delegations from "my delegations". Ownership and state are checked here;
// the revocation itself (row, lineage, audit, cache invalidation, Redis purge, jobs) is the revocation
// service's, shared with task ends, suspensions and offboarding.
import type { AuditContext } from "../audit/audit-log.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";

/** Ends delegations everywhere (the revocation service), for a reason recorded on them and in the audit trail. */
export type RevokeDelegation = (context: AuditContext, delegationId: string, reason: string) => Promise<void>;

export const PERSON_REVOKED = "revoked by the person";

/** Revokes the person's active delegation `id`; false when they have no such active delegation. */
export async function revokeOwnDelegation(
  prisma: PrismaClient,
  revoke: RevokeDelegation,
  context: AuditContext,
  personId: string,
  id: string,
): Promise<boolean> {
  const delegation = await prisma.delegation.findFirst({
    where: { id, personId, status: "active" },
    select: { id: true },
  });
  if (!delegation) return false;
  await revoke(context, delegation.id, PERSON_REVOKED);
  return true;
}
