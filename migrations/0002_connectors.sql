-- SMB connectors and their identity mappings.
--
-- Same dialect as 0001: TEXT ids, BIGINT integers, times (unix milliseconds) and 0/1 flags.
-- The run-time columns (status, counters, schedule) live on the connector row now, so the
-- worker-fleet migration can add jobs, leases and file states beside it without reshaping it.

CREATE TABLE connectors (
    id                     TEXT PRIMARY KEY,
    tenant_id              TEXT NOT NULL REFERENCES tenants(id),
    name                   TEXT NOT NULL,
    description            TEXT,
    server_host            TEXT NOT NULL,
    server_port            BIGINT NOT NULL,
    share_name             TEXT NOT NULL,
    -- '/'-separated, no leading or trailing slash; NULL for the SMB share root
    base_path              TEXT,
    domain                 TEXT,
    username               TEXT NOT NULL,
    -- sealed: 'v1:<key-id>:<hex(nonce || XChaCha20-Poly1305 ciphertext)>', the connector id
    -- as associated data; never plaintext
    password_sealed        TEXT NOT NULL,
    -- the key id of password_sealed, so a server with another key refuses to start
    secret_key_id          TEXT NOT NULL,
    -- immutable
    target_share_id        TEXT NOT NULL REFERENCES shares(id),
    -- canonical ScaiDrive path ('/' or '/From Fileserver')
    target_path            TEXT NOT NULL,
    sync_direction         TEXT NOT NULL,
    sync_permissions       BIGINT NOT NULL DEFAULT 0,
    sync_hidden_files      BIGINT NOT NULL DEFAULT 0,
    sync_system_files      BIGINT NOT NULL DEFAULT 0,
    -- JSON {"extensions": [...], "patterns": [...]} or NULL
    include_patterns       TEXT,
    exclude_patterns       TEXT,
    conflict_resolution    TEXT NOT NULL,
    sync_interval_minutes  BIGINT NOT NULL,
    max_delete_percent     BIGINT NOT NULL,
    -- run-time state, written by the scheduler and the workers
    status                 TEXT NOT NULL DEFAULT 'idle',
    status_message         TEXT,
    error_count            BIGINT NOT NULL DEFAULT 0,
    last_sync_at           BIGINT,
    next_sync_at           BIGINT,
    total_files_synced     BIGINT NOT NULL DEFAULT 0,
    total_bytes_synced     BIGINT NOT NULL DEFAULT 0,
    -- bumped with every identity-mapping change, so ACL translation knows to re-run
    mappings_version       BIGINT NOT NULL DEFAULT 0,
    mappings_changed_at    BIGINT,
    created_by             TEXT NOT NULL,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL
);
CREATE INDEX connectors_tenant ON connectors (tenant_id, id);
CREATE INDEX connectors_share ON connectors (target_share_id);
CREATE INDEX connectors_next_sync ON connectors (next_sync_at);

CREATE TABLE identity_mappings (
    id                      TEXT PRIMARY KEY,
    connector_id            TEXT NOT NULL REFERENCES connectors(id),
    tenant_id               TEXT NOT NULL,
    -- 'user' or 'group'
    identity_type           TEXT NOT NULL,
    -- as given ('CORP\alice', 'alice') or, for a SID, its canonical form
    smb_principal           TEXT NOT NULL,
    -- the duplicate-detection key: 'corp\alice', 'alice', 'S-1-5-21-...'
    smb_principal_key       TEXT NOT NULL,
    scaidrive_principal_id  TEXT NOT NULL,
    created_at              BIGINT NOT NULL
);
CREATE UNIQUE INDEX identity_mappings_key ON identity_mappings (connector_id, smb_principal_key);
