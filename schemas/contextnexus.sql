-- ContextNexus PostgreSQL schema: the source of truth that nexus-sync mirrors
-- into Neo4j. Every table of the mapping (schemas/mapping.cfg) is here.
--
-- Sync columns (seed 002): sync_status, sync_attempts, last_sync_error,
-- last_sync_timestamp, and neo4j_node_id / neo4j_relationship_id where the
-- seed names them. pg_version (seed 003) is bumped by a trigger on every
-- update that changes anything but the sync columns, so the workers'
-- write-back never looks like a new version.
--
-- Link tables have composite primary keys: Debezium keys their events by the
-- pair, so every change to one pair lands in one partition, in order.
--
-- The publication, REPLICA IDENTITY and role grants are generated from the
-- mapping by `bin/nexus-schema sync-sql`, so the table list lives in one place.

CREATE EXTENSION IF NOT EXISTS pgcrypto;

DO $$ BEGIN
    CREATE TYPE sync_status AS ENUM ('PENDING', 'SUCCESS', 'FAILED', 'RETRYING');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    CREATE TYPE user_role AS ENUM ('owner', 'admin', 'member', 'viewer');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    CREATE TYPE content_type AS ENUM ('text', 'code', 'document', 'link', 'image');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN
    CREATE TYPE message_role AS ENUM ('user', 'assistant', 'system', 'tool');
EXCEPTION WHEN duplicate_object THEN NULL; END $$;

-- Bumps pg_version when a row really changes; updates that touch only the
-- sync bookkeeping keep the version, so they are recognisable downstream.
CREATE OR REPLACE FUNCTION nexus_bump_pg_version() RETURNS trigger AS $$
DECLARE
    bookkeeping text[] := ARRAY['sync_status', 'sync_attempts',
        'last_sync_error', 'last_sync_timestamp', 'neo4j_node_id',
        'neo4j_relationship_id', 'pg_version'];
BEGIN
    IF (to_jsonb(NEW) - bookkeeping) IS DISTINCT FROM (to_jsonb(OLD) - bookkeeping) THEN
        -- a new version waits for its own sync: the worker's SUCCESS for
        -- it is what moves it on (and a repeated SUCCESS writes nothing)
        NEW.pg_version := OLD.pg_version + 1;
        NEW.sync_status := 'PENDING';
    ELSE
        NEW.pg_version := OLD.pg_version;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TABLE IF NOT EXISTS tenants (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                text NOT NULL,
    slug                text NOT NULL UNIQUE,
    plan                text NOT NULL DEFAULT 'free',
    settings            jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz
);

CREATE TABLE IF NOT EXISTS users (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    email               text NOT NULL,
    display_name        text NOT NULL,
    role                user_role NOT NULL DEFAULT 'member',
    is_active           boolean NOT NULL DEFAULT true,
    last_login_at       timestamp,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz,
    UNIQUE (tenant_id, email)
);

CREATE TABLE IF NOT EXISTS programs (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                text NOT NULL,
    description         text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz
);

CREATE TABLE IF NOT EXISTS projects (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    program_id          uuid NOT NULL REFERENCES programs(id) ON DELETE CASCADE,
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                text NOT NULL,
    description         text,
    status              text NOT NULL DEFAULT 'active',
    start_date          date,
    budget              numeric(14,2),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz
);

CREATE TABLE IF NOT EXISTS project_memberships (
    project_id          uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id             uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role                user_role NOT NULL DEFAULT 'member',
    joined_at           timestamptz NOT NULL DEFAULT now(),
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz,
    PRIMARY KEY (project_id, user_id)
);

CREATE TABLE IF NOT EXISTS threads (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id          uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_by          uuid REFERENCES users(id) ON DELETE SET NULL,
    title               text NOT NULL,
    status              text NOT NULL DEFAULT 'open',
    is_archived         boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    neo4j_node_id       text,
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz
);

CREATE TABLE IF NOT EXISTS thread_relationships (
    parent_thread_id    uuid NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    child_thread_id     uuid NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    relationship_type   text NOT NULL DEFAULT 'branch',
    created_at          timestamptz NOT NULL DEFAULT now(),
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz,
    PRIMARY KEY (parent_thread_id, child_thread_id)
);

CREATE TABLE IF NOT EXISTS content_items (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    project_id          uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    created_by          uuid REFERENCES users(id) ON DELETE SET NULL,
    content_type        content_type NOT NULL,
    title               text NOT NULL,
    description         text,
    storage_key         text,
    token_count         integer NOT NULL DEFAULT 0,
    metadata            jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    neo4j_node_id       text,
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz
);

CREATE TABLE IF NOT EXISTS text_content (
    content_id          uuid PRIMARY KEY REFERENCES content_items(id) ON DELETE CASCADE,
    body                text NOT NULL,
    format              text NOT NULL DEFAULT 'markdown',
    word_count          integer NOT NULL DEFAULT 0,
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz
);

CREATE TABLE IF NOT EXISTS code_content (
    content_id          uuid PRIMARY KEY REFERENCES content_items(id) ON DELETE CASCADE,
    language            text NOT NULL,
    source              text NOT NULL,
    line_count          integer NOT NULL DEFAULT 0,
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz
);

CREATE TABLE IF NOT EXISTS content_chunks (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    content_id          uuid NOT NULL REFERENCES content_items(id) ON DELETE CASCADE,
    chunk_index         integer NOT NULL,
    chunk_text          text NOT NULL,
    token_count         integer NOT NULL DEFAULT 0,
    keywords            text[] NOT NULL DEFAULT '{}',
    neo4j_node_id       text,
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz,
    UNIQUE (content_id, chunk_index)
);

CREATE TABLE IF NOT EXISTS tags (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id          uuid NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                text NOT NULL,
    color               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz,
    UNIQUE (project_id, name)
);

CREATE TABLE IF NOT EXISTS content_tags (
    content_id          uuid NOT NULL REFERENCES content_items(id) ON DELETE CASCADE,
    tag_id              uuid NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
    tagged_by           uuid REFERENCES users(id) ON DELETE SET NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz,
    PRIMARY KEY (content_id, tag_id)
);

CREATE TABLE IF NOT EXISTS thread_content (
    thread_id           uuid NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    content_id          uuid NOT NULL REFERENCES content_items(id) ON DELETE CASCADE,
    relevance_score     numeric(5,4) NOT NULL DEFAULT 0,
    position            integer NOT NULL DEFAULT 0,
    added_by            uuid REFERENCES users(id) ON DELETE SET NULL,
    added_at            timestamptz NOT NULL DEFAULT now(),
    neo4j_relationship_id text,
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz,
    PRIMARY KEY (thread_id, content_id)
);

CREATE TABLE IF NOT EXISTS messages (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    thread_id           uuid NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    user_id             uuid REFERENCES users(id) ON DELETE SET NULL,
    role                message_role NOT NULL,
    body                text NOT NULL,
    token_count         integer NOT NULL DEFAULT 0,
    model               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    neo4j_node_id       text,
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz
);

CREATE TABLE IF NOT EXISTS message_relationships (
    source_message_id   uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    target_message_id   uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    relationship_type   text NOT NULL DEFAULT 'reply',
    created_at          timestamptz NOT NULL DEFAULT now(),
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz,
    PRIMARY KEY (source_message_id, target_message_id)
);

CREATE TABLE IF NOT EXISTS message_context_items (
    message_id          uuid NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    content_id          uuid NOT NULL REFERENCES content_items(id) ON DELETE CASCADE,
    relevance_score     numeric(5,4) NOT NULL DEFAULT 0,
    created_at          timestamptz NOT NULL DEFAULT now(),
    pg_version          bigint NOT NULL DEFAULT 1,
    sync_status         sync_status NOT NULL DEFAULT 'PENDING',
    sync_attempts       integer NOT NULL DEFAULT 0,
    last_sync_error     text,
    last_sync_timestamp timestamptz,
    PRIMARY KEY (message_id, content_id)
);

-- Application settings for how ContextNexus uses the graph (seed 004: no
-- graph element). Kept here so the schema is whole; not published to CDC.
CREATE TABLE IF NOT EXISTS knowledge_graph_configurations (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name                text NOT NULL,
    settings            jsonb NOT NULL DEFAULT '{}',
    is_active           boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Debezium's signal table (signal.data.collection): inserting an
-- execute-snapshot row starts an incremental snapshot of the tables named
-- in data. Debezium also writes its snapshot window marks here. Not mapped.
CREATE TABLE IF NOT EXISTS nexus_signal (
    id                  text PRIMARY KEY,
    type                text NOT NULL,
    data                text
);

CREATE INDEX IF NOT EXISTS users_tenant_idx ON users(tenant_id);
CREATE INDEX IF NOT EXISTS programs_tenant_idx ON programs(tenant_id);
CREATE INDEX IF NOT EXISTS projects_program_idx ON projects(program_id);
CREATE INDEX IF NOT EXISTS threads_project_idx ON threads(project_id);
CREATE INDEX IF NOT EXISTS content_items_project_idx ON content_items(project_id);
CREATE INDEX IF NOT EXISTS content_chunks_content_idx ON content_chunks(content_id);
CREATE INDEX IF NOT EXISTS tags_project_idx ON tags(project_id);
CREATE INDEX IF NOT EXISTS content_tags_tag_idx ON content_tags(tag_id);
CREATE INDEX IF NOT EXISTS thread_content_content_idx ON thread_content(content_id);
CREATE INDEX IF NOT EXISTS messages_thread_idx ON messages(thread_id);
CREATE INDEX IF NOT EXISTS message_context_items_content_idx ON message_context_items(content_id);
CREATE INDEX IF NOT EXISTS project_memberships_user_idx ON project_memberships(user_id);
CREATE INDEX IF NOT EXISTS thread_relationships_child_idx ON thread_relationships(child_thread_id);
CREATE INDEX IF NOT EXISTS message_relationships_target_idx ON message_relationships(target_message_id);

-- The pg_version triggers are created per mapped table by `nexus-schema sync-sql`.
