//! Rows to records, once for both stores: each store says how to read a column of its rows
//! ([`Columns`], with its own error mapping), and the records are built here.

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::sqlite::DaemonRow;
use super::{HistoryRow, SagaRecord, SagaStatus, StoreError};
use crate::clock::from_millis;

/// Reading a column of a row.
pub(super) trait Columns {
    fn text(&self, name: &str) -> Result<String, StoreError>;
    fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, name: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, name: &str) -> Result<Option<i64>, StoreError>;
}

macro_rules! columns {
    ($row:ty, $error:path) => {
        impl Columns for $row {
            fn text(&self, name: &str) -> Result<String, StoreError> {
                self.try_get(name).map_err($error)
            }
            fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError> {
                self.try_get(name).map_err($error)
            }
            fn int(&self, name: &str) -> Result<i64, StoreError> {
                self.try_get(name).map_err($error)
            }
            fn opt_int(&self, name: &str) -> Result<Option<i64>, StoreError> {
                self.try_get(name).map_err($error)
            }
        }
    };
}

columns!(SqliteRow, super::sqlite::db_error);
columns!(PgRow, super::postgres::db_error);

fn small(row: &impl Columns, name: &str) -> Result<u32, StoreError> {
    Ok(u32::try_from(row.int(name)?).unwrap_or(u32::MAX))
}

/// A `sagas` row (the columns of the stores' `SAGA_COLUMNS`).
pub(super) fn saga(row: &impl Columns) -> Result<SagaRecord, StoreError> {
    let status = row.text("status")?;
    Ok(SagaRecord {
        id: row.text("id")?,
        workflow: row.text("workflow")?,
        idempotency_key: row.text("idempotency_key")?,
        state: row.text("state")?,
        status: SagaStatus::parse(&status).ok_or_else(|| {
            StoreError::Database(format!("unknown status {status:?} in the database"))
        })?,
        context: row.text("context")?,
        input: row.text("input")?,
        customer_id: row.opt_text("customer_id")?,
        attempt: small(row, "attempt")?,
        total_attempts: small(row, "total_attempts")?,
        state_entered_at: from_millis(row.int("state_entered_at")?),
        next_run_at: row.opt_int("next_run_at")?.map(from_millis),
        lease_owner: row.opt_text("lease_owner")?,
        lease_expires_at: row.opt_int("lease_expires_at")?.map(from_millis),
        version: row.int("version")?,
        created_at: from_millis(row.int("created_at")?),
        updated_at: from_millis(row.int("updated_at")?),
        last_error: row.opt_text("last_error")?,
        wait_reason: row.opt_text("wait_reason")?,
        definition: small(row, "definition")?,
        context_schema: small(row, "context_schema")?,
    })
}

/// A `history` row.
pub(super) fn history(row: &impl Columns) -> Result<HistoryRow, StoreError> {
    Ok(HistoryRow {
        seq: row.int("seq")?,
        saga_id: row.text("saga_id")?,
        at: from_millis(row.int("at")?),
        kind: row.text("kind")?,
        state: row.opt_text("state")?,
        to_state: row.opt_text("to_state")?,
        call: row.opt_text("call")?,
        http_status: row
            .opt_int("http_status")?
            .and_then(|s| u16::try_from(s).ok()),
        latency_ms: row
            .opt_int("latency_ms")?
            .and_then(|s| u64::try_from(s).ok()),
        request_id: row.opt_text("request_id")?,
        error_class: row.opt_text("error_class")?,
        error: row.opt_text("error")?,
        detail: row.opt_text("detail")?,
    })
}

/// A `daemons` row.
pub(super) fn daemon(row: &impl Columns) -> Result<DaemonRow, StoreError> {
    Ok(DaemonRow {
        id: row.text("id")?,
        host: row.text("host")?,
        pid: u32::try_from(row.int("pid")?).unwrap_or(0),
        started_at: from_millis(row.int("started_at")?),
        heartbeat_at: Some(from_millis(row.int("heartbeat_at")?)),
        stopped_at: row.opt_int("stopped_at")?.map(from_millis),
        governor: row.opt_text("governor")?,
    })
}

// The SQL of `status` (the same on both stores; `$1` is a positional parameter to both).

/// The oldest due active saga: `$1` now.
pub(super) const OLDEST_DUE: &str = "SELECT id, next_run_at FROM sagas \
     WHERE next_run_at IS NOT NULL AND next_run_at <= $1 AND status = 'active' \
     ORDER BY next_run_at LIMIT 1";

/// Active sagas waiting after a 429, and held for refused credentials.
pub(super) const WAITING: &str = "SELECT \
       SUM(CASE WHEN last_error LIKE '%throttled%' OR last_error LIKE '%(429%' THEN 1 ELSE 0 END), \
       SUM(CASE WHEN wait_reason LIKE 'held until%' THEN 1 ELSE 0 END) \
     FROM sagas WHERE status = 'active'";

/// Error classes of the last `$1` history rows.
pub(super) const RECENT_ERRORS: &str = "SELECT error_class, COUNT(*) FROM history \
     WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM history) - $1 AND error_class IS NOT NULL \
     GROUP BY error_class";
