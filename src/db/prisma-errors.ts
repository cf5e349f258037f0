// Recognises the Prisma errors that map to client mistakes rather than server faults.
export function isUniqueViolation(error: unknown): boolean {
  return typeof error === "object" && error !== null && "code" in error && error.code === "P2002";
}
