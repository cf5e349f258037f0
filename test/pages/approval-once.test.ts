// An approval is made once or not at all, over real HTTP, for the consent page and CIBA approvals, on PGlite and
// PostgreSQL: one request makes at most one delegation, and an approval whose request cannot be finished leaves
// no active delegation and a clear page. The one-time claim in Redis stops most double submissions; these tests
// take it away, as a Redis failover or eviction would, to show that the database's unique key on the request
// holds on its own.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { Delegation } from "../../src/generated/prisma/client.ts";
import {
  agentTask,
  CIBA_GRANT,
  CookieClient,
  choices,
  codeFrom,
  createScenario,
  hiddenField,
  redeemCode,
  type Scenario,
  signIn,
  toConsent,
} from "../helpers/consent.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import { BACKENDS, startServer, type TestServer } from "../helpers/server.ts";

const approveAll = (s: Scenario) => ({
  decision: "approve",
  scope: choices(s.calendar, "calendar.read", "calendar.write"),
  duration: "asked",
});

describe.each(BACKENDS)("an approval is made once or not at all, on %s", (backend) => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startServer(backend);
  });
  afterAll(async () => {
    await server?.close();
  });

  /** Takes away the one-time claim of answering `ref`, as a Redis failover or eviction would. */
  async function loseClaim(ref: string) {
    await server.deputy.redis.redis.del(`${server.deputy.config.redisPrefix}ui:answered:${ref}`);
  }

  /** Runs `then` once, when the delegation for `taskId` has just been created (before its request is finished). */
  function whenCreated(taskId: string, then: (delegation: Delegation) => Promise<void>) {
    let done = false;
    server.deputy.delegations.onCreated(async (delegation) => {
      if (done || delegation.taskId !== taskId) return;
      done = true;
      await then(delegation);
    });
  }

  const delegationsFor = (taskId: string) =>
    server.deputy.db.prisma.delegation.findMany({ where: { taskId } });

  /** The page says the approval was not completed and nothing was delegated; the delegation is revoked. */
  async function expectNotCompleted(page: { status: number; body: string }, taskId: string, status: number) {
    expect(page.status, page.body).toBe(status);
    expect(page.body).toContain("Approval not completed");
    expect(page.body).toContain("nothing was delegated");
    const [delegation, ...others] = await delegationsFor(taskId);
    expect(others).toHaveLength(0);
    expect(delegation).toMatchObject({
      status: "revoked",
      endReason: "person: the approval could not be completed",
    });
    expect(await server.deputy.provider.Grant.find(String(delegation?.grantId))).toBeUndefined();
    const event = await server.deputy.db.prisma.auditEvent.findFirst({
      where: { type: "revocation", delegationId: delegation?.id },
    });
    expect(event?.reason).toBe("the approval could not be completed");
  }

  describe("on the consent page", () => {
    it("makes one delegation from a double-submitted approval, and answers the second clearly", async () => {
      const s = await createScenario(server);
      const { client, consent, action, verifier } = await toConsent(server, s, {
        details: [agentTask({ task_id: "twice-consent" })],
      });
      const form = { csrf: hiddenField(consent.body, "csrf", action), ...approveAll(s) };
      const first = await client.request(action, { form });
      expect(first.status, first.body).toBe(303);
      await loseClaim(`interaction:${action.split("/")[2]}`);
      const second = await client.request(action, { form });
      expect(second.status, second.body).toBe(409);
      expect(second.body).toContain("Already answered");

      const [delegation, ...others] = await delegationsFor("twice-consent");
      expect(others).toHaveLength(0);
      const resumed = await client.follow(String(first.location));
      const token = await redeemCode(server, s.agent, codeFrom(resumed.location), verifier);
      expect(token.status, JSON.stringify(token.body)).toBe(200);
      const stored = await server.deputy.provider.AccessToken.find(token.body.access_token);
      expect(stored?.grantId).toBe(delegation?.grantId);
    });

    it("revokes the delegation of an approval whose interaction ended before it was finished, and says so", async () => {
      const s = await createScenario(server);
      const { client, consent, action } = await toConsent(server, s, {
        details: [agentTask({ task_id: "gone-consent" })],
      });
      // The interaction expires (or is finished elsewhere) between the delegation and its result.
      whenCreated("gone-consent", async () => {
        const interaction = await server.deputy.provider.Interaction.find(String(action.split("/")[2]));
        await interaction?.destroy();
      });
      const page = await client.request(action, {
        form: { csrf: hiddenField(consent.body, "csrf", action), ...approveAll(s) },
      });
      await expectNotCompleted(page, "gone-consent", 409);
    });
  });

  describe("on /approvals (CIBA)", () => {
    /** A CIBA request for the task, and the person's approvals page showing it. */
    async function pendingApproval(s: Scenario, taskId: string) {
      const started = await postForm(
        `${server.url}/backchannel`,
        {
          login_hint: s.person.email,
          scope: "openid calendar.read calendar.write",
          resource: s.calendar,
          authorization_details: JSON.stringify([agentTask({ task_id: taskId })]),
        },
        { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
      );
      expect(started.status, JSON.stringify(started.body)).toBe(200);
      const id = String(started.body.auth_req_id);
      const client = new CookieClient(server.url);
      const page = await signIn(client, (await client.follow("/approvals")).body, s.person.email);
      expect(page.body).toContain(taskId);
      const action = `/approvals/${id}`;
      const approve = () =>
        client.request(action, { form: { csrf: hiddenField(page.body, "csrf", action), ...approveAll(s) } });
      const poll = () =>
        postForm(
          `${server.url}/token`,
          { grant_type: CIBA_GRANT, auth_req_id: id },
          { authorization: basicAuth(s.agent.client_id, s.agent.client_secret) },
        );
      const list = () => client.follow("/approvals");
      return { id, approve, poll, list };
    }

    /**
     * Approves while oidc-provider's CIBA result fails as Redis would, `once` (finishing the request) or `always`
     * (ending it as denied too); the approval is not completed.
     */
    async function approveWhileRedisFails(
      approve: () => Promise<{ status: number; body: string }>,
      taskId: string,
      failing: "once" | "always",
    ) {
      const finish = vi.spyOn(server.deputy.provider, "backchannelResult");
      const down = new Error("Connection is closed.");
      if (failing === "once") finish.mockRejectedValueOnce(down);
      else finish.mockRejectedValue(down);
      try {
        await expectNotCompleted(await approve(), taskId, 503);
        expect(finish).toHaveBeenCalledTimes(2);
      } finally {
        finish.mockRestore();
      }
    }

    it("makes one delegation from an approval submitted again while the first is being finished", async () => {
      const s = await createScenario(server);
      const { id, approve, poll } = await pendingApproval(s, "twice-ciba");
      let second: Awaited<ReturnType<typeof approve>> | undefined;
      whenCreated("twice-ciba", async () => {
        await loseClaim(`ciba:${id}`);
        second = await approve();
      });
      const first = await approve();
      expect(first.status, first.body).toBe(303);
      expect(first.location).toContain("/approvals?done=approved");
      expect(second?.status, second?.body).toBe(409);
      expect(second?.body).toContain("Already answered");

      const [delegation, ...others] = await delegationsFor("twice-ciba");
      expect(others).toHaveLength(0);
      const token = await poll();
      expect(token.status, JSON.stringify(token.body)).toBe(200);
      const stored = await server.deputy.provider.AccessToken.find(token.body.access_token);
      expect(stored?.extra).toMatchObject({ delegation: { id: delegation?.id } });
    });

    it("revokes the delegation of an approval whose request could not be finished, and ends the request as denied", async () => {
      const s = await createScenario(server);
      const { approve, poll, list } = await pendingApproval(s, "failed-ciba");
      // Redis fails as the request is being finished (only that once: ending it as denied succeeds).
      await approveWhileRedisFails(approve, "failed-ciba", "once");
      const polled = await poll();
      expect(polled.status, JSON.stringify(polled.body)).toBe(400);
      expect(polled.body.error).toBe("access_denied");
      expect((await list()).body).not.toContain("failed-ciba");

      // Trying again cannot make a second delegation for the same request.
      const again = await approve();
      expect(again.status, again.body).toBe(404);
      expect(await delegationsFor("failed-ciba")).toHaveLength(1);
    });

    it("still says the approval was not completed when the request cannot be ended as denied either", async () => {
      const s = await createScenario(server);
      const { approve, poll } = await pendingApproval(s, "down-ciba");
      // Redis stays down: both finishing the request and ending it as denied fail.
      await approveWhileRedisFails(approve, "down-ciba", "always");
      expect((await poll()).body.error).toBe("authorization_pending");
      const again = await approve();
      expect(again.status, again.body).toBe(409);
      expect(await delegationsFor("down-ciba")).toHaveLength(1);
    });
  });
});
