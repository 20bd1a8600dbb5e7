//! The store the binary opens: SQLite (a path) or PostgreSQL (a `postgres://` URL), one type so
//! that every verb and the daemon run on either.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::postgres::PgStore;
use super::sqlite::{DaemonRow, SqliteStore, StatusSnapshot};
use super::{
    Commit, HistoryEvent, HistoryRow, Inserted, ListFilter, NewSaga, SagaRecord, SagaStatus, Store,
    StoreError,
};

/// SQLite or PostgreSQL.
#[derive(Debug, Clone)]
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Whether a database setting names a PostgreSQL server (`postgres://` or `postgresql://`)
/// rather than a SQLite file.
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.trim().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

macro_rules! both {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e,
            AnyStore::Postgres($s) => $e,
        }
    };
}

impl AnyStore {
    /// The SQLite store, when it is one (billing reconciliation's tables, backups and SQLite's
    /// own checks need the file).
    pub fn as_sqlite(&self) -> Option<&SqliteStore> {
        match self {
            Self::Sqlite(s) => Some(s),
            Self::Postgres(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Refreshes the query planner's statistics where the plans depend on them: PostgreSQL's
    /// (see [`PgStore::refresh_statistics`]); SQLite's statements name their indexes, so there
    /// is nothing to refresh.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Postgres(s) => s.refresh_statistics().await,
        }
    }

    pub async fn daemon_beat(
        &self,
        daemon: &DaemonRow,
        now: DateTime<Utc>,
        stopped: bool,
    ) -> Result<(), StoreError> {
        both!(self, s => s.daemon_beat(daemon, now, stopped).await)
    }

    pub async fn daemons(&self) -> Result<Vec<DaemonRow>, StoreError> {
        both!(self, s => s.daemons().await)
    }

    pub async fn status_snapshot(
        &self,
        now: DateTime<Utc>,
        recent: u32,
    ) -> Result<StatusSnapshot, StoreError> {
        both!(self, s => s.status_snapshot(now, recent).await)
    }

    pub async fn check_invariants(
        &self,
        workflows: &[(&str, Vec<&str>)],
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        both!(self, s => s.check_invariants(workflows, limit).await)
    }

    /// SQLite's quick check; on PostgreSQL, that the server answers.
    pub async fn quick_check(&self) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.quick_check().await,
            Self::Postgres(p) => sqlx::query("SELECT 1")
                .execute(p.pool())
                .await
                .map(|_| ())
                .map_err(|e| StoreError::Database(e.to_string())),
        }
    }

    /// SQLite's integrity check (`ok` when sound); PostgreSQL checks its own pages, so there
    /// it reports `ok` once the server answers.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        match self {
            Self::Sqlite(s) => s.integrity_check().await,
            Self::Postgres(_) => self.quick_check().await.map(|()| "ok".to_owned()),
        }
    }

    /// A consistent copy (SQLite's `VACUUM INTO`); PostgreSQL is backed up with its own tools.
    pub async fn backup(&self, to: &Path) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.backup(to).await,
            Self::Postgres(_) => Err(StoreError::Database(
                "a PostgreSQL database is backed up with PostgreSQL's tools: `pg_dump --format=custom DATABASE_URL > pcsaga.dump` (README \"Running several daemons\")".to_owned(),
            )),
        }
    }
}

impl Store for AnyStore {
    fn scoped(&self, workflow: &'static str) -> Self {
        match self {
            Self::Sqlite(s) => Self::Sqlite(s.scoped(workflow)),
            Self::Postgres(p) => Self::Postgres(p.scoped(workflow)),
        }
    }

    async fn insert(&self, saga: NewSaga, event: HistoryEvent) -> Result<Inserted, StoreError> {
        both!(self, s => s.insert(saga, event).await)
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        both!(self, s => s.claim_due(owner, now, lease_until, limit).await)
    }

    async fn claim_due_fairly(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        avoid: Vec<String>,
        per_customer: u32,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        both!(self, s => s.claim_due_fairly(owner, now, lease_until, limit, avoid, per_customer).await)
    }

    async fn commit(&self, commit: Commit) -> Result<i64, StoreError> {
        both!(self, s => s.commit(commit).await)
    }

    async fn get(&self, id: &str) -> Result<Option<SagaRecord>, StoreError> {
        both!(self, s => s.get(id).await)
    }

    async fn ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        both!(self, s => s.ids_with_prefix(prefix, limit).await)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>, StoreError> {
        both!(self, s => s.list(filter).await)
    }

    async fn history(&self, id: &str) -> Result<Vec<HistoryRow>, StoreError> {
        both!(self, s => s.history(id).await)
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        both!(self, s => s.next_due().await)
    }

    async fn work_arrived(&self) {
        match self {
            Self::Sqlite(s) => s.work_arrived().await,
            Self::Postgres(p) => p.work_arrived().await,
        }
    }

    async fn count(&self, filter: &ListFilter, cap: u64) -> Result<u64, StoreError> {
        both!(self, s => s.count(filter, cap).await)
    }

    async fn count_by_status(&self) -> Result<BTreeMap<SagaStatus, u64>, StoreError> {
        both!(self, s => s.count_by_status().await)
    }

    async fn count_active_by_state(
        &self,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        both!(self, s => s.count_active_by_state(now).await)
    }
}
