//! The PostgreSQL store: the [`Store`] trait on a PostgreSQL database, for several daemons on
//! several machines sharing one queue.
//!
//! Same rows and rules as the SQLite store (timestamps in milliseconds, the version and lease
//! fence on every write, history appended in the same statement as the write it records), in
//! PostgreSQL's terms:
//! - a claim is one statement: the oldest due rows of the workflow locked `FOR UPDATE SKIP
//!   LOCKED` (daemons claiming at once skip each other's rows instead of queueing on them),
//!   leased, and their `claimed` history rows inserted;
//! - a commit is one statement: the fenced `UPDATE … RETURNING` and the history rows of the
//!   commits it passed (`INSERT … SELECT … FROM updated, unnest(…)`), so a fenced commit writes
//!   no history and a passing one never lacks it; concurrent commits run on the pool's
//!   connections side by side (PostgreSQL groups their WAL flushes itself);
//! - nothing holds a transaction open across a call: every method is one statement, or a short
//!   transaction of its own.
//!
//! Its migrations are `migrations-postgres/`, applied by [`PgStore::connect`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::Row;

use super::{
    Change, Commit, EventKind, HistoryEvent, HistoryRow, Inserted, ListFilter, NewSaga, SagaRecord,
    SagaStatus, Store, StoreError, Writer,
};
use crate::clock::{from_millis, to_millis};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations-postgres");

const SAGA_COLUMNS: &str = "id, workflow, idempotency_key, state, status, context, input, customer_id, attempt, \
     total_attempts, state_entered_at, next_run_at, lease_owner, lease_expires_at, version, created_at, \
     updated_at, last_error, wait_reason, definition, context_schema";

/// How a PostgreSQL store connects.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://user@host:port/database` (a password, if any, comes from the URL or
    /// `PGPASSWORD`; it is never logged).
    pub url: String,
    /// Connections in the pool: the daemon's concurrent commits and claims share them.
    pub max_connections: u32,
    /// How long to wait for a connection before a call fails.
    pub acquire_timeout: Duration,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// The PostgreSQL store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The workflow whose sagas this handle claims and waits for (see [`Store::scoped`]).
    scope: Option<Arc<str>>,
    /// Woken by `NOTIFY pcsaga_work` (a submission, an operator's action) from any process;
    /// the listener starts with the first wait.
    arrivals: Arc<Arrivals>,
    /// The group-commit task's queue, started with the first commit.
    commits: Arc<std::sync::OnceLock<tokio::sync::mpsc::Sender<Pending>>>,
}

/// Commits waiting for the group-commit task, with where to answer.
type Pending = (
    Commit,
    tokio::sync::oneshot::Sender<Result<i64, StoreError>>,
);

/// Most commits in one statement.
const MAX_BATCH: usize = 256;

/// The channel every write that makes work due notifies, with the workflow as payload.
const CHANNEL: &str = "pcsaga_work";

#[derive(Debug, Default)]
struct Arrivals {
    notify: tokio::sync::Notify,
    listening: std::sync::atomic::AtomicBool,
}

pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // disk_full, read_only_sql_transaction, insufficient_privilege.
            Some("53100" | "25006" | "42501") => StoreError::Unwritable(db.message().to_owned()),
            // data_corrupted, index_corrupted.
            Some("XX001" | "XX002") => StoreError::Corrupt(db.message().to_owned()),
            _ => StoreError::Database(e.to_string()),
        },
        _ => StoreError::Database(e.to_string()),
    }
}

fn saga_from_row(row: &PgRow) -> Result<SagaRecord, StoreError> {
    super::rows::saga(row)
}

/// History rows as the columns of `unnest(...)`, in order.
#[derive(Default)]
struct Events {
    kind: Vec<String>,
    state: Vec<Option<String>>,
    to_state: Vec<Option<String>>,
    call: Vec<Option<String>>,
    http_status: Vec<Option<i64>>,
    latency_ms: Vec<Option<i64>>,
    request_id: Vec<Option<String>>,
    error_class: Vec<Option<String>>,
    error: Vec<Option<String>>,
    detail: Vec<Option<String>>,
}

impl Events {
    fn of(events: &[HistoryEvent]) -> Self {
        let mut out = Self::default();
        for e in events {
            let a = e.attempt.as_ref();
            out.kind
                .push(e.kind.map_or("transition", EventKind::as_str).to_owned());
            out.state.push(e.state.clone());
            out.to_state.push(e.to_state.clone());
            out.call.push(a.map(|a| a.call.clone()));
            out.http_status
                .push(a.and_then(|a| a.http_status).map(i64::from));
            out.latency_ms
                .push(a.map(|a| i64::try_from(a.latency_ms).unwrap_or(i64::MAX)));
            out.request_id.push(a.and_then(|a| a.request_id.clone()));
            out.error_class.push(a.and_then(|a| a.error_class.clone()));
            out.error.push(a.and_then(|a| a.error.clone()));
            out.detail.push(e.detail.clone());
        }
        out
    }
}

/// `INSERT INTO history … SELECT {source}.id, $at, e.* FROM {source}, unnest($first…)`.
fn history_insert(source: &str, at: usize, first: usize) -> String {
    let p = |i: usize| format!("${}", first + i);
    format!(
        "INSERT INTO history (saga_id, at, kind, state, to_state, call, http_status, latency_ms, request_id, \
         error_class, error, detail) \
         SELECT {source}.id, ${at}, e.kind, e.state, e.to_state, e.call, e.http_status, e.latency_ms, \
         e.request_id, e.error_class, e.error, e.detail \
         FROM {source}, unnest({}::text[], {}::text[], {}::text[], {}::text[], {}::bigint[], {}::bigint[], \
         {}::text[], {}::text[], {}::text[], {}::text[]) WITH ORDINALITY \
         AS e(kind, state, to_state, call, http_status, latency_ms, request_id, error_class, error, detail, ord) \
         ORDER BY e.ord",
        p(0), p(1), p(2), p(3), p(4), p(5), p(6), p(7), p(8), p(9)
    )
}

fn bind_events<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    e: Events,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(e.kind)
        .bind(e.state)
        .bind(e.to_state)
        .bind(e.call)
        .bind(e.http_status)
        .bind(e.latency_ms)
        .bind(e.request_id)
        .bind(e.error_class)
        .bind(e.error)
        .bind(e.detail)
}

impl PgStore {
    /// Connects and applies the migrations (a database written by a newer release is refused,
    /// naming both versions).
    pub async fn connect(config: PgConfig) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout)
            .connect(&config.url)
            .await
            .map_err(|e| StoreError::Open {
                path: redact(&config.url),
                reason: e.to_string(),
            })?;
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        let found: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten();
        if let Some(found) = found.filter(|f| *f > known) {
            return Err(StoreError::NewerSchema { found, known });
        }
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Open {
            path: redact(&config.url),
            reason: format!("migrating: {e}"),
        })?;
        Ok(Self {
            pool,
            scope: None,
            arrivals: Arc::default(),
            commits: Arc::default(),
        })
    }

    /// The group-commit queue: one task per store takes every commit waiting when it is free
    /// and writes them in one statement (one round trip, one WAL flush), as SQLite's writer
    /// shares one fsync between the commits of a batch. One batch at a time, measured: with
    /// three batches of a store in flight the server spent a third more CPU per commit on lock
    /// contention (108 against 82 µs with three daemons) and throughput fell.
    fn committer(&self) -> tokio::sync::mpsc::Sender<Pending> {
        self.commits
            .get_or_init(|| {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(4 * MAX_BATCH);
                let pool = self.pool.clone();
                tokio::spawn(async move {
                    while let Some(first) = rx.recv().await {
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(more) => batch.push(more),
                                Err(_) => break,
                            }
                        }
                        commit_batch(&pool, batch).await;
                    }
                });
                tx
            })
            .clone()
    }

    /// Listens on [`CHANNEL`] (once per store) and wakes the waiters on each notification; a
    /// lost connection is re-established after a second, and wakes them too (something may
    /// have been missed meanwhile).
    fn listen(&self) {
        use std::sync::atomic::Ordering;
        if self.arrivals.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let pool = self.pool.clone();
        let arrivals = Arc::downgrade(&self.arrivals);
        tokio::spawn(async move {
            loop {
                let listener = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen(CHANNEL).await?;
                    Ok::<_, sqlx::Error>(listener)
                };
                match listener.await {
                    Ok(mut listener) => loop {
                        let Some(arrivals) = arrivals.upgrade() else {
                            return;
                        };
                        match listener.try_recv().await {
                            Ok(_) => {
                                // Wake every idle engine of this process, and leave a permit
                                // for one that is between waits.
                                arrivals.notify.notify_waiters();
                                arrivals.notify.notify_one();
                            }
                            // This task holds the only reference left: the store is gone (a
                            // dropped database among them), and nobody waits to be woken.
                            Err(_) if Arc::strong_count(&arrivals) == 1 => return,
                            Err(error) => {
                                tracing::warn!(%error, "PostgreSQL notifications lost; listening again");
                                arrivals.notify.notify_waiters();
                                break;
                            }
                        }
                    },
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for PostgreSQL notifications; idle daemons poll meanwhile");
                    }
                }
                if arrivals.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    /// The predicate that keeps a statement to this handle's workflow, on parameter `$n`
    /// (always bound: the workflow, or `''` for every workflow). Written out per scope, not as
    /// `($n = '' OR workflow = $n)`: a prepared statement soon runs on PostgreSQL's generic
    /// plan, which cannot use `sagas_due_by_workflow` for that disjunction, and a claim then
    /// scanned and sorted the whole table (4.5 ms per claim at 10,000 sagas, 0.4 ms on the
    /// index).
    fn scope_predicate(&self, n: usize) -> String {
        match self.scope {
            Some(_) => format!("workflow = ${n}"),
            None => format!("${n}::text = ''"),
        }
    }

    /// Refreshes the planner's statistics of the engine's tables (`ANALYZE`). Autovacuum does
    /// this by itself within about a minute of a large change, and PostgreSQL then plans the
    /// prepared claims again; until then a table filled at once is planned as if it were
    /// empty (a claim sorted every due row). A benchmark that fills and measures at once asks.
    pub async fn refresh_statistics(&self) -> Result<(), StoreError> {
        sqlx::query("ANALYZE sagas, history")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The pool (for the tables of a workflow's own, and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Records that daemon `id` is alive at `now` (its row is created on the first beat), or
    /// that it stopped.
    pub async fn daemon_beat(
        &self,
        daemon: &super::sqlite::DaemonRow,
        now: DateTime<Utc>,
        stopped: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO daemons (id, host, pid, started_at, heartbeat_at, stopped_at, governor) \
             VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN $5 END, $7) \
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, \
             stopped_at = excluded.stopped_at, governor = excluded.governor",
        )
        .bind(&daemon.id)
        .bind(&daemon.host)
        .bind(i64::from(daemon.pid))
        .bind(to_millis(daemon.started_at))
        .bind(to_millis(now))
        .bind(stopped)
        .bind(daemon.governor.as_deref())
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    /// The daemons of the database, newest heartbeat first (at most 100).
    pub async fn daemons(&self) -> Result<Vec<super::sqlite::DaemonRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, host, pid, started_at, heartbeat_at, stopped_at, governor FROM daemons \
             ORDER BY heartbeat_at DESC LIMIT 100",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(super::rows::daemon).collect()
    }

    /// What `pcsaga status` shows beyond the counts (as the SQLite store's).
    pub async fn status_snapshot(
        &self,
        now: DateTime<Utc>,
        recent: u32,
    ) -> Result<super::sqlite::StatusSnapshot, StoreError> {
        let oldest_due = sqlx::query(super::rows::OLDEST_DUE)
            .bind(to_millis(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?
            .map(|row| -> Result<(String, DateTime<Utc>), StoreError> {
                Ok((
                    row.try_get(0).map_err(db_error)?,
                    from_millis(row.try_get(1).map_err(db_error)?),
                ))
            })
            .transpose()?;
        let counts = sqlx::query(super::rows::WAITING)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        let throttled: Option<i64> = counts.try_get(0).map_err(db_error)?;
        let held: Option<i64> = counts.try_get(1).map_err(db_error)?;
        let rows = sqlx::query(super::rows::RECENT_ERRORS)
            .bind(i64::from(recent))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let mut recent_errors = BTreeMap::new();
        for row in rows {
            let class: String = row.try_get(0).map_err(db_error)?;
            let n: i64 = row.try_get(1).map_err(db_error)?;
            recent_errors.insert(class, u64::try_from(n).unwrap_or(0));
        }
        Ok(super::sqlite::StatusSnapshot {
            oldest_due,
            throttled: u64::try_from(throttled.unwrap_or(0)).unwrap_or(0),
            held: u64::try_from(held.unwrap_or(0)).unwrap_or(0),
            recent_errors,
        })
    }

    /// The engine's invariants (as the SQLite store's `check_invariants`), each broken one
    /// named with the sagas that break it.
    pub async fn check_invariants(
        &self,
        workflows: &[(&str, Vec<&str>)],
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let known: Vec<String> = workflows
            .iter()
            .flat_map(|(w, states)| states.iter().map(move |s| format!("{w}\u{1f}{s}")))
            .collect();
        let checks: [(&str, &str); 5] = [
            (
                "has no history (its submission is not recorded)",
                "SELECT id FROM sagas s WHERE NOT EXISTS (SELECT 1 FROM history h WHERE h.saga_id = s.id AND h.kind = 'submitted')",
            ),
            (
                "is stopped but still holds a lease or a due time",
                "SELECT id FROM sagas WHERE status <> 'active' AND (next_run_at IS NOT NULL OR lease_owner IS NOT NULL)",
            ),
            (
                "is active but has no due time (nothing would ever run it)",
                "SELECT id FROM sagas WHERE status = 'active' AND next_run_at IS NULL",
            ),
            (
                "is stopped with an intent that no later step answered (a call in doubt)",
                "SELECT s.id FROM sagas s WHERE s.status IN ('succeeded', 'failed', 'cancelled') AND (SELECT kind FROM history h WHERE h.saga_id = s.id AND h.kind IN ('intent', 'transition', 'operator') ORDER BY seq DESC LIMIT 1) = 'intent'",
            ),
            (
                "is in a state its workflow does not have (or of a workflow this binary does not know)",
                "SELECT id FROM sagas WHERE NOT (workflow || chr(31) || state = ANY($1))",
            ),
        ];
        let mut out = Vec::new();
        for (what, sql) in checks {
            let text = format!("{sql} LIMIT {limit}");
            let mut query = sqlx::query(&text);
            if sql.contains("$1") {
                query = query.bind(known.clone());
            }
            let rows = query.fetch_all(&self.pool).await.map_err(db_error)?;
            for row in rows {
                let id: String = row.try_get(0).map_err(db_error)?;
                out.push(format!("saga {id} {what}"));
            }
        }
        Ok(out)
    }
}

/// A connection URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Store for PgStore {
    async fn work_arrived(&self) {
        self.listen();
        self.arrivals.notify.notified().await;
    }

    fn scoped(&self, workflow: &'static str) -> Self {
        Self {
            scope: Some(Arc::from(workflow)),
            ..self.clone()
        }
    }

    async fn insert(&self, saga: NewSaga, event: HistoryEvent) -> Result<Inserted, StoreError> {
        let now = to_millis(saga.now);
        let sql = format!(
            "WITH created AS ( \
               INSERT INTO sagas (id, workflow, idempotency_key, state, status, context, input, customer_id, \
               attempt, total_attempts, state_entered_at, next_run_at, version, created_at, updated_at, \
               definition, context_schema) \
               VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, 0, 0, $8, $8, 0, $8, $8, $9, $10) \
               ON CONFLICT (workflow, idempotency_key) DO NOTHING RETURNING {SAGA_COLUMNS}), \
             logged AS ({}), \
             told AS (SELECT pg_notify('{CHANNEL}', workflow) FROM created) \
             SELECT {SAGA_COLUMNS} FROM created, (SELECT COUNT(*) FROM told) AS t",
            history_insert("created", 8, 11)
        );
        let query = sqlx::query(&sql)
            .bind(&saga.id)
            .bind(&saga.workflow)
            .bind(&saga.idempotency_key)
            .bind(&saga.state)
            .bind(&saga.context)
            .bind(&saga.input)
            .bind(&saga.customer_id)
            .bind(now)
            .bind(i64::from(saga.definition))
            .bind(i64::from(saga.context_schema));
        let created = bind_events(query, Events::of(std::slice::from_ref(&event)))
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        if let Some(row) = created {
            return Ok(Inserted::Created(saga_from_row(&row)?));
        }
        let row = sqlx::query(&format!(
            "SELECT {SAGA_COLUMNS} FROM sagas WHERE workflow = $1 AND idempotency_key = $2"
        ))
        .bind(&saga.workflow)
        .bind(&saga.idempotency_key)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(Inserted::Existing(saga_from_row(&row)?))
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        self.claim_due_fairly(owner, now, lease_until, limit, Vec::new(), 0)
            .await
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
        // With a limit per customer, the oldest due rows (four times the claim, a bounded
        // window) are locked and numbered per customer; those past the limit stay due.
        let window = if per_customer == 0 {
            limit
        } else {
            limit.saturating_mul(4)
        };
        let columns = SAGA_COLUMNS
            .split(", ")
            .map(|c| format!("sagas.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "WITH due AS ( \
               SELECT id, customer_id, next_run_at FROM sagas \
               WHERE {scope} AND next_run_at IS NOT NULL AND next_run_at <= $2 \
               AND status = 'active' AND (customer_id IS NULL OR NOT (customer_id = ANY($3))) \
               ORDER BY next_run_at LIMIT $4 FOR UPDATE SKIP LOCKED), \
             chosen AS ( \
               SELECT id FROM (SELECT id, customer_id, next_run_at, \
                 ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY next_run_at) AS nth FROM due) d \
               WHERE $5 = 0 OR customer_id IS NULL OR nth <= $5 ORDER BY next_run_at LIMIT $6), \
             claimed AS ( \
               UPDATE sagas SET lease_owner = $7, lease_expires_at = $8, next_run_at = $8, \
               version = sagas.version + 1, updated_at = $2 \
               FROM chosen WHERE sagas.id = chosen.id RETURNING {columns}), \
             logged AS ( \
               INSERT INTO history (saga_id, at, kind, state, detail) \
               SELECT id, $2, 'claimed', state, $9 FROM claimed) \
             SELECT {SAGA_COLUMNS} FROM claimed ORDER BY next_run_at, id",
            scope = self.scope_predicate(1)
        );
        let rows = sqlx::query(&sql)
            .bind(self.scope.as_deref().unwrap_or(""))
            .bind(to_millis(now))
            .bind(avoid)
            .bind(i64::from(window))
            .bind(i64::from(per_customer))
            .bind(i64::from(limit))
            .bind(owner)
            .bind(to_millis(lease_until))
            .bind(format!("lease to {owner}"))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(saga_from_row).collect()
    }

    async fn commit(&self, commit: Commit) -> Result<i64, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.committer()
            .send((commit, reply))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    async fn get(&self, id: &str) -> Result<Option<SagaRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        row.as_ref().map(saga_from_row).transpose()
    }

    async fn ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        // A range on the primary key, as in SQLite: every id that starts with `prefix` sorts
        // between it and `prefix` followed by the highest character (byte order, "C").
        let rows = sqlx::query(
            "SELECT id FROM sagas WHERE id COLLATE \"C\" >= $1 AND id COLLATE \"C\" < $2 \
             ORDER BY id COLLATE \"C\" LIMIT $3",
        )
        .bind(prefix)
        .bind(format!("{prefix}\u{10FFFF}"))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).map_err(db_error))
            .collect()
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>, StoreError> {
        let (predicate, binds) = list_predicate(filter);
        let sql = format!(
            "SELECT {SAGA_COLUMNS} FROM sagas {predicate} ORDER BY created_at DESC, id DESC LIMIT ${}",
            binds.len() + 1
        );
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = bind.apply(query);
        }
        let limit = if filter.limit == 0 {
            i64::MAX
        } else {
            i64::from(filter.limit)
        };
        let rows = query
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        rows.iter().map(saga_from_row).collect()
    }

    async fn history(&self, id: &str) -> Result<Vec<HistoryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, saga_id, at, kind, state, to_state, call, http_status, latency_ms, request_id, \
             error_class, error, detail FROM history WHERE saga_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(super::rows::history).collect()
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = format!(
            "SELECT MIN(next_run_at) FROM sagas WHERE {} AND next_run_at IS NOT NULL",
            self.scope_predicate(1)
        );
        let due: Option<i64> = sqlx::query_scalar(&sql)
            .bind(self.scope.as_deref().unwrap_or(""))
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(due.map(from_millis))
    }

    async fn count(&self, filter: &ListFilter, cap: u64) -> Result<u64, StoreError> {
        let (predicate, binds) = list_predicate(filter);
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM sagas {predicate} LIMIT ${}) AS capped",
            binds.len() + 1
        );
        let mut query = sqlx::query_scalar::<_, i64>(&sql);
        for bind in binds {
            query = match bind {
                Bind::Text(t) => query.bind(t),
                Bind::Millis(m) => query.bind(m),
            };
        }
        let n = query
            .bind(i64::try_from(cap).unwrap_or(i64::MAX))
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn count_by_status(&self) -> Result<BTreeMap<SagaStatus, u64>, StoreError> {
        let sql = format!(
            "SELECT status, COUNT(*) AS n FROM sagas WHERE {} GROUP BY status",
            self.scope_predicate(1)
        );
        let rows = sqlx::query(&sql)
            .bind(self.scope.as_deref().unwrap_or(""))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let mut out = BTreeMap::new();
        for row in rows {
            let status: String = row.try_get("status").map_err(db_error)?;
            let n: i64 = row.try_get("n").map_err(db_error)?;
            if let Some(status) = SagaStatus::parse(&status) {
                out.insert(status, u64::try_from(n).unwrap_or(0));
            }
        }
        Ok(out)
    }

    async fn count_active_by_state(
        &self,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        let sql = format!(
            "SELECT state, COUNT(*) AS n, SUM(CASE WHEN next_run_at <= $1 THEN 1 ELSE 0 END) AS due \
             FROM sagas WHERE status = 'active' AND {} GROUP BY state",
            self.scope_predicate(2)
        );
        let rows = sqlx::query(&sql)
            .bind(to_millis(now))
            .bind(self.scope.as_deref().unwrap_or(""))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        let mut out = BTreeMap::new();
        for row in rows {
            let state: String = row.try_get("state").map_err(db_error)?;
            let n: i64 = row.try_get("n").map_err(db_error)?;
            let due: Option<i64> = row.try_get("due").map_err(db_error)?;
            out.insert(
                state,
                (
                    u64::try_from(n).unwrap_or(0),
                    u64::try_from(due.unwrap_or(0)).unwrap_or(0),
                ),
            );
        }
        Ok(out)
    }
}

enum Bind {
    Text(String),
    Millis(i64),
}

impl Bind {
    fn apply<'q>(
        self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        match self {
            Self::Text(t) => query.bind(t),
            Self::Millis(m) => query.bind(m),
        }
    }
}

/// `list`'s filters as a `WHERE` clause with numbered parameters, and their values.
fn list_predicate(filter: &ListFilter) -> (String, Vec<Bind>) {
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    let param = |binds: &mut Vec<Bind>, bind: Bind| {
        binds.push(bind);
        format!("${}", binds.len())
    };
    if let Some(workflow) = &filter.workflow {
        let p = param(&mut binds, Bind::Text(workflow.clone()));
        clauses.push(format!("workflow = {p}"));
    }
    if let Some(status) = filter.status {
        let p = param(&mut binds, Bind::Text(status.as_str().to_owned()));
        clauses.push(format!("status = {p}"));
    }
    if let Some(state) = &filter.state {
        let p = param(&mut binds, Bind::Text(state.clone()));
        clauses.push(format!("state = {p}"));
    }
    if let Some(customer) = &filter.customer_id {
        let p = param(&mut binds, Bind::Text(customer.clone()));
        clauses.push(format!("customer_id = {p}"));
    }
    if let Some(after) = filter.created_after {
        let p = param(&mut binds, Bind::Millis(to_millis(after)));
        clauses.push(format!("created_at >= {p}"));
    }
    if let Some(stuck) = &filter.stuck {
        if filter.status.is_none() {
            clauses.push("status = 'active'".to_owned());
        }
        let mut case = String::from("attempt > 0");
        if !stuck.is_empty() {
            case.push_str(" OR state_entered_at < CASE state");
            for (state, before) in stuck {
                let s = param(&mut binds, Bind::Text(state.clone()));
                let b = param(&mut binds, Bind::Millis(to_millis(*before)));
                case.push_str(&format!(" WHEN {s} THEN {b}"));
            }
            case.push_str(" ELSE -1 END");
        }
        clauses.push(format!("({case})"));
    }
    if clauses.is_empty() {
        (String::new(), binds)
    } else {
        (format!("WHERE {}", clauses.join(" AND ")), binds)
    }
}

/// Writes a batch of commits (of distinct sagas, split when one saga has two) and answers each.
async fn commit_batch(pool: &PgPool, mut batch: Vec<Pending>) {
    while !batch.is_empty() {
        let mut seen = std::collections::HashSet::new();
        let (now, later): (Vec<Pending>, Vec<Pending>) = batch
            .into_iter()
            .partition(|(c, _)| seen.insert(c.id.clone()));
        batch = later;
        let commits: Vec<&Commit> = now.iter().map(|(c, _)| c).collect();
        crate::metrics::batch("postgres", commits.len());
        match write_commits(pool, &commits).await {
            Ok(written) => {
                for (commit, reply) in now {
                    let result = if written.contains(&commit.id) {
                        Ok(commit.expected_version + 1)
                    } else {
                        Err(StoreError::Fenced {
                            id: commit.id.clone(),
                            expected: commit.expected_version,
                        })
                    };
                    let _ = reply.send(result);
                }
            }
            Err(error) => {
                let text = error.to_string();
                for (_, reply) in now {
                    let _ = reply.send(Err(match &error {
                        StoreError::Unwritable(m) => StoreError::Unwritable(m.clone()),
                        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
                        _ => StoreError::Database(text.clone()),
                    }));
                }
            }
        }
    }
}

/// One statement for many fenced commits: each row's `UPDATE` passes its own fence, and the
/// history rows of the commits that passed are inserted in their order; returns the ids
/// written.
async fn write_commits(
    pool: &PgPool,
    commits: &[&Commit],
) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut id = Vec::new();
    let mut full = Vec::new();
    let mut state = Vec::new();
    let mut status = Vec::new();
    let mut context = Vec::new();
    let mut attempt = Vec::new();
    let mut total = Vec::new();
    let mut entered = Vec::new();
    let mut last_error = Vec::new();
    let mut wait = Vec::new();
    let mut definition = Vec::new();
    let mut schema = Vec::new();
    let mut next = Vec::new();
    let mut lease_owner = Vec::new();
    let mut lease_until = Vec::new();
    let mut now = Vec::new();
    let mut version = Vec::new();
    let mut fence_owner = Vec::new();
    let mut operator = Vec::new();
    let mut event_saga = Vec::new();
    let mut event_at = Vec::new();
    let mut events = Events::default();
    for c in commits {
        let (owner, until, fence, op) = match &c.writer {
            Writer::Worker { owner, lease_until } => (
                lease_until.map(|_| owner.clone()),
                lease_until.map(to_millis),
                Some(owner.clone()),
                0_i64,
            ),
            Writer::Operator => (None, None, None, 1),
        };
        let update = match &c.change {
            Change::Saga(u) => Some(u),
            Change::Lease { .. } => None,
        };
        id.push(c.id.clone());
        full.push(update.is_some());
        state.push(update.map(|u| u.state.clone()));
        status.push(update.map(|u| u.status.as_str().to_owned()));
        context.push(update.map(|u| u.context.clone()));
        attempt.push(update.map(|u| i64::from(u.attempt)));
        total.push(update.map(|u| i64::from(u.total_attempts)));
        entered.push(update.map(|u| to_millis(u.state_entered_at)));
        last_error.push(update.and_then(|u| u.last_error.clone()));
        wait.push(update.and_then(|u| u.wait_reason.clone()));
        definition.push(update.map(|u| i64::from(u.definition)));
        schema.push(update.map(|u| i64::from(u.context_schema)));
        next.push(
            match &c.change {
                Change::Saga(u) => u.next_run_at,
                Change::Lease { next_run_at } => *next_run_at,
            }
            .map(to_millis),
        );
        lease_owner.push(owner);
        lease_until.push(until);
        now.push(to_millis(c.now));
        version.push(c.expected_version);
        fence_owner.push(fence);
        operator.push(op);
        let e = Events::of(&c.events);
        for _ in 0..c.events.len() {
            event_saga.push(c.id.clone());
            event_at.push(to_millis(c.now));
        }
        events.kind.extend(e.kind);
        events.state.extend(e.state);
        events.to_state.extend(e.to_state);
        events.call.extend(e.call);
        events.http_status.extend(e.http_status);
        events.latency_ms.extend(e.latency_ms);
        events.request_id.extend(e.request_id);
        events.error_class.extend(e.error_class);
        events.error.extend(e.error);
        events.detail.extend(e.detail);
    }
    // A lease-only change (`is_full` false) sends no other column and keeps the row's.
    let keep = |column: &str| {
        format!("{column} = CASE WHEN v.is_full THEN v.{column} ELSE sagas.{column} END")
    };
    let sql = format!(
        "WITH v AS ( \
           SELECT * FROM unnest($1::text[], $2::bool[], $3::text[], $4::text[], $5::text[], \
             $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::text[], $11::bigint[], \
             $12::bigint[], $13::bigint[], $14::text[], $15::bigint[], $16::bigint[], $17::bigint[], \
             $18::text[], $19::bigint[]) \
           AS v(id, is_full, state, status, context, attempt, total_attempts, state_entered_at, \
             last_error, wait_reason, definition, context_schema, next_run_at, lease_owner, \
             lease_expires_at, now, version, fence_owner, operator)), \
         written AS ( \
           UPDATE sagas SET {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, next_run_at = v.next_run_at, \
           lease_owner = v.lease_owner, lease_expires_at = v.lease_expires_at, updated_at = v.now, \
           version = sagas.version + 1 \
           FROM v WHERE sagas.id = v.id AND sagas.version = v.version AND ( \
             (v.operator = 0 AND sagas.lease_owner = v.fence_owner AND sagas.lease_expires_at >= v.now) \
             OR (v.operator = 1 AND (sagas.lease_owner IS NULL OR sagas.lease_expires_at < v.now))) \
           RETURNING sagas.id, v.operator, v.next_run_at), \
         logged AS ( \
           INSERT INTO history (saga_id, at, kind, state, to_state, call, http_status, latency_ms, \
             request_id, error_class, error, detail) \
           SELECT e.saga_id, e.at, e.kind, e.state, e.to_state, e.call, e.http_status, e.latency_ms, \
             e.request_id, e.error_class, e.error, e.detail \
           FROM unnest($20::text[], $21::bigint[], $22::text[], $23::text[], $24::text[], $25::text[], \
             $26::bigint[], $27::bigint[], $28::text[], $29::text[], $30::text[], $31::text[]) \
             WITH ORDINALITY AS e(saga_id, at, kind, state, to_state, call, http_status, latency_ms, \
             request_id, error_class, error, detail, ord) \
           WHERE e.saga_id IN (SELECT id FROM written) ORDER BY e.ord), \
         told AS (SELECT pg_notify('{CHANNEL}', id) FROM written \
           WHERE operator = 1 AND next_run_at IS NOT NULL) \
         SELECT id FROM written, (SELECT COUNT(*) FROM told) AS t",
        keep("state"),
        keep("status"),
        keep("context"),
        keep("attempt"),
        keep("total_attempts"),
        keep("state_entered_at"),
        keep("last_error"),
        keep("wait_reason"),
        keep("definition"),
        keep("context_schema"),
    );
    let rows = sqlx::query(&sql)
        .bind(id)
        .bind(full)
        .bind(state)
        .bind(status)
        .bind(context)
        .bind(attempt)
        .bind(total)
        .bind(entered)
        .bind(last_error)
        .bind(wait)
        .bind(definition)
        .bind(schema)
        .bind(next)
        .bind(lease_owner)
        .bind(lease_until)
        .bind(now)
        .bind(version)
        .bind(fence_owner)
        .bind(operator)
        .bind(event_saga)
        .bind(event_at)
        .bind(events.kind)
        .bind(events.state)
        .bind(events.to_state)
        .bind(events.call)
        .bind(events.http_status)
        .bind(events.latency_ms)
        .bind(events.request_id)
        .bind(events.error_class)
        .bind(events.error)
        .bind(events.detail)
        .fetch_all(pool)
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| row.try_get::<String, _>(0).map_err(db_error))
        .collect()
}
