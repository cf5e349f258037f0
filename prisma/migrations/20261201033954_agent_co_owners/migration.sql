-- CreateTable
CREATE TABLE "agent_co_owners" (
    "agent_id" UUID NOT NULL,
    "person_id" UUID NOT NULL,
    "position" INTEGER NOT NULL,

    CONSTRAINT "agent_co_owners_pkey" PRIMARY KEY ("agent_id","person_id")
);

-- CreateIndex
CREATE INDEX "agent_co_owners_person_id_idx" ON "agent_co_owners"("person_id");

-- AddForeignKey
ALTER TABLE "agent_co_owners" ADD CONSTRAINT "agent_co_owners_agent_id_fkey" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "agent_co_owners" ADD CONSTRAINT "agent_co_owners_person_id_fkey" FOREIGN KEY ("person_id") REFERENCES "people"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
