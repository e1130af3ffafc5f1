-- Worker pools: a connector's jobs and connectivity tests go to its pool's queues
-- (scaidrive.sync-jobs.<pool>, scaidrive.connection-tests.<pool>).
ALTER TABLE connectors ADD COLUMN worker_pool TEXT NOT NULL DEFAULT 'default';
