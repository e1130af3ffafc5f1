-- Foundation: tenants, users, groups, tokens, shares, nodes (folders and files), versions,
-- content chunks, ACLs, the change log and resumable upload sessions.
--
-- One dialect for PostgreSQL and SQLite: TEXT ids, BIGINT for every integer and for times
-- (unix milliseconds), BIGINT 0/1 for flags, partial unique indexes. Never edit a migration
-- that has shipped; add a new one.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    -- last change-log position handed out in this tenant; bumped first in every write
    -- transaction that records a change, which also orders those transactions.
    change_seq  BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    username      TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    email         TEXT,
    -- NULL, 'tenant_admin' or 'super_admin'
    global_role   TEXT,
    created_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_tenant_username ON users (tenant_id, username);

CREATE TABLE groups (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX groups_tenant_name ON groups (tenant_id, name);

CREATE TABLE group_members (
    group_id    TEXT NOT NULL REFERENCES groups(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    -- SHA-256 of the token (tokens are 256-bit random, so a fast hash is enough)
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX api_tokens_user ON api_tokens (user_id);

CREATE TABLE shares (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX shares_tenant_name ON shares (tenant_id, name);

CREATE TABLE share_members (
    share_id        TEXT NOT NULL REFERENCES shares(id),
    principal_type  TEXT NOT NULL,
    principal_id    TEXT NOT NULL,
    role            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (share_id, principal_id)
);
CREATE INDEX share_members_principal ON share_members (principal_id);

-- Folders and files. parent_id is the share id for items at the share's root.
CREATE TABLE nodes (
    id                  TEXT PRIMARY KEY,
    tenant_id           TEXT NOT NULL,
    share_id            TEXT NOT NULL REFERENCES shares(id),
    parent_id           TEXT NOT NULL,
    name                TEXT NOT NULL,
    kind                TEXT NOT NULL,
    size                BIGINT NOT NULL DEFAULT 0,
    sha256              TEXT,
    current_version_id  TEXT,
    owner_id            TEXT NOT NULL,
    modified_at         BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    -- set when the item itself was moved to trash (its descendants stay as they were and
    -- are hidden with it)
    deleted_at          BIGINT,
    deleted_by          TEXT
);
CREATE UNIQUE INDEX nodes_live_name ON nodes (parent_id, name) WHERE deleted_at IS NULL;
CREATE INDEX nodes_parent ON nodes (parent_id);
CREATE INDEX nodes_share_deleted ON nodes (share_id, deleted_at);

CREATE TABLE versions (
    id           TEXT PRIMARY KEY,
    file_id      TEXT NOT NULL REFERENCES nodes(id),
    number       BIGINT NOT NULL,
    size         BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    modified_at  BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    actor_type   TEXT NOT NULL,
    actor_id     TEXT NOT NULL
);
CREATE UNIQUE INDEX versions_file_number ON versions (file_id, number);

-- Content-addressed chunks (SHA-256 of the chunk). A chunk's reference count is the number
-- of version_chunks / upload_chunks rows naming it.
CREATE TABLE chunks (
    sha256      TEXT PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE version_chunks (
    version_id  TEXT NOT NULL REFERENCES versions(id),
    idx         BIGINT NOT NULL,
    sha256      TEXT NOT NULL REFERENCES chunks(sha256),
    size        BIGINT NOT NULL,
    PRIMARY KEY (version_id, idx)
);
CREATE INDEX version_chunks_sha ON version_chunks (sha256);

CREATE TABLE acls (
    resource_id          TEXT PRIMARY KEY,
    resource_type        TEXT NOT NULL,
    tenant_id            TEXT NOT NULL,
    inherit_from_parent  BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE acl_entries (
    id                   TEXT PRIMARY KEY,
    resource_id          TEXT NOT NULL,
    tenant_id            TEXT NOT NULL,
    principal_type       TEXT NOT NULL,
    principal_id         TEXT,
    permissions          BIGINT NOT NULL,
    ace_type             TEXT NOT NULL,
    inherit_to_children  BIGINT NOT NULL DEFAULT 1,
    created_at           BIGINT NOT NULL
);
CREATE INDEX acl_entries_resource ON acl_entries (resource_id);

-- Append-only change log; position is gapless and commit-ordered per tenant.
CREATE TABLE changes (
    tenant_id      TEXT NOT NULL,
    position       BIGINT NOT NULL,
    id             TEXT NOT NULL UNIQUE,
    share_id       TEXT NOT NULL,
    node_id        TEXT NOT NULL,
    node_type      TEXT NOT NULL,
    change_type    TEXT NOT NULL,
    name           TEXT NOT NULL,
    parent_id      TEXT NOT NULL,
    path           TEXT NOT NULL,
    old_parent_id  TEXT,
    old_path       TEXT,
    version_id     TEXT,
    size           BIGINT,
    sha256         TEXT,
    actor_type     TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, position)
);
CREATE INDEX changes_share_position ON changes (share_id, position);

-- Resumable uploads: parts are stored as chunks as they arrive, so any api-server replica
-- can take the next part.
CREATE TABLE upload_sessions (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    share_id         TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    parent_id        TEXT NOT NULL,
    name             TEXT NOT NULL,
    base_version_id  TEXT,
    modified_at      BIGINT,
    total_size       BIGINT,
    received         BIGINT NOT NULL DEFAULT 0,
    chunk_count      BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL
);

CREATE TABLE upload_chunks (
    upload_id  TEXT NOT NULL REFERENCES upload_sessions(id),
    idx        BIGINT NOT NULL,
    sha256     TEXT NOT NULL REFERENCES chunks(sha256),
    size       BIGINT NOT NULL,
    PRIMARY KEY (upload_id, idx)
);
