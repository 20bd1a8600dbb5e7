-- One table holds every workflow's sagas (purchases, billing reconciliation runs); each
-- engine claims its own workflow's, through this index (the claim's `INDEXED BY`).
DROP INDEX IF EXISTS sagas_due;
CREATE INDEX sagas_due_by_workflow ON sagas (workflow, next_run_at) WHERE next_run_at IS NOT NULL;

-- Billing lines as read, the evidence of reconciliation. A source is one invoice
-- (`invoice:G000000001`) or one month's unbilled lines of a currency (`unbilled:USD:2026-12`).
-- A run writes a source's lines under its own id, so a crashed read is resumed by writing the
-- same rows again; when the source is read to its end, `billing_sources` points at that run's
-- rows and older runs' rows of the source are deleted.
CREATE TABLE billing_lines (
    source TEXT NOT NULL,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    order_id TEXT,
    alternate_id TEXT,
    customer_id TEXT,
    -- Why the line could not be read (it is then never matched to a purchase).
    bad TEXT,
    -- The normalised line (or the bad line with its evidence), JSON.
    line TEXT NOT NULL,
    PRIMARY KEY (source, run_id, seq)
);
CREATE INDEX billing_lines_order ON billing_lines (order_id);
CREATE INDEX billing_lines_alternate ON billing_lines (alternate_id);

CREATE TABLE billing_sources (
    source TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    -- 0 when the source could not be read to its end (a truncated file): nothing read from
    -- it proves a purchase billed, and its absence proves nothing missing.
    complete INTEGER NOT NULL,
    problem TEXT,
    lines INTEGER NOT NULL,
    -- What the source is (an invoice's currency, month and issue date; unbilled lines'
    -- currency and month), JSON.
    facts TEXT NOT NULL,
    read_at INTEGER NOT NULL
);

-- Each purchase's billing status (addendum §13.5), as the last run found it.
CREATE TABLE billing_status (
    purchase_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    final INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    customer_id TEXT,
    currency TEXT,
    -- The explanation, the orders and the evidence (line keys), JSON.
    detail TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX billing_status_status ON billing_status (status, purchase_id);

-- A run's report (per customer and currency) and its exceptions, JSON.
CREATE TABLE billing_runs (
    run_id TEXT PRIMARY KEY,
    period TEXT NOT NULL,
    report TEXT NOT NULL,
    finished_at INTEGER NOT NULL
);
