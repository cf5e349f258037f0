-- AlterTable
ALTER TABLE "audit_events" ADD COLUMN     "task_description" TEXT;
