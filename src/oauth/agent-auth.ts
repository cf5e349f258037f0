// Authenticates an agent on Deputy's own endpoints (POST /tasks/{task_id}/complete) with the credentials it uses
// at the token endpoint: client_secret_basic, client_secret_post or private_key_jwt (RFC 7523 §2.2), so an agent
// needs nothing new to end its task.
//
// Why not an access token: the agent holds only delegation tokens (bearer tokens that sub-agents may hold too),
// and proving "I am the delegate" is exactly what client authentication is for. Why not oidc-provider's own
// client-authentication middleware: it only runs inside oidc-provider's router and would tie this endpoint to
// several of its internal modules. What is used here is public: `Client.find` (the registry: suspended agents and
// agents of offboarded owners are unknown, as at the token endpoint), the client's `compareClientSecret` (the same
// hashed comparison, see provider-internals.ts), its registered `jwks`, and `ReplayDetection` for assertion jtis
// (shared by every process, so an assertion accepted by one is refused by all).
import { createLocalJWKSet, decodeJwt, type JSONWebKeySet, errors as joseErrors, jwtVerify } from "jose";
import type { Context } from "koa";
import type Provider from "oidc-provider";
import { ApiError } from "../http/api-error.ts";

const ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ALGORITHMS = ["ES256", "EdDSA", "PS256", "RS256"];
const CLOCK_TOLERANCE_SECONDS = 15;

export interface AgentAuthOptions {
  provider: Provider;
  /** Audiences an assertion may name besides the issuer and the token endpoint: this endpoint's URL. */
  endpointUrl: string;
}

/** Returns the authenticated agent's client id, or throws 400/401 as RFC 6749 §5.2 describes. */
export async function authenticateAgent(
  ctx: Context,
  body: Record<string, unknown>,
  options: AgentAuthOptions,
): Promise<string> {
  const header = ctx.get("authorization");
  const assertion = stringParam(body.client_assertion);
  const postedSecret = stringParam(body.client_secret);
  const used = [header, assertion, postedSecret].filter(Boolean).length;
  if (used > 1) throw new ApiError(400, "invalid_request", "use exactly one client authentication method");
  if (used === 0) {
    ctx.set("WWW-Authenticate", `Basic realm="${options.provider.issuer}"`);
    throw new ApiError(
      401,
      "invalid_client",
      "authenticate as the agent: HTTP Basic with its client secret, or a private_key_jwt client_assertion",
    );
  }
  if (assertion) return viaAssertion(assertion, body, options);
  const { clientId, secret, method } = header
    ? parseBasic(header)
    : { clientId: stringParam(body.client_id), secret: postedSecret, method: "client_secret_post" };
  const client = clientId ? await options.provider.Client.find(clientId) : undefined;
  // oidc-provider accepts either secret transport for a client registered with either.
  const registered = client?.clientAuthMethod;
  if (
    client?.deputy_kind !== "agent" ||
    (registered !== "client_secret_basic" && registered !== "client_secret_post") ||
    !secret ||
    !(await client.compareClientSecret(secret))
  ) {
    if (method === "client_secret_basic")
      ctx.set("WWW-Authenticate", `Basic realm="${options.provider.issuer}"`);
    throw invalidClient();
  }
  return client.clientId;
}

async function viaAssertion(
  assertion: string,
  body: Record<string, unknown>,
  { provider, endpointUrl }: AgentAuthOptions,
): Promise<string> {
  if (body.client_assertion_type !== ASSERTION_TYPE)
    throw new ApiError(400, "invalid_request", `client_assertion_type must be ${ASSERTION_TYPE}`);
  let claimed: string | undefined;
  try {
    claimed = decodeJwt(assertion).sub;
  } catch {
    throw new ApiError(400, "invalid_request", "client_assertion is not a JWT");
  }
  const client = claimed ? await provider.Client.find(claimed) : undefined;
  if (client?.deputy_kind !== "agent" || client.clientAuthMethod !== "private_key_jwt" || !client.jwks)
    throw invalidClient();
  const clientId = client.clientId;
  let payload: { jti?: unknown; exp?: unknown };
  try {
    ({ payload } = await jwtVerify(assertion, createLocalJWKSet(client.jwks as JSONWebKeySet), {
      issuer: clientId,
      subject: clientId,
      audience: [provider.issuer, `${provider.issuer}/token`, endpointUrl],
      algorithms: ALGORITHMS,
      clockTolerance: CLOCK_TOLERANCE_SECONDS,
      requiredClaims: ["exp", "jti"],
    }));
  } catch (error) {
    if (error instanceof joseErrors.JOSEError) throw invalidClient();
    throw error;
  }
  const jti = String(payload.jti);
  const exp = Number(payload.exp);
  if (!(await provider.ReplayDetection.unique(clientId, jti, exp + CLOCK_TOLERANCE_SECONDS)))
    throw new ApiError(401, "invalid_client", "client_assertion has already been used");
  return clientId;
}

function parseBasic(header: string): { clientId?: string; secret?: string; method: string } {
  const match = /^Basic ([A-Za-z0-9+/]+={0,2})$/i.exec(header.trim());
  if (!match?.[1])
    throw new ApiError(400, "invalid_request", "invalid Authorization header (expected Basic)");
  const decoded = Buffer.from(match[1], "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) throw new ApiError(400, "invalid_request", "invalid Authorization header (expected Basic)");
  try {
    // RFC 6749 §2.3.1: both parts are form-urlencoded.
    const decode = (part: string) => decodeURIComponent(part.replace(/\+/g, "%20"));
    return {
      clientId: decode(decoded.slice(0, colon)),
      secret: decode(decoded.slice(colon + 1)),
      method: "client_secret_basic",
    };
  } catch {
    throw new ApiError(400, "invalid_request", "client_id and client_secret are not properly encoded");
  }
}

function stringParam(value: unknown): string | undefined {
  return typeof value === "string" && value.length > 0 ? value : undefined;
}

function invalidClient(): ApiError {
  return new ApiError(401, "invalid_client", "client authentication failed");
}
