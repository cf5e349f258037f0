// `deputy audit …` as people run it: `node bin/deputy.js` in a child process against a real server. The
// auditor's question — "customer data accessed by agents on behalf of Sarah in a period" — in one command,
// counts, exports to a file that verifies on its own, verification, holds and archiving, and clear errors.
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AUDIT_FIELDS } from "../../src/audit/audit-event.ts";
import { runDeputy } from "../helpers/cli.ts";
import {
  type Agent,
  createAgent,
  createPerson,
  createResource,
  delegate,
  exchange,
} from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

let server: TestServer;
let scratch: string;
let sarah: { id: string; email: string };
let agentId: string;
let crm: Agent;
let customersUri: string;
let sarahToken: string;
let delegationId: string;
let otherDelegationId: string;

beforeAll(async () => {
  server = await startServer("pglite");
  scratch = mkdtempSync(path.join(tmpdir(), "deputy-audit-cli-"));
  sarah = await createPerson(server, "sarah@example.com");
  const customers = await createResource(server, "https://customers.example.com", ["customers.read"]);
  const mail = await createResource(server, "https://mail.example.com", ["mail.read"]);
  const agent = await createAgent(server, sarah.email, [
    { resource: customers.uri, scopes: ["customers.read"] },
    { resource: mail.uri, scopes: ["mail.read"] },
  ]);
  agentId = agent.client_id;
  crm = agent;
  customersUri = customers.uri;
  const { subjectToken, delegation } = await delegate(server, {
    personId: sarah.id,
    personEmail: sarah.email,
    agent: agent.client_id,
    grants: [
      { resource: customers.uri, scopes: ["customers.read"] },
      { resource: mail.uri, scopes: ["mail.read"] },
    ],
    taskId: "q4-renewals",
  });
  delegationId = delegation.id;
  for (const resource of [customers.uri, customers.uri, mail.uri]) {
    const done = await exchange(server, agent, { subject_token: subjectToken, resource });
    expect(done.status).toBe(200);
  }
  sarahToken = subjectToken;
  // A second delegation for Sarah, with a task of its own and no exchanges.
  const other = await delegate(server, {
    personId: sarah.id,
    personEmail: sarah.email,
    agent: agent.client_id,
    grants: [{ resource: mail.uri, scopes: ["mail.read"] }],
    taskId: "inbox-cleanup",
  });
  otherDelegationId = other.delegation.id;
});
afterAll(async () => {
  await server?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

function deputy(args: string[]) {
  return runDeputy(server.url, args, { DEPUTY_DATA_DIR: scratch });
}

async function ok(args: string[]): Promise<string> {
  const run = await deputy(args);
  expect(run.stderr, `deputy ${args.join(" ")}`).toBe("");
  expect(run.code).toBe(0);
  return run.stdout;
}

const today = () => new Date().toISOString().slice(0, 10);
const yesterday = () => new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
/** "Customer data accessed by agents on behalf of Sarah since yesterday", as one command. */
const sarahsQuestion = () => [
  "audit",
  "query",
  "--delegated-by",
  "sarah@example.com",
  "--resource",
  "customers*",
  "--action",
  "token.exchange",
  "--from",
  yesterday(),
  "--to",
  today(),
];

/** The exchanges made under Sarah's first delegation. */
const delegationsExchanges = () => [
  "audit",
  "query",
  "--delegation",
  delegationId,
  "--action",
  "token.exchange",
];

describe("deputy audit", () => {
  it("answers 'customer data accessed by agents on behalf of Sarah in a period' in one command", async () => {
    const out = await ok(sarahsQuestion());
    const lines = out.trimEnd().split("\n");
    expect(lines.at(-1)).toBe("2 events");
    for (const line of lines.slice(0, -1)) {
      expect(line).toMatch(
        new RegExp(
          `^\\d{4}-\\d{2}-\\d{2}T\\S+Z  allow  token\\.exchange  ${agentId}  for sarah@example\\.com  https://customers\\.example\\.com  customers\\.read  #\\d+$`,
        ),
      );
    }

    const stats = await ok([
      "audit",
      "query",
      "--delegated-by",
      "sarah@example.com",
      "--resource",
      "customers*",
      "--stats-by",
      "agent,action,resource",
    ]);
    expect(stats).toMatch(/^agent\s+action\s+resource\s+count\n/);
    expect(stats).toMatch(
      new RegExp(`${agentId}\\s+token\\.exchange\\s+https://customers\\.example\\.com\\s+2\\n`),
    );
    expect(stats).toMatch(/total: \d+ events\n$/);

    const json = JSON.parse(
      await ok([
        "--json",
        "audit",
        "query",
        "--agent",
        agentId,
        "--resource",
        "mail.example.com",
        "--type",
        "exchange",
      ]),
    );
    expect(json.events.filter((e: any) => e.action === "token.exchange")).toHaveLength(1);
    expect(json.more).toBe(false);
  });

  it("exports CSV and NDJSON to standard output; the NDJSON file verifies on its own", async () => {
    const csv = await ok(["audit", "export", "--format", "csv", "--delegated-by", "sarah@example.com"]);
    const rows = csv.split("\r\n").filter(Boolean);
    expect(rows[0]).toBe(AUDIT_FIELDS.join(","));
    expect(rows.length).toBeGreaterThan(4);

    const ndjson = await ok(["audit", "export"]);
    const file = path.join(scratch, "trail.ndjson");
    writeFileSync(file, ndjson);
    const verified = await ok(["audit", "verify", "--file", file]);
    expect(verified).toMatch(/^ok: true$/m);

    const lines = readFileSync(file, "utf8").trimEnd().split("\n");
    const third = JSON.parse(lines[2] ?? "");
    lines[2] = JSON.stringify({ ...third, reason: "edited afterwards" });
    writeFileSync(file, `${lines.join("\n")}\n`);
    const tampered = await deputy(["audit", "verify", "--file", file]);
    expect(tampered.code).toBe(1);
    expect(tampered.stdout).toMatch(/^ok: false$/m);
    expect(tampered.stderr).toBe(
      `deputy: verification FAILED at seq ${third.seq} (id ${third.id}) in ${file} line 3: its content does not match its hash: the event was altered (or moved from another position)\n`,
    );
  });

  it("verifies the trail, and places and releases a legal hold that stops archiving", async () => {
    const verified = await ok(["audit", "verify"]);
    expect(verified).toMatch(/^ok: true$/m);
    expect(verified).toMatch(/^head:\n {2}seq: \d+\n {2}id: [0-9a-f-]{36}\n {2}hash: [0-9a-f]{64}$/m);

    const hold = JSON.parse(await ok(["--json", "audit", "hold", "--reason", "Litigation 2026-17"]));
    expect(hold).toMatchObject({ reason: "Litigation 2026-17", active: true });
    expect(await ok(["audit", "holds"])).toContain(`id: ${hold.id}`);
    const archived = JSON.parse(await ok(["--json", "audit", "archive"]));
    expect(archived).toMatchObject({ held_by: [{ id: hold.id }], archived_events: 0 });
    expect(await ok(["audit", "release", hold.id])).toMatch(/^active: false$/m);
    const missingReason = await deputy(["audit", "hold"]);
    expect(missingReason.code).not.toBe(0);
    expect(missingReason.stderr).toMatch(/^deputy: required option '--reason <reason>' not specified/);
  });

  it("reports a bad filter in one line, with what to send instead", async () => {
    const run = await deputy(["audit", "query", "--from", "2026-13-01"]);
    expect(run.code).toBe(1);
    expect(run.stdout).toBe("");
    expect(run.stderr).toBe(
      'deputy: invalid_request: from: "2026-13-01" is not a valid date; use YYYY-MM-DD (a whole day, UTC) or an ISO 8601 date-time with a time zone, such as 2026-10-01T09:30:00Z\n',
    );
    const order = await deputy(["audit", "query", "--order", "sideways"]);
    expect(order.code).not.toBe(0);
    expect(order.stderr).toMatch(/^deputy: option '--order <order>' argument 'sideways' is invalid/);
  });

  it("filters by delegation and by task, in queries, counts and exports", async () => {
    const events = async (args: string[]) =>
      JSON.parse(await ok(["--json", "audit", "query", ...args])).events;
    const byDelegation = await events(["--delegation", delegationId]);
    expect(byDelegation.length).toBeGreaterThanOrEqual(4);
    for (const event of byDelegation) expect(event.delegation_id).toBe(delegationId);
    expect(byDelegation.filter((e: any) => e.action === "token.exchange")).toHaveLength(3);
    expect(await events(["--task", "q4-renewals"])).toEqual(byDelegation);
    const other = await events(["--delegation", otherDelegationId]);
    expect(other.length).toBeGreaterThan(0);
    for (const event of other)
      expect(event).toMatchObject({ delegation_id: otherDelegationId, task_id: "inbox-cleanup" });
    expect(await events(["--task", "inbox-cleanup"])).toEqual(other);

    const stats = await ok([...delegationsExchanges(), "--stats-by", "resource"]);
    expect(stats).toMatch(
      /^resource\s+count\nhttps:\/\/customers\.example\.com\s+2\nhttps:\/\/mail\.example\.com\s+1\n/,
    );
    expect(stats).toMatch(/total: 3 events\n$/);
    const exported = (await ok(["audit", "export", "--task", "inbox-cleanup"])).trimEnd().split("\n");
    expect(exported.map((line) => JSON.parse(line))).toEqual(other);

    for (const [args, message] of [
      [["--task", "t".repeat(201)], "task_id: at most 200 characters"],
      [["--delegation", ""], "delegation_id: must not be empty"],
    ] as const) {
      const run = await deputy(["audit", "query", ...args]);
      expect(run.code).toBe(1);
      expect(run.stdout).toBe("");
      expect(run.stderr).toBe(`deputy: invalid_request: ${message}\n`);
    }
  });

  it("answers the same one command once the period is archived, and refuses a missing archive", async () => {
    const question = sarahsQuestion();
    const before = (await ok(question)).trimEnd().split("\n");
    expect(before.at(-1)).toBe("2 events");
    const run = await server.deputy.auditTrail.archive(undefined, {
      now: new Date(Date.now() + 91 * 86_400_000),
    });
    expect(run.archived_events).toBeGreaterThan(0);
    expect((await exchange(server, crm, { subject_token: sarahToken, resource: customersUri })).status).toBe(
      200,
    );

    const after = (await ok(question)).trimEnd().split("\n");
    expect(after.at(-1)).toBe("3 events");
    expect(after.slice(0, 2)).toEqual(before.slice(0, 2));
    const stats = await ok([...question, "--stats-by", "agent,action,resource"]);
    expect(stats).toMatch(
      new RegExp(`${agentId}\\s+token\\.exchange\\s+https://customers\\.example\\.com\\s+3\\n`),
    );
    expect(stats).toMatch(/total: 3 events\n$/);
    // One delegation's exchanges, archived and hot alike.
    const delegated = await ok(delegationsExchanges());
    expect(delegated.trimEnd().split("\n").at(-1)).toBe("4 events");

    const [archive] = run.archives;
    const file = path.join(server.deputy.auditTrail.settings.archiveDir, archive?.file ?? "");
    renameSync(file, `${file}.away`);
    try {
      const refused = await deputy(question);
      expect(refused.code).toBe(1);
      expect(refused.stdout).toBe("");
      expect(refused.stderr).toMatch(
        new RegExp(`^deputy: archive_integrity: audit archive ${archive?.file} .*is missing from `),
      );
    } finally {
      renameSync(`${file}.away`, file);
    }
  });
});
