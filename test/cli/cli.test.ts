// The `deputy` CLI as people run it: `node bin/deputy.js …` in a child process, against a real server.
// Spawns run one at a time (each loads tsx, ~0.5 s); the server runs in this process (startServer).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CliRun, runDeputy } from "../helpers/cli.ts";
import { basicAuth, postForm } from "../helpers/oauth.ts";
import { ADMIN_SECRET, freePort, startServer, type TestServer } from "../helpers/server.ts";

let server: TestServer;
let scratch: string;
/** A data directory with no bootstrap file, so the CLI never falls back to ./.deputy of the repository. */
let emptyDataDir: string;

beforeAll(async () => {
  server = await startServer("pglite");
  scratch = mkdtempSync(path.join(tmpdir(), "deputy-cli-"));
  emptyDataDir = mkdtempSync(path.join(scratch, "empty-"));
});
afterAll(async () => {
  await server?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Runs the CLI against the server, with no bootstrap file to fall back to (`undefined` removes a variable). */
function deputy(args: string[], overrides: Record<string, string | undefined> = {}): Promise<CliRun> {
  return runDeputy(server.url, args, { DEPUTY_DATA_DIR: emptyDataDir, ...overrides });
}

/** A successful run: exit 0, nothing on stderr. */
async function ok(args: string[], overrides?: Record<string, string | undefined>): Promise<string> {
  const run = await deputy(args, overrides);
  expect(run.stderr, `deputy ${args.join(" ")}`).toBe("");
  expect(run.code, `deputy ${args.join(" ")}`).toBe(0);
  return run.stdout;
}

async function okJson(args: string[], overrides?: Record<string, string | undefined>): Promise<any> {
  return JSON.parse(await ok(["--json", ...args], overrides));
}

/** A failed run: non-zero exit, nothing on stdout, exactly one `deputy: …` line on stderr, no stack. */
async function fails(args: string[], overrides?: Record<string, string | undefined>): Promise<string> {
  const run = await deputy(args, overrides);
  const label = `deputy ${args.join(" ")} → ${JSON.stringify(run)}`;
  expect(run.code, label).not.toBe(0);
  expect(run.code, label).not.toBeNull();
  expect(run.stdout, label).toBe("");
  expect(run.stderr.endsWith("\n"), label).toBe(true);
  const lines = run.stderr.trimEnd().split("\n");
  expect(lines, label).toHaveLength(1);
  const [line = ""] = lines;
  expect(line, label).toMatch(/^deputy: \S/);
  expect(line, label).not.toMatch(/\bat .+:\d+:\d+|node:internal|Error:/);
  return line;
}

/** `key: value` from the CLI's human output (top level only). */
function field(output: string, key: string): string | undefined {
  return output.match(new RegExp(`^${key}: (.*)$`, "m"))?.[1];
}

/** Whether a client authenticates at the introspection endpoint (200) with the given credentials. */
async function introspectionStatus(headers: Record<string, string>, form: Record<string, string> = {}) {
  const { status } = await postForm(`${server.url}/token/introspection`, { token: "x", ...form }, headers);
  return status;
}

const OWNER = "cli-owner@example.com";
const RESOURCE = "https://files.example.com";

describe("deputy CLI", () => {
  let helper: { client_id: string; client_secret: string };
  let scheduler: { client_id: string; client_secret: string };

  it("creates people, with and without the admin flag", async () => {
    const human = await ok([
      "users",
      "create",
      "--email",
      OWNER,
      "--name",
      "Cleo Owner",
      "--password",
      "p4ssword-long-enough",
    ]);
    expect(field(human, "email")).toBe(OWNER);
    expect(field(human, "name")).toBe("Cleo Owner");
    expect(field(human, "status")).toBe("active");
    expect(field(human, "admin")).toBe("false");
    expect(human).not.toContain("p4ssword-long-enough");

    const admin = await okJson([
      "users",
      "create",
      "--email",
      "cli-admin@example.com",
      "--name",
      "Ada Admin",
      "--password",
      "another-long-password",
      "--admin",
    ]);
    expect(admin).toMatchObject({ email: "cli-admin@example.com", admin: true, status: "active" });
    const stored = await server.admin("GET", "/people/cli-admin@example.com");
    expect(stored.body.admin).toBe(true);
  });

  it("creates a resource server and prints its introspection credentials", async () => {
    const out = await ok([
      "resources",
      "create",
      "--uri",
      RESOURCE,
      "--name",
      "Files",
      "--scopes",
      "files.read files.write",
      "--high-risk",
      "files.write",
      "--format",
      "jwt",
      "--ttl",
      "120",
    ]);
    const clientId = field(out, "client_id");
    const clientSecret = field(out, "client_secret");
    expect(clientId).toMatch(/^rs_/);
    expect(clientSecret).toMatch(/^[\w-]{43}$/);
    expect(field(out, "uri")).toBe(RESOURCE);
    expect(field(out, "token_format")).toBe("jwt");
    expect(field(out, "token_ttl_seconds")).toBe("120");
    expect(out).toMatch(/name: files\.write\n\s+description: files\.write\n\s+risk: high/);
    expect(out).toMatch(/name: files\.read\n\s+description: files\.read\n\s+risk: low/);
    // The printed secret is the real one.
    expect(await introspectionStatus({ authorization: basicAuth(clientId ?? "", clientSecret ?? "") })).toBe(
      200,
    );
    expect(await introspectionStatus({ authorization: basicAuth(clientId ?? "", "wrong") })).toBe(401);
  });

  it("creates agents with a client secret, redirect URIs and delegation settings", async () => {
    helper = await okJson([
      "agents",
      "create",
      "--name",
      "Helper",
      "--owner",
      OWNER,
      "--purpose",
      "Fetches files",
      "--resource",
      RESOURCE,
      "--scopes",
      "files.read",
      "--secret",
    ]);
    expect(helper.client_id).toMatch(/^agt_/);
    expect(helper).toMatchObject({
      status: "active",
      auth_method: "client_secret",
      owner: { email: OWNER },
      grants: [{ resource: RESOURCE, scopes: ["files.read"] }],
    });
    expect(
      await introspectionStatus({ authorization: basicAuth(helper.client_id, helper.client_secret) }),
    ).toBe(200);

    const out = await ok([
      "agents",
      "create",
      "--name",
      "Scheduler",
      "--owner",
      OWNER,
      "--purpose",
      "Books meetings",
      "--resource",
      RESOURCE,
      "--scopes",
      "files.read",
      "--secret",
      "--redirect-uri",
      "https://app.example.com/callback",
      "--may-delegate-to",
      helper.client_id,
      "--max-depth",
      "2",
    ]);
    scheduler = {
      client_id: field(out, "client_id") ?? "",
      client_secret: field(out, "client_secret") ?? "",
    };
    expect(scheduler.client_id).toMatch(/^agt_/);
    expect(scheduler.client_secret).toMatch(/^[\w-]{43}$/);
    expect(field(out, "status")).toBe("active");
    expect(field(out, "redirect_uris")).toBe("https://app.example.com/callback");
    expect(field(out, "may_delegate_to")).toBe(helper.client_id);
    expect(field(out, "max_depth")).toBe("2");
    expect(
      await introspectionStatus({ authorization: basicAuth(scheduler.client_id, scheduler.client_secret) }),
    ).toBe(200);
    const stored = await server.admin("GET", `/agents/${scheduler.client_id}`);
    expect(stored.body).toMatchObject({
      redirect_uris: ["https://app.example.com/callback"],
      may_delegate_to: [helper.client_id],
      max_depth: 2,
    });
  });

  it("creates an agent that authenticates with private_key_jwt from a public JWKS file", async () => {
    const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
    const jwk = { ...(await exportJWK(publicKey)), kid: "cli-key-1", alg: "ES256", use: "sig" };
    const jwksFile = path.join(scratch, "agent-jwks.json");
    writeFileSync(jwksFile, JSON.stringify({ keys: [jwk] }));

    const agent = await okJson([
      "agents",
      "create",
      "--name",
      "Signer",
      "--owner",
      OWNER,
      "--purpose",
      "Signs its own assertions",
      "--jwks-file",
      jwksFile,
    ]);
    expect(agent).toMatchObject({ status: "active", auth_method: "private_key_jwt" });
    expect(agent.client_secret).toBeUndefined();

    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: "ES256", kid: "cli-key-1" })
      .setIssuer(agent.client_id)
      .setSubject(agent.client_id)
      .setAudience(server.url)
      .setJti(crypto.randomUUID())
      .setIssuedAt()
      .setExpirationTime("1m")
      .sign(privateKey);
    const form = {
      client_id: agent.client_id,
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      client_assertion: assertion,
    };
    expect(await introspectionStatus({}, form)).toBe(200);
  });

  it("lists and shows agents, in human and JSON form", async () => {
    const human = await ok(["agents", "list"]);
    expect(human).toContain(`client_id: ${helper.client_id}`);
    expect(human).toContain(`client_id: ${scheduler.client_id}`);
    expect(human).not.toMatch(/client_secret:/);
    expect(human).not.toContain(scheduler.client_secret);

    const listed = await okJson(["agents", "list"]);
    expect(listed.agents.map((agent: { client_id: string }) => agent.client_id)).toEqual(
      expect.arrayContaining([helper.client_id, scheduler.client_id]),
    );

    const shown = await ok(["agents", "show", scheduler.client_id]);
    expect(field(shown, "client_id")).toBe(scheduler.client_id);
    expect(field(shown, "name")).toBe("Scheduler");
    expect(field(shown, "status")).toBe("active");
    expect(shown).toMatch(/^owner:\n\s+id: .+\n\s+email: cli-owner@example\.com/m);
    expect(shown).not.toContain(scheduler.client_secret);
  });

  it("suspends, activates and retires an agent", async () => {
    const suspended = await okJson([
      "agents",
      "suspend",
      scheduler.client_id,
      "--reason",
      "key leaked in CI",
    ]);
    expect(suspended).toMatchObject({ status: "suspended", status_reason: "key leaked in CI" });
    expect(
      await introspectionStatus({ authorization: basicAuth(scheduler.client_id, scheduler.client_secret) }),
    ).toBe(401);

    const activated = await ok(["agents", "activate", scheduler.client_id]);
    expect(field(activated, "status")).toBe("active");
    expect(
      await introspectionStatus({ authorization: basicAuth(scheduler.client_id, scheduler.client_secret) }),
    ).toBe(200);

    const retired = await ok(["agents", "retire", scheduler.client_id, "--reason", "replaced"]);
    expect(field(retired, "status")).toBe("retired");
    expect(field(retired, "status_reason")).toBe("replaced");
    expect((await server.admin("GET", `/agents/${scheduler.client_id}`)).body.status).toBe("retired");
  });

  it("sets an agent's co-owners at creation and changes them with update", async () => {
    const admin = "cli-admin@example.com";
    const partner = await server.admin("POST", "/people", {
      email: "cli-co-owner@example.com",
      name: "Bo Partner",
      password: "yet-another-long-password",
    });
    expect(partner.status).toBe(201);
    const emails = (agent: { co_owners: { email: string }[] }) =>
      agent.co_owners.map((person) => person.email);
    const shared = await okJson([
      ...["agents", "create", "--name", "Shared", "--owner", OWNER, "--purpose", "Shared work"],
      ...["--co-owner", admin, "--co-owner", partner.body.email],
    ]);
    expect(emails(shared)).toEqual([admin, partner.body.email]);
    const shown = await ok(["agents", "show", shared.client_id]);
    expect(shown).toMatch(/^co_owners:\n\s+- id: .+\n\s+email: cli-admin@example\.com\n/m);

    const update = (...args: string[]) => okJson(["agents", "update", shared.client_id, ...args]);
    expect(emails(await update("--co-owner", partner.body.email))).toEqual([partner.body.email]);
    const promoted = await update("--owner", partner.body.email);
    expect(promoted.owner.email).toBe(partner.body.email);
    expect(emails(promoted)).toEqual([]);
    expect(emails(await update("--co-owner", OWNER, "--co-owner", admin))).toEqual([OWNER, admin]);
    expect(emails(await update("--no-co-owners"))).toEqual([]);

    expect(await fails(["agents", "update", shared.client_id])).toMatch(/nothing to update/);
    expect(
      await fails(["agents", "update", shared.client_id, "--co-owner", admin, "--no-co-owners"]),
    ).toMatch(/either --co-owner or --no-co-owners/);
    expect(await fails(["agents", "update", shared.client_id, "--co-owner", partner.body.email])).toMatch(
      /co-owner cli-co-owner@example\.com is the agent's primary owner/,
    );
    const audit = await server.deputy.db.prisma.auditEvent.findMany({
      where: { target: shared.client_id, action: "agent.update" },
    });
    expect(audit).toHaveLength(4);
  });

  it("lists and rotates signing keys", async () => {
    const jwks = (await (await fetch(`${server.url}/jwks`)).json()) as { keys: { kid: string }[] };
    const current = jwks.keys[0]?.kid;
    expect(current).toBeTruthy();
    const human = await ok(["keys", "list"]);
    expect(human).toContain(`kid: ${current}`);
    expect(human).toContain("alg: ES256");

    const rotated = await okJson(["keys", "rotate"]);
    expect(rotated.key.kid).toBeTruthy();
    expect(rotated.key.kid).not.toBe(current);
    expect(rotated.key.active).toBe(true);

    const { keys } = await okJson(["keys", "list"]);
    expect(keys).toHaveLength(2);
    const byKid = new Map(keys.map((key: { kid: string; active: boolean }) => [key.kid, key.active]));
    expect(byKid.get(rotated.key.kid)).toBe(true);
    expect(byKid.get(current)).toBe(false);
  });

  it("authenticates with the bootstrap file when no secret is in the environment", async () => {
    const dataDir = mkdtempSync(path.join(scratch, "bootstrap-"));
    const file = path.join(dataDir, "bootstrap-admin.json");
    writeFileSync(file, JSON.stringify({ client_id: "deputy-admin", client_secret: ADMIN_SECRET }), {
      mode: 0o600,
    });
    const noEnvSecret = { DEPUTY_BOOTSTRAP_ADMIN_SECRET: undefined, DEPUTY_DATA_DIR: dataDir };
    const people = await okJson(["users", "list"], noEnvSecret);
    expect(people.people.map((person: { email: string }) => person.email)).toContain(OWNER);

    // The file really is what authenticates: a wrong secret in it is refused by the server.
    writeFileSync(file, JSON.stringify({ client_id: "deputy-admin", client_secret: "x".repeat(40) }));
    expect(await fails(["users", "list"], noEnvSecret)).toMatch(/invalid_client/);
  });

  describe("reports bad input as one line on stderr and a non-zero exit", () => {
    it("a missing required option", async () => {
      expect(await fails(["agents", "create", "--name", "Nameless"])).toMatch(/--owner/);
    });

    it("an unknown command", async () => {
      expect(await fails(["agents", "frobnicate"])).toMatch(/unknown command 'frobnicate'/);
    });

    it("a --ttl that is not a number", async () => {
      const line = await fails([
        "resources",
        "create",
        "--uri",
        "https://bad-ttl.example.com",
        "--name",
        "Bad",
        "--scopes",
        "a",
        "--ttl",
        "two minutes",
      ]);
      expect(line).toMatch(/--ttl/);
      expect((await server.admin("GET", "/resources/https%3A%2F%2Fbad-ttl.example.com")).status).toBe(404);
    });

    it("--secret together with --jwks-file", async () => {
      const line = await fails([
        "agents",
        "create",
        "--name",
        "Both",
        "--owner",
        OWNER,
        "--purpose",
        "p",
        "--secret",
        "--jwks-file",
        path.join(scratch, "agent-jwks.json"),
      ]);
      expect(line).toMatch(/--secret.*--jwks-file/);
    });

    it("an unreachable DEPUTY_URL", async () => {
      const closed = `http://127.0.0.1:${await freePort()}`;
      const line = await fails(["agents", "list"], { DEPUTY_URL: closed });
      expect(line).toContain(closed);
      expect(line).toMatch(/cannot reach/);
    });

    it("no admin credentials anywhere", async () => {
      const line = await fails(["agents", "list"], { DEPUTY_BOOTSTRAP_ADMIN_SECRET: undefined });
      expect(line).toMatch(/no admin credentials/);
      expect(line).toContain(path.join(emptyDataDir, "bootstrap-admin.json"));
    });

    it("an API error such as a duplicate email", async () => {
      const line = await fails([
        "users",
        "create",
        "--email",
        OWNER.toUpperCase(),
        "--name",
        "Again",
        "--password",
        "p4ssword-long-enough",
      ]);
      expect(line).toMatch(/^deputy: conflict: .*already exists/);
    });
  });
});
