-- Change notification (issue 8, part 3): watch leases, and the scope of change-triggered jobs.
-- Same dialect rules as 0001.

-- One row per connector: who watches its SMB tree for change notifications. Separate from
-- `leases` (a watch never blocks a run). Live = not released and not expired; every
-- acquisition bumps fencing_token, so an older holder's token is stale at once.
-- config_version is the fingerprint of the connector's configuration the watcher runs with:
-- when the connector changes, renewals and sync requests under this watch are refused.
CREATE TABLE watch_leases (
    connector_id    TEXT PRIMARY KEY,
    watch_id        TEXT NOT NULL,
    worker_id       TEXT NOT NULL,
    fencing_token   BIGINT NOT NULL,
    config_version  TEXT NOT NULL,
    ttl_ms          BIGINT NOT NULL,
    acquired_at     BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    released        BIGINT NOT NULL DEFAULT 0
);

-- The folders a change_notify job looks at: JSON {"folders": [{"path": "...", "recursive": bool}]};
-- NULL for the whole tree (every other job).
ALTER TABLE jobs ADD COLUMN scope TEXT;
-- Set while a job runs when a change was reported meanwhile: the scope of the follow-up job
-- to queue when it ends (JSON as scope, or {"full": true}).
ALTER TABLE jobs ADD COLUMN follow_up TEXT;
