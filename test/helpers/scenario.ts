// Builds a delegation scenario through the admin API and the service layer: a person, resource servers, a
// chain of agents that may delegate to each other, and a root delegation with its subject token.
import { issueSubjectToken } from "../../src/oauth/issue-subject-token.ts";
import { basicAuth, postForm } from "./oauth.ts";
import type { TestServer } from "./server.ts";

export const TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange";
export const ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token";

export interface Agent {
  client_id: string;
  client_secret: string;
}

export interface Resource {
  uri: string;
  client_id: string;
  client_secret: string;
}

let counter = 0;

export async function createPerson(server: TestServer, email = `person${++counter}@example.com`) {
  const { status, body } = await server.admin("POST", "/people", {
    email,
    name: `Person ${counter}`,
    password: "correct horse battery staple",
  });
  if (status !== 201) throw new Error(JSON.stringify(body));
  return body as { id: string; email: string };
}

export async function createResource(
  server: TestServer,
  uri: string,
  scopes: string[],
  extra: Record<string, unknown> = {},
): Promise<Resource> {
  const { status, body } = await server.admin("POST", "/resources", {
    uri,
    name: uri,
    scopes: scopes.map((name) => ({
      name,
      description: `Scope ${name}`,
      risk: name.includes("write") ? "high" : "low",
    })),
    ...extra,
  });
  if (status !== 201) throw new Error(JSON.stringify(body));
  return body;
}

export async function createAgent(
  server: TestServer,
  owner: string,
  grants: { resource: string; scopes: string[] }[],
  extra: Record<string, unknown> = {},
): Promise<Agent> {
  const { status, body } = await server.admin("POST", "/agents", {
    name: `Agent ${++counter}`,
    owner,
    purpose: "testing",
    grants,
    auth: { method: "client_secret" },
    ...extra,
  });
  if (status !== 201) throw new Error(JSON.stringify(body));
  return body;
}

/**
 * Agents that delegate down a chain (planner → researcher → summarizer …), first to last: each may delegate to
 * the next. `depths[i]` is the i-th agent's max_depth; every agent gets `grants` unless the link names its own.
 */
export async function createChain(
  server: TestServer,
  owner: string,
  grants: { resource: string; scopes: string[] }[],
  links: { maxDepth: number; grants?: { resource: string; scopes: string[] }[] }[],
): Promise<Agent[]> {
  const chain: Agent[] = [];
  for (const link of [...links].reverse()) {
    const next = chain[0];
    const agent = await createAgent(server, owner, link.grants ?? grants, {
      max_depth: link.maxDepth,
      ...(next ? { may_delegate_to: [next.client_id] } : {}),
    });
    chain.unshift(agent);
  }
  return chain;
}

/** A root delegation from `personId` to `agent`, and its subject token. */
export async function delegate(
  server: TestServer,
  input: {
    personId: string;
    personEmail: string;
    agent: string;
    /** The scopes delegated on each resource server. */
    grants: { resource: string; scopes: string[] }[];
    endsInSeconds?: number;
    maxDepth?: number;
    taskId?: string;
  },
) {
  const delegation = await server.deputy.delegations.create(
    { actor: input.personEmail },
    {
      personId: input.personId,
      agentClientId: input.agent,
      taskId: input.taskId ?? `task-${++counter}`,
      taskDescription: "Plan the offsite",
      grants: input.grants,
      endsAt: new Date(Date.now() + (input.endsInSeconds ?? 3600) * 1000),
      maxDepth: input.maxDepth,
    },
  );
  const token = await issueSubjectToken(
    { provider: server.deputy.provider, audit: server.deputy.audit },
    { actor: input.personEmail },
    { ...delegation, agentClientId: input.agent, personEmail: input.personEmail },
  );
  return { delegation, subjectToken: token.access_token };
}

export async function exchange(
  server: TestServer,
  agent: Agent,
  form: Record<string, string | string[]>,
  headers: Record<string, string> = {},
) {
  return postForm(
    `${server.url}/token`,
    { grant_type: TOKEN_EXCHANGE, subject_token_type: ACCESS_TOKEN, ...form },
    { authorization: basicAuth(agent.client_id, agent.client_secret), ...headers },
  );
}

/** An AuthZEN request (`/access/v1/evaluation`, or `evaluations`) as `resource`, the resource server. */
export async function evaluate(server: TestServer, resource: Resource, body: unknown, path = "evaluation") {
  const response = await fetch(`${server.url}/access/v1/${path}`, {
    method: "POST",
    headers: {
      authorization: basicAuth(resource.client_id, resource.client_secret),
      "content-type": "application/json",
    },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as any };
}

export async function introspect(server: TestServer, resource: Resource, token: string) {
  const { body } = await postForm(
    `${server.url}/token/introspection`,
    { token },
    {
      authorization: basicAuth(resource.client_id, resource.client_secret),
    },
  );
  return body;
}
