// Resource servers authenticate to the AuthZEN endpoints as they do to introspection: HTTP Basic with their
// client_id and client_secret (RFC 6749 §2.3.1, form-encoded), checked against the registry's hashed secret.
import type { ClientMetadata, ClientStore } from "../oauth/client-store.ts";
import { verifyClientSecret } from "../security/secrets.ts";

const BASIC = /^Basic ([A-Za-z0-9+/]+={0,2})$/i;
/** Client ids Deputy issues are printable ASCII; anything else is refused before it reaches the database. */
const CLIENT_ID = /^[\x21-\x7e]{1,200}$/;
const NOT_A_SECRET = "sha256$not-a-real-secret-hash-used-to-spend-the-same-time";

export async function authenticateResourceServer(
  header: string | undefined,
  clients: ClientStore,
): Promise<(ClientMetadata & { deputy_resource: string }) | undefined> {
  const match = BASIC.exec(header ?? "");
  if (!match?.[1]) return undefined;
  const decoded = Buffer.from(match[1], "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon <= 0) return undefined;
  let clientId: string;
  let secret: string;
  try {
    clientId = decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, " "));
    secret = decodeURIComponent(decoded.slice(colon + 1).replace(/\+/g, " "));
  } catch {
    return undefined;
  }
  if (!CLIENT_ID.test(clientId) || secret.length === 0 || secret.length > 1024) return undefined;
  const client = await clients.find(clientId);
  const stored = client?.deputy_kind === "resource_server" ? client.client_secret : undefined;
  // Compare against something either way, so an unknown client costs what a wrong secret does.
  const valid = verifyClientSecret(secret, stored ?? NOT_A_SECRET) && stored !== undefined;
  if (!valid || !client || typeof client.deputy_resource !== "string") return undefined;
  return client as ClientMetadata & { deputy_resource: string };
}
