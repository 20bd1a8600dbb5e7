-- Sagas and their append-only history. Timestamps are milliseconds since the Unix epoch (UTC).

CREATE TABLE sagas (
    id               TEXT PRIMARY KEY NOT NULL,
    workflow         TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    state            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'succeeded', 'failed', 'needs_attention', 'cancelled')),
    context          TEXT NOT NULL,
    input            TEXT NOT NULL,
    customer_id      TEXT,
    attempt          INTEGER NOT NULL DEFAULT 0,
    total_attempts   INTEGER NOT NULL DEFAULT 0,
    state_entered_at INTEGER NOT NULL,
    -- When the saga is due; NULL once it has stopped. While a worker holds the lease it is the
    -- lease's expiry, so a saga whose worker died becomes due again by itself.
    next_run_at      INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    version          INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    last_error       TEXT,
    wait_reason      TEXT,
    UNIQUE (workflow, idempotency_key)
);

-- Finding due work costs the same with 10 or 1,000,000 sagas parked: a range scan over this
-- index that stops at the first row in the future.
CREATE INDEX sagas_due ON sagas (next_run_at) WHERE next_run_at IS NOT NULL;
CREATE INDEX sagas_status ON sagas (status, created_at);
CREATE INDEX sagas_customer ON sagas (customer_id, created_at);

CREATE TABLE history (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id      TEXT NOT NULL REFERENCES sagas (id),
    at           INTEGER NOT NULL,
    kind         TEXT NOT NULL,
    state        TEXT,
    to_state     TEXT,
    call         TEXT,
    http_status  INTEGER,
    latency_ms   INTEGER,
    request_id   TEXT,
    error_class  TEXT,
    error        TEXT,
    detail       TEXT
);

CREATE INDEX history_saga ON history (saga_id, seq);
