-- PostgreSQL only (SQLite compares text by bytes already). Workers page through a
-- connector's states in byte order of path (the order they keep them in); under a
-- database collation other than C, ORDER BY path would be another order, so the listing
-- says COLLATE "C" and this index serves it.
CREATE INDEX file_states_path_bytes ON file_states (connector_id, path COLLATE "C");
