// Interoperability with a client nobody here wrote: openid-client 6 discovers Deputy, exchanges a subject token
// (RFC 8693) with client_secret_basic, a resource server introspects (RFC 7662), the agent revokes (RFC 7009).
// openid-client lower-cases token_type and ignores issued_token_type and cnf, so those are asserted here, on the
// raw responses as well as on what the library returns; so are DPoP binding (RFC 9449), proof replay and an
// agent registered as DPoP-only.
import { randomUUID } from "node:crypto";
import { calculateJwkThumbprint, exportJWK, SignJWT } from "jose";
import {
  allowInsecureRequests,
  ClientSecretBasic,
  Configuration,
  customFetch,
  type DPoPHandle,
  discovery,
  genericGrantRequest,
  getDPoPHandle,
  ResponseBodyError,
  randomDPoPKeyPair,
  tokenIntrospection,
  tokenRevocation,
} from "openid-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import {
  ACCESS_TOKEN,
  type Agent,
  createAgent,
  createPerson,
  createResource,
  delegate,
  type Resource,
  TOKEN_EXCHANGE,
} from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

interface Exchanged {
  url: string;
  status: number;
  requestHeaders: Headers;
  requestBody: string;
  body: any;
}

/** The client id and secret of an RFC 6749 §2.3.1 Basic header (each form-urlencoded, as openid-client sends them). */
function basicCredentials(headers: Headers | undefined): [string, string] | undefined {
  const match = /^Basic ([A-Za-z0-9+/=]+)$/.exec(headers?.get("authorization") ?? "");
  if (!match) return undefined;
  const decoded = Buffer.from(match[1] as string, "base64").toString("utf8");
  const [id, secret] = decoded.split(":").map((part) => decodeURIComponent(part.replaceAll("+", " ")));
  return [id as string, secret as string];
}

describe("openid-client 6 against Deputy", () => {
  let server: TestServer;
  let person: { id: string; email: string };
  let calendar: Resource;
  let agent: Agent;
  let agentConfig: Configuration;
  let resourceConfig: Configuration;
  /** Every request openid-client made through a Configuration, with the raw response body. */
  const seen: Exchanged[] = [];

  /** A Configuration whose requests are recorded, so raw responses can be checked too. */
  function recording(config: Configuration): Configuration {
    config[customFetch] = async (url, options) => {
      const response = await fetch(url, options as RequestInit);
      const text = await response.clone().text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {}
      seen.push({
        url,
        status: response.status,
        requestHeaders: new Headers(options.headers),
        requestBody: String(options.body ?? ""),
        body,
      });
      return response;
    };
    return config;
  }

  /** The last token-endpoint exchange openid-client made. */
  function lastTokenRequest(): Exchanged {
    const found = seen.filter((r) => r.url === `${server.url}/token`).at(-1);
    if (!found) throw new Error("openid-client made no token request");
    return found;
  }

  async function agentDiscovery(who: Agent): Promise<Configuration> {
    return recording(
      await discovery(new URL(server.url), who.client_id, undefined, ClientSecretBasic(who.client_secret), {
        execute: [allowInsecureRequests],
      }),
    );
  }

  async function subjectTokenFor(who: Agent): Promise<string> {
    const { subjectToken } = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: who.client_id,
      grants: [{ resource: calendar.uri, scopes: ["calendar.read"] }],
    });
    return subjectToken;
  }

  function exchangeWith(config: Configuration, subjectToken: string, DPoP?: DPoPHandle) {
    return genericGrantRequest(
      config,
      TOKEN_EXCHANGE,
      { subject_token: subjectToken, subject_token_type: ACCESS_TOKEN, resource: calendar.uri },
      DPoP ? { DPoP } : undefined,
    );
  }

  beforeAll(async () => {
    server = await startServer();
    person = await createPerson(server);
    calendar = await createResource(server, "https://calendar.example.com", [
      "calendar.read",
      "calendar.write",
    ]);
    agent = await createAgent(server, person.email, [{ resource: calendar.uri, scopes: ["calendar.read"] }]);
    agentConfig = await agentDiscovery(agent);
    resourceConfig = recording(
      new Configuration(
        agentConfig.serverMetadata(),
        calendar.client_id,
        undefined,
        ClientSecretBasic(calendar.client_secret),
      ),
    );
    allowInsecureRequests(resourceConfig);
  });

  afterAll(async () => {
    await server?.close();
  });

  it("discovers Deputy: issuer, endpoints, the token-exchange grant and DPoP", () => {
    const metadata = agentConfig.serverMetadata();
    expect(metadata.issuer).toBe(server.url);
    expect(metadata.token_endpoint).toBe(`${server.url}/token`);
    expect(metadata.introspection_endpoint).toBe(`${server.url}/token/introspection`);
    expect(metadata.revocation_endpoint).toBe(`${server.url}/token/revocation`);
    expect(metadata.token_endpoint_auth_methods_supported).toContain("client_secret_basic");
    expect(metadata.grant_types_supported).toContain(TOKEN_EXCHANGE);
    expect(metadata.dpop_signing_alg_values_supported).toContain("ES256");
  });

  it("exchanges with client_secret_basic; the resource server introspects; the agent revokes", async () => {
    const subjectToken = await subjectTokenFor(agent);
    const tokens = await exchangeWith(agentConfig, subjectToken);

    const raw = lastTokenRequest();
    expect(basicCredentials(raw.requestHeaders)).toEqual([agent.client_id, agent.client_secret]);
    expect(new URLSearchParams(raw.requestBody).has("client_secret")).toBe(false);
    expect(raw.requestHeaders.has("dpop")).toBe(false);
    expect(raw.status).toBe(200);
    // RFC 8693 §2.2.1: issued_token_type is required; openid-client does not check it.
    expect(raw.body.issued_token_type).toBe(ACCESS_TOKEN);
    expect(tokens.issued_token_type).toBe(ACCESS_TOKEN);
    // No proof was sent: a bearer token (openid-client lower-cases token_type).
    expect(raw.body.token_type).toBe("Bearer");
    expect(tokens.token_type).toBe("bearer");
    expect(tokens.scope).toBe("calendar.read");
    expect(tokens.expires_in).toBeGreaterThan(0);
    expect(tokens.access_token).not.toBe(subjectToken);

    const active = await tokenIntrospection(resourceConfig, tokens.access_token);
    expect(active).toMatchObject({
      active: true,
      client_id: agent.client_id,
      sub: person.id,
      scope: "calendar.read",
      token_type: "Bearer",
      act: { sub: agent.client_id },
    });
    expect([active.aud].flat()).toEqual([calendar.uri]);
    expect(active.cnf).toBeUndefined();
    expect(basicCredentials(seen.at(-1)?.requestHeaders)).toEqual([
      calendar.client_id,
      calendar.client_secret,
    ]);

    await tokenRevocation(agentConfig, tokens.access_token);
    expect(seen.at(-1)).toMatchObject({ url: `${server.url}/token/revocation`, status: 200 });
    // RFC 7662 §2.2: nothing but active=false about a revoked token.
    expect(await tokenIntrospection(resourceConfig, tokens.access_token)).toEqual({ active: false });
  });

  it("binds the token to a DPoP key: token_type DPoP and cnf.jkt is the key's thumbprint", async () => {
    const keyPair = await randomDPoPKeyPair("ES256");
    const thumbprint = await calculateJwkThumbprint(await exportJWK(keyPair.publicKey));
    const tokens = await exchangeWith(
      agentConfig,
      await subjectTokenFor(agent),
      getDPoPHandle(agentConfig, keyPair),
    );

    const raw = lastTokenRequest();
    expect(raw.requestHeaders.get("dpop")).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(raw.status).toBe(200);
    expect(raw.body.token_type).toBe("DPoP");
    expect(tokens.token_type).toBe("dpop");
    expect(raw.body.issued_token_type).toBe(ACCESS_TOKEN);

    const introspection = await tokenIntrospection(resourceConfig, tokens.access_token);
    expect(introspection.active).toBe(true);
    expect(introspection.cnf?.jkt).toBe(thumbprint);
    expect(introspection.token_type).toBe("DPoP");
  });

  it("refuses a replayed DPoP proof with invalid_dpop_proof", async () => {
    const keyPair = await randomDPoPKeyPair("ES256");
    const jwk = await exportJWK(keyPair.publicKey);
    const proof = await new SignJWT({
      jti: randomUUID(),
      htm: "POST",
      htu: `${server.url}/token`,
      iat: Math.floor(Date.now() / 1000),
    })
      .setProtectedHeader({ alg: "ES256", typ: "dpop+jwt", jwk })
      .sign(keyPair.privateKey);
    const subjectToken = await subjectTokenFor(agent);
    const send = () =>
      postForm(
        `${server.url}/token`,
        {
          grant_type: TOKEN_EXCHANGE,
          subject_token: subjectToken,
          subject_token_type: ACCESS_TOKEN,
          resource: calendar.uri,
        },
        { authorization: basicAuth(agent.client_id, agent.client_secret), dpop: proof },
      );

    const first = await send();
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.token_type).toBe("DPoP");
    const introspection = await tokenIntrospection(resourceConfig, first.body.access_token);
    expect(introspection.cnf?.jkt).toBe(await calculateJwkThumbprint(jwk));

    const replay = await send();
    expect(replay.status).toBe(400);
    expect(replay.body.error).toBe("invalid_dpop_proof");
    expect(replay.body.access_token).toBeUndefined();
  });

  it("refuses an exchange without a proof from an agent registered with dpop_required", async () => {
    const strict = await createAgent(
      server,
      person.email,
      [{ resource: calendar.uri, scopes: ["calendar.read"] }],
      {
        dpop_required: true,
      },
    );
    const registered = await server.admin("GET", `/agents/${strict.client_id}`);
    expect(registered.body.dpop_required).toBe(true);
    const config = await agentDiscovery(strict);
    const subjectToken = await subjectTokenFor(strict);

    const refused = await exchangeWith(config, subjectToken).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(refused, `served without a proof: ${JSON.stringify(lastTokenRequest().body)}`).toBeInstanceOf(
      ResponseBodyError,
    );
    const { error, status, error_description } = refused as ResponseBodyError;
    expect(status).toBe(400);
    // RFC 9449 §5.2 names no error code for a missing proof; either of these is a fair answer.
    expect(["invalid_request", "invalid_dpop_proof"]).toContain(error);
    expect(error_description).toMatch(/DPoP/);
    expect(lastTokenRequest().body.access_token).toBeUndefined();

    // The same agent, with a proof, is served a DPoP-bound token.
    const keyPair = await randomDPoPKeyPair("ES256");
    const tokens = await exchangeWith(config, subjectToken, getDPoPHandle(config, keyPair));
    expect(lastTokenRequest().body.token_type).toBe("DPoP");
    expect(tokens.token_type).toBe("dpop");
    const introspection = await tokenIntrospection(resourceConfig, tokens.access_token);
    expect(introspection.cnf?.jkt).toBe(await calculateJwkThumbprint(await exportJWK(keyPair.publicKey)));
  });
});
