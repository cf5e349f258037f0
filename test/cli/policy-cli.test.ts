// `deputy policy …` as people run it: a child process against a real server, through the admin API.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { runDeputy } from "../helpers/cli.ts";
import { createResource } from "../helpers/scenario.ts";
import { startServer, type TestServer } from "../helpers/server.ts";

let server: TestServer;
let scratch: string;

beforeAll(async () => {
  server = await startServer("pglite");
  scratch = mkdtempSync(path.join(tmpdir(), "deputy-policy-cli-"));
  await createResource(server, "https://mail.example.com", ["mail.read", "mail.send"]);
});
afterAll(async () => {
  await server?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

function deputy(args: string[]) {
  return runDeputy(server.url, args, { DEPUTY_DATA_DIR: scratch });
}

function file(name: string, text: string): string {
  const target = path.join(scratch, name);
  writeFileSync(target, text);
  return target;
}

it("validates, applies, shows and diffs policy versions", async () => {
  const good = file(
    "pause.cedar",
    [
      '@id("everyone")',
      "permit (principal is Agent, action, resource is ResourceServer);",
      "",
      '@id("no-sending")',
      'forbid (principal, action == Action::"mail.send", resource);',
      "",
    ].join("\n"),
  );
  const bad = file("bad.cedar", 'permit (principal, action == Action::"mail.sned", resource);\n');

  const valid = await deputy(["policy", "validate", good]);
  expect(valid.code, valid.stderr).toBe(0);
  expect(valid.stdout).toContain("valid: 2 policies (everyone, no-sending)");

  const invalid = await deputy(["policy", "validate", good, bad]);
  expect(invalid.code).toBe(1);
  expect(invalid.stdout).toMatch(/error bad\.cedar:1:\d+ policy bad\.cedar:1: .*mail\.sned.*did you mean/);
  expect(invalid.stderr).toBe("deputy: the policy set is invalid (1 errors)\n");

  const refused = await deputy(["policy", "apply", bad]);
  expect(refused.code).toBe(1);
  expect(refused.stderr).toMatch(/^deputy: invalid_policy: the policy set is invalid: bad\.cedar:1/);

  const applied = await deputy(["policy", "apply", good]);
  expect(applied.code, applied.stderr).toBe(0);
  expect(applied.stdout).toContain("version: 2");
  expect(applied.stdout).toContain("in_force: true");

  const shown = await deputy(["policy", "show"]);
  expect(shown.stdout).toContain('@id("no-sending")');
  expect(shown.stdout).toContain("// @source pause.cedar");
  const first = await deputy(["policy", "show", "1"]);
  expect(first.stdout).toContain('@id("high-risk-needs-step-up")');

  const diff = await deputy(["policy", "diff", "1", "2"]);
  expect(diff.code).toBe(0);
  expect(diff.stdout).toContain("--- version 1");
  expect(diff.stdout).toContain("+++ version 2");
  expect(diff.stdout).toContain('+forbid (principal, action == Action::"mail.send", resource);');
  expect(diff.stdout).toContain("-// @source default.cedar");

  const missing = await deputy(["policy", "show", "99"]);
  expect(missing.code).toBe(1);
  expect(missing.stderr).toContain("not_found");

  const list = await deputy(["--json", "policy", "list"]);
  expect(JSON.parse(list.stdout)).toMatchObject({ in_force: 2, versions: [{ version: 1 }, { version: 2 }] });
});

it("adds, lists and removes velocity rules", async () => {
  const added = await deputy([
    "policy",
    "velocity",
    "add",
    "--name",
    "send-burst",
    "--resource",
    "https://mail.example.com",
    "--action",
    "mail.send",
    "--limit",
    "100",
    "--window",
    "60",
    "--shadow",
  ]);
  expect(added.code, added.stderr).toBe(0);
  expect(added.stdout).toContain("shadow: true");
  const duplicate = await deputy([
    "policy",
    "velocity",
    "add",
    "--name",
    "send-burst",
    "--resource",
    "*",
    "--action",
    "*",
    "--limit",
    "1",
    "--window",
    "1",
  ]);
  expect(duplicate.code).toBe(1);
  expect(duplicate.stderr).toContain("conflict");
  const listed = await deputy(["--json", "policy", "velocity", "list"]);
  expect(JSON.parse(listed.stdout).rules).toMatchObject([
    { name: "send-burst", limit: 100, window_seconds: 60, shadow: true, contain_on_breach: false },
  ]);
  const removed = await deputy(["policy", "velocity", "remove", "send-burst"]);
  expect(removed.code, removed.stderr).toBe(0);
  const empty = await deputy(["--json", "policy", "velocity", "list"]);
  expect(JSON.parse(empty.stdout).rules).toEqual([]);
  const events = await server.deputy.db.prisma.auditEvent.findMany({
    where: { type: "policy_change", action: { startsWith: "velocity_rule." } },
  });
  expect(events.map((e) => e.action)).toEqual(["velocity_rule.add", "velocity_rule.remove"]);
});
