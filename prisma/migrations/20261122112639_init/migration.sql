-- CreateEnum
CREATE TYPE "PersonStatus" AS ENUM ('active', 'offboarded');

-- CreateEnum
CREATE TYPE "AgentStatus" AS ENUM ('pending', 'active', 'suspended', 'retired');

-- CreateEnum
CREATE TYPE "AgentAuthMethod" AS ENUM ('private_key_jwt', 'client_secret');

-- CreateEnum
CREATE TYPE "TokenFormat" AS ENUM ('opaque', 'jwt');

-- CreateEnum
CREATE TYPE "RiskLevel" AS ENUM ('low', 'high');

-- CreateEnum
CREATE TYPE "DelegationStatus" AS ENUM ('active', 'revoked', 'ended');

-- CreateTable
CREATE TABLE "people" (
    "id" UUID NOT NULL,
    "email" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "password_hash" TEXT NOT NULL,
    "status" "PersonStatus" NOT NULL DEFAULT 'active',
    "is_admin" BOOLEAN NOT NULL DEFAULT false,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "people_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "resource_servers" (
    "id" UUID NOT NULL,
    "uri" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "token_format" "TokenFormat" NOT NULL DEFAULT 'opaque',
    "token_ttl_seconds" INTEGER NOT NULL DEFAULT 300,
    "dpop_required" BOOLEAN NOT NULL DEFAULT false,
    "client_id" TEXT NOT NULL,
    "client_secret_hash" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "resource_servers_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "resource_scopes" (
    "id" UUID NOT NULL,
    "resource_server_id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "description" TEXT NOT NULL,
    "risk" "RiskLevel" NOT NULL DEFAULT 'low',

    CONSTRAINT "resource_scopes_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "agents" (
    "id" UUID NOT NULL,
    "client_id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "owner_id" UUID NOT NULL,
    "purpose" TEXT NOT NULL,
    "status" "AgentStatus" NOT NULL DEFAULT 'pending',
    "status_reason" TEXT,
    "needs_owner" BOOLEAN NOT NULL DEFAULT false,
    "auth_method" "AgentAuthMethod" NOT NULL,
    "jwks" JSONB,
    "client_secret_hash" TEXT,
    "redirect_uris" TEXT[],
    "may_delegate_to" TEXT[],
    "max_depth" INTEGER NOT NULL DEFAULT 1,
    "blast_radius" TEXT NOT NULL DEFAULT '',
    "allow_untasked" BOOLEAN NOT NULL DEFAULT false,
    "dpop_required" BOOLEAN NOT NULL DEFAULT false,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(3) NOT NULL,
    "last_reviewed_at" TIMESTAMPTZ(3),
    "review_due_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "agents_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "agent_scope_grants" (
    "agent_id" UUID NOT NULL,
    "resource_server_id" UUID NOT NULL,
    "scopes" TEXT[],

    CONSTRAINT "agent_scope_grants_pkey" PRIMARY KEY ("agent_id","resource_server_id")
);

-- CreateTable
CREATE TABLE "service_clients" (
    "client_id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "client_secret_hash" TEXT NOT NULL,
    "scopes" TEXT[],
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "service_clients_pkey" PRIMARY KEY ("client_id")
);

-- CreateTable
CREATE TABLE "signing_keys" (
    "kid" TEXT NOT NULL,
    "alg" TEXT NOT NULL,
    "private_jwk" JSONB NOT NULL,
    "public_jwk" JSONB NOT NULL,
    "active" BOOLEAN NOT NULL DEFAULT true,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "retired_at" TIMESTAMPTZ(3),

    CONSTRAINT "signing_keys_pkey" PRIMARY KEY ("kid")
);

-- CreateTable
CREATE TABLE "delegations" (
    "id" UUID NOT NULL,
    "person_id" UUID NOT NULL,
    "agent_id" UUID NOT NULL,
    "grant_id" TEXT,
    "task_id" TEXT,
    "task_description" TEXT,
    "scopes" TEXT[],
    "resources" TEXT[],
    "ends_at" TIMESTAMPTZ(3) NOT NULL,
    "max_depth" INTEGER NOT NULL,
    "status" "DelegationStatus" NOT NULL DEFAULT 'active',
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "ended_at" TIMESTAMPTZ(3),
    "end_reason" TEXT,

    CONSTRAINT "delegations_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "issued_tokens" (
    "jti" TEXT NOT NULL,
    "delegation_id" UUID NOT NULL,
    "parent_jti" TEXT,
    "client_id" TEXT NOT NULL,
    "actor_chain" TEXT[],
    "resource" TEXT,
    "scopes" TEXT[],
    "depth" INTEGER NOT NULL,
    "format" "TokenFormat" NOT NULL,
    "issued_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expires_at" TIMESTAMPTZ(3) NOT NULL,
    "revoked_at" TIMESTAMPTZ(3),

    CONSTRAINT "issued_tokens_pkey" PRIMARY KEY ("jti")
);

-- CreateTable
CREATE TABLE "audit_events" (
    "seq" BIGSERIAL NOT NULL,
    "id" UUID NOT NULL,
    "time" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "type" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "decision" TEXT,
    "reason" TEXT,
    "actor" TEXT,
    "target" TEXT,
    "delegated_by" TEXT,
    "agent_chain" TEXT[],
    "resource" TEXT,
    "scopes_asked" TEXT[],
    "scopes_granted" TEXT[],
    "delegation_id" TEXT,
    "task_id" TEXT,
    "request_id" TEXT,
    "client_address" TEXT,
    "before" JSONB,
    "after" JSONB,
    "details" JSONB,

    CONSTRAINT "audit_events_pkey" PRIMARY KEY ("seq")
);

-- CreateIndex
CREATE UNIQUE INDEX "people_email_key" ON "people"("email");

-- CreateIndex
CREATE UNIQUE INDEX "resource_servers_uri_key" ON "resource_servers"("uri");

-- CreateIndex
CREATE UNIQUE INDEX "resource_servers_client_id_key" ON "resource_servers"("client_id");

-- CreateIndex
CREATE UNIQUE INDEX "resource_scopes_resource_server_id_name_key" ON "resource_scopes"("resource_server_id", "name");

-- CreateIndex
CREATE UNIQUE INDEX "agents_client_id_key" ON "agents"("client_id");

-- CreateIndex
CREATE INDEX "agents_owner_id_idx" ON "agents"("owner_id");

-- CreateIndex
CREATE UNIQUE INDEX "delegations_grant_id_key" ON "delegations"("grant_id");

-- CreateIndex
CREATE INDEX "delegations_person_id_status_idx" ON "delegations"("person_id", "status");

-- CreateIndex
CREATE INDEX "delegations_agent_id_status_idx" ON "delegations"("agent_id", "status");

-- CreateIndex
CREATE INDEX "delegations_status_ends_at_idx" ON "delegations"("status", "ends_at");

-- CreateIndex
CREATE INDEX "issued_tokens_delegation_id_idx" ON "issued_tokens"("delegation_id");

-- CreateIndex
CREATE INDEX "issued_tokens_parent_jti_idx" ON "issued_tokens"("parent_jti");

-- CreateIndex
CREATE UNIQUE INDEX "audit_events_id_key" ON "audit_events"("id");

-- CreateIndex
CREATE INDEX "audit_events_time_idx" ON "audit_events"("time");

-- CreateIndex
CREATE INDEX "audit_events_delegated_by_time_idx" ON "audit_events"("delegated_by", "time");

-- CreateIndex
CREATE INDEX "audit_events_type_time_idx" ON "audit_events"("type", "time");

-- AddForeignKey
ALTER TABLE "resource_scopes" ADD CONSTRAINT "resource_scopes_resource_server_id_fkey" FOREIGN KEY ("resource_server_id") REFERENCES "resource_servers"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "agents" ADD CONSTRAINT "agents_owner_id_fkey" FOREIGN KEY ("owner_id") REFERENCES "people"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "agent_scope_grants" ADD CONSTRAINT "agent_scope_grants_agent_id_fkey" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "agent_scope_grants" ADD CONSTRAINT "agent_scope_grants_resource_server_id_fkey" FOREIGN KEY ("resource_server_id") REFERENCES "resource_servers"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "delegations" ADD CONSTRAINT "delegations_person_id_fkey" FOREIGN KEY ("person_id") REFERENCES "people"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "delegations" ADD CONSTRAINT "delegations_agent_id_fkey" FOREIGN KEY ("agent_id") REFERENCES "agents"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "issued_tokens" ADD CONSTRAINT "issued_tokens_delegation_id_fkey" FOREIGN KEY ("delegation_id") REFERENCES "delegations"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
