// People: the humans who own agents and delegate to them.

import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import { isUuid } from "../db/ids.ts";
import { isUniqueViolation } from "../db/prisma-errors.ts";
import type { Person, PrismaClient } from "../generated/prisma/client.ts";
import { conflict, notFound } from "../http/api-error.ts";
import type { InvalidationBus } from "../redis/invalidation-bus.ts";
import { hashPassword } from "../security/secrets.ts";
import { releaseAgents } from "./offboarding.ts";
import type { PendingRevocation, Revoker } from "./revoker.ts";

export interface PersonView {
  id: string;
  email: string;
  name: string;
  status: Person["status"];
  admin: boolean;
  created_at: string;
  updated_at: string;
}

export function personView(person: Person): PersonView {
  return {
    id: person.id,
    email: person.email,
    name: person.name,
    status: person.status,
    admin: person.isAdmin,
    created_at: person.createdAt.toISOString(),
    updated_at: person.updatedAt.toISOString(),
  };
}

/**
 * What offboarding reached: the person's delegations, the agents it suspended for want of another active owner
 * (needing an owner), and those it handed over to another of their owners.
 */
export interface OffboardingResult {
  revocation: { delegations: number; tokens: number };
  agents_suspended: string[];
  agents_handed_over: string[];
}

/**
 * Ends every signed-in session of a person. The registry requires it and the sessions module implements it
 * (pages/ui-sessions.ts; app.ts injects it), so that the rule lives here without the registry depending
 * on the pages.
 */
export interface SessionTerminator {
  endSessionsOf(personId: string): Promise<void>;
}

const REVOKING_TRANSACTION = { maxWait: 10_000, timeout: 60_000 } as const;

export class PeopleService {
  readonly #prisma: PrismaClient;
  readonly #audit: AuditLog;
  readonly #bus: InvalidationBus;
  readonly #revocations: Revoker;
  readonly #sessions: SessionTerminator;

  /**
   * `revocations`: offboarding revokes the person's delegations and those of agents it suspends. `sessions`: a
   * new password, the loss of admin rights and offboarding sign the person out everywhere.
   */
  constructor(
    prisma: PrismaClient,
    audit: AuditLog,
    bus: InvalidationBus,
    revocations: Revoker,
    sessions: SessionTerminator,
  ) {
    this.#prisma = prisma;
    this.#audit = audit;
    this.#bus = bus;
    this.#revocations = revocations;
    this.#sessions = sessions;
  }

  async create(
    context: AuditContext,
    input: { email: string; name: string; password: string; admin?: boolean },
  ): Promise<PersonView> {
    const passwordHash = await hashPassword(input.password);
    try {
      return await this.#prisma.$transaction(async (tx) => {
        const person = await tx.person.create({
          data: {
            email: input.email.toLowerCase(),
            name: input.name,
            passwordHash,
            isAdmin: input.admin ?? false,
          },
        });
        const view = personView(person);
        await this.#audit.record(context, { action: "person.create", target: person.id, after: view }, tx);
        return view;
      });
    } catch (error) {
      if (isUniqueViolation(error))
        throw conflict(`a person with email ${input.email.toLowerCase()} already exists`);
      throw error;
    }
  }

  async list(): Promise<PersonView[]> {
    return (await this.#prisma.person.findMany({ orderBy: { createdAt: "asc" } })).map(personView);
  }

  /** Finds a person by id or email. */
  async find(idOrEmail: string): Promise<Person> {
    const where = isUuid(idOrEmail) ? { id: idOrEmail } : { email: idOrEmail.toLowerCase() };
    const person = await this.#prisma.person.findUnique({ where });
    if (!person) throw notFound(`person ${idOrEmail}`);
    return person;
  }

  /**
   * Changes a person. A new password or the loss of admin rights ends every session the person has, once the
   * change is committed: whoever signed in with the old password, or as an admin, must sign in again.
   */
  async update(
    context: AuditContext,
    idOrEmail: string,
    input: { name?: string; password?: string; admin?: boolean },
  ): Promise<PersonView> {
    const before = await this.find(idOrEmail);
    const passwordHash = input.password === undefined ? undefined : await hashPassword(input.password);
    const view = await this.#prisma.$transaction(async (tx) => {
      const person = await tx.person.update({
        where: { id: before.id },
        data: { name: input.name, isAdmin: input.admin, passwordHash },
      });
      const view = personView(person);
      await this.#audit.record(
        context,
        {
          action: "person.update",
          target: person.id,
          before: personView(before),
          after: view,
          details: input.password === undefined ? undefined : { password_changed: true },
        },
        tx,
      );
      return view;
    });
    if (passwordHash !== undefined || (before.isAdmin && !view.admin))
      await this.#sessions.endSessionsOf(before.id);
    return view;
  }

  /**
   * Marks a person as gone, in one transaction: every delegation they granted is revoked; the agents they own or
   * co-own stay with another active owner if they have one (the leaver removed from their owners), and the
   * others are suspended and marked needs_owner for review, which revokes every delegation those hold or act in.
   */
  async offboard(
    context: AuditContext,
    idOrEmail: string,
    reason: string,
  ): Promise<PersonView & OffboardingResult> {
    const before = await this.find(idOrEmail);
    const revocations = this.#revocations;
    const { view, pending, released } = await this.#prisma.$transaction(async (tx) => {
      const person = await tx.person.update({ where: { id: before.id }, data: { status: "offboarded" } });
      const after = personView(person);
      await this.#audit.record(
        context,
        {
          action: "person.offboard",
          target: person.id,
          reason,
          before: personView(before),
          after,
        },
        tx,
      );
      const cause = { trigger: "offboarding" as const, reason, target: person.email };
      const pending: PendingRevocation[] = [
        await revocations.inTransaction(tx, { person: person.id }, cause, context),
      ];
      const released = await releaseAgents({ tx, audit: this.#audit, context }, person, reason);
      for (const agent of released.orphaned) {
        pending.push(await revocations.inTransaction(tx, { agent: agent.clientId }, cause, context));
      }
      return { view: after, pending, released };
    }, REVOKING_TRANSACTION);
    await this.#sessions.endSessionsOf(before.id);
    const touched = [...released.handedOver, ...released.orphaned.map((agent) => agent.clientId)];
    await Promise.all(touched.map((clientId) => this.#bus.publish("client", clientId)));
    await this.#bus.publish("delegation", "*");
    for (const item of pending) await revocations.afterCommit(item);
    return {
      ...view,
      revocation: {
        delegations: pending.reduce((sum, item) => sum + item.summary.delegations, 0),
        tokens: pending.reduce((sum, item) => sum + item.summary.tokens, 0),
      },
      agents_suspended: released.orphaned.filter((agent) => agent.suspended).map((agent) => agent.clientId),
      agents_handed_over: released.handedOver,
    };
  }
}
