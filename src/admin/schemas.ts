// Request bodies of the admin API. Every schema is strict: unknown fields are refused, not ignored. Every string
// is built from the blocks below, so none holds a control character (free text may hold tabs and line breaks).
import { z } from "zod";
import { isPlainText, isPlainUri, plain } from "../http/plain-text.ts";

/** One line of text. */
export const text = (max: number) => plain(z.string().trim().min(1).max(max));
/** Free text a person writes: it may span lines. */
const prose = (max: number) => plain(z.string().trim().min(1).max(max), { lineBreaks: true });
/** A URI: no control character, raw or percent-encoded. */
const uri = z
  .string()
  .max(2048)
  .refine(isPlainUri, "must not contain control characters, even percent-encoded");

/** RFC 6749 §3.3 scope-token: printable ASCII without space, quote or backslash. */
export const scopeName = z
  .string()
  .max(128)
  .regex(
    /^[\x21\x23-\x5B\x5D-\x7E]+$/,
    "must be an RFC 6749 scope token (printable ASCII, no spaces or quotes)",
  );

/** RFC 8707 §2: an absolute URI without a fragment. */
export const resourceUri = uri.refine(
  (value) => URL.canParse(value) && !value.includes("#"),
  "must be an absolute URI without a fragment",
);

const redirectUri = uri.refine((value) => {
  if (!URL.canParse(value)) return false;
  const url = new URL(value);
  const loopback = ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
  return !url.hash && (url.protocol === "https:" || (url.protocol === "http:" && loopback));
}, "must be an https URL (or http on localhost) without a fragment");

const email = plain(z.email().max(320));
const password = plain(z.string().min(12, "must be at least 12 characters").max(1024));

export const createPersonBody = z.strictObject({
  email,
  name: text(200),
  password,
  admin: z.boolean().optional(),
});

export const updatePersonBody = z.strictObject({
  name: text(200).optional(),
  password: password.optional(),
  admin: z.boolean().optional(),
});

const scopeDefinition = z.strictObject({
  name: scopeName,
  description: text(500),
  risk: z.enum(["low", "high"]).default("low"),
});

const scopeList = z
  .array(scopeDefinition)
  .min(1)
  .max(100)
  .refine(
    (scopes) => new Set(scopes.map((scope) => scope.name)).size === scopes.length,
    "scope names must be unique",
  );

export const createResourceBody = z.strictObject({
  uri: resourceUri,
  name: text(200),
  scopes: scopeList,
  token_format: z.enum(["opaque", "jwt"]).optional(),
  token_ttl_seconds: z.number().int().min(10).max(900).optional(),
  dpop_required: z.boolean().optional(),
});

export const updateResourceBody = createResourceBody.omit({ uri: true }).partial();

const grant = z.strictObject({ resource: resourceUri, scopes: z.array(scopeName).min(1).max(100) });
const clientId = text(200);

const jwkText = plain(z.string().max(8192));
/** RFC 7517 §4: JWK members are strings, lists of strings (key_ops, x5c) or, from WebCrypto, the ext flag. */
const jwkMember = z.union([jwkText, z.array(jwkText).max(20), z.boolean()]);

const publicJwk = z
  .object({ kty: z.enum(["EC", "RSA", "OKP"]) })
  .catchall(jwkMember)
  .refine(
    (key) => Object.keys(key).every((name) => isPlainText(name)),
    "member names must not contain control characters",
  )
  .refine((key) => !("d" in key), {
    message: "must be a public key (the JWKS holds a private key member 'd')",
  });

/** The most co-owners an agent may have. */
const MAX_CO_OWNERS = 10;

const agentFields = {
  name: text(200),
  owner: text(320),
  co_owners: z.array(text(320)).max(MAX_CO_OWNERS).optional(),
  purpose: prose(2000),
  grants: z.array(grant).max(50),
  redirect_uris: z.array(redirectUri).max(20).optional(),
  may_delegate_to: z.array(clientId).max(50).optional(),
  max_depth: z.number().int().min(1).max(10).optional(),
  blast_radius: plain(z.string().max(4000), { lineBreaks: true }).optional(),
  allow_untasked: z.boolean().optional(),
  dpop_required: z.boolean().optional(),
  review_due_at: z.iso.datetime({ offset: true }).optional(),
};

export const createAgentBody = z.strictObject({
  ...agentFields,
  auth: z.discriminatedUnion("method", [
    z.strictObject({ method: z.literal("client_secret") }),
    z.strictObject({
      method: z.literal("private_key_jwt"),
      jwks: z.strictObject({ keys: z.array(publicJwk).min(1).max(10) }),
    }),
  ]),
  status: z.enum(["pending", "active"]).optional(),
});

export const updateAgentBody = z.strictObject(agentFields).partial();
