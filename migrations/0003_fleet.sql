-- The worker fleet: leases with fencing tokens, jobs and their events, per-file sync state,
-- and each connector's ScaiDrive change-log cursor. Same dialect rules as 0001.

-- The last fencing token issued per connector (never decreases, never reused).
CREATE TABLE lease_counters (
    connector_id  TEXT PRIMARY KEY,
    last_token    BIGINT NOT NULL
);

-- Every lease issued. Live = not released, not expired, and its token is the counter's.
CREATE TABLE leases (
    id             TEXT PRIMARY KEY,
    connector_id   TEXT NOT NULL,
    worker_id      TEXT NOT NULL,
    fencing_token  BIGINT NOT NULL,
    ttl_ms         BIGINT NOT NULL,
    acquired_at    BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    released       BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX leases_connector ON leases (connector_id, fencing_token);

CREATE TABLE jobs (
    id                 TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    connector_id       TEXT NOT NULL,
    -- queued, running, completed, failed, cancelled, skipped, interrupted
    status             TEXT NOT NULL,
    -- manual, scheduled
    trigger_kind       TEXT NOT NULL,
    -- for scheduled jobs: the due time they were created for (unique per connector)
    due_at             BIGINT,
    reason             TEXT,
    requested_by       TEXT,
    worker_id          TEXT,
    lease_id           TEXT,
    fencing_token      BIGINT,
    attempt            BIGINT NOT NULL DEFAULT 0,
    requested_at       BIGINT NOT NULL,
    started_at         BIGINT,
    finished_at        BIGINT,
    published_at       BIGINT,
    phase              TEXT,
    current_path       TEXT,
    files_total        BIGINT NOT NULL DEFAULT 0,
    bytes_total        BIGINT NOT NULL DEFAULT 0,
    bytes_per_second   BIGINT NOT NULL DEFAULT 0,
    files_scanned      BIGINT NOT NULL DEFAULT 0,
    files_synced       BIGINT NOT NULL DEFAULT 0,
    files_failed       BIGINT NOT NULL DEFAULT 0,
    files_skipped      BIGINT NOT NULL DEFAULT 0,
    files_deleted      BIGINT NOT NULL DEFAULT 0,
    conflicts          BIGINT NOT NULL DEFAULT 0,
    bytes_transferred  BIGINT NOT NULL DEFAULT 0,
    error_code         TEXT,
    error_message      TEXT,
    cancel_requested   BIGINT NOT NULL DEFAULT 0,
    cancel_reason      TEXT,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX jobs_connector_requested ON jobs (connector_id, requested_at);
-- Never two queued-or-running jobs for one connector.
CREATE UNIQUE INDEX jobs_one_active ON jobs (connector_id) WHERE status IN ('queued', 'running');
-- One job (run or skip) per connector and due time, however many replicas schedule.
CREATE UNIQUE INDEX jobs_scheduled_once ON jobs (connector_id, due_at) WHERE due_at IS NOT NULL;

-- Per-file errors and warnings of a job, and its log lines.
CREATE TABLE job_events (
    id          TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    level       TEXT NOT NULL,
    path        TEXT,
    code        TEXT,
    nt_status   TEXT,
    message     TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, seq);

-- The last synced state of each item of a connector, keyed by its path under the sync root.
CREATE TABLE file_states (
    connector_id      TEXT NOT NULL,
    path              TEXT NOT NULL,
    kind              TEXT NOT NULL,
    -- synced, pending, error, excluded, conflict_resolved
    status            TEXT NOT NULL,
    smb_size          BIGINT,
    -- SMB times in unix nanoseconds (SMB has 100 ns ticks; ms would lose them)
    smb_modified_at   BIGINT,
    smb_changed_at    BIGINT,
    smb_created_at    BIGINT,
    smb_file_id       TEXT,
    smb_sha256        TEXT,
    drive_node_id     TEXT,
    drive_version_id  TEXT,
    drive_size        BIGINT,
    drive_modified_at BIGINT,
    drive_sha256      TEXT,
    last_synced_at    BIGINT,
    error_code        TEXT,
    error_message     TEXT,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (connector_id, path)
);
CREATE INDEX file_states_status ON file_states (connector_id, status);

-- Where each connector's view of its target share's change log stands.
CREATE TABLE connector_cursors (
    connector_id  TEXT PRIMARY KEY,
    cursor        TEXT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- A node's etag: the change-log position of its last change.
ALTER TABLE nodes ADD COLUMN last_change BIGINT NOT NULL DEFAULT 0;

-- Connectivity tests waiting for a worker. The queue message names only the id; the worker
-- fetches the (sealed) credentials over gRPC, so no secret travels through the queue.
CREATE TABLE connection_tests (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    connector_id     TEXT,
    server_host      TEXT NOT NULL,
    server_port      BIGINT NOT NULL,
    share_name       TEXT NOT NULL,
    base_path        TEXT,
    domain           TEXT,
    username         TEXT NOT NULL,
    password_sealed  TEXT NOT NULL,
    check_write      BIGINT NOT NULL,
    created_at       BIGINT NOT NULL
);
