// A person approves (resource, scope) pairs, never bare scope names: two resource servers that both define
// `mail.send` (high risk on Mail, low risk on Outbox) give two separate choices on the consent page and on
// /approvals (CIBA), and unticking one leaves exactly that pair out of the delegation, of the exchange and of the
// step-up approvals. Over real HTTP, on PGlite and PostgreSQL.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runDeputy } from "../helpers/cli.ts";
import {
  agentTask,
  authorizeUrl,
  CIBA_GRANT,
  CookieClient,
  codeFrom,
  formAction,
  hiddenField,
  PASSWORD,
  pkce,
  REDIRECT_URI,
  redeemCode,
  signIn,
} from "../helpers/consent.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import {
  type Agent,
  createAgent,
  createPerson,
  exchange,
  introspect,
  type Resource,
} from "../helpers/scenario.ts";
import { BACKENDS, startServer, type TestServer } from "../helpers/server.ts";

interface MailScenario {
  person: { id: string; email: string };
  mail: string;
  outbox: string;
  /** Outbox as a resource server, with the credentials it introspects with. */
  outboxServer: Resource;
  agent: Agent;
}

/** One checkbox of the request's form: its value, whether it starts ticked, and the resource it sits under. */
interface Checkbox {
  value: string;
  checked: boolean;
  resource: string;
}

/** The scope checkboxes of a page, each with the name of the resource server whose fieldset holds it. */
function checkboxes(html: string): Checkbox[] {
  return html
    .split('<fieldset class="resource">')
    .slice(1)
    .flatMap((fieldset) => {
      const resource = /<legend>([^<]*)/.exec(fieldset)?.[1]?.trim() ?? "";
      const section = fieldset.slice(0, fieldset.indexOf("</fieldset>"));
      return [...section.matchAll(/<input type="checkbox"[^>]*>/g)].map(([input]) => ({
        value: /value="([^"]*)"/.exec(input)?.[1]?.replaceAll("&amp;", "&") ?? "",
        checked: / checked\b/.test(input),
        resource,
      }));
    });
}

/** What a browser sends for the request's checkboxes when the person unticks those under `untick`. */
function ticked(html: string, untick: string): string[] {
  const boxes = checkboxes(html);
  expect(boxes.map((box) => box.resource).sort()).toEqual(["Mail", "Outbox"]);
  expect(boxes.every((box) => box.checked)).toBe(true);
  return boxes.filter((box) => box.resource !== untick).map((box) => box.value);
}

describe.each(BACKENDS)("consent approves (resource, scope) pairs (%s)", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer(backend);
  });
  afterAll(async () => {
    await server?.close();
  });

  /** Mail (mail.send high risk) and Outbox (mail.send low risk), an agent registered for mail.send on both. */
  async function mailScenario(): Promise<MailScenario> {
    const n = randomBytes(4).toString("hex");
    const person = await createPerson(server, `pairs-${n}@example.com`);
    const mail = `https://mail-${n}.example.com`;
    const outbox = `https://outbox-${n}.example.com`;
    const servers: Resource[] = [];
    for (const [uri, name, description, risk] of [
      [mail, "Mail", "Send mail as you", "high"],
      [outbox, "Outbox", "Queue mail in the team outbox", "low"],
    ] as const) {
      const created = await server.admin("POST", "/resources", {
        uri,
        name,
        scopes: [
          { name: "mail.send", description, risk },
          { name: "mail.read", description: `Read ${name}`, risk: "low" },
        ],
      });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      servers.push(created.body);
    }
    const agent = await createAgent(
      server,
      person.email,
      [
        { resource: mail, scopes: ["mail.send", "mail.read"] },
        { resource: outbox, scopes: ["mail.send"] },
      ],
      { redirect_uris: [REDIRECT_URI] },
    );
    return { person, mail, outbox, outboxServer: servers[1] as Resource, agent };
  }

  async function toConsent(s: MailScenario, taskId: string) {
    const client = new CookieClient(server.url);
    const { verifier, challenge } = pkce();
    const login = await client.follow(
      authorizeUrl(server, s.agent, {
        challenge,
        scope: "mail.send",
        resource: [s.mail, s.outbox],
        details: [agentTask({ task_id: taskId })],
      }),
    );
    expect(login.status, login.body).toBe(200);
    const consent = await signIn(client, login.body, s.person.email, PASSWORD);
    expect(consent.status, consent.body).toBe(200);
    const action = formAction(consent.body);
    return { client, page: consent.body, action, csrf: hiddenField(consent.body, "csrf", action), verifier };
  }

  /** The person's approval covers mail.send on Outbox only: the rest of what the agent holds follows. */
  async function expectOutboxOnly(s: MailScenario, subjectToken: string, delegationId: string) {
    const onMail = await exchange(server, s.agent, {
      subject_token: subjectToken,
      resource: s.mail,
      scope: "mail.send",
    });
    expect(onMail.status, JSON.stringify(onMail.body)).toBe(400);
    expect(onMail.body.error).toBe("invalid_target");
    expect(onMail.body.error_description).toContain("not among the resources the person delegated");
    const prisma = server.deputy.db.prisma;
    expect(await prisma.stepUpApproval.count({ where: { agentClientId: s.agent.client_id } })).toBe(0);
    expect(
      await prisma.auditEvent.count({
        where: { action: "step_up.approve", agentChain: { has: s.agent.client_id } },
      }),
    ).toBe(0);

    const onOutbox = await exchange(server, s.agent, {
      subject_token: subjectToken,
      resource: s.outbox,
      scope: "mail.send",
    });
    expect(onOutbox.status, JSON.stringify(onOutbox.body)).toBe(200);
    expect(onOutbox.body.scope).toBe("mail.send");
    // Outbox learns of its own pair only: its audience and scope, nothing about Mail.
    const introspected = await introspect(server, s.outboxServer, onOutbox.body.access_token);
    expect(introspected).toMatchObject({ active: true, aud: s.outbox, scope: "mail.send" });
    expect(JSON.stringify(introspected)).not.toContain(s.mail);
    // Without a resource: the delegation's only resource is the one.
    const implicit = await exchange(server, s.agent, { subject_token: subjectToken });
    expect(implicit.status, JSON.stringify(implicit.body)).toBe(200);

    // What Deputy shows of the delegation is the pair approved.
    const shown = await server.admin("GET", `/delegations/${delegationId}`);
    expect(shown.body.grants).toEqual([{ resource: s.outbox, scopes: ["mail.send"] }]);
    const stored = await server.deputy.provider.AccessToken.find(subjectToken);
    expect(stored?.extra).toMatchObject({
      delegation: { id: delegationId, grants: [{ resource: s.outbox, scopes: ["mail.send"] }] },
    });
    const cli = await runDeputy(server.url, ["delegations", "show", delegationId]);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(`grants:\n  - resource: ${s.outbox}\n    scopes: mail.send\n`);
    expect(cli.stdout).not.toContain(s.mail);
    const created = await prisma.auditEvent.findFirstOrThrow({
      where: { action: "delegation.create", delegationId },
    });
    expect(created.resource).toBe(s.outbox);
    expect(created.details).toMatchObject({ grants: [{ resource: s.outbox, scopes: ["mail.send"] }] });
  }

  /** The agent asks the person by CIBA for mail.send on both servers, for task `taskId`. */
  const askByBackchannel = (
    s: Awaited<ReturnType<typeof mailScenario>>,
    taskId: string,
    bindingMessage?: string,
  ) =>
    postForm(
      `${server.url}/backchannel`,
      {
        login_hint: s.person.email,
        scope: "openid mail.send",
        resource: [s.mail, s.outbox],
        ...(bindingMessage ? { binding_message: bindingMessage } : {}),
        authorization_details: JSON.stringify([agentTask({ task_id: taskId })]),
      },
      { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
    );

  it("consent page: the person unticks mail.send on Mail, and Mail is not delegated", async () => {
    const s = await mailScenario();
    const { client, page, action, csrf, verifier } = await toConsent(s, "pairs-consent");
    const scope = ticked(page, "Mail");
    const done = await client.follow(action, {
      form: { csrf, decision: "approve", scope, duration: "asked" },
    });
    expect(done.status, done.body).toBe(303);
    const token = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    expect(token.body.scope).toBe("mail.send");
    const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
      where: { taskId: "pairs-consent" },
    });
    await expectOutboxOnly(s, token.body.access_token, delegation.id);
  });

  it("/approvals (CIBA): the person unticks mail.send on Mail; no step-up is recorded for Mail", async () => {
    const s = await mailScenario();
    const agentAuth = { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) };
    const started = await askByBackchannel(s, "pairs-ciba", "PAIRS-1");
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    const client = new CookieClient(server.url);
    const page = (await signIn(client, (await client.follow("/approvals")).body, s.person.email)).body;
    expect(page).toContain("PAIRS-1");
    const request = await server.deputy.provider.BackchannelAuthenticationRequest.find(
      started.body.auth_req_id,
    );
    const action = `/approvals/${request?.jti}`;
    const answered = await client.request(action, {
      form: {
        csrf: hiddenField(page, "csrf", action),
        decision: "approve",
        scope: ticked(page, "Mail"),
      },
    });
    expect(answered.status, answered.body).toBe(303);
    expect(answered.location).toContain("done=approved");
    const token = await postForm(
      `${server.url}/token`,
      { grant_type: CIBA_GRANT, auth_req_id: started.body.auth_req_id },
      agentAuth,
    );
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
      where: { taskId: "pairs-ciba" },
    });
    await expectOutboxOnly(s, token.body.access_token, delegation.id);
  });

  it("CIBA: approving mail.send on Mail is a step-up for Mail alone, and Outbox stays undelegated", async () => {
    const s = await mailScenario();
    const agentAuth = { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) };
    const started = await askByBackchannel(s, "pairs-ciba-mail");
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    const client = new CookieClient(server.url);
    const page = (await signIn(client, (await client.follow("/approvals")).body, s.person.email)).body;
    const request = await server.deputy.provider.BackchannelAuthenticationRequest.find(
      started.body.auth_req_id,
    );
    const action = `/approvals/${request?.jti}`;
    const answered = await client.request(action, {
      form: { csrf: hiddenField(page, "csrf", action), decision: "approve", scope: ticked(page, "Outbox") },
    });
    expect(answered.status, answered.body).toBe(303);
    const stepUps = await server.deputy.db.prisma.stepUpApproval.findMany({
      where: { agentClientId: s.agent.client_id },
    });
    expect(stepUps).toEqual([expect.objectContaining({ resource: s.mail, scopes: ["mail.send"] })]);
    const token = await postForm(
      `${server.url}/token`,
      { grant_type: CIBA_GRANT, auth_req_id: started.body.auth_req_id },
      agentAuth,
    );
    expect(token.status, JSON.stringify(token.body)).toBe(200);
    const onOutbox = await exchange(server, s.agent, {
      subject_token: token.body.access_token,
      resource: s.outbox,
    });
    expect(onOutbox.body.error).toBe("invalid_target");
    const onMail = await exchange(server, s.agent, {
      subject_token: token.body.access_token,
      resource: s.mail,
    });
    expect(onMail.status, JSON.stringify(onMail.body)).toBe(200);
    expect(onMail.body.scope).toBe("mail.send");
  });

  it("narrows an exchange to the scopes approved for that resource", async () => {
    const s = await mailScenario();
    const client = new CookieClient(server.url);
    const { verifier, challenge } = pkce();
    const login = await client.follow(
      authorizeUrl(server, s.agent, {
        challenge,
        scope: "mail.send mail.read",
        resource: [s.mail, s.outbox],
        details: [agentTask({ task_id: "pairs-narrow" })],
      }),
    );
    const page = (await signIn(client, login.body, s.person.email)).body;
    const action = formAction(page);
    const values = checkboxes(page).map((box) => box.value);
    expect(values).toHaveLength(3);
    // The person keeps mail.read on Mail and mail.send on Outbox: not mail.send on Mail.
    const kept = checkboxes(page).filter(
      (box) => !(box.resource === "Mail" && box.value.endsWith("mail.send")),
    );
    const done = await client.follow(action, {
      form: {
        csrf: hiddenField(page, "csrf", action),
        decision: "approve",
        scope: kept.map((box) => box.value),
      },
    });
    expect(done.status, done.body).toBe(303);
    const token = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
    expect(token.body.scope.split(" ").sort()).toEqual(["mail.read", "mail.send"]);
    const onMail = await exchange(server, s.agent, {
      subject_token: token.body.access_token,
      resource: s.mail,
    });
    expect(onMail.status, JSON.stringify(onMail.body)).toBe(200);
    expect(onMail.body.scope).toBe("mail.read");
    const sendOnMail = await exchange(server, s.agent, {
      subject_token: token.body.access_token,
      resource: s.mail,
      scope: "mail.send",
    });
    expect(sendOnMail.status).toBe(400);
    expect(sendOnMail.body.error).toBe("invalid_scope");
    expect(sendOnMail.body.error_description).toContain("you may ask for at most: mail.read");
  });

  it("refuses a forged or malformed pair cleanly, and then still takes the person's real answer", async () => {
    const s = await mailScenario();
    const { client, page, action, csrf, verifier } = await toConsent(s, "pairs-forged");
    const honest = ticked(page, "Mail");
    const forged = [
      `${s.mail} mail.read`, // registered for the agent on Mail, but not asked for
      `https://elsewhere.example.com mail.send`, // a resource the agent never named
      `${s.outbox} mail.read`, // not defined on Outbox, nor registered
      `${s.mail}  mail.send`,
      `${s.outbox} mail.send extra`,
      "mail.send",
      `${s.outbox}`,
      " ",
      "",
      `${s.outbox} mail.send\u0000`,
      `${s.outbox}\nmail.send`,
      `<script>alert(1)</script> mail.send`,
      `${"x".repeat(5000)} mail.send`,
    ];
    for (const value of forged) {
      const refused = await client.request(action, {
        form: { csrf, decision: "approve", scope: [...honest, value] },
      });
      expect(refused.status, `${JSON.stringify(value)}: ${refused.body}`).toBe(400);
      expect(refused.body).toMatch(/not asked for|Unclear permission/);
      expect(refused.body).not.toMatch(/at .*\.ts:\d+|<script>alert/);
    }
    expect(await server.deputy.db.prisma.delegation.count({ where: { taskId: "pairs-forged" } })).toBe(0);
    const done = await client.follow(action, { form: { csrf, decision: "approve", scope: honest } });
    expect(done.status, done.body).toBe(303);
    const token = await redeemCode(server, s.agent, codeFrom(done.location), verifier);
    const delegation = await server.deputy.db.prisma.delegation.findFirstOrThrow({
      where: { taskId: "pairs-forged" },
    });
    await expectOutboxOnly(s, token.body.access_token, delegation.id);
  });

  it("refuses a forged pair on /approvals too, without answering the request", async () => {
    const s = await mailScenario();
    const agentAuth = { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) };
    const started = await askByBackchannel(s, "pairs-ciba-forged");
    const client = new CookieClient(server.url);
    const page = (await signIn(client, (await client.follow("/approvals")).body, s.person.email)).body;
    const request = await server.deputy.provider.BackchannelAuthenticationRequest.find(
      started.body.auth_req_id,
    );
    const action = `/approvals/${request?.jti}`;
    const csrf = hiddenField(page, "csrf", action);
    const refused = await client.request(action, {
      form: { csrf, decision: "approve", scope: [`${s.mail} mail.read`] },
    });
    expect(refused.status).toBe(400);
    expect(refused.body).toContain("not asked for");
    const pending = await postForm(
      `${server.url}/token`,
      { grant_type: CIBA_GRANT, auth_req_id: started.body.auth_req_id },
      agentAuth,
    );
    expect(pending.body.error).toBe("authorization_pending");
    expect(await server.deputy.db.prisma.delegation.count({ where: { taskId: "pairs-ciba-forged" } })).toBe(
      0,
    );
  });
});
