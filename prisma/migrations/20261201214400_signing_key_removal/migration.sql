-- AlterTable
ALTER TABLE "signing_keys" ADD COLUMN     "removed_at" TIMESTAMPTZ(3);

-- Keys retired before their removal was scheduled stay published for one more day (the default
-- DEPUTY_KEY_RETIRING_SECONDS) from this upgrade, which restarts every server, then leave /jwks.
UPDATE "signing_keys" SET "removed_at" = now() + interval '1 day' WHERE "active" = false;
