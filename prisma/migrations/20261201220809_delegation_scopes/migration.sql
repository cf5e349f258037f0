-- CreateTable
CREATE TABLE "delegation_scopes" (
    "delegation_id" UUID NOT NULL,
    "resource" TEXT NOT NULL,
    "scope" TEXT NOT NULL,

    CONSTRAINT "delegation_scopes_pkey" PRIMARY KEY ("delegation_id","resource","scope")
);

-- AddForeignKey
ALTER TABLE "delegation_scopes" ADD CONSTRAINT "delegation_scopes_delegation_id_fkey" FOREIGN KEY ("delegation_id") REFERENCES "delegations"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- Existing delegations: each allowed every one of its scopes on every one of its resources, so each keeps
-- exactly those pairs (its scopes × its resources).
INSERT INTO "delegation_scopes" ("delegation_id", "resource", "scope")
SELECT DISTINCT d."id", r."resource", s."scope"
FROM "delegations" d
CROSS JOIN LATERAL unnest(d."resources") AS r("resource")
CROSS JOIN LATERAL unnest(d."scopes") AS s("scope");

-- AlterTable
ALTER TABLE "delegations" DROP COLUMN "resources",
DROP COLUMN "scopes";
