-- AlterTable
ALTER TABLE "issued_tokens" ADD COLUMN     "grant_id" TEXT;
