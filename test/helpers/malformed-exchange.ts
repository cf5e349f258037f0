// The corpus of malformed RFC 8693 token-exchange requests test/exchange/exchange-malformed.test.ts throws at
// POST /token, generated from a fixed seed (so a failure can be replayed), and the check of each answer.
import { randomUUID } from "node:crypto";
import http from "node:http";
import { basicAuth } from "./oauth.ts";
import { ACCESS_TOKEN, type Agent, type Resource, TOKEN_EXCHANGE } from "./scenario.ts";
import { ADMIN_SECRET, type TestServer } from "./server.ts";

export const SEED = 0x8693_2025;
export const CASES = 480;
/** oidc-provider 9.13.3 refuses request bodies over 56 KiB (lib/shared/selective_body.js) as invalid_request. */
export const BODY_LIMIT = 56 * 1024;
export const FORM = "application/x-www-form-urlencoded";
export const JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt";

export const OAUTH_ERRORS = [
  "invalid_request",
  "invalid_client",
  "invalid_grant",
  "unauthorized_client",
  "unsupported_grant_type",
  "invalid_scope",
  "invalid_target",
  "invalid_dpop_proof",
  "access_denied",
] as const;
export type OAuthError = (typeof OAUTH_ERRORS)[number];

// A stack frame ("    at fn (/path/x.ts:1:2)", "at file:///…", "at node:internal…") or a source path with a line.
export const STACK_TRACE = [
  /\n\s*at\s/,
  /\bat\s+\S+\s+\((?:file:|node:|\/)/,
  /\bat\s+(?:file|node):/,
  /\.(?:ts|js|mjs|cjs):\d+/,
  /\.ts:/,
  /node_modules\//,
];

// ---------------------------------------------------------------------------------------------------------
// A tiny deterministic generator (mulberry32): the same seed gives the same requests on every run.

export class Rng {
  #state: number;
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  bytes(n: number): Buffer {
    const out = Buffer.alloc(n);
    for (let i = 0; i < n; i++) out[i] = Math.floor(this.next() * 256);
    return out;
  }
  text(n: number, alphabet: string): string {
    let out = "";
    for (let i = 0; i < n; i++) out += alphabet[Math.floor(this.next() * alphabet.length)];
    return out;
  }
}

export const ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
export const PRINTABLE = `${ALNUM} !"#$%&'()*+,-./:;<=>?@[\\]^_\`{|}~`;
export const WEIRD = [
  "\u0000",
  "\u0001",
  "\u0007",
  "\b",
  "\t",
  "\n",
  "\r",
  "\u001b",
  "\u007f",
  "\u0085",
  "\u00a0",
  "\u200b",
  "\u200e",
  "\u202e",
  "\u2028",
  "\ufeff",
  "\ufffd",
  "\uffff",
  "\ud800",
  "\udfff",
  "😀",
  "é",
  "e\u0301",
  "ｓｃｏｐｅ",
  "%00",
  "%",
  "\\",
  '"',
  "'",
  "<script>",
  "$" + "{x}",
  "../",
];

// ---------------------------------------------------------------------------------------------------------
// Requests and what is expected of them.

export type Pairs = [string, string][];
export type Headers = Record<string, string | string[]>;

export type Expectation =
  /** An OAuth error, one of `errors`. */
  | { kind: "error"; errors: readonly OAuthError[] }
  /** Unusual but harmless: either a well-formed exchange response or one of `errors`. */
  | { kind: "errorOrToken"; errors: readonly OAuthError[] }
  /** A method the token endpoint does not route: oidc-provider answers a plain 404 (405 would do too). */
  | { kind: "noRoute" };

export interface Case {
  id: number;
  category: string;
  note: string;
  method: string;
  path: string;
  headers: Headers;
  /** A Buffer[] is sent chunked, without Content-Length. */
  body?: string | Buffer | Buffer[];
  expect: Expectation;
}

export interface Sent {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/**
 * One request on a connection of its own (Node's http client rather than fetch: duplicate headers are sent as
 * such, and an early answer to a huge upload never leaves a half-read socket in a shared keep-alive pool).
 */
export function send(baseUrl: string, c: Pick<Case, "method" | "path" | "headers" | "body">): Promise<Sent> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  return new Promise<Sent>((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = { ...c.headers };
    if (typeof c.body === "string" || Buffer.isBuffer(c.body))
      headers["content-length"] = Buffer.byteLength(c.body);
    const request = http.request(`${baseUrl}${c.path}`, { method: c.method, headers, agent }, (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("error", reject);
      response.on("end", () =>
        resolve({
          status: response.statusCode ?? 0,
          headers: response.headers,
          text: Buffer.concat(chunks).toString("utf8"),
        }),
      );
    });
    request.setTimeout(20_000, () => request.destroy(new Error("no answer within 20 s")));
    request.on("error", reject);
    if (Array.isArray(c.body)) {
      const chunks = c.body;
      const writeNext = (i: number) => {
        if (i === chunks.length) return void request.end();
        // An early answer may stop the upload; the answer is what is tested.
        if (request.destroyed) return;
        request.write(chunks[i], () => writeNext(i + 1));
      };
      writeNext(0);
    } else {
      request.end(c.body);
    }
  }).finally(() => agent.destroy());
}

export function formBody(pairs: Pairs): string {
  const params = new URLSearchParams();
  for (const [key, value] of pairs) params.append(key, value);
  return params.toString();
}

export function b64url(value: unknown): string {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

/** Everything in a response that shows a problem; an empty list means the response is acceptable. */
export function problems(c: Case, r: Sent): string[] {
  const out: string[] = [];
  if (r.status >= 500) out.push(`status ${r.status}`);
  const wholeResponse = `${JSON.stringify(r.headers)}\n${r.text}`;
  for (const pattern of STACK_TRACE)
    if (pattern.test(wholeResponse)) out.push(`stack trace text (${pattern}) in the response`);
  if (c.expect.kind === "noRoute") {
    if (r.status === 405) {
      if (!String(r.headers.allow ?? "").includes("POST")) out.push("405 without Allow: POST");
    } else if (r.status !== 404) out.push(`status ${r.status}, expected 404 or 405`);
    return out;
  }
  let body: any;
  try {
    body = JSON.parse(r.text);
  } catch {
    out.push(`body is not JSON: ${r.text.slice(0, 120)}`);
    return out;
  }
  if (!String(r.headers["content-type"]).startsWith("application/json"))
    out.push(`content-type ${r.headers["content-type"]}`);
  if (r.status === 200 && c.expect.kind === "errorOrToken") {
    if (typeof body.access_token !== "string" || !body.access_token) out.push("200 without access_token");
    if (body.issued_token_type !== ACCESS_TOKEN) out.push(`issued_token_type ${body.issued_token_type}`);
    if (body.token_type !== "Bearer") out.push(`token_type ${body.token_type}`);
    return out;
  }
  if (typeof body?.error !== "string") {
    out.push(`status ${r.status} without an error: ${r.text.slice(0, 120)}`);
    return out;
  }
  if (!c.expect.errors.includes(body.error))
    out.push(`error ${body.error}, expected one of ${c.expect.errors.join("|")}`);
  if (typeof body.error_description !== "string") out.push("error_description is not a string");
  const expectedStatus = body.error === "invalid_client" ? [400, 401] : [400];
  if (!expectedStatus.includes(r.status)) out.push(`status ${r.status} for ${body.error}`);
  return out;
}

// ---------------------------------------------------------------------------------------------------------

/** What the corpus is built from: the server's agents, resources and tokens (see the test's set-up). */
export interface Fixture {
  server: TestServer;
  calendar: Resource;
  mail: Resource;
  agentA: Agent;
  agentB: Agent;
  suspended: Agent;
  subjectA: string;
  person: { id: string; email: string };
  /** Tokens and strings a malicious or confused caller might send as a subject or actor token. */
  foreign: Record<string, string>;
  /** DPoP headers that are all wrong in one way or another. */
  badProofs: string[];
}

/** The seeded corpus: a list of fixed landmarks, then random requests up to CASES. */
export function generate(rng: Rng, fixture: Fixture): Case[] {
  const { server, calendar, mail, agentA, agentB, suspended, subjectA, person, foreign, badProofs } = fixture;
  const cases: Case[] = [];
  const authA = basicAuth(agentA.client_id, agentA.client_secret);
  const valid = (): Pairs => [
    ["grant_type", TOKEN_EXCHANGE],
    ["subject_token", subjectA],
    ["subject_token_type", ACCESS_TOKEN],
  ];
  const set = (pairs: Pairs, key: string, value: string): Pairs => [
    ...pairs.filter(([k]) => k !== key),
    [key, value],
  ];
  const without = (pairs: Pairs, ...keys: string[]): Pairs => pairs.filter(([k]) => !keys.includes(k));
  const add = (
    category: string,
    note: string,
    pairs: Pairs,
    expected: Expectation | readonly OAuthError[],
    options: {
      headers?: Headers;
      contentType?: string | null;
      method?: string;
      rawBody?: Case["body"];
    } = {},
  ) => {
    const body = options.rawBody ?? formBody(pairs);
    const contentType = options.contentType === undefined ? FORM : options.contentType;
    const headers: Headers = { authorization: authA, ...options.headers };
    if (contentType !== null) headers["content-type"] = contentType;
    for (const [k, v] of Object.entries(headers)) if (v === "") delete headers[k];
    let expectation: Expectation = Array.isArray(expected)
      ? { kind: "error", errors: expected as readonly OAuthError[] }
      : (expected as Expectation);
    const size = Array.isArray(body) ? body.reduce((n, b) => n + b.length, 0) : Buffer.byteLength(body);
    // Too large to be read at all: refused before anything else is looked at.
    if (size > BODY_LIMIT && expectation.kind !== "noRoute" && contentType?.toLowerCase().startsWith(FORM))
      expectation = { kind: "error", errors: ["invalid_request"] };
    cases.push({
      id: cases.length,
      category,
      note,
      method: options.method ?? "POST",
      path: "/token",
      headers,
      body,
      expect: expectation,
    });
  };

  // --- Fixed landmarks: every kind of malformation at least once.
  add("missing", "empty body", [], ["invalid_request"]);
  for (const key of ["grant_type", "subject_token", "subject_token_type"])
    add("missing", `no ${key}`, without(valid(), key), ["invalid_request"]);
  for (const key of ["subject_token", "scope", "grant_type", "subject_token_type", "requested_token_type"])
    add(
      "duplicate",
      `${key} twice`,
      [...valid(), [key, valid().find(([k]) => k === key)?.[1] ?? "x"], [key, "y"]],
      ["invalid_request"],
    );
  for (const [note, token] of Object.entries(foreign))
    add("foreign subject_token", note, set(valid(), "subject_token", token), ["invalid_request"]);
  add("huge", "100 KB subject_token", set(valid(), "subject_token", "a".repeat(100 * 1024)), [
    "invalid_request",
  ]);
  add("huge", "100 KB scope", [...valid(), ["scope", "s".repeat(100 * 1024)]], ["invalid_request"]);
  add(
    "huge",
    "100 KB resource",
    [...valid(), ["resource", `https://${"r".repeat(100 * 1024)}`]],
    ["invalid_request"],
  );
  add(
    "huge",
    "10,000 scopes",
    [...valid(), ["scope", Array.from({ length: 10_000 }, (_, i) => `scope${i}`).join(" ")]],
    ["invalid_request"],
  );
  add(
    "huge",
    "2,000 scopes",
    [...valid(), ["scope", Array.from({ length: 2000 }, (_, i) => `s${i}`).join(" ")]],
    ["invalid_scope"],
  );
  add(
    "huge",
    "50 KB subject_token (too long, under the body limit)",
    set(valid(), "subject_token", "t".repeat(50_000)),
    ["invalid_request"],
  );
  const megabyte = Buffer.from(`${formBody(valid())}&scope=${"a".repeat(1024 * 1024)}`);
  add("huge", "1 MB body with Content-Length", [], ["invalid_request"], { rawBody: megabyte });
  add("huge", "1 MB body, chunked", [], ["invalid_request"], {
    rawBody: Array.from({ length: 16 }, (_, i) => megabyte.subarray(i * 65536, (i + 1) * 65536)),
  });
  add(
    "huge",
    "5,000 distinct resource values",
    [
      ...valid(),
      ...Array.from({ length: 5000 }, (_, i): [string, string] => ["resource", `https://r${i}.example`]),
    ],
    ["invalid_request"],
  );
  add(
    "huge",
    "500 distinct resource values",
    [
      ...valid(),
      ...Array.from({ length: 500 }, (_, i): [string, string] => ["resource", `https://r${i}.example`]),
    ],
    ["invalid_target"],
  );
  add("content-type", "application/json", [], ["invalid_request"], {
    contentType: "application/json",
    rawBody: JSON.stringify(Object.fromEntries(valid())),
  });
  add("content-type", "text/plain", valid(), ["invalid_request"], { contentType: "text/plain" });
  const boundary = "----deputy-boundary";
  add("content-type", "multipart/form-data", [], ["invalid_request"], {
    contentType: `multipart/form-data; boundary=${boundary}`,
    rawBody: `${valid()
      .map(([k, v]) => `--${boundary}\r\ncontent-disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`)
      .join("")}--${boundary}--\r\n`,
  });
  add("content-type", "no content type", valid(), ["invalid_request"], { contentType: null });
  add("content-type", "application/xml", valid(), ["invalid_request"], { contentType: "application/xml" });
  add("content-type", "*/*", valid(), ["invalid_request"], { contentType: "*/*" });
  for (const method of ["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]) {
    const query = method === "GET" || method === "HEAD" || method === "OPTIONS";
    add(
      "method",
      method,
      valid(),
      { kind: "noRoute" },
      {
        method,
        rawBody: query ? "" : formBody(valid()),
        contentType: query ? null : FORM,
      },
    );
  }
  add(
    "actor",
    "actor_token without actor_token_type",
    [...valid(), ["actor_token", subjectA]],
    ["invalid_request"],
  );
  add(
    "actor",
    "actor_token_type without actor_token",
    [...valid(), ["actor_token_type", ACCESS_TOKEN]],
    ["invalid_request"],
  );
  add("resource", "fragment", [...valid(), ["resource", `${calendar.uri}#section`]], ["invalid_target"]);
  add("resource", "not a URI", [...valid(), ["resource", "not a uri"]], ["invalid_target"]);
  add("credentials", "no credentials", valid(), ["invalid_request", "invalid_client"], {
    headers: { authorization: "" },
  });
  add("credentials", "wrong secret", valid(), ["invalid_client"], {
    headers: { authorization: basicAuth(agentA.client_id, "wrong") },
  });

  // --- Random requests from here on.
  const garbageToken = (): string => {
    switch (rng.int(0, 7)) {
      case 0:
        return rng.bytes(rng.int(1, 200)).toString("latin1");
      case 1:
        return rng.bytes(rng.int(1, 3000)).toString("base64");
      case 2:
        return rng.bytes(rng.int(1, 3000)).toString("base64url");
      case 3:
        return rng.bytes(rng.int(1, 64)).toString("hex");
      case 4:
        return rng.text(rng.int(1, 500), PRINTABLE);
      case 5:
        return `${b64url(rng.bytes(rng.int(2, 60)))}.${b64url(rng.bytes(rng.int(2, 400)))}.${b64url(rng.bytes(rng.int(0, 90)))}`;
      case 6:
        return `${b64url({ alg: rng.pick(["none", "ES256", "RS256", "HS256", "EdDSA", ""]), typ: "at+jwt" })}.${b64url({ sub: person.id, client_id: agentA.client_id, scope: "calendar.read", exp: 9_999_999_999, act: { sub: agentA.client_id }, delegation: { id: randomUUID(), depth: 1, max_depth: 9 } })}.${rng.chance(0.5) ? "" : b64url(rng.bytes(64))}`;
      default:
        return rng.pick(Object.values(foreign));
    }
  };
  const weird = (): string => {
    let out = "";
    for (let n = rng.int(1, 5); n > 0; n--) out += rng.pick(WEIRD);
    return out;
  };
  const inject = (value: string): string => {
    const at = rng.int(0, value.length);
    return value.slice(0, at) + weird() + value.slice(at);
  };
  const badUri = (): string =>
    rng.pick([
      "not a uri",
      "calendar.example.com",
      "/relative/path",
      "//calendar.example.com",
      "https://",
      "http://[::1",
      `${calendar.uri}#frag`,
      `${calendar.uri}/#`,
      `${calendar.uri}/`,
      `${calendar.uri}?x=1`,
      calendar.uri.toUpperCase(),
      ` ${calendar.uri}`,
      `${calendar.uri} `,
      "urn:",
      "javascript:alert(1)",
      "file:///etc/passwd",
      "http://169.254.169.254/latest/meta-data/",
      mail.uri,
      "https://unknown.example.com",
      inject(calendar.uri),
      rng.text(rng.int(1, 80), PRINTABLE),
    ]);
  const wrongTokenType = (): string =>
    rng.pick([
      "urn:ietf:params:oauth:token-type:refresh_token",
      "urn:ietf:params:oauth:token-type:id_token",
      "urn:ietf:params:oauth:token-type:saml1",
      "urn:ietf:params:oauth:token-type:saml2",
      JWT_TYPE,
      "access_token",
      "Bearer",
      ACCESS_TOKEN.toUpperCase(),
      `${ACCESS_TOKEN} `,
      `${ACCESS_TOKEN}x`,
      inject(ACCESS_TOKEN),
      rng.text(rng.int(1, 60), PRINTABLE),
    ]);
  const wrongGrantType = (): string =>
    rng.pick([
      "client_credentials",
      "authorization_code",
      "refresh_token",
      "password",
      "implicit",
      "urn:openid:params:grant-type:ciba",
      "urn:ietf:params:oauth:grant-type:device_code",
      "urn:ietf:params:oauth:grant-type:jwt-bearer",
      TOKEN_EXCHANGE.toUpperCase(),
      `${TOKEN_EXCHANGE} `,
      `${TOKEN_EXCHANGE}\u0000`,
      inject(TOKEN_EXCHANGE),
      rng.text(rng.int(1, 60), PRINTABLE),
    ]);

  type Mutation = { note: string; apply(pairs: Pairs): Pairs; errors: readonly OAuthError[] };
  const mutations: (() => Mutation)[] = [
    () => {
      const keys = ["grant_type", "subject_token", "subject_token_type"].filter(() => rng.chance(0.5));
      if (keys.length === 0) keys.push("subject_token");
      const empty = rng.chance(0.3);
      return {
        note: `${empty ? "empty" : "missing"} ${keys.join(", ")}`,
        apply: (p) => (empty ? keys.reduce((acc, k) => set(acc, k, ""), p) : without(p, ...keys)),
        errors: ["invalid_request"],
      };
    },
    () => {
      const key = rng.pick([
        "subject_token",
        "scope",
        "grant_type",
        "subject_token_type",
        "requested_token_type",
        "actor_token",
        "actor_token_type",
      ]);
      return {
        note: `${key} twice`,
        apply: (p) => [
          ...p.filter(([k]) => k !== key),
          [key, garbageToken() || "x"],
          [key, rng.pick([subjectA, ACCESS_TOKEN, "x"])],
        ],
        errors: ["invalid_request"],
      };
    },
    () => {
      const token = garbageToken();
      return {
        note: `garbage subject_token (${token.length} chars)`,
        apply: (p) => set(p, "subject_token", token || "x"),
        errors: ["invalid_request"],
      };
    },
    () => {
      const key = rng.pick(["subject_token_type", "requested_token_type"]);
      const value = wrongTokenType();
      return {
        note: `${key}=${JSON.stringify(value)}`,
        apply: (p) => set(p, key, value),
        errors: ["invalid_request"],
      };
    },
    () => {
      const variant = rng.int(0, 4);
      const pairs: Pairs = [
        [["actor_token", garbageToken() || "x"]],
        [["actor_token_type", rng.pick([ACCESS_TOKEN, JWT_TYPE])]],
        [
          ["actor_token", rng.pick(Object.values(foreign))],
          ["actor_token_type", wrongTokenType()],
        ],
        [
          ["actor_token", rng.pick(Object.values(foreign))],
          ["actor_token_type", rng.pick([ACCESS_TOKEN, JWT_TYPE])],
        ],
        [
          ["actor_token", garbageToken() || "x"],
          ["actor_token_type", JWT_TYPE],
        ],
      ][variant] as Pairs;
      return {
        note: `actor variant ${variant}`,
        apply: (p) => [...without(p, "actor_token", "actor_token_type"), ...pairs],
        errors: ["invalid_request"],
      };
    },
    () => {
      const many = rng.chance(0.3);
      const values = many
        ? Array.from({ length: rng.int(2, 600) }, (_, i) =>
            i === 0 ? calendar.uri : `https://r${i}.example`,
          )
        : [badUri()];
      return {
        note: many ? `${values.length} resource values` : `resource=${JSON.stringify(values[0])}`,
        apply: (p) => [
          ...p,
          ...values.map((v): [string, string] => [rng.chance(0.8) ? "resource" : "audience", v]),
        ],
        errors: ["invalid_target"],
      };
    },
    () => {
      const value = rng.pick([
        "calendar.write",
        "calendar.read calendar.write",
        "mail.read",
        "admin",
        "deputy:admin",
        "openid",
        "   ",
        "\t",
        "calendar.read\tcalendar.write",
        rng.text(rng.int(1, 2000), ALNUM),
        Array.from({ length: rng.int(2, 1500) }, (_, i) => `scope${i}`).join(" "),
        inject("calendar.read"),
      ]);
      return {
        note: `scope=${JSON.stringify(value.slice(0, 40))}`,
        apply: (p) => [...without(p, "scope"), ["scope", value]],
        errors: ["invalid_scope"],
      };
    },
    () => {
      const key = rng.pick([
        "subject_token",
        "subject_token_type",
        "requested_token_type",
        "grant_type",
        "scope",
        "resource",
        "audience",
      ]);
      const base: Record<string, string> = {
        subject_token: subjectA,
        subject_token_type: ACCESS_TOKEN,
        requested_token_type: ACCESS_TOKEN,
        grant_type: TOKEN_EXCHANGE,
        scope: "calendar.read",
        resource: calendar.uri,
        audience: calendar.uri,
      };
      const value = inject(base[key] as string);
      const errors: Record<string, OAuthError[]> = {
        subject_token: ["invalid_request"],
        subject_token_type: ["invalid_request"],
        requested_token_type: ["invalid_request"],
        grant_type: ["unsupported_grant_type", "invalid_request"],
        scope: ["invalid_scope"],
        resource: ["invalid_target"],
        audience: ["invalid_target"],
      };
      return {
        note: `control/unicode in ${key}: ${JSON.stringify(value).slice(0, 60)}`,
        apply: (p) => set(p, key, value),
        errors: errors[key] as OAuthError[],
      };
    },
    () => {
      const key = rng.pick(["grant_type", "subject_token", "subject_token_type"]);
      const renamed = inject(key);
      return {
        note: `parameter name ${JSON.stringify(renamed)}`,
        apply: (p) => p.map(([k, v]): [string, string] => [k === key ? renamed : k, v]),
        errors: ["invalid_request"],
      };
    },
    () => {
      const value = wrongGrantType();
      return {
        note: `grant_type=${JSON.stringify(value)}`,
        apply: (p) => set(p, "grant_type", value),
        errors: ["unsupported_grant_type", "invalid_request", "unauthorized_client"],
      };
    },
  ];

  const credentialVariants: (() => {
    note: string;
    headers?: Headers;
    pairs?: Pairs;
    errors: readonly OAuthError[];
  })[] = [
    () => ({
      note: "no credentials",
      headers: { authorization: "" },
      errors: ["invalid_request", "invalid_client"],
    }),
    () => ({
      note: "wrong secret",
      headers: { authorization: basicAuth(agentA.client_id, rng.text(40, ALNUM)) },
      errors: ["invalid_client"],
    }),
    () => ({
      note: "unknown client",
      headers: { authorization: basicAuth(`agt_${rng.text(16, ALNUM)}`, "x") },
      errors: ["invalid_client"],
    }),
    () => ({
      note: "suspended agent",
      headers: { authorization: basicAuth(suspended.client_id, suspended.client_secret) },
      errors: ["invalid_client"],
    }),
    () => ({
      note: "resource server's credentials",
      headers: { authorization: basicAuth(calendar.client_id, calendar.client_secret) },
      errors: ["unauthorized_client", "invalid_request"],
    }),
    () => ({
      note: "admin service credentials",
      headers: { authorization: basicAuth("deputy-admin", ADMIN_SECRET) },
      errors: ["unauthorized_client", "invalid_request"],
    }),
    () => ({
      note: "malformed Authorization",
      headers: {
        authorization: rng.pick([
          "Basic",
          "Basic ",
          "Basic !!!",
          `Basic ${Buffer.from("no-colon").toString("base64")}`,
          `Basic ${Buffer.from("%ZZ:%ZZ").toString("base64")}`,
          `Basic ${Buffer.from("a\u0001:b").toString("base64")}`,
          `Bearer ${subjectA}`,
          `${authA} extra`,
          `${authA}, ${authA}`,
          `Digest username="${agentA.client_id}"`,
          rng.text(rng.int(1, 100), ALNUM),
        ]),
      },
      errors: ["invalid_request", "invalid_client"],
    }),
    () => ({
      note: "basic and client_secret_post",
      pairs: [["client_secret", agentA.client_secret]],
      errors: ["invalid_request"],
    }),
    () => ({
      note: "client_id mismatch",
      pairs: [["client_id", agentB.client_id]],
      errors: ["invalid_request"],
    }),
    () => ({
      note: "client_secret_post, wrong secret",
      headers: { authorization: "" },
      pairs: [
        ["client_id", agentA.client_id],
        ["client_secret", rng.text(30, ALNUM)],
      ],
      errors: ["invalid_client"],
    }),
    () => ({
      note: "client_id with control characters",
      headers: { authorization: "" },
      pairs: [
        ["client_id", inject(agentA.client_id)],
        ["client_secret", "x"],
      ],
      errors: ["invalid_client", "invalid_request"],
    }),
    () => ({
      note: "garbage client_assertion",
      headers: { authorization: "" },
      pairs: [
        ["client_assertion", garbageToken() || "x"],
        ["client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
      ],
      errors: ["invalid_request", "invalid_client"],
    }),
    () => ({
      note: "alg none client_assertion for agent A",
      headers: { authorization: "" },
      pairs: [
        ["client_id", agentA.client_id],
        [
          "client_assertion",
          `${b64url({ alg: "none" })}.${b64url({ iss: agentA.client_id, sub: agentA.client_id, aud: server.url, exp: 9_999_999_999, jti: randomUUID() })}.`,
        ],
        ["client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
      ],
      errors: ["invalid_request", "invalid_client"],
    }),
  ];

  /** Harmless oddities: the server may accept them (a well-formed token) or refuse them properly. */
  const tolerated: (() => { note: string; pairs: Pairs; contentType?: string; headers?: Headers })[] = [
    () => ({
      note: "unknown parameters",
      pairs: [...valid(), [rng.text(8, ALNUM), rng.text(20, PRINTABLE)]],
    }),
    () => ({
      note: "prototype-polluting names",
      pairs: [...valid(), ["__proto__", "x"], ["constructor", "y"], ["toString", "z"]],
    }),
    () => ({
      note: "bracketed names",
      pairs: [...valid(), ["resource[]", "x"], ["subject_token[a]", "b"]],
    }),
    () => ({
      note: "parameter name with control characters",
      pairs: [...valid(), [inject("scope"), "calendar.read"]],
    }),
    () => ({ note: "empty resource", pairs: [...valid(), ["resource", ""]] }),
    () => ({ note: "empty scope", pairs: [...valid(), ["scope", ""]] }),
    () => ({
      note: "the same resource twice",
      pairs: [...valid(), ["resource", calendar.uri], ["audience", calendar.uri]],
    }),
    () => ({
      note: "own subject token as actor_token",
      pairs: [...valid(), ["actor_token", subjectA], ["actor_token_type", ACCESS_TOKEN]],
    }),
    () => ({
      note: "2,000 unknown parameters",
      pairs: [...valid(), ...Array.from({ length: 2000 }, (_, i): [string, string] => [`p${i}`, "1"])],
    }),
    () => ({
      note: "charset parameter",
      pairs: valid(),
      contentType: `${FORM}; charset=${rng.pick(["bogus", "utf-16le", "latin1", "utf-8", ""])}`,
    }),
    () => ({ note: "upper-case content type", pairs: valid(), contentType: FORM.toUpperCase() }),
    () => ({ note: "Accept: text/html", pairs: valid(), headers: { accept: "text/html" } }),
    () => ({
      note: "Content-Encoding: gzip on a plain body",
      pairs: valid(),
      headers: { "content-encoding": "gzip" },
    }),
    // Node's HTTP server keeps the first of several Authorization headers and drops the rest.
    () => ({
      note: "two Authorization headers, agent A's first",
      pairs: valid(),
      headers: { authorization: [authA, basicAuth(agentB.client_id, agentB.client_secret)] },
    }),
    () => ({
      note: "X-Request-Id garbage",
      pairs: valid(),
      headers: { "x-request-id": rng.text(300, ALNUM) },
    }),
  ];

  while (cases.length < CASES) {
    const roll = rng.next();
    if (roll < 0.55) {
      // One to three mutations of a valid request; any of their errors may win.
      const chosen = Array.from({ length: rng.chance(0.6) ? 1 : rng.int(2, 3) }, () => rng.pick(mutations)());
      const pairs = chosen.reduce((p, m) => m.apply(p), valid());
      const errors = [...new Set(chosen.flatMap((m) => m.errors))];
      // A second mutation may break grant_type first; an unknown grant never reaches the other checks.
      add("mutated", chosen.map((m) => m.note).join(" + "), pairs, errors);
    } else if (roll < 0.7) {
      const variant = rng.pick(credentialVariants)();
      add("credentials", variant.note, [...valid(), ...(variant.pairs ?? [])], variant.errors, {
        headers: variant.headers,
      });
    } else if (roll < 0.8) {
      add("dpop", "invalid DPoP proof", valid(), ["invalid_dpop_proof", "invalid_request"], {
        headers: {
          dpop: rng.chance(0.85) ? rng.pick(badProofs) : [rng.pick(badProofs), rng.pick(badProofs)],
        },
      });
    } else if (roll < 0.87) {
      const variant = rng.pick(tolerated)();
      add(
        "tolerated",
        variant.note,
        variant.pairs,
        { kind: "errorOrToken", errors: ["invalid_request", "invalid_scope", "invalid_target"] },
        {
          contentType: variant.contentType,
          headers: variant.headers,
        },
      );
    } else if (roll < 0.93) {
      const contentType = rng.pick([
        "application/json",
        "text/plain",
        "text/html",
        "application/xml",
        "multipart/form-data; boundary=x",
        `${FORM}x`,
        "application/jwt",
        "application/octet-stream",
        rng.text(rng.int(1, 40), PRINTABLE.replace(/[\\"]/g, "")),
      ]);
      const body =
        contentType === "application/json" ? JSON.stringify(Object.fromEntries(valid())) : formBody(valid());
      add("content-type", contentType, [], ["invalid_request"], { contentType, rawBody: body });
    } else if (roll < 0.96) {
      const method = rng.pick(["GET", "PUT", "PATCH", "DELETE"]);
      add(
        "method",
        method,
        valid(),
        { kind: "noRoute" },
        {
          method,
          rawBody: method === "GET" ? "" : formBody(valid()),
          contentType: method === "GET" ? null : FORM,
        },
      );
    } else {
      const size = rng.pick([60 * 1024, 100 * 1024, 300 * 1024, 1024 * 1024]);
      const key = rng.pick(["subject_token", "scope", "resource", "actor_token", "x"]);
      add(
        "huge",
        `${size >> 10} KB ${key}`,
        [...without(valid(), key), [key, rng.text(size, ALNUM)]],
        ["invalid_request"],
      );
    }
  }
  return cases;
}
