-- Permission replication (sync_permissions): what a connector last replicated onto each
-- item, so a run re-reads a security descriptor only when the item's SMB change time moved,
-- the identity mappings changed, or the ACL was edited in ScaiDrive since (drift).
CREATE TABLE permission_states (
    connector_id      TEXT NOT NULL,
    -- relative to the sync root, as in file_states
    path              TEXT NOT NULL,
    node_id           TEXT NOT NULL,
    -- the item's SMB ChangeTime (unix ns) when its descriptor was read
    sd_changed_at     BIGINT NOT NULL,
    -- connectors.mappings_version the translation used
    mappings_version  BIGINT NOT NULL,
    -- the replicated ACL and owner in canonical text form (see store/permissions.rs); also
    -- the digest compared with the node's current ACL to detect edits made in ScaiDrive
    acl               TEXT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (connector_id, path)
);
