-- Versions of a connector's synced states (issue 8: a quiet re-sync reuses the states a
-- worker already holds). Same dialect rules as 0001.

-- One row per connector that has states: a fresh random version is written in the same
-- transaction as any write or removal of its file states, so an unchanged version means
-- unchanged states (also across a database restored from a backup: a version is never
-- reused). Connectors that had states before this migration start with a shared version
-- (the cache is per connector, so that is enough).
CREATE TABLE file_state_versions (
    connector_id  TEXT PRIMARY KEY,
    version       TEXT NOT NULL
);
INSERT INTO file_state_versions (connector_id, version)
    SELECT DISTINCT connector_id, 'migrated-0007' FROM file_states;
