-- The daemons that run (or ran) on this database, so operators can see whether anything will
-- pick a resumed purchase up. Each daemon writes its row at start, a heartbeat every few
-- seconds, and `stopped_at` when it stops cleanly. Timestamps are milliseconds since the epoch.

CREATE TABLE daemons (
    id           TEXT PRIMARY KEY NOT NULL,
    host         TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped_at   INTEGER
);
