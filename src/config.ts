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
    DEPUTY_TOKEN_TTL_CAP: z.coerce.number().int().min(10).max(900).default(900),
    DEPUTY_ADMIN_TOKEN_TTL: z.coerce.number().int().min(30).max(3600).default(600),
    LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  })
  .transform((env) => ({
    env: env.NODE_ENV,
    port: env.PORT,
    host: env.HOST,
    issuer: (env.ISSUER ?? `http://localhost:${env.PORT}`).replace(/\/$/, ""),
    databaseUrl: env.DATABASE_URL,
    redisUrl: env.REDIS_URL,
    redisPrefix: env.REDIS_PREFIX,
    dataDir: path.resolve(env.DEPUTY_DATA_DIR),
    bootstrapAdminSecret: env.DEPUTY_BOOTSTRAP_ADMIN_SECRET,
    maxDelegationDepth: env.DEPUTY_MAX_DELEGATION_DEPTH,
    maxDelegationSeconds: env.DEPUTY_MAX_DELEGATION_SECONDS,
    tokenTtlCap: env.DEPUTY_TOKEN_TTL_CAP,
    adminTokenTtl: env.DEPUTY_ADMIN_TOKEN_TTL,
    logLevel: env.LOG_LEVEL,
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
