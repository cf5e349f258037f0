// Prisma CLI configuration. `prisma generate` never runs the schema engine, but the CLI insists on
// downloading one; pointing it at any existing file keeps `npx prisma generate` working offline.
import { fileURLToPath } from "node:url";
import { defineConfig } from "prisma/config";

process.env.PRISMA_SCHEMA_ENGINE_BINARY ??= fileURLToPath(import.meta.url);

export default defineConfig({
  schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" },
});
