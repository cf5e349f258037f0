-- AlterTable
ALTER TABLE "audit_events" ADD COLUMN     "agent_claim" TEXT,
ADD COLUMN     "hash" TEXT,
ADD COLUMN     "policy_version" TEXT,
ADD COLUMN     "prev_hash" TEXT;

-- CreateTable
CREATE TABLE "audit_archives" (
    "id" UUID NOT NULL,
    "from_seq" BIGINT NOT NULL,
    "to_seq" BIGINT NOT NULL,
    "from_time" TIMESTAMPTZ(3) NOT NULL,
    "to_time" TIMESTAMPTZ(3) NOT NULL,
    "event_count" INTEGER NOT NULL,
    "file" TEXT NOT NULL,
    "file_sha256" TEXT NOT NULL,
    "first_prev_hash" TEXT,
    "last_hash" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "audit_archives_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "legal_holds" (
    "id" UUID NOT NULL,
    "reason" TEXT NOT NULL,
    "created_by" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "released_at" TIMESTAMPTZ(3),

    CONSTRAINT "legal_holds_pkey" PRIMARY KEY ("id")
);
