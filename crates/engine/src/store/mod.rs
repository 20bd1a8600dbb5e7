//! Persistence of sagas and their history, behind a narrow interface.
//!
//! The engine needs exactly these operations; a PostgreSQL store (several daemons on several
//! machines sharing one queue) implements the same trait with `FOR UPDATE SKIP LOCKED` for
//! claims and the same version fencing, without changes above this module.
//!
//! Architecture invariant: only the store implementations contain SQL.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::workflow::AttemptRecord;

pub mod any;
pub mod ceiling;
pub mod postgres;
mod rows;
pub mod sqlite;

/// Where a saga is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Running or waiting for its next step.
    Active,
    Succeeded,
    /// A permanent failure before money moved: safe to fix and resume.
    Failed,
    /// Stopped for an operator, with a reason.
    NeedsAttention,
    Cancelled,
}

impl SagaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::NeedsAttention => "needs_attention",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses a status name (`needs-attention` and `needs_attention` both work).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().replace('-', "_").as_str() {
            "active" => Some(Self::Active),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "needs_attention" => Some(Self::NeedsAttention),
            "cancelled" | "canceled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// Whether the saga has stopped (for good or for an operator).
    pub fn is_terminal(self) -> bool {
        self != Self::Active
    }
}

impl std::fmt::Display for SagaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One saga row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SagaRecord {
    pub id: String,
    pub workflow: String,
    pub idempotency_key: String,
    pub state: String,
    pub status: SagaStatus,
    /// The workflow's context, JSON.
    pub context: String,
    /// The request that created the saga, JSON, as submitted.
    pub input: String,
    pub customer_id: Option<String>,
    pub attempt: u32,
    pub total_attempts: u32,
    pub state_entered_at: DateTime<Utc>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Bumped by every write; writes name the version they read (fencing).
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_error: Option<String>,
    /// What the saga waits for, while it waits.
    pub wait_reason: Option<String>,
    /// The workflow definition of the binary that last wrote the context
    /// ([`crate::Workflow::definition`]).
    pub definition: u32,
    /// The shape of the context JSON ([`crate::Workflow::context_schema`]).
    pub context_schema: u32,
}

impl SagaRecord {
    /// The row after a write by `writer` at `now` went through: `change` applied, the version
    /// and the lease moved. The one place a written row is copied back into a held record.
    pub fn apply(&mut self, writer: &Writer, now: DateTime<Utc>, change: Change, version: i64) {
        self.version = version;
        match writer {
            Writer::Worker { owner, lease_until } => {
                self.lease_owner = lease_until.map(|_| owner.clone());
                self.lease_expires_at = *lease_until;
            }
            Writer::Operator => {
                self.lease_owner = None;
                self.lease_expires_at = None;
            }
        }
        self.updated_at = now;
        match change {
            Change::Lease { next_run_at } => self.next_run_at = next_run_at,
            Change::Saga(u) => {
                self.state = u.state;
                self.status = u.status;
                self.context = u.context;
                self.attempt = u.attempt;
                self.total_attempts = u.total_attempts;
                self.state_entered_at = u.state_entered_at;
                self.next_run_at = u.next_run_at;
                self.last_error = u.last_error;
                self.wait_reason = u.wait_reason;
                self.definition = u.definition;
                self.context_schema = u.context_schema;
            }
        }
    }
}

/// A saga to create.
#[derive(Debug, Clone)]
pub struct NewSaga {
    pub id: String,
    pub workflow: String,
    pub idempotency_key: String,
    pub state: String,
    pub context: String,
    pub input: String,
    pub customer_id: Option<String>,
    pub now: DateTime<Utc>,
    /// The workflow definition of the binary that submits it.
    pub definition: u32,
    /// The shape of its context JSON.
    pub context_schema: u32,
}

/// The result of an insert: the new saga, or the one that already had the idempotency key.
#[derive(Debug, Clone)]
pub enum Inserted {
    Created(SagaRecord),
    Existing(SagaRecord),
}

/// The new values of a saga's mutable columns. Start from the row (`SagaUpdate::from(&row)`)
/// and change what the write changes.
#[derive(Debug, Clone)]
pub struct SagaUpdate {
    pub state: String,
    pub status: SagaStatus,
    pub context: String,
    pub attempt: u32,
    pub total_attempts: u32,
    pub state_entered_at: DateTime<Utc>,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub wait_reason: Option<String>,
    /// The definition and context schema the context is written in: kept from the row unless
    /// the write encodes a new context.
    pub definition: u32,
    pub context_schema: u32,
}

impl From<&SagaRecord> for SagaUpdate {
    fn from(saga: &SagaRecord) -> Self {
        Self {
            state: saga.state.clone(),
            status: saga.status,
            context: saga.context.clone(),
            attempt: saga.attempt,
            total_attempts: saga.total_attempts,
            state_entered_at: saga.state_entered_at,
            next_run_at: saga.next_run_at,
            last_error: saga.last_error.clone(),
            wait_reason: saga.wait_reason.clone(),
            definition: saga.definition,
            context_schema: saga.context_schema,
        }
    }
}

/// What a fenced write changes.
#[derive(Debug, Clone)]
pub enum Change {
    /// A step, an intent or an operator's action: the saga's mutable columns.
    Saga(SagaUpdate),
    /// Only the lease and the due time (a renewal, a release): nothing else of the row is sent
    /// or rewritten.
    Lease { next_run_at: Option<DateTime<Utc>> },
}

/// Who writes, which decides the fence.
#[derive(Debug, Clone)]
pub enum Writer {
    /// A worker holding the lease: the write succeeds only if the lease is still its own and
    /// unexpired at `now`. `lease_until` extends the lease; `None` releases it.
    Worker {
        owner: String,
        lease_until: Option<DateTime<Utc>>,
    },
    /// An operator: the write succeeds only if no worker holds an unexpired lease.
    Operator,
}

/// A fenced write: applied only if the saga is still at `expected_version`.
#[derive(Debug, Clone)]
pub struct Commit {
    pub id: String,
    pub expected_version: i64,
    pub writer: Writer,
    pub now: DateTime<Utc>,
    pub change: Change,
    pub events: Vec<HistoryEvent>,
}

/// What kind of history row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Submitted,
    Claimed,
    /// A side-effecting call is about to be sent with this request id.
    Intent,
    /// A step's decision, with the call it made and its outcome, if any.
    Transition,
    Released,
    Operator,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Claimed => "claimed",
            Self::Intent => "intent",
            Self::Transition => "transition",
            Self::Released => "released",
            Self::Operator => "operator",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "submitted" => Self::Submitted,
            "claimed" => Self::Claimed,
            "intent" => Self::Intent,
            "transition" => Self::Transition,
            "released" => Self::Released,
            "operator" => Self::Operator,
            _ => return None,
        })
    }
}

/// A history row to append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryEvent {
    pub kind: Option<EventKind>,
    pub state: Option<String>,
    pub to_state: Option<String>,
    pub attempt: Option<AttemptRecord>,
    pub detail: Option<String>,
}

impl HistoryEvent {
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind: Some(kind),
            ..Self::default()
        }
    }

    pub fn state(mut self, state: impl Into<String>) -> Self {
        self.state = Some(state.into());
        self
    }

    pub fn to_state(mut self, state: impl Into<String>) -> Self {
        self.to_state = Some(state.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn attempt(mut self, attempt: AttemptRecord) -> Self {
        self.attempt = Some(attempt);
        self
    }
}

/// A stored history row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRow {
    pub seq: i64,
    pub saga_id: String,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub state: Option<String>,
    pub to_state: Option<String>,
    pub call: Option<String>,
    pub http_status: Option<u16>,
    pub latency_ms: Option<u64>,
    pub request_id: Option<String>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub detail: Option<String>,
}

/// Filters of `list`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub status: Option<SagaStatus>,
    pub state: Option<String>,
    pub customer_id: Option<String>,
    /// Only sagas created at or after this instant.
    pub created_after: Option<DateTime<Utc>>,
    /// Only active sagas that are stuck: they retried, or entered their state before the
    /// instant given for it (a state missing here has no such bound).
    pub stuck: Option<Vec<(String, DateTime<Utc>)>>,
    /// Only this workflow's sagas (`pcsaga list` shows purchases, not reconciliation runs).
    pub workflow: Option<String>,
    /// At most this many, newest first; 0 for all.
    pub limit: u32,
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The saga changed since it was read, or its lease is no longer ours: the write was
    /// refused so that a stale worker can never commit.
    #[error("saga {id} was changed by someone else (version {expected} is stale, or the lease is no longer held); the write was refused")]
    Fenced { id: String, expected: i64 },
    #[error("no saga with id {0}")]
    NotFound(String),
    /// The disk is full or the database is read-only: nothing was written.
    #[error(
        "the database cannot be written ({0}); free disk space or fix permissions, then restart"
    )]
    Unwritable(String),
    #[error("database error: {0}")]
    Database(String),
    /// SQLite found the file damaged (SQLITE_CORRUPT, SQLITE_NOTADB, a failed quick check).
    /// Nothing a retry can fix: the process stops instead of looping.
    #[error("the database file is damaged ({0}): restore it from a backup; `pcsaga check` says what is wrong")]
    Corrupt(String),
    /// The schema was written by a newer release: this binary must not touch it.
    #[error("the database was written by a newer pcsaga (schema {found}); this binary knows up to {known}: run the newer release, or restore a backup made before the upgrade")]
    NewerSchema { found: i64, known: i64 },
    #[error("cannot open the database {path}: {reason}")]
    Open { path: String, reason: String },
    /// A verb that does not create databases found none at the path.
    #[error("no pcsaga database at {0}; check --db or PCSAGA_DB (only `daemon`, `submit` and `migrate` create one)")]
    Missing(String),
    #[error("the database writer has stopped; restart the process")]
    WriterGone,
}

impl StoreError {
    /// Whether no retry can help: the process should stop and say why.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::Corrupt(_) | Self::NewerSchema { .. })
    }
}

/// The operations the engine needs from storage.
pub trait Store: Send + Sync + 'static {
    /// Creates a saga unless one with the same workflow and idempotency key exists.
    fn insert(
        &self,
        saga: NewSaga,
        event: HistoryEvent,
    ) -> impl Future<Output = Result<Inserted, StoreError>> + Send;

    /// Leases up to `limit` due sagas to `owner` until `lease_until`. A claimed saga's
    /// `next_run_at` moves to `lease_until`, so it is due again only if the lease runs out.
    fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<SagaRecord>, StoreError>> + Send;

    /// [`Store::claim_due`], fairly across customers (the engine's, see `fair.rs`): skipping
    /// the sagas of the customers in `avoid` (they hold their share already), and taking at
    /// most `per_customer` of one customer's sagas (0: no limit).
    fn claim_due_fairly(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        avoid: Vec<String>,
        per_customer: u32,
    ) -> impl Future<Output = Result<Vec<SagaRecord>, StoreError>> + Send;

    /// Applies a fenced write and appends its history; returns the new version.
    fn commit(&self, commit: Commit) -> impl Future<Output = Result<i64, StoreError>> + Send;

    fn get(&self, id: &str) -> impl Future<Output = Result<Option<SagaRecord>, StoreError>> + Send;

    /// Up to `limit` ids that start with `prefix`, in order.
    fn ids_with_prefix(
        &self,
        prefix: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    fn list(
        &self,
        filter: &ListFilter,
    ) -> impl Future<Output = Result<Vec<SagaRecord>, StoreError>> + Send;

    fn history(&self, id: &str)
        -> impl Future<Output = Result<Vec<HistoryRow>, StoreError>> + Send;

    /// A handle on the same store that claims, and waits for, only `workflow`'s sagas: one
    /// table holds every workflow's sagas, and each engine runs one workflow. The engine scopes
    /// its store itself ([`crate::Engine::new`]).
    fn scoped(&self, workflow: &'static str) -> Self
    where
        Self: Sized;

    /// Resolves when another process may have made work due (PostgreSQL: a `NOTIFY` on
    /// submission or an operator's action); an idle engine waits on it besides its timer. The
    /// default never resolves: a store shared by no other process has nothing to say.
    fn work_arrived(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }

    /// The earliest `next_run_at` of any active saga (of the scope's workflow, when scoped).
    fn next_due(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>, StoreError>> + Send;

    /// How many sagas match `filter` (its limit ignored), counting at most `cap`: the count
    /// costs at most `cap` index entries whatever the table's size.
    fn count(
        &self,
        filter: &ListFilter,
        cap: u64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many sagas there are per status.
    fn count_by_status(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<SagaStatus, u64>, StoreError>> + Send;

    /// Active sagas per state: (how many, how many are due at `now`).
    fn count_active_by_state(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<BTreeMap<String, (u64, u64)>, StoreError>> + Send;
}
