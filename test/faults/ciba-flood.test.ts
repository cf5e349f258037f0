// CIBA floods against a real server: an agent cannot bury a person's other requests. Its requests waiting for one
// person, and for everyone, are bounded, its requests per minute are limited, each refusal is CIBA's
// access_denied (403) saying which limit and what to do, and /approvals lists requests fairly across agents.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  agentTask,
  CookieClient,
  createScenario,
  hiddenField,
  type Scenario,
  signIn,
} from "../helpers/consent.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import { type Agent, createAgent, createPerson } from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

const PER_PERSON = 5; // the default
const PER_AGENT = 12;
const PER_MINUTE = 65;
const FLOOD = 60;

describe("CIBA flood", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer("pglite", {
      DEPUTY_CIBA_MAX_PENDING_PER_AGENT: String(PER_AGENT),
      DEPUTY_CIBA_REQUESTS_PER_MINUTE: String(PER_MINUTE),
    });
    expect(server.deputy.config.ciba.maxPendingPerPerson).toBe(PER_PERSON);
  });
  afterAll(async () => {
    await server?.close();
  });

  function backchannel(s: Scenario, agent: Agent, email: string, bindingMessage = "W7-QX") {
    return postForm(
      `${server.url}/backchannel`,
      {
        login_hint: email,
        scope: "openid calendar.read",
        resource: s.calendar,
        binding_message: bindingMessage,
        authorization_details: JSON.stringify([agentTask()]),
      },
      { authorization: basicAuth(agent.client_id, agent.client_secret) },
    );
  }

  async function approvalsPage(email: string) {
    const client = new CookieClient(server.url);
    const login = await client.follow("/approvals");
    const page = await signIn(client, login.body, email);
    expect(page.status, page.body).toBe(200);
    return { client, page: page.body };
  }

  /** How many requests of each status, and the distinct error descriptions. */
  function summary(answers: { status: number; body: any }[]) {
    const statuses: Record<number, number> = {};
    for (const answer of answers) statuses[answer.status] = (statuses[answer.status] ?? 0) + 1;
    const refusals = new Set(answers.filter((a) => a.status !== 200).map((a) => JSON.stringify(a.body)));
    return { statuses, refusals: [...refusals].map((text) => JSON.parse(text)) };
  }

  async function auditCount(action: string, clientId: string): Promise<number> {
    const { status, body } = await server.admin(
      "GET",
      `/audit?action=${action}&agent=${clientId}&limit=1000`,
    );
    expect(status, JSON.stringify(body)).toBe(200);
    return body.events.length;
  }

  it(`admits ${PER_PERSON} of ${FLOOD} concurrent requests from one agent for one person; another agent's shows`, async () => {
    const s = await createScenario(server);
    const answers = await Promise.all(
      Array.from({ length: FLOOD }, () => backchannel(s, s.agent, s.person.email)),
    );
    const { statuses, refusals } = summary(answers);
    console.log(`CIBA flood: ${FLOOD} requests → ${JSON.stringify(statuses)}`);
    expect(statuses).toEqual({ 200: PER_PERSON, 403: FLOOD - PER_PERSON });
    expect(refusals).toEqual([
      {
        error: "access_denied",
        error_description: `this agent already has ${PER_PERSON} requests waiting for this person: wait for the person to answer them or for them to expire`,
      },
    ]);
    expect(answers.filter((a) => a.body.auth_req_id)).toHaveLength(PER_PERSON);
    expect(await auditCount("ciba.request", s.agent.client_id)).toBe(PER_PERSON);
    expect(await auditCount("ciba.refused", s.agent.client_id)).toBe(FLOOD - PER_PERSON);

    // Another agent asking the same person is not held back, and the person sees its request.
    const other = await backchannel(s, s.helper, s.person.email, "OTHER-AGENT");
    expect(other.status, JSON.stringify(other.body)).toBe(200);
    const { client, page } = await approvalsPage(s.person.email);
    expect(page).toContain("OTHER-AGENT");
    expect(page.match(/action="\/approvals\/[^"]+"/g)).toHaveLength(PER_PERSON + 1);
    expect(page).not.toContain("more request");

    // Once the person answers one, the flooding agent may ask again — once.
    const id = /action="\/approvals\/([^"]+)"/.exec(page.slice(page.indexOf("W7-QX")))?.[1] as string;
    const denied = await client.request(`/approvals/${id}`, {
      form: { csrf: hiddenField(page, "csrf", `/approvals/${id}`), decision: "deny" },
    });
    expect(denied.status).toBe(303);
    expect((await backchannel(s, s.agent, s.person.email)).status).toBe(200);
    expect((await backchannel(s, s.agent, s.person.email)).status).toBe(403);
  });

  it(`bounds an agent's requests waiting for everyone at ${PER_AGENT}, then its requests per minute at ${PER_MINUTE}`, async () => {
    const s = await createScenario(server);
    let counter = 0;
    const someone = async () =>
      (await createPerson(server, `ciba-${++counter}-${Date.now()}@example.com`)).email;
    const [first, second, third, fourth] = [
      await someone(),
      await someone(),
      await someone(),
      await someone(),
    ];
    const asked = async (email: string, times: number) =>
      summary(await Promise.all(Array.from({ length: times }, () => backchannel(s, s.agent, email))));
    expect((await asked(first, PER_PERSON)).statuses).toEqual({ 200: PER_PERSON });
    expect((await asked(second, PER_PERSON)).statuses).toEqual({ 200: PER_PERSON });
    const towardThird = await asked(third, PER_PERSON);
    const left = PER_AGENT - 2 * PER_PERSON;
    expect(towardThird.statuses).toEqual({ 200: left, 403: PER_PERSON - left });
    expect(towardThird.refusals).toEqual([
      {
        error: "access_denied",
        error_description: `this agent already has ${PER_AGENT} requests waiting for people: wait for answers or for requests to expire`,
      },
    ]);
    // The rest of the minute's allowance is refused by the same bound; the request after it by the rate.
    const rest = PER_MINUTE - 3 * PER_PERSON;
    expect((await asked(fourth, rest)).statuses).toEqual({ 403: rest });
    const limited = await backchannel(s, s.agent, fourth);
    expect(limited.status).toBe(403);
    expect(limited.body.error).toBe("access_denied");
    expect(limited.body.error_description).toMatch(
      new RegExp(
        `^this agent made more than ${PER_MINUTE} backchannel requests in a minute: retry in \\d+ seconds$`,
      ),
    );
    const retryAfter = Number(limited.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(60);
    // Another agent is not limited by this one's minute.
    expect((await backchannel(s, s.helper, fourth)).status).toBe(200);
  });

  it("lists requests fairly on /approvals: ten agents' 50 do not hide an eleventh agent's", async () => {
    const s = await createScenario(server);
    const newAgent = () =>
      createAgent(server, s.person.email, [{ resource: s.calendar, scopes: ["calendar.read"] }]);
    const agents: Agent[] = [];
    for (let i = 0; i < 10; i++) agents.push(await newAgent());
    for (const [i, agent] of agents.entries()) {
      const answers = await Promise.all(
        Array.from({ length: PER_PERSON }, () => backchannel(s, agent, s.person.email, `AGENT-${i}`)),
      );
      expect(summary(answers).statuses).toEqual({ 200: PER_PERSON });
    }
    // The newest request of all, from an agent that asked once.
    const last = await backchannel(s, await newAgent(), s.person.email, "LATE-AGENT");
    expect(last.status).toBe(200);
    const { page } = await approvalsPage(s.person.email);
    expect(page.match(/action="\/approvals\/[^"]+"/g)).toHaveLength(50);
    expect(page).toContain("LATE-AGENT");
    for (let i = 0; i < 10; i++) expect(page).toContain(`AGENT-${i}<`);
    expect(page).toContain("1 more request is waiting, not shown here");
  });
});
