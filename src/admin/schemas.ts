// Request bodies of the admin API. Every schema is strict: unknown fields are refused, not ignored.
import { z } from "zod";

const text = (max: number) => z.string().trim().min(1).max(max);

/** RFC 6749 §3.3 scope-token: printable ASCII without space, quote or backslash. */
export const scopeName = z
  .string()
  .max(128)
  .regex(
    /^[\x21\x23-\x5B\x5D-\x7E]+$/,
    "must be an RFC 6749 scope token (printable ASCII, no spaces or quotes)",
  );

/** RFC 8707 §2: an absolute URI without a fragment. */
export const resourceUri = z
  .string()
  .max(2048)
  .refine(
    (value) => URL.canParse(value) && !value.includes("#"),
    "must be an absolute URI without a fragment",
  );

const redirectUri = z
  .string()
  .max(2048)
  .refine((value) => {
    if (!URL.canParse(value)) return false;
    const url = new URL(value);
    const loopback = ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname);
    return !url.hash && (url.protocol === "https:" || (url.protocol === "http:" && loopback));
  }, "must be an https URL (or http on localhost) without a fragment");

const email = z.email().max(320);
const reason = text(1000);

export const createPersonBody = z.strictObject({
  email,
  name: text(200),
  password: z.string().min(12, "must be at least 12 characters").max(1024),
  admin: z.boolean().optional(),
});

export const updatePersonBody = z.strictObject({
  name: text(200).optional(),
  password: z.string().min(12, "must be at least 12 characters").max(1024).optional(),
  admin: z.boolean().optional(),
});

export const reasonBody = z.strictObject({ reason });
export const optionalReasonBody = z.strictObject({ reason: reason.optional() });

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
const clientId = z.string().min(1).max(200);

const publicJwk = z.looseObject({ kty: z.enum(["EC", "RSA", "OKP"]) }).refine((key) => !("d" in key), {
  message: "must be a public key (the JWKS holds a private key member 'd')",
});

const agentFields = {
  name: text(200),
  owner: z.string().min(1).max(320),
  purpose: text(2000),
  grants: z.array(grant).max(50),
  redirect_uris: z.array(redirectUri).max(20).optional(),
  may_delegate_to: z.array(clientId).max(50).optional(),
  max_depth: z.number().int().min(1).max(10).optional(),
  blast_radius: z.string().max(4000).optional(),
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
