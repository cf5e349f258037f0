// Cedar is handed only the parts of a request the applicable policies can observe (engine.ts, cedar.ts
// `inputsOf`). Each forbid below reads a different part — an entity's attribute, a nested context record, the
// AuthZEN target, the task, the context as a whole — and must still see it: a part left out would make the
// policy fail to evaluate, Cedar would skip the forbid, and the permit would let the request through.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { basicAuth } from "../helpers/oauth.ts";
import {
  createAgent,
  createPerson,
  createResource,
  delegate,
  exchange,
  type Resource,
} from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

const FORBIDS: Record<string, string> = {
  "docs.name": 'principal.name == "Inputs bot"',
  "docs.owner": "principal.owner == context.person",
  "docs.email": 'context.person.email like "inputs.*"',
  "docs.hour": "context.time.hour >= 0",
  "docs.target": 'context has target && context.target.id == "inbox"',
  "docs.task": 'context has task && context.task.description like "*offsite*"',
  "docs.resource": 'resource.name == "Documents"',
  "docs.has": "context has client_address",
  "docs.whole": '{ whole: context }.whole.kind == "evaluation"',
};

describe("policies see every part of a request they read", () => {
  let server: TestServer;
  let docs: Resource;
  let token: string;

  beforeAll(async () => {
    server = await startServer("pglite");
    const person = await createPerson(server, "inputs.person@example.com");
    const scopes = ["docs.read", ...Object.keys(FORBIDS)];
    docs = await createResource(server, "https://docs.example.com", scopes, { name: "Documents" });
    const agent = await createAgent(server, person.email, [{ resource: docs.uri, scopes }], {
      name: "Inputs bot",
    });
    const { subjectToken } = await delegate(server, {
      personId: person.id,
      personEmail: person.email,
      agent: agent.client_id,
      grants: [{ resource: docs.uri, scopes }],
    });
    const exchanged = await exchange(server, agent, { subject_token: subjectToken });
    expect(exchanged.status, JSON.stringify(exchanged.body)).toBe(200);
    token = exchanged.body.access_token;

    const text = [
      '@id("agents") permit (principal is Agent, action, resource is ResourceServer);',
      // Reads an entity attribute too, but does not match: a read action stays allowed.
      '@id("never") forbid (principal, action == Action::"docs.read", resource) when { principal.name == "x" };',
      ...Object.entries(FORBIDS).map(
        ([action, when]) =>
          `@id("${action}") forbid (principal, action == Action::"${action}", resource) when { ${when} };`,
      ),
    ].join("\n");
    const applied = await server.admin("POST", "/policies", { sources: [{ name: "inputs.cedar", text }] });
    expect(applied.status, JSON.stringify(applied.body)).toBe(201);
  });
  afterAll(async () => {
    await server?.close();
  });

  async function evaluate(action: string) {
    const response = await fetch(`${server.url}/access/v1/evaluation`, {
      method: "POST",
      headers: {
        authorization: basicAuth(docs.client_id, docs.client_secret),
        "content-type": "application/json",
      },
      body: JSON.stringify({
        subject: { type: "token", id: token },
        resource: { type: "document", id: "inbox" },
        action: { name: action },
      }),
    });
    expect(response.status).toBe(200);
    return (await response.json()) as { decision: boolean; context: { reason: string[] } };
  }

  it("allows what no forbid matches", async () => {
    expect(await evaluate("docs.read")).toMatchObject({
      decision: true,
      context: { reason: ["policy:agents"] },
    });
  });

  it.each(Object.keys(FORBIDS))("refuses %s: its forbid saw what it reads", async (action) => {
    expect(await evaluate(action)).toMatchObject({
      decision: false,
      context: { reason: [`policy:${action}`] },
    });
  });
});
