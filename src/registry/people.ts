// People: the humans who own agents and delegate to them.

import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import { isUuid } from "../db/ids.ts";
import type { InvalidationBus } from "../events/invalidation-bus.ts";
import type { Person, PrismaClient } from "../generated/prisma/client.ts";
import { conflict, notFound } from "../http/api-error.ts";
import { hashPassword } from "../security/secrets.ts";
import { isUniqueViolation } from "./prisma-errors.ts";

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

export class PeopleService {
  readonly #prisma: PrismaClient;
  readonly #audit: AuditLog;
  readonly #bus: InvalidationBus;

  constructor(prisma: PrismaClient, audit: AuditLog, bus: InvalidationBus) {
    this.#prisma = prisma;
    this.#audit = audit;
    this.#bus = bus;
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
        await this.#audit.record(
          context,
          { type: "admin_change", action: "person.create", target: person.id, after: view },
          tx,
        );
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

  async update(
    context: AuditContext,
    idOrEmail: string,
    input: { name?: string; password?: string; admin?: boolean },
  ): Promise<PersonView> {
    const before = await this.find(idOrEmail);
    const passwordHash = input.password === undefined ? undefined : await hashPassword(input.password);
    return this.#prisma.$transaction(async (tx) => {
      const person = await tx.person.update({
        where: { id: before.id },
        data: { name: input.name, isAdmin: input.admin, passwordHash },
      });
      const view = personView(person);
      await this.#audit.record(
        context,
        {
          type: "admin_change",
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
  }

  /** Marks a person as gone: their agents can no longer authenticate. */
  async offboard(context: AuditContext, idOrEmail: string, reason: string): Promise<PersonView> {
    const before = await this.find(idOrEmail);
    const view = await this.#prisma.$transaction(async (tx) => {
      const person = await tx.person.update({ where: { id: before.id }, data: { status: "offboarded" } });
      const after = personView(person);
      await this.#audit.record(
        context,
        {
          type: "admin_change",
          action: "person.offboard",
          target: person.id,
          reason,
          before: personView(before),
          after,
        },
        tx,
      );
      return after;
    });
    const owned = await this.#prisma.agent.findMany({
      where: { ownerId: before.id },
      select: { clientId: true },
    });
    await Promise.all(owned.map((agent) => this.#bus.publish("client", agent.clientId)));
    await this.#bus.publish("delegation", "*");
    return view;
  }
}
