-- CreateTable
CREATE TABLE "policy_versions" (
    "version" SERIAL NOT NULL,
    "text" TEXT NOT NULL,
    "sha256" TEXT NOT NULL,
    "created_by" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "policy_versions_pkey" PRIMARY KEY ("version")
);

-- CreateTable
CREATE TABLE "velocity_rules" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "resource" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "limit" INTEGER NOT NULL,
    "window_seconds" INTEGER NOT NULL,
    "shadow" BOOLEAN NOT NULL DEFAULT false,
    "contain_on_breach" BOOLEAN NOT NULL DEFAULT false,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "velocity_rules_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "agent_usage" (
    "agent_client_id" TEXT NOT NULL,
    "resource" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "first_seen_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "agent_usage_pkey" PRIMARY KEY ("agent_client_id","resource","action")
);

-- CreateTable
CREATE TABLE "step_up_approvals" (
    "id" UUID NOT NULL,
    "person_id" UUID NOT NULL,
    "agent_client_id" TEXT NOT NULL,
    "resource" TEXT NOT NULL,
    "scopes" TEXT[],
    "approved_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expires_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "step_up_approvals_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "velocity_rules_name_key" ON "velocity_rules"("name");

-- CreateIndex
CREATE INDEX "step_up_approvals_person_id_agent_client_id_expires_at_idx" ON "step_up_approvals"("person_id", "agent_client_id", "expires_at");
