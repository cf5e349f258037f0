// Starts a real Deputy server on an ephemeral port, with its own database (a copy of the migrated PGlite
// template, or a fresh PostgreSQL database) and its own Redis key prefix, so test files never see each other.
import { randomBytes } from "node:crypto";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import pg from "pg";
import { inject } from "vitest";
import { createDeputy, type Deputy } from "../../src/app.ts";
import { loadConfig } from "../../src/config.ts";
import { createLogger } from "../../src/logger.ts";

export type Backend = "pglite" | "postgresql";
export const BACKENDS: Backend[] = ["pglite", "postgresql"];
export const POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test";
export const ADMIN_SECRET = "test-admin-secret-that-is-long-enough-0123456789";

export interface TestServer {
  url: string;
  deputy: Deputy;
  dataDir: string;
  env: Record<string, string>;
  adminToken(): Promise<string>;
  admin<T = any>(
    method: string,
    pathname: string,
    body?: unknown,
    token?: string,
  ): Promise<{ status: number; body: T }>;
  close(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

export async function createPostgresDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  const name = `deputy_t_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  return {
    url: `postgresql://postgres@127.0.0.1:5432/${name}`,
    async drop() {
      const client = new pg.Client({ connectionString: POSTGRES_ADMIN_URL });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    },
  };
}

/** Environment for a server process of its own: a data dir, a database and a Redis prefix. */
export async function prepareEnvironment(backend: Backend, extra: Record<string, string> = {}) {
  const dataDir = mkdtempSync(path.join(tmpdir(), "deputy-test-"));
  const port = await freePort();
  const env: Record<string, string> = {
    NODE_ENV: "test",
    PORT: String(port),
    HOST: "127.0.0.1",
    DEPUTY_DATA_DIR: dataDir,
    REDIS_PREFIX: `deputy-test:${randomBytes(6).toString("hex")}:`,
    DEPUTY_BOOTSTRAP_ADMIN_SECRET: ADMIN_SECRET,
    LOG_LEVEL: "silent",
    ...extra,
  };
  let dropDatabase = async () => {};
  if (backend === "pglite") {
    cpSync(inject("pgliteTemplate"), path.join(dataDir, "pgdata"), { recursive: true });
  } else {
    const database = await createPostgresDatabase();
    env.DATABASE_URL = database.url;
    dropDatabase = database.drop;
  }
  return {
    env,
    dataDir,
    url: `http://127.0.0.1:${port}`,
    async cleanup() {
      await dropDatabase();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

export async function startServer(
  backend: Backend = "pglite",
  extra: Record<string, string> = {},
): Promise<TestServer> {
  const prepared = await prepareEnvironment(backend, { ISSUER: "", ...extra });
  prepared.env.ISSUER ||= `http://127.0.0.1:${prepared.env.PORT}`;
  const config = loadConfig(prepared.env);
  const deputy = await createDeputy(config, createLogger("silent"));
  const server: Server = createServer(deputy.app.callback());
  await new Promise<void>((resolve) => server.listen(config.port, "127.0.0.1", resolve));
  const url = prepared.url;
  let cachedToken: string | undefined;

  const adminToken = async () => {
    const response = await fetch(`${url}/token`, {
      method: "POST",
      headers: {
        authorization: `Basic ${Buffer.from(`deputy-admin:${ADMIN_SECRET}`).toString("base64")}`,
        "content-type": "application/x-www-form-urlencoded",
      },
      body: "grant_type=client_credentials&scope=deputy%3Aadmin",
    });
    const body = (await response.json()) as { access_token?: string };
    if (!body.access_token) throw new Error(`admin token request failed: ${JSON.stringify(body)}`);
    return body.access_token;
  };

  return {
    url,
    deputy,
    dataDir: prepared.dataDir,
    env: prepared.env,
    adminToken,
    async admin(method, pathname, body, token) {
      cachedToken ??= await adminToken();
      const response = await fetch(`${url}/admin/v1${pathname}`, {
        method,
        headers: {
          authorization: `Bearer ${token ?? cachedToken}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
      });
      const text = await response.text();
      return { status: response.status, body: text ? JSON.parse(text) : undefined };
    },
    async close() {
      await new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await deputy.close();
      await prepared.cleanup();
    },
  };
}
