// Typed settings from the environment, validated once at start. Every bad setting is named in the error.
import path from "node:path";
import { z } from "zod";

const NODE_ENVS = ["development", "production", "test"] as const;

const schema = z
  .object({
    NODE_ENV: z.enum(NODE_ENVS).default("development"),
    PORT: z.coerce.number().int().min(0).max(65535).default(3000),
    HOST: z.string().min(1).default("0.0.0.0"),
    ISSUER: z.url({ protocol: /^https?$/ }).optional(),
    TRUST_PROXY: z
      .string()
      .regex(
        /^(?:off|on|false|true|\d)$/,
        "must be off, on (one reverse proxy) or how many proxies are in front (0-9)",
      )
      .default("off")
      .transform((value) =>
        value === "on" || value === "true" ? 1 : value === "off" || value === "false" ? 0 : Number(value),
      ),
    DATABASE_URL: z
      .string()
      .regex(/^postgres(ql)?:\/\//, "must be a postgresql:// URL (unset it to use the embedded database)")
      .optional(),
    REDIS_URL: z
      .string()
      .regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL")
      .default("redis://127.0.0.1:6379"),
    REDIS_PREFIX: z.string().default("deputy:"),
    DEPUTY_DATA_DIR: z.string().min(1).default(".deputy"),
    DEPUTY_BOOTSTRAP_ADMIN_SECRET: z.string().min(32, "must be at least 32 characters").optional(),
    DEPUTY_MAX_DELEGATION_DEPTH: z.coerce.number().int().min(1).max(10).default(3),
    DEPUTY_MAX_DELEGATION_SECONDS: z.coerce
      .number()
      .int()
      .min(60)
      .max(7 * 86400)
      .default(8 * 3600),
    DEPUTY_UNTASKED_DELEGATION_SECONDS: z.coerce.number().int().min(60).max(86400).default(3600),
    DEPUTY_SESSION_SECONDS: z.coerce
      .number()
      .int()
      .min(300)
      .max(86400)
      .default(8 * 3600),
    DEPUTY_LOGIN_MAX_FAILURES: z.coerce.number().int().min(1).max(100).default(5),
    DEPUTY_LOGIN_MAX_FAILURES_PER_ADDRESS: z.coerce.number().int().min(1).max(10000).default(20),
    DEPUTY_LOGIN_LOCKOUT_SECONDS: z.coerce.number().int().min(1).max(86400).default(900),
    DEPUTY_CIBA_MAX_PENDING_PER_PERSON: z.coerce.number().int().min(1).max(100).default(5),
    DEPUTY_CIBA_MAX_PENDING_PER_AGENT: z.coerce.number().int().min(1).max(100000).default(100),
    DEPUTY_CIBA_REQUESTS_PER_MINUTE: z.coerce.number().int().min(1).max(100000).default(60),
    DEPUTY_STEP_UP_WINDOW_SECONDS: z.coerce.number().int().min(10).max(86400).default(600),
    DEPUTY_TOKEN_TTL_CAP: z.coerce.number().int().min(10).max(900).default(900),
    DEPUTY_ADMIN_TOKEN_TTL: z.coerce.number().int().min(30).max(3600).default(600),
    DEPUTY_KEY_RETIRING_SECONDS: z.coerce
      .number()
      .int()
      .min(300)
      .max(30 * 86400)
      .default(86400),
    DEPUTY_WORKERS: z.enum(["inline", "off"]).default("inline"),
    DEPUTY_SWEEP_SECONDS: z.coerce.number().int().min(1).max(3600).default(30),
    LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
    DEPUTY_AUDIT_HOT_DAYS: z.coerce.number().int().min(0).max(36500).default(90),
    DEPUTY_AUDIT_ARCHIVE_DIR: z.string().min(1).optional(),
  })
  // A retiring key must outlive the tokens it signed: the longest is an exchanged JWT (ID tokens live 300 s).
  .refine((env) => env.DEPUTY_KEY_RETIRING_SECONDS >= env.DEPUTY_TOKEN_TTL_CAP, {
    path: ["DEPUTY_KEY_RETIRING_SECONDS"],
    message:
      "must be at least DEPUTY_TOKEN_TTL_CAP: tokens signed with a retiring key must expire before it is removed",
  })
  .transform((env) => ({
    env: env.NODE_ENV,
    port: env.PORT,
    host: env.HOST,
    issuer: (env.ISSUER ?? `http://localhost:${env.PORT}`).replace(/\/$/, ""),
    /** How many reverse proxies in front are trusted for X-Forwarded-Proto/Host/For (0: the headers are ignored). */
    trustedProxies: env.TRUST_PROXY,
    databaseUrl: env.DATABASE_URL,
    redisUrl: env.REDIS_URL,
    redisPrefix: env.REDIS_PREFIX,
    dataDir: path.resolve(env.DEPUTY_DATA_DIR),
    bootstrapAdminSecret: env.DEPUTY_BOOTSTRAP_ADMIN_SECRET,
    maxDelegationDepth: env.DEPUTY_MAX_DELEGATION_DEPTH,
    maxDelegationSeconds: env.DEPUTY_MAX_DELEGATION_SECONDS,
    untaskedDelegationSeconds: Math.min(
      env.DEPUTY_UNTASKED_DELEGATION_SECONDS,
      env.DEPUTY_MAX_DELEGATION_SECONDS,
    ),
    sessionSeconds: env.DEPUTY_SESSION_SECONDS,
    login: {
      maxFailures: env.DEPUTY_LOGIN_MAX_FAILURES,
      maxFailuresPerAddress: env.DEPUTY_LOGIN_MAX_FAILURES_PER_ADDRESS,
      lockoutSeconds: env.DEPUTY_LOGIN_LOCKOUT_SECONDS,
    },
    ciba: {
      maxPendingPerPerson: env.DEPUTY_CIBA_MAX_PENDING_PER_PERSON,
      maxPendingPerAgent: env.DEPUTY_CIBA_MAX_PENDING_PER_AGENT,
      requestsPerMinute: env.DEPUTY_CIBA_REQUESTS_PER_MINUTE,
    },
    stepUpWindowSeconds: env.DEPUTY_STEP_UP_WINDOW_SECONDS,
    tokenTtlCap: env.DEPUTY_TOKEN_TTL_CAP,
    adminTokenTtl: env.DEPUTY_ADMIN_TOKEN_TTL,
    /** How long a key stays published and accepted after a rotation retires it. */
    keyRetiringSeconds: env.DEPUTY_KEY_RETIRING_SECONDS,
    /** Whether this process runs the revocation job workers (`off`: a `deputy worker` process does). */
    workers: env.DEPUTY_WORKERS,
    sweepSeconds: env.DEPUTY_SWEEP_SECONDS,
    logLevel: env.LOG_LEVEL,
    audit: {
      hotDays: env.DEPUTY_AUDIT_HOT_DAYS,
      archiveDir: path.resolve(
        env.DEPUTY_AUDIT_ARCHIVE_DIR ?? path.join(env.DEPUTY_DATA_DIR, "audit-archive"),
      ),
      /** MEASUREMENT ONLY: exchanges write no audit event (bench/audit.ts prices auditing with it). */
    },
  }));

export type Config = z.output<typeof schema>;

export class ConfigError extends Error {}

/** Reads settings from `env` (process.env by default); throws ConfigError naming every bad setting. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const picked = Object.fromEntries(
    Object.keys(schema.in.shape).map((key) => [key, env[key] === "" ? undefined : env[key]]),
  );
  const result = schema.safeParse(picked);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`);
    throw new ConfigError(`invalid configuration: ${problems.join("; ")}`);
  }
  return result.data;
}
