// The CLI's connection to a running server's admin API: fetches an admin token, then calls /admin/v1.
import { readFileSync } from "node:fs";
import path from "node:path";
import { BOOTSTRAP_CLIENT_ID, BOOTSTRAP_FILE } from "../admin/bootstrap.ts";
import { ADMIN_SCOPE } from "../http/oauth-constants.ts";

export class CliError extends Error {}

export interface AdminCredentials {
  url: string;
  clientId: string;
  clientSecret: string;
}

/** DEPUTY_URL, DEPUTY_ADMIN_CLIENT_ID/SECRET, DEPUTY_BOOTSTRAP_ADMIN_SECRET, or the bootstrap file. */
export function resolveCredentials(env: Record<string, string | undefined> = process.env): AdminCredentials {
  const url = (env.DEPUTY_URL || `http://localhost:${env.PORT || 3000}`).replace(/\/$/, "");
  const clientId = env.DEPUTY_ADMIN_CLIENT_ID || BOOTSTRAP_CLIENT_ID;
  const fromEnv = env.DEPUTY_ADMIN_CLIENT_SECRET || env.DEPUTY_BOOTSTRAP_ADMIN_SECRET;
  if (fromEnv) return { url, clientId, clientSecret: fromEnv };
  const file = path.resolve(env.DEPUTY_DATA_DIR || ".deputy", BOOTSTRAP_FILE);
  try {
    const stored = JSON.parse(readFileSync(file, "utf8")) as { client_id?: string; client_secret?: string };
    if (typeof stored.client_secret === "string")
      return { url, clientId: stored.client_id ?? clientId, clientSecret: stored.client_secret };
  } catch {
    // fall through to the message below
  }
  throw new CliError(
    `no admin credentials: set DEPUTY_ADMIN_CLIENT_SECRET (or DEPUTY_BOOTSTRAP_ADMIN_SECRET), or run where ${file} exists`,
  );
}

export class AdminClient {
  readonly #credentials: AdminCredentials;
  #token?: string;

  constructor(credentials: AdminCredentials) {
    this.#credentials = credentials;
  }

  async request<T = unknown>(method: string, pathname: string, body?: unknown): Promise<T> {
    const token = await this.#accessToken();
    const response = await this.#fetch(`/admin/v1${pathname}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return (await readJson(response)) as T;
  }

  /** A GET whose successful response is returned unread (for streamed bodies); errors throw as `request`'s do. */
  async stream(pathname: string): Promise<Response> {
    const token = await this.#accessToken();
    const response = await this.#fetch(`/admin/v1${pathname}`, {
      headers: { authorization: `Bearer ${token}` },
    });
    if (!response.ok) await readJson(response);
    return response;
  }

  async #accessToken(): Promise<string> {
    if (this.#token) return this.#token;
    const { clientId, clientSecret } = this.#credentials;
    const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString(
      "base64",
    );
    const response = await this.#fetch("/token", {
      method: "POST",
      headers: { authorization: `Basic ${basic}`, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "client_credentials", scope: ADMIN_SCOPE }).toString(),
    });
    const result = (await readJson(response)) as { access_token: string };
    this.#token = result.access_token;
    return this.#token;
  }

  async #fetch(pathname: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(`${this.#credentials.url}${pathname}`, init);
    } catch {
      throw new CliError(
        `cannot reach a Deputy server at ${this.#credentials.url} (start it, or set DEPUTY_URL)`,
      );
    }
  }
}

async function readJson(response: Response): Promise<unknown> {
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    throw new CliError(`unexpected response from the server (HTTP ${response.status})`);
  }
  if (!response.ok) {
    const { error, error_description } = parsed as { error?: string; error_description?: string };
    throw new CliError(`${error ?? `HTTP ${response.status}`}: ${error_description ?? "request failed"}`);
  }
  return parsed;
}
