// A database outage: the one test of "the database could not be reached" (a connection PostgreSQL cut — a restart,
// a failover, an administrator's pg_terminate_backend —, refused or let time out), and the one answer to it. Such a
// failure passes when retried later; it is not a bug: requests that meet it are answered 503
// temporarily_unavailable with Retry-After, not 500. It arrives in several shapes — pg's own errors, Node's socket
// errors, and Prisma's, which carry the driver's error in `meta.driverAdapterError` — and is recognised here,
// below every surface, so that each answers it the same way.
import type { Context } from "koa";
import { ApiError } from "./api-error.ts";

/** SQLSTATEs of a connection lost or refused: class 08, admin/crash shutdown, not accepting yet, full. */
const SQLSTATES = new Set(["57P01", "57P02", "57P03", "57P05", "53300"]);
const SOCKET_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);
/** Prisma: cannot reach, timed out, operation timed out, server closed the connection, no pool connection. */
const PRISMA_CODES = new Set(["P1001", "P1002", "P1008", "P1017", "P2024"]);
/** The driver adapter's kinds for a lost or refused connection (@prisma/adapter-pg's convertDriverError). */
const ADAPTER_KINDS = new Set([
  "DatabaseNotReachable",
  "ConnectionClosed",
  "SocketTimeout",
  "TooManyConnections",
]);
/** pg's errors without a code, raised on the client side when its connection is gone. */
const PG_MESSAGES =
  /Connection terminated unexpectedly|Connection terminated due to connection timeout|encountered a connection error and is not queryable|timeout exceeded when trying to connect/;

/** Why the database could not be reached (the driver's message), when that is what `error` is; else undefined. */
export function databaseOutage(error: unknown): string | undefined {
  const cause = causes(error).find((node) => {
    const code = typeof node.code === "string" ? node.code : undefined;
    const original = typeof node.originalCode === "string" ? node.originalCode : undefined;
    return (
      [code, original].some((value) => value && (SQLSTATES.has(value) || value.startsWith("08"))) ||
      (code !== undefined && (SOCKET_CODES.has(code) || PRISMA_CODES.has(code))) ||
      (typeof node.kind === "string" && ADAPTER_KINDS.has(node.kind)) ||
      (typeof node.message === "string" && PG_MESSAGES.test(node.message))
    );
  });
  if (!cause) return undefined;
  const message = typeof cause.message === "string" ? cause.message.trim().split("\n").at(-1) : undefined;
  return message || String(cause.code ?? cause.kind);
}

type Node = Record<string, unknown>;

/** The error and what it wraps: `cause`, Prisma's driver adapter error and its cause, an AggregateError's. */
function causes(error: unknown): Node[] {
  const found: Node[] = [];
  const visit = (value: unknown, depth: number) => {
    if (depth > 5 || typeof value !== "object" || value === null || found.includes(value as Node)) return;
    const node = value as Node;
    found.push(node);
    visit(node.cause, depth + 1);
    const meta = node.meta as Node | undefined;
    if (typeof meta === "object" && meta !== null) visit(meta.driverAdapterError, depth + 1);
    if (Array.isArray(node.errors)) for (const inner of node.errors) visit(inner, depth + 1);
  };
  visit(error, 0);
  return found;
}

/** The answer to an outage. */
export const databaseUnavailable = () =>
  new ApiError(503, "temporarily_unavailable", "the database is unavailable; try again shortly");

export interface UnavailableBody {
  error: string;
  error_description: string;
}

/** Seconds a client should wait before trying again after a 503 (RFC 9110 §10.2.3 Retry-After). */
export const RETRY_AFTER_SECONDS = "1";

/** Answers `databaseUnavailable` as JSON, with Retry-After. */
export function answerDatabaseUnavailable(ctx: Pick<Context, "status" | "body" | "set">): void {
  const unavailable = databaseUnavailable();
  ctx.status = unavailable.status;
  ctx.set("Retry-After", RETRY_AFTER_SECONDS);
  const body: UnavailableBody = { error: unavailable.error, error_description: unavailable.message };
  ctx.body = body;
}
