-- The billing tables of reconciliation, as on SQLite (migrations/20261205000001_billing.sql says
-- what each holds). Integers are BIGINT and flags BOOLEAN, the types the ledger binds.
CREATE TABLE billing_lines (
    source TEXT NOT NULL,
    run_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    order_id TEXT,
    alternate_id TEXT,
    customer_id TEXT,
    bad TEXT,
    line TEXT NOT NULL,
    PRIMARY KEY (source, run_id, seq)
);
CREATE INDEX billing_lines_order ON billing_lines (order_id);
CREATE INDEX billing_lines_alternate ON billing_lines (alternate_id);

CREATE TABLE billing_sources (
    source TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    complete BOOLEAN NOT NULL,
    problem TEXT,
    lines BIGINT NOT NULL,
    facts TEXT NOT NULL,
    read_at BIGINT NOT NULL
);

CREATE TABLE billing_status (
    purchase_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    final BOOLEAN NOT NULL,
    run_id TEXT NOT NULL,
    customer_id TEXT,
    currency TEXT,
    detail TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX billing_status_status ON billing_status (status, purchase_id);

CREATE TABLE billing_runs (
    run_id TEXT PRIMARY KEY,
    period TEXT NOT NULL,
    report TEXT NOT NULL,
    finished_at BIGINT NOT NULL
);
