-- AlterTable
ALTER TABLE "delegations" ADD COLUMN     "request_ref" TEXT;

-- CreateIndex
CREATE UNIQUE INDEX "delegations_request_ref_key" ON "delegations"("request_ref");
