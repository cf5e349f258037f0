// Human step-up: a person's fresh approval (through CIBA) of high-risk scopes for one agent on one resource,
// valid for DEPUTY_STEP_UP_WINDOW_SECONDS. The CIBA approval handler calls `record` when a person approves a
// backchannel request that named high-risk scopes; policies see the result as `context.step_up`.
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { PrismaClient, StepUpApproval } from "../generated/prisma/client.ts";
import { invalidRequest } from "../http/api-error.ts";

export interface StepUpApprovalInput {
  /** The person who approved (Person.id). */
  personId: string;
  /** The agent the approval is for: the one that started the CIBA request (its client_id). */
  agentClientId: string;
  /** The resource server URI the scopes belong to. */
  resource: string;
  /** The scopes approved (the high-risk ones the agent asked for). */
  scopes: string[];
  /** When the person approved; defaults to now. The approval lasts the step-up window from then. */
  approvedAt?: Date;
  /** Links the approval to the CIBA request in the audit trail (e.g. its auth_req_id's jti). */
  requestRef?: string;
  /** The delegation the same approval created, and its task, for the audit trail. */
  delegation?: { id: string; taskId: string | null; taskDescription: string | null };
}

export class StepUpService {
  readonly #prisma: PrismaClient;
  readonly #audit: AuditLog;
  readonly #windowSeconds: number;

  constructor(prisma: PrismaClient, audit: AuditLog, windowSeconds: number) {
    this.#prisma = prisma;
    this.#audit = audit;
    this.#windowSeconds = windowSeconds;
  }

  get windowSeconds(): number {
    return this.#windowSeconds;
  }

  /** Stores an approval (audited, type `ciba`); exchanges for those scopes pass step-up until it expires. */
  async record(context: AuditContext, input: StepUpApprovalInput): Promise<StepUpApproval> {
    const scopes = [...new Set(input.scopes)].filter(Boolean);
    if (scopes.length === 0) throw invalidRequest("a step-up approval names at least one scope");
    const approvedAt = input.approvedAt ?? new Date();
    const person = await this.#prisma.person.findUnique({ where: { id: input.personId } });
    if (person?.status !== "active") throw invalidRequest("the approving person is not active");
    return this.#prisma.$transaction(async (tx) => {
      const approval = await tx.stepUpApproval.create({
        data: {
          personId: person.id,
          agentClientId: input.agentClientId,
          resource: input.resource,
          scopes,
          approvedAt,
          expiresAt: new Date(approvedAt.getTime() + this.#windowSeconds * 1000),
        },
      });
      await this.#audit.record(
        context,
        {
          action: "step_up.approve",
          decision: "allow",
          target: approval.id,
          delegatedBy: person.email,
          agentChain: [input.agentClientId],
          resource: input.resource,
          scopesGranted: scopes,
          delegationId: input.delegation?.id,
          taskId: input.delegation?.taskId ?? undefined,
          taskDescription: input.delegation?.taskDescription ?? undefined,
          details: {
            expires_at: approval.expiresAt.toISOString(),
            ...(input.requestRef ? { request: input.requestRef } : {}),
          },
        },
        tx,
      );
      return approval;
    });
  }

  /** Scopes the person has approved for this agent on this resource within the window, as of now. */
  async approvedScopes(personId: string, agentClientId: string, resource: string): Promise<Set<string>> {
    const rows = await this.#prisma.stepUpApproval.findMany({
      where: { personId, agentClientId, resource, expiresAt: { gt: new Date() } },
      select: { scopes: true },
    });
    return new Set(rows.flatMap((row) => row.scopes));
  }
}
