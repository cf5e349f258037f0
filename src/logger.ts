// Structured JSON logs. Secrets and tokens never reach a log line: known sensitive fields are redacted.
import { pino } from "pino";

export type Logger = pino.Logger;

export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: "deputy" },
    redact: {
      paths: [
        "*.password",
        "*.client_secret",
        "*.clientSecret",
        "*.secret",
        "*.token",
        "*.access_token",
        "*.subject_token",
        "*.actor_token",
        "*.authorization",
        "req.headers.authorization",
        "req.headers.cookie",
      ],
      censor: "[redacted]",
    },
  });
}
