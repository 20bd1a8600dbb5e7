-- The PostgreSQL schema of the engine: the same tables and meaning as the SQLite one
-- (`migrations/`, up to 20261205000001), in one migration because PostgreSQL support starts
-- here. Timestamps are milliseconds since the Unix epoch (UTC), as in SQLite, so both stores
-- share one row shape.

CREATE TABLE sagas (
    id               TEXT PRIMARY KEY NOT NULL,
    workflow         TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    state            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'succeeded', 'failed', 'needs_attention', 'cancelled')),
    context          TEXT NOT NULL,
    input            TEXT NOT NULL,
    customer_id      TEXT,
    attempt          BIGINT NOT NULL DEFAULT 0,
    total_attempts   BIGINT NOT NULL DEFAULT 0,
    state_entered_at BIGINT NOT NULL,
    -- When the saga is due; NULL once it has stopped. While a worker holds the lease it is the
    -- lease's expiry, so a saga whose worker died becomes due again by itself.
    next_run_at      BIGINT,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    version          BIGINT NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    last_error       TEXT,
    wait_reason      TEXT,
    definition       BIGINT NOT NULL DEFAULT 1,
    context_schema   BIGINT NOT NULL DEFAULT 1,
    UNIQUE (workflow, idempotency_key)
);

-- Claims walk this index from the oldest due saga of their workflow (`FOR UPDATE SKIP LOCKED`:
-- daemons claiming at once skip each other's rows instead of waiting on them).
CREATE INDEX sagas_due_by_workflow ON sagas (workflow, next_run_at) WHERE next_run_at IS NOT NULL;
CREATE INDEX sagas_status ON sagas (status, created_at);
CREATE INDEX sagas_customer ON sagas (customer_id, created_at);
CREATE INDEX sagas_state ON sagas (state, created_at);
CREATE INDEX sagas_created ON sagas (created_at);

CREATE TABLE history (
    seq          BIGSERIAL PRIMARY KEY,
    saga_id      TEXT NOT NULL REFERENCES sagas (id),
    at           BIGINT NOT NULL,
    kind         TEXT NOT NULL,
    state        TEXT,
    to_state     TEXT,
    call         TEXT,
    http_status  BIGINT,
    latency_ms   BIGINT,
    request_id   TEXT,
    error_class  TEXT,
    error        TEXT,
    detail       TEXT
);

CREATE INDEX history_saga ON history (saga_id, seq);

CREATE TABLE daemons (
    id           TEXT PRIMARY KEY NOT NULL,
    host         TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    stopped_at   BIGINT,
    governor     TEXT
);
