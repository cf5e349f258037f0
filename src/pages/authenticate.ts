// Sign-in for local accounts: email + password (scrypt). Every failure looks the same to the visitor, and an
// unknown email costs the same work as a known one (the password is checked against a dummy hash), so neither
// the message nor the timing tells whether an account exists. Offboarded people cannot sign in.
import { randomBytes } from "node:crypto";
import type { AuditContext, AuditLog } from "../audit/audit-log.ts";
import type { Person, PrismaClient } from "../generated/prisma/client.ts";
import { isPlainText } from "../http/plain-text.ts";
import { hashPassword, verifyPassword } from "../security/secrets.ts";
import type { LoginThrottle } from "./login-throttle.ts";

export type SignInResult = { ok: true; person: Person } | { ok: false; reason: "invalid" | "throttled" };

const MAX_EMAIL = 254;
const MAX_PASSWORD = 1024;

export class Authenticator {
  readonly #prisma: PrismaClient;
  readonly #throttle: LoginThrottle;
  readonly #audit: AuditLog;
  readonly #dummyHash: Promise<string>;

  constructor(prisma: PrismaClient, throttle: LoginThrottle, audit: AuditLog) {
    this.#prisma = prisma;
    this.#throttle = throttle;
    this.#audit = audit;
    this.#dummyHash = hashPassword(randomBytes(16).toString("base64url"));
  }

  async signIn(context: AuditContext, rawEmail: unknown, rawPassword: unknown): Promise<SignInResult> {
    const email = typeof rawEmail === "string" ? rawEmail.trim().toLowerCase().slice(0, MAX_EMAIL) : "";
    const password = typeof rawPassword === "string" ? rawPassword.slice(0, MAX_PASSWORD) : "";
    const address = context.clientAddress ?? "unknown";
    const event = { decision: "deny" as const };
    // Counted before the password is checked, so concurrent attempts cannot pass the limits (login-throttle.ts).
    const attempt = await this.#throttle.attempt(email, address);
    if (!attempt) {
      await this.#audit.record(
        { ...context, actor: email || "anonymous" },
        { ...event, action: "login.throttled", reason: "too many failed attempts" },
      );
      return { ok: false, reason: "throttled" };
    }
    const person = await this.#findPerson(email);
    const matches = await verifyPassword(password, person?.passwordHash ?? (await this.#dummyHash));
    if (!person || !matches || person.status !== "active") {
      const reason = !person ? "unknown account" : !matches ? "wrong password" : `person is ${person.status}`;
      await this.#audit.record(
        { ...context, actor: email || "anonymous" },
        { ...event, action: "login.failure", reason, target: person?.id },
      );
      return { ok: false, reason: "invalid" };
    }
    await attempt.succeeded();
    await this.#audit.record(
      { ...context, actor: person.email },
      { action: "login.success", decision: "allow", target: person.id },
    );
    return { ok: true, person };
  }

  /** The account of `email`; none for text no account can have (a NUL would make the database refuse the query). */
  async #findPerson(email: string): Promise<Person | null> {
    if (!email || !isPlainText(email)) return null;
    return this.#prisma.person.findUnique({ where: { email } });
  }
}
