// The bootstrap admin client `deputy-admin`: created on first start so the CLI and admin API can be used.
import { chmodSync, writeFileSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import type { AuditLog } from "../audit/audit-log.ts";
import type { PrismaClient } from "../generated/prisma/client.ts";
import { ADMIN_SCOPE } from "../http/oauth-constants.ts";
import type { Logger } from "../logger.ts";
import { generateClientSecret, hashClientSecret, verifyClientSecret } from "../security/secrets.ts";

export const BOOTSTRAP_CLIENT_ID = "deputy-admin";
export const BOOTSTRAP_FILE = "bootstrap-admin.json";

/**
 * Ensures the bootstrap admin client exists. Its secret is DEPUTY_BOOTSTRAP_ADMIN_SECRET when set (and the stored
 * hash follows it), otherwise generated once and written to a 0600 file under the data directory.
 */
export async function ensureBootstrapAdmin(options: {
  prisma: PrismaClient;
  audit: AuditLog;
  dataDir: string;
  secret?: string;
  log: Logger;
}): Promise<void> {
  const { prisma, audit, secret, log } = options;
  const existing = await prisma.serviceClient.findUnique({ where: { clientId: BOOTSTRAP_CLIENT_ID } });
  const context = { actor: "deputy:bootstrap" };
  if (existing) {
    if (secret && !verifyClientSecret(secret, existing.clientSecretHash)) {
      await prisma.serviceClient.update({
        where: { clientId: BOOTSTRAP_CLIENT_ID },
        data: { clientSecretHash: hashClientSecret(secret) },
      });
      await audit.record(context, {
        action: "service_client.rotate_secret",
        target: BOOTSTRAP_CLIENT_ID,
        reason: "DEPUTY_BOOTSTRAP_ADMIN_SECRET changed",
      });
      log.info(
        { clientId: BOOTSTRAP_CLIENT_ID },
        "bootstrap admin secret updated from DEPUTY_BOOTSTRAP_ADMIN_SECRET",
      );
    }
    return;
  }
  const clientSecret = secret ?? generateClientSecret();
  if (!secret) {
    const file = path.join(options.dataDir, BOOTSTRAP_FILE);
    await mkdir(options.dataDir, { recursive: true });
    writeFileSync(
      file,
      `${JSON.stringify({ client_id: BOOTSTRAP_CLIENT_ID, client_secret: clientSecret }, null, 2)}\n`,
      { mode: 0o600 },
    );
    // The mode above applies only to a new file: make sure an existing one is private too.
    chmodSync(file, 0o600);
    log.info(
      { clientId: BOOTSTRAP_CLIENT_ID, file },
      "bootstrap admin client created; its secret is in this file (mode 0600)",
    );
  } else {
    log.info(
      { clientId: BOOTSTRAP_CLIENT_ID },
      "bootstrap admin client created with DEPUTY_BOOTSTRAP_ADMIN_SECRET",
    );
  }
  await prisma.serviceClient.create({
    data: {
      clientId: BOOTSTRAP_CLIENT_ID,
      name: "Deputy bootstrap admin",
      clientSecretHash: hashClientSecret(clientSecret),
      scopes: [ADMIN_SCOPE],
    },
  });
  await audit.record(context, {
    action: "service_client.create",
    target: BOOTSTRAP_CLIENT_ID,
  });
}
