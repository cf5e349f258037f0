// Errors of Deputy's own JSON APIs, rendered as `{ "error": …, "error_description": … }` (RFC 6749 §5.2 style).
export class ApiError extends Error {
  readonly status: number;
  readonly error: string;

  constructor(status: number, error: string, description: string) {
    super(description);
    this.status = status;
    this.error = error;
  }
}

export const notFound = (what: string) => new ApiError(404, "not_found", `${what} does not exist`);
export const conflict = (description: string) => new ApiError(409, "conflict", description);
export const invalidRequest = (description: string) => new ApiError(400, "invalid_request", description);
