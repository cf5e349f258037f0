-- CreateTable
CREATE TABLE "revoked_tokens" (
    "ref" TEXT NOT NULL,
    "expires_at" TIMESTAMPTZ(3) NOT NULL,
    "epoch" BIGINT NOT NULL,

    CONSTRAINT "revoked_tokens_pkey" PRIMARY KEY ("ref")
);

-- CreateTable
CREATE TABLE "revocation_epoch" (
    "id" INTEGER NOT NULL DEFAULT 1,
    "epoch" BIGINT NOT NULL DEFAULT 0,

    CONSTRAINT "revocation_epoch_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "revoked_tokens_epoch_idx" ON "revoked_tokens"("epoch");

-- The list starts with the tokens already revoked while their delegation stays active, at epoch 1.
INSERT INTO "revocation_epoch" ("id", "epoch") VALUES (1, 1);
INSERT INTO "revoked_tokens" ("ref", "expires_at", "epoch")
SELECT t."jti", t."expires_at", 1
FROM "issued_tokens" t JOIN "delegations" d ON d."id" = t."delegation_id"
WHERE t."revoked_at" IS NOT NULL AND t."expires_at" > now() AND t."format" = 'opaque' AND d."status" = 'active';
