//! The SQLite store: WAL, `synchronous=FULL` by default, one writer connection with group
//! commit, a small pool of readers.
//!
//! Every write goes through one task that owns the only writing connection. It takes whatever
//! writes are queued (up to [`MAX_BATCH`]), runs them in one `BEGIN IMMEDIATE` transaction
//! (the batch's commits as one multi-row `UPDATE` and one multi-row history `INSERT`), commits
//! once, and only then answers each caller. So a transition is durable before its caller acts
//! on it, and many sagas share one fsync. Other processes (a second daemon, the CLI) have their
//! own writer; SQLite's lock and the busy timeout order them, and version fencing keeps them
//! from overwriting each other. A background task checkpoints the WAL on a connection of its
//! own, so the writer rarely stops to copy pages.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{
    Change, Commit, EventKind, HistoryEvent, HistoryRow, Inserted, ListFilter, NewSaga, SagaRecord,
    SagaStatus, Store, StoreError, Writer,
};
use crate::clock::{from_millis, to_millis};

/// Most writes grouped into one transaction.
pub const MAX_BATCH: usize = 512;
/// Most writes queued for the writer; callers wait beyond this (backpressure).
pub const WRITE_QUEUE: usize = 4096;

/// Most rows in one multi-row statement (SQLite allows 32,766 variables; a history row has 13).
pub const MAX_ROWS_PER_STATEMENT: usize = 512;

/// The number of rows a multi-row statement is built for: `rows` rounded up to a power of two.
/// The unused rows are padding that writes nothing. So a batch's statements come in ten shapes,
/// which the connection's statement cache keeps prepared, instead of one shape per batch size
/// (compiling SQL with hundreds of variables was 4% of the end-to-end profile).
fn statement_rows(rows: usize) -> usize {
    rows.max(1).next_power_of_two()
}

/// How often the background checkpointer copies the WAL into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// The WAL size (in 4 KiB pages, so 16 MiB) at which the writer checkpoints by itself. Under a
/// steady stream of commits a `PASSIVE` checkpoint never catches up with the last frame, so
/// the WAL cannot start over by itself; the writer's own checkpoint then has little left to
/// copy, and the WAL starts over. It is also the backstop if the checkpointer fails.
pub const WRITER_CHECKPOINT_PAGES: u32 = 4_096;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How durable a commit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss. The default: this is money.
    Full,
    /// `synchronous=NORMAL`: a commit may be lost on power loss (not on a process crash).
    Normal,
}

/// Settings of the SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub durability: Durability,
    pub busy_timeout: Duration,
    pub readers: u32,
    /// A cap on the database file's size, in MiB (`PRAGMA max_page_count`); writes beyond it
    /// fail as a full disk would, and the daemon stops claiming until there is room.
    pub max_size_mb: Option<u64>,
    /// Open an existing database for reading only: nothing is created or migrated, and every
    /// write is refused. For the verbs that only look (`list`, `show`, `status`, `check`).
    pub read_only: bool,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Full,
            busy_timeout: Duration::from_secs(10),
            readers: 4,
            max_size_mb: None,
            read_only: false,
        }
    }
}

enum WriteOp {
    Insert {
        saga: NewSaga,
        event: HistoryEvent,
        reply: oneshot::Sender<Result<Inserted, StoreError>>,
    },
    Claim {
        /// Only this workflow's sagas (`None`: any).
        workflow: Option<Arc<str>>,
        owner: String,
        /// Customers whose sagas are skipped (they hold more than their share).
        avoid: Vec<String>,
        /// At most this many of one customer's sagas in this claim (0: no limit).
        per_customer: u32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
        reply: oneshot::Sender<Result<Vec<SagaRecord>, StoreError>>,
    },
    Commit {
        commit: Commit,
        reply: oneshot::Sender<Result<i64, StoreError>>,
    },
}

/// The SQLite store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writes: mpsc::Sender<WriteOp>,
    readers: SqlitePool,
    path: PathBuf,
    /// Write batches (transactions) the writer has run: with group commit, fewer than writes.
    batches: Arc<AtomicU64>,
    read_only: bool,
    /// How to open another writing connection (daemon heartbeats); `None` when read-only.
    options: Option<SqliteConnectOptions>,
    /// The workflow whose sagas this handle claims and waits for (see [`Store::scoped`]).
    scope: Option<Arc<str>>,
}

/// See [`SqliteStore::status_snapshot`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusSnapshot {
    pub oldest_due: Option<(String, DateTime<Utc>)>,
    pub throttled: u64,
    pub held: u64,
    pub recent_errors: BTreeMap<String, u64>,
}

/// A daemon as the `daemons` table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonRow {
    /// Its lease owner name.
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Its rate governor at the last heartbeat: JSON, a list of `ClassSnapshot`.
    pub governor: Option<String>,
}

impl std::fmt::Debug for WriteOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Insert { .. } => "Insert",
            Self::Claim { .. } => "Claim",
            Self::Commit { .. } => "Commit",
        })
    }
}

pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        // SQLITE_FULL (13), SQLITE_READONLY (8) and SQLITE_CANTOPEN (14), with extended codes.
        let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0) & 0xff;
        if matches!(code, 8 | 13 | 14) {
            return StoreError::Unwritable(db.message().to_owned());
        }
        // SQLITE_CORRUPT (11) and SQLITE_NOTADB (26).
        if matches!(code, 11 | 26) {
            return StoreError::Corrupt(db.message().to_owned());
        }
    }
    if let sqlx::Error::Io(io) = &e {
        return StoreError::Unwritable(io.to_string());
    }
    StoreError::Database(e.to_string())
}

/// The newest migration applied to the database, `None` when it has no pcsaga schema.
async fn applied_schema(conn: &mut SqliteConnection) -> Result<Option<i64>, StoreError> {
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    if exists.is_none() {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)
}

/// Refuses a database whose applied migrations include one this binary does not have: it was
/// written by a newer release, and running older code on it could misread every row.
async fn refuse_newer_schema(writer: &mut SqliteConnection) -> Result<(), StoreError> {
    let found = applied_schema(writer).await?;
    let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    match found {
        Some(found) if found > known => Err(StoreError::NewerSchema { found, known }),
        _ => Ok(()),
    }
}

impl SqliteStore {
    /// Opens (creating if needed, readable by its owner only) and migrates the database; with
    /// `read_only`, opens an existing one as it is.
    pub async fn open(config: SqliteConfig) -> Result<Self, StoreError> {
        if config.read_only {
            return Self::open_read_only(config).await;
        }
        let path = config.path.clone();
        let display = path.display().to_string();
        create_private(&path).map_err(|reason| StoreError::Open {
            path: display.clone(),
            reason,
        })?;
        let cannot_open = |e: sqlx::Error| match db_error(e) {
            fatal @ StoreError::Corrupt(_) => fatal,
            other => StoreError::Open {
                path: display.clone(),
                reason: other.to_string(),
            },
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(cannot_open)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match config.durability {
                Durability::Full => SqliteSynchronous::Full,
                Durability::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(config.busy_timeout)
            .foreign_keys(true)
            .disable_statement_logging();
        // The writer checkpoints only as a backstop; the checkpointer below does it on its own
        // connection, so the writer does not stop committing while pages are copied and synced.
        let mut writer = options
            .clone()
            .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string())
            .connect()
            .await
            .map_err(cannot_open)?;
        if let Some(mb) = config.max_size_mb {
            // max_page_count is per connection: only this process's writer is capped.
            let pages = (mb * 1024 * 1024 / 4096).max(1);
            sqlx::query(&format!("PRAGMA max_page_count = {pages}"))
                .execute(&mut writer)
                .await
                .map_err(cannot_open)?;
        }
        refuse_newer_schema(&mut writer).await?;
        MIGRATOR.run(&mut writer).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => match db_error(e) {
                fatal @ StoreError::Corrupt(_) => fatal,
                other => StoreError::Open {
                    path: display.clone(),
                    reason: format!("migration failed: {other}"),
                },
            },
            e => StoreError::Open {
                path: display.clone(),
                reason: format!("migration failed: {e}"),
            },
        })?;
        let readers = SqlitePoolOptions::new()
            .max_connections(config.readers.max(1))
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(cannot_open)?;
        let checkpointer = options.clone().connect().await.map_err(cannot_open)?;
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(checkpointer_task(checkpointer, writes.downgrade()));
        let batches = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer_task(writer, queue, batches.clone()));
        Ok(Self {
            writes,
            readers,
            path,
            batches,
            read_only: false,
            options: Some(options),
            scope: None,
        })
    }

    async fn open_read_only(config: SqliteConfig) -> Result<Self, StoreError> {
        let path = config.path.clone();
        let display = path.display().to_string();
        if !path.is_file() {
            return Err(StoreError::Missing(display));
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| StoreError::Open {
                path: display.clone(),
                reason: e.to_string(),
            })?
            .read_only(true)
            .busy_timeout(config.busy_timeout)
            .disable_statement_logging();
        let readers = SqlitePoolOptions::new()
            .max_connections(config.readers.max(1))
            .connect_with(options)
            .await
            .map_err(|e| match db_error(e) {
                fatal @ StoreError::Corrupt(_) => fatal,
                other => StoreError::Open {
                    path: display.clone(),
                    reason: other.to_string(),
                },
            })?;
        let mut conn = readers.acquire().await.map_err(db_error)?;
        let found = applied_schema(&mut conn).await?;
        drop(conn);
        let known = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
        match found {
            None => return Err(StoreError::Missing(display)),
            Some(found) if found > known => return Err(StoreError::NewerSchema { found, known }),
            Some(found) if found < known => {
                return Err(StoreError::Open {
                    path: display,
                    reason: format!("its schema ({found}) is older than this binary's ({known}); run `pcsaga migrate` first"),
                })
            }
            Some(_) => {}
        }
        // No writer: the sender's receiver is gone, and `send` refuses before using it.
        let (writes, _) = mpsc::channel(1);
        Ok(Self {
            writes,
            readers,
            path,
            batches: Arc::new(AtomicU64::new(0)),
            read_only: true,
            options: None,
            scope: None,
        })
    }

    /// Records that daemon `id` is alive at `now` (its row is created on the first beat), or
    /// that it stopped. On a connection of its own: a heartbeat must not queue behind a batch.
    pub async fn daemon_beat(
        &self,
        daemon: &DaemonRow,
        now: DateTime<Utc>,
        stopped: bool,
    ) -> Result<(), StoreError> {
        let options = self.options.clone().ok_or_else(|| {
            StoreError::Unwritable("this command opened the database read-only".to_owned())
        })?;
        let mut conn = options.connect().await.map_err(db_error)?;
        sqlx::query(
            "INSERT INTO daemons (id, host, pid, started_at, heartbeat_at, stopped_at, governor) \
             VALUES (?1, ?2, ?3, ?4, ?5, CASE WHEN ?6 THEN ?5 END, ?7) \
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
        .execute(&mut conn)
        .await
        .map_err(db_error)?;
        let _ = conn.close().await;
        Ok(())
    }

    /// The daemons that beat within `since` of `now`, or are still marked running, newest
    /// heartbeat first (at most 100).
    pub async fn daemons(&self) -> Result<Vec<DaemonRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, host, pid, started_at, heartbeat_at, stopped_at, governor FROM daemons \
             ORDER BY heartbeat_at DESC LIMIT 100",
        )
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter().map(super::rows::daemon).collect()
    }

    /// What `pcsaga status` shows beyond the counts: the oldest due saga, how many active
    /// sagas wait on throttling or on refused credentials, and the error classes of the last
    /// `recent` history rows. Every query uses an index or a bounded range.
    pub async fn status_snapshot(
        &self,
        now: DateTime<Utc>,
        recent: u32,
    ) -> Result<StatusSnapshot, StoreError> {
        let oldest_due = sqlx::query(super::rows::OLDEST_DUE)
            .bind(to_millis(now))
            .fetch_optional(&self.readers)
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
            .fetch_one(&self.readers)
            .await
            .map_err(db_error)?;
        let throttled: Option<i64> = counts.try_get(0).map_err(db_error)?;
        let held: Option<i64> = counts.try_get(1).map_err(db_error)?;
        let rows = sqlx::query(super::rows::RECENT_ERRORS)
            .bind(i64::from(recent))
            .fetch_all(&self.readers)
            .await
            .map_err(db_error)?;
        let mut recent_errors = BTreeMap::new();
        for row in rows {
            let class: String = row.try_get(0).map_err(db_error)?;
            let n: i64 = row.try_get(1).map_err(db_error)?;
            recent_errors.insert(class, u64::try_from(n).unwrap_or(0));
        }
        Ok(StatusSnapshot {
            oldest_due,
            throttled: u64::try_from(throttled.unwrap_or(0)).unwrap_or(0),
            held: u64::try_from(held.unwrap_or(0)).unwrap_or(0),
            recent_errors,
        })
    }

    /// How many write transactions this store's writer has run (group commit puts many
    /// writes in one).
    pub fn write_batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `PRAGMA quick_check` (the B-tree structure and every page, without the index
    /// cross-checks): `Ok(())`, or `Corrupt` with SQLite's findings.
    pub async fn quick_check(&self) -> Result<(), StoreError> {
        let rows = sqlx::query("PRAGMA quick_check(20)")
            .fetch_all(&self.readers)
            .await
            .map_err(db_error)?;
        let findings: Vec<String> = rows
            .iter()
            .filter_map(|r| r.try_get::<String, _>(0).ok())
            .filter(|f| f != "ok")
            .collect();
        if findings.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Corrupt(findings.join("; ")))
        }
    }

    /// The engine's own invariants, each broken one described (at most `limit` of them):
    /// every saga has its `submitted` history row; a stopped saga holds no lease and no due
    /// time; an active saga has a due time; a saga whose lease ran out has no intent younger
    /// than its last transition left unanswered while it is stopped; the status is one of the
    /// five; the state is one of `states`.
    pub async fn check_invariants(
        &self,
        workflows: &[(&str, Vec<&str>)],
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let known = workflows
            .iter()
            .flat_map(|(workflow, states)| {
                states
                    .iter()
                    .map(move |state| format!("({}, {})", quote(workflow), quote(state)))
            })
            .collect::<Vec<_>>()
            .join(",");
        let checks: [(&str, String); 5] = [
            (
                "has no history (its submission is not recorded)",
                "SELECT id FROM sagas s WHERE NOT EXISTS (SELECT 1 FROM history h WHERE h.saga_id = s.id AND h.kind = 'submitted')".to_owned(),
            ),
            (
                "is stopped but still holds a lease or a due time",
                "SELECT id FROM sagas WHERE status <> 'active' AND (next_run_at IS NOT NULL OR lease_owner IS NOT NULL)".to_owned(),
            ),
            (
                "is active but has no due time (nothing would ever run it)",
                "SELECT id FROM sagas WHERE status = 'active' AND next_run_at IS NULL".to_owned(),
            ),
            (
                "is stopped with an intent that no later step answered (a call in doubt)",
                "SELECT s.id FROM sagas s WHERE s.status IN ('succeeded', 'failed', 'cancelled') AND (SELECT kind FROM history h WHERE h.saga_id = s.id AND h.kind IN ('intent', 'transition', 'operator') ORDER BY seq DESC LIMIT 1) = 'intent'".to_owned(),
            ),
            (
                "is in a state its workflow does not have (or of a workflow this binary does not know)",
                format!("SELECT id FROM sagas WHERE (workflow, state) NOT IN (VALUES {known})"),
            ),
        ];
        let mut out = Vec::new();
        for (what, sql) in checks {
            let rows = sqlx::query(&format!("{sql} LIMIT {limit}"))
                .fetch_all(&self.readers)
                .await
                .map_err(db_error)?;
            for row in rows {
                let id: String = row.try_get(0).map_err(db_error)?;
                out.push(format!("saga {id} {what}"));
            }
        }
        out.truncate(limit as usize);
        Ok(out)
    }

    /// Writes a consistent copy of the database to `to` while others keep writing
    /// (`VACUUM INTO`: one read transaction, so the copy is a snapshot). Refuses an existing
    /// file.
    pub async fn backup(&self, to: &Path) -> Result<(), StoreError> {
        if to.exists() {
            return Err(StoreError::Open {
                path: to.display().to_string(),
                reason: "the file exists; pcsaga never overwrites a backup: choose a new name"
                    .to_owned(),
            });
        }
        let target = to.to_str().ok_or_else(|| StoreError::Open {
            path: to.display().to_string(),
            reason: "the path is not valid UTF-8".to_owned(),
        })?;
        sqlx::query("VACUUM INTO ?1")
            .bind(target)
            .execute(&self.readers)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Runs `PRAGMA integrity_check`; `Ok("ok")` when the file is sound.
    pub async fn integrity_check(&self) -> Result<String, StoreError> {
        let row = sqlx::query("PRAGMA integrity_check")
            .fetch_one(&self.readers)
            .await
            .map_err(db_error)?;
        row.try_get::<String, _>(0).map_err(db_error)
    }

    async fn send<T>(
        &self,
        op: WriteOp,
        rx: oneshot::Receiver<Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        if self.read_only {
            return Err(StoreError::Unwritable(
                "this command opened the database read-only".to_owned(),
            ));
        }
        self.writes
            .send(op)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// Creates the database file with mode 0600 if it does not exist, so the purchase history is
/// readable by its owner only (SQLite gives its -wal and -shm files the same mode).
fn create_private(path: &Path) -> Result<(), String> {
    if path.exists() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            return Err(format!("the directory {} does not exist", parent.display()));
        }
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Copies committed pages from the WAL into the database file every [`CHECKPOINT_EVERY`], on a
/// connection of its own, until the store is dropped. `PASSIVE` never waits for the writer or
/// for readers, so commits go on meanwhile; once every frame is copied, the writer's next
/// transaction starts the WAL over, which keeps it small.
async fn checkpointer_task(mut conn: SqliteConnection, alive: mpsc::WeakSender<WriteOp>) {
    let mut failures = 0_u32;
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if alive.upgrade().is_none() {
            break;
        }
        match checkpoint(&mut conn).await {
            Ok(_) => failures = 0,
            Err(error) => {
                // Not fatal: the writer's own checkpoint (beyond WRITER_CHECKPOINT_PAGES) is
                // the backstop. Say so once per run of failures, not every 100 ms.
                failures += 1;
                if failures == 1 {
                    tracing::warn!(%error, "background WAL checkpoint failed; the writer will checkpoint instead");
                }
            }
        }
    }
    let _ = conn.close().await;
}

/// What one checkpoint did, in WAL frames (pages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// Frames in the WAL.
    pub log_frames: i64,
    /// Of those, frames now copied into the database file.
    pub copied_frames: i64,
}

/// Runs a `PASSIVE` checkpoint: copies what it can without waiting for anyone.
async fn checkpoint(conn: &mut SqliteConnection) -> Result<Checkpointed, StoreError> {
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error)?;
    Ok(Checkpointed {
        log_frames: row.try_get(1).map_err(db_error)?,
        copied_frames: row.try_get(2).map_err(db_error)?,
    })
}

async fn writer_task(
    mut conn: SqliteConnection,
    mut queue: mpsc::Receiver<WriteOp>,
    batches: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        crate::metrics::batch("sqlite", batch.len());
        run_batch(&mut conn, &mut batch).await;
        batches.fetch_add(1, Ordering::Relaxed);
    }
    let _ = conn.close().await;
}

/// Results of one batch, held until the commit decides their fate.
enum Pending {
    Insert(
        oneshot::Sender<Result<Inserted, StoreError>>,
        Result<Inserted, StoreError>,
    ),
    Claim(
        oneshot::Sender<Result<Vec<SagaRecord>, StoreError>>,
        Result<Vec<SagaRecord>, StoreError>,
    ),
    Commit(
        oneshot::Sender<Result<i64, StoreError>>,
        Result<i64, StoreError>,
    ),
}

impl Pending {
    /// Answers the caller: the result if the batch committed, else the batch's error.
    fn answer(self, failure: Option<&StoreError>) {
        let fail = |e: &StoreError| match e {
            StoreError::Unwritable(m) => StoreError::Unwritable(m.clone()),
            StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
            other => StoreError::Database(other.to_string()),
        };
        match (self, failure) {
            (Self::Insert(reply, result), None) => drop(reply.send(result)),
            (Self::Claim(reply, result), None) => drop(reply.send(result)),
            (Self::Commit(reply, result), None) => drop(reply.send(result)),
            (Self::Insert(reply, _), Some(e)) => drop(reply.send(Err(fail(e)))),
            (Self::Claim(reply, _), Some(e)) => drop(reply.send(Err(fail(e)))),
            (Self::Commit(reply, _), Some(e)) => drop(reply.send(Err(fail(e)))),
        }
    }
}

/// Splits a write's result into its answer and, for a database error (not a refusal), the
/// failure that sinks the whole batch. A refused (fenced) write is an answer, not a failure: it
/// wrote nothing, and the batch goes on.
fn split<T>(result: Result<T, StoreError>) -> (Result<T, StoreError>, Option<StoreError>) {
    match result {
        Err(StoreError::Fenced { id, expected }) => {
            (Err(StoreError::Fenced { id, expected }), None)
        }
        Err(StoreError::NotFound(id)) => (Err(StoreError::NotFound(id)), None),
        Err(e) => {
            let copy = match &e {
                StoreError::Unwritable(m) => StoreError::Unwritable(m.clone()),
                StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
                other => StoreError::Database(other.to_string()),
            };
            (Err(e), Some(copy))
        }
        ok => (ok, None),
    }
}

/// Runs one write and keeps its answer for after the commit.
async fn run_one(conn: &mut SqliteConnection, op: WriteOp) -> (Pending, Option<StoreError>) {
    match op {
        WriteOp::Insert { saga, event, reply } => {
            // The batch writes inserts itself (with their history rows together); this is the
            // same write for one.
            let mut result = insert(conn, &saga).await;
            if let Ok(Inserted::Created(_)) = &result {
                if let Err(e) = insert_history(conn, &[(saga.id.as_str(), saga.now, &event)]).await
                {
                    result = Err(e);
                }
            }
            let (result, failure) = split(result);
            (Pending::Insert(reply, result), failure)
        }
        WriteOp::Claim {
            workflow,
            owner,
            avoid,
            per_customer,
            now,
            lease_until,
            limit,
            reply,
        } => {
            let fair = (avoid.as_slice(), per_customer);
            let (result, failure) = split(
                claim(
                    conn,
                    workflow.as_deref(),
                    &owner,
                    fair,
                    now,
                    lease_until,
                    limit,
                )
                .await,
            );
            (Pending::Claim(reply, result), failure)
        }
        WriteOp::Commit { commit, reply } => {
            let result = apply_commits(conn, &[&commit], false)
                .await
                .and_then(|mut results| results.pop().unwrap_or(Err(StoreError::WriterGone)));
            let (result, failure) = split(result);
            (Pending::Commit(reply, result), failure)
        }
    }
}

/// Writes the `submitted` history rows of the batch's new sagas, in one statement.
async fn flush_submitted(
    conn: &mut SqliteConnection,
    submitted: &mut Vec<(String, DateTime<Utc>, HistoryEvent)>,
) -> Option<StoreError> {
    if submitted.is_empty() {
        return None;
    }
    let rows: Vec<(&str, DateTime<Utc>, &HistoryEvent)> = submitted
        .iter()
        .map(|(id, at, event)| (id.as_str(), *at, event))
        .collect();
    let failure = insert_history(conn, &rows).await.err();
    submitted.clear();
    failure
}

fn pending_of(op: WriteOp) -> Pending {
    match op {
        WriteOp::Insert { reply, .. } => Pending::Insert(reply, Err(StoreError::WriterGone)),
        WriteOp::Claim { reply, .. } => Pending::Claim(reply, Err(StoreError::WriterGone)),
        WriteOp::Commit { reply, .. } => Pending::Commit(reply, Err(StoreError::WriterGone)),
    }
}

/// Whether a batch is the daemon's steady state: commits only, each of another saga.
fn only_commits_of_distinct_sagas(batch: &[WriteOp]) -> bool {
    let mut ids = std::collections::HashSet::with_capacity(batch.len());
    batch.iter().all(|op| match op {
        WriteOp::Commit { commit, .. } => ids.insert(commit.id.as_str()),
        _ => false,
    })
}

/// Runs a batch of commits of distinct sagas as one transaction in one call: `BEGIN
/// IMMEDIATE`, their statements and `COMMIT` reach SQLite's worker thread together, so the
/// batch costs one hand-off between tokio and that thread instead of one per statement. A
/// database error fails the whole batch, as in [`run_batch`].
async fn run_commits(conn: &mut SqliteConnection, batch: &mut Vec<WriteOp>) {
    let mut commits = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for op in batch.drain(..) {
        if let WriteOp::Commit { commit, reply } = op {
            commits.push(commit);
            replies.push(reply);
        }
    }
    let refs: Vec<&Commit> = commits.iter().collect();
    match apply_commits(conn, &refs, true).await {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                Pending::Commit(reply, result).answer(None);
            }
        }
        Err(e) => {
            // The failure may have come before or after BEGIN, or from COMMIT itself: roll
            // back whatever is open (an error here only says nothing was).
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            for reply in replies {
                Pending::Commit(reply, Err(StoreError::WriterGone)).answer(Some(&e));
            }
        }
    }
}

/// Runs a batch in one transaction. Any database error (as opposed to a fenced write) fails
/// the whole batch: SQLite may have rolled the transaction back already (a full disk does), so
/// none of its writes can be trusted, and every caller is told so and tries again later.
async fn run_batch(conn: &mut SqliteConnection, batch: &mut Vec<WriteOp>) {
    if only_commits_of_distinct_sagas(batch) {
        return run_commits(conn, batch).await;
    }
    if let Err(e) = sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(db_error)
    {
        for op in batch.drain(..) {
            pending_of(op).answer(Some(&e));
        }
        return;
    }
    // Inserts and claims run one by one, in order; the batch's commits (distinct sagas: a
    // worker waits for each commit before the next) run together in two statements.
    // A new saga's `submitted` row waits for the next claim or the commits, so a burst of
    // submissions writes its history in one statement; flushing before a claim keeps each
    // saga's history in order.
    let mut pending = Vec::with_capacity(batch.len());
    let mut commits = Vec::new();
    let mut submitted = Vec::new();
    let mut failure = None;
    for op in batch.drain(..) {
        if failure.is_some() {
            pending.push(pending_of(op));
            continue;
        }
        match op {
            WriteOp::Commit { commit, reply } => commits.push((commit, reply)),
            WriteOp::Insert { saga, event, reply } => {
                let (result, error) = split(insert(conn, &saga).await);
                if let Ok(Inserted::Created(_)) = &result {
                    submitted.push((saga.id, saga.now, event));
                }
                pending.push(Pending::Insert(reply, result));
                failure = error;
            }
            claim @ WriteOp::Claim { .. } => {
                failure = flush_submitted(conn, &mut submitted).await;
                if failure.is_some() {
                    pending.push(pending_of(claim));
                    continue;
                }
                let (entry, error) = run_one(conn, claim).await;
                pending.push(entry);
                failure = error;
            }
        }
    }
    if failure.is_none() {
        failure = flush_submitted(conn, &mut submitted).await;
    }
    if failure.is_some() {
        for (_, reply) in commits.drain(..) {
            pending.push(Pending::Commit(reply, Err(StoreError::WriterGone)));
        }
    }
    if failure.is_none() && !commits.is_empty() {
        let distinct: std::collections::HashSet<&str> =
            commits.iter().map(|(c, _)| c.id.as_str()).collect();
        if distinct.len() == commits.len() {
            let refs: Vec<&Commit> = commits.iter().map(|(c, _)| c).collect();
            match apply_commits(conn, &refs, false).await {
                Ok(results) => {
                    for ((_, reply), result) in commits.into_iter().zip(results) {
                        pending.push(Pending::Commit(reply, result));
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    for (_, reply) in commits {
                        pending.push(Pending::Commit(reply, Err(StoreError::WriterGone)));
                    }
                }
            }
        } else {
            // Two writes for one saga in a batch (two processes' operators cannot share a
            // writer, so this is rare): one by one, in order, so the fence sees each.
            for (commit, reply) in commits {
                if failure.is_some() {
                    pending.push(Pending::Commit(reply, Err(StoreError::WriterGone)));
                    continue;
                }
                let (entry, error) = run_one(conn, WriteOp::Commit { commit, reply }).await;
                pending.push(entry);
                failure = error;
            }
        }
    }
    if failure.is_none() {
        if let Err(e) = sqlx::query("COMMIT")
            .execute(&mut *conn)
            .await
            .map_err(db_error)
        {
            failure = Some(e);
        }
    }
    if failure.is_some() {
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    for entry in pending {
        entry.answer(failure.as_ref());
    }
}

const SAGA_COLUMNS: &str = "id, workflow, idempotency_key, state, status, context, input, customer_id, attempt, \
     total_attempts, state_entered_at, next_run_at, lease_owner, lease_expires_at, version, created_at, updated_at, \
     last_error, wait_reason, definition, context_schema";

fn saga_from_row(row: &SqliteRow) -> Result<SagaRecord, StoreError> {
    super::rows::saga(row)
}

/// Creates a saga unless its workflow already has the idempotency key; its history row is
/// the caller's to write (the batch writes them together).
async fn insert(conn: &mut SqliteConnection, saga: &NewSaga) -> Result<Inserted, StoreError> {
    let now = to_millis(saga.now);
    let created = sqlx::query(&format!(
        "INSERT INTO sagas (id, workflow, idempotency_key, state, status, context, input, customer_id, attempt, \
         total_attempts, state_entered_at, next_run_at, version, created_at, updated_at, definition, context_schema) \
         VALUES (?, ?, ?, ?, 'active', ?, ?, ?, 0, 0, ?, ?, 0, ?, ?, ?, ?) \
         ON CONFLICT (workflow, idempotency_key) DO NOTHING \
         RETURNING {SAGA_COLUMNS}"
    ))
    .bind(&saga.id)
    .bind(&saga.workflow)
    .bind(&saga.idempotency_key)
    .bind(&saga.state)
    .bind(&saga.context)
    .bind(&saga.input)
    .bind(&saga.customer_id)
    .bind(now)
    .bind(now)
    .bind(now)
    .bind(now)
    .bind(i64::from(saga.definition))
    .bind(i64::from(saga.context_schema))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_error)?;
    if let Some(row) = created {
        return Ok(Inserted::Created(saga_from_row(&row)?));
    }
    let row = sqlx::query(&format!(
        "SELECT {SAGA_COLUMNS} FROM sagas WHERE workflow = ? AND idempotency_key = ?"
    ))
    .bind(&saga.workflow)
    .bind(&saga.idempotency_key)
    .fetch_one(&mut *conn)
    .await
    .map_err(db_error)?;
    Ok(Inserted::Existing(saga_from_row(&row)?))
}

async fn claim(
    conn: &mut SqliteConnection,
    workflow: Option<&str>,
    owner: &str,
    (avoid, per_customer): (&[String], u32),
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<SagaRecord>, StoreError> {
    // INDEXED BY: with every saga active, the planner would otherwise pick the status index
    // and scan the whole backlog; the due index makes the cost that of the due rows only.
    // Skipping customers walks past their due rows: the cost grows with their due backlog,
    // which is why the engine asks for it only while some customer holds more than its share.
    let skip = if avoid.is_empty() {
        ""
    } else {
        "AND (customer_id IS NULL OR customer_id NOT IN (SELECT value FROM json_each(?5))) "
    };
    // A workflow's sagas only (the daemon runs one engine per workflow on one table): its
    // own due index, so a backlog of another workflow's due sagas is never walked.
    // (Unscoped, any workflow's: tests and tools only.)
    let which = if workflow.is_some() {
        "INDEXED BY sagas_due_by_workflow WHERE workflow = ?7 AND"
    } else {
        "WHERE ?7 = '' AND"
    };
    let due = format!(
        "SELECT id, customer_id, next_run_at FROM sagas {which} \
         next_run_at IS NOT NULL AND next_run_at <= ?3 AND status = 'active' {skip}\
         ORDER BY next_run_at"
    );
    // With a limit per customer, the oldest due rows (four times the claim, a bounded window)
    // are numbered per customer and those past the limit left for a later round.
    let chosen = if per_customer == 0 {
        format!("{due} LIMIT ?4")
    } else {
        format!(
            "SELECT id FROM (SELECT id, customer_id, next_run_at, \
             ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY next_run_at) AS nth \
             FROM ({due} LIMIT ?4 * 4)) \
             WHERE customer_id IS NULL OR nth <= ?6 ORDER BY next_run_at LIMIT ?4"
        )
    };
    let chosen = if per_customer == 0 {
        chosen.replacen("SELECT id, customer_id, next_run_at", "SELECT id", 1)
    } else {
        chosen
    };
    let sql = format!(
        "UPDATE sagas SET lease_owner = ?1, lease_expires_at = ?2, next_run_at = ?2, version = version + 1, \
         updated_at = ?3 WHERE id IN ({chosen}) RETURNING {SAGA_COLUMNS}"
    );
    let mut query = sqlx::query(&sql)
        .bind(owner)
        .bind(to_millis(lease_until))
        .bind(to_millis(now))
        .bind(i64::from(limit));
    if !avoid.is_empty() || per_customer > 0 {
        // Strings always encode; an empty list skips nobody.
        query = query.bind(serde_json::to_string(avoid).unwrap_or_else(|_| "[]".to_owned()));
    }
    if per_customer > 0 {
        query = query.bind(i64::from(per_customer));
    }
    // ?5 and ?6 are bound (unused placeholders bind nothing harmful) so ?7 is the workflow.
    if avoid.is_empty() && per_customer == 0 {
        query = query.bind("[]");
    }
    if per_customer == 0 {
        query = query.bind(0_i64);
    }
    let workflow = workflow.unwrap_or("");
    let query = query.bind(workflow);
    let rows = query.fetch_all(&mut *conn).await.map_err(db_error)?;
    let claimed: Vec<SagaRecord> = rows.iter().map(saga_from_row).collect::<Result<_, _>>()?;
    let detail = format!("lease to {owner}");
    let events: Vec<HistoryEvent> = claimed
        .iter()
        .map(|saga| {
            HistoryEvent::new(EventKind::Claimed)
                .state(saga.state.clone())
                .detail(detail.clone())
        })
        .collect();
    let rows: Vec<(&str, DateTime<Utc>, &HistoryEvent)> = claimed
        .iter()
        .zip(&events)
        .map(|(saga, event)| (saga.id.as_str(), now, event))
        .collect();
    insert_history(conn, &rows).await?;
    Ok(claimed)
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// The fence of a commit, as SQL over a saga row `s` and a values row `v` whose columns
/// `version`, `owner`, `operator` and `now` are named: the row is still at the version the
/// writer read, and the writer still holds the lease (a worker) or nobody does (an operator).
fn fence_sql(s: &str, version: &str, owner: &str, operator: &str, now: &str) -> String {
    format!(
        "{s}.version = {version} AND ( \
         ({operator} = 0 AND {s}.lease_owner = {owner} AND {s}.lease_expires_at >= {now}) \
         OR ({operator} = 1 AND ({s}.lease_owner IS NULL OR {s}.lease_expires_at < {now})))"
    )
}

/// The SQL of many fenced commits (of distinct sagas), per chunk of commits: the history rows
/// of the commits whose fence holds (one INSERT per [`MAX_ROWS_PER_STATEMENT`] rows), then
/// one UPDATE of their rows returning the ids it wrote. The history goes first because both
/// statements test the same fence on the row as it was: after the UPDATE, a fenced commit's
/// row could carry the version a passing one would have. `transaction` wraps the statements
/// in `BEGIN IMMEDIATE` … `COMMIT`, so that a batch of commits reaches SQLite's worker
/// thread in one hand-off. See [`bind_commits`] for the values, in the same order.
fn commits_sql(commits: &[&Commit], transaction: bool) -> String {
    let mut sql = String::new();
    if transaction {
        sql.push_str("BEGIN IMMEDIATE;\n");
    }
    let history_fence = fence_sql("s", "v.column14", "v.column15", "v.column16", "v.column2");
    let saga_fence = fence_sql(
        "sagas",
        "v.column15",
        "v.column16",
        "v.column17",
        "v.column14",
    );
    for chunk in commits.chunks(MAX_ROWS_PER_STATEMENT / 2) {
        let events: usize = chunk.iter().map(|c| c.events.len()).sum();
        let mut left = events;
        while left > 0 {
            let rows = statement_rows(left.min(MAX_ROWS_PER_STATEMENT));
            sql.push_str(&format!(
                "INSERT INTO history (saga_id, at, kind, state, to_state, call, http_status, latency_ms, request_id, \
                 error_class, error, detail) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, v.column8, \
                 v.column9, v.column10, v.column11, v.column12 FROM (VALUES {}) AS v \
                 WHERE v.column1 IS NOT NULL AND EXISTS (SELECT 1 FROM sagas s WHERE s.id = v.column1 AND {history_fence}) \
                 ORDER BY v.column13;\n",
                vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; rows].join(", ")
            ));
            left -= left.min(MAX_ROWS_PER_STATEMENT);
        }
        // A lease-only change (`column2` = 0) sends no other column and keeps the row's.
        let keep = |column: &str, value: &str| {
            format!("{column} = iif(v.column2, {value}, sagas.{column})")
        };
        sql.push_str(&format!(
            "UPDATE sagas SET {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, next_run_at = v.column9, \
             lease_owner = v.column12, lease_expires_at = v.column13, updated_at = v.column14, \
             version = sagas.version + 1 \
             FROM (VALUES {}) AS v WHERE sagas.id = v.column1 AND {saga_fence} RETURNING sagas.id;\n",
            keep("state", "v.column3"),
            keep("status", "v.column4"),
            keep("context", "v.column5"),
            keep("attempt", "v.column6"),
            keep("total_attempts", "v.column7"),
            keep("state_entered_at", "v.column8"),
            keep("last_error", "v.column10"),
            keep("wait_reason", "v.column11"),
            keep("definition", "v.column18"),
            keep("context_schema", "v.column19"),
            vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; statement_rows(chunk.len())]
                .join(", ")
        ));
    }
    if transaction {
        sql.push_str("COMMIT;\n");
    }
    sql
}

/// The fence values of a commit: (lease owner to write, lease end to write, owner the fence
/// expects, 1 for an operator's write).
type Fence = (Option<String>, Option<i64>, Option<String>, i64);

fn fence_of(commit: &Commit) -> Fence {
    match &commit.writer {
        Writer::Worker { owner, lease_until } => (
            lease_until.map(|_| owner.clone()),
            lease_until.map(to_millis),
            Some(owner.clone()),
            0,
        ),
        Writer::Operator => (None, None, None, 1),
    }
}

/// Binds the values of [`commits_sql`], statement by statement. Padding rows are NULL (a NULL
/// id matches no saga, and padding history rows are filtered out).
fn bind_commits<'q>(mut query: SqliteQuery<'q>, commits: &[&'q Commit]) -> SqliteQuery<'q> {
    for chunk in commits.chunks(MAX_ROWS_PER_STATEMENT / 2) {
        let events: Vec<(&Commit, &HistoryEvent)> = chunk
            .iter()
            .flat_map(|c| c.events.iter().map(move |e| (*c, e)))
            .collect();
        for part in events.chunks(MAX_ROWS_PER_STATEMENT) {
            for (order, (commit, event)) in part.iter().enumerate() {
                let (_, _, fence_owner, operator) = fence_of(commit);
                query = bind_event(query, &commit.id, commit.now, event, order)
                    .bind(commit.expected_version)
                    .bind(fence_owner)
                    .bind(operator);
            }
            for _ in part.len()..statement_rows(part.len()) {
                for _ in 0..16 {
                    query = query.bind(None::<i64>);
                }
            }
        }
        for commit in chunk {
            let (owner, lease_until, fence_owner, operator) = fence_of(commit);
            query = query.bind(&commit.id);
            query = match &commit.change {
                Change::Saga(u) => query
                    .bind(1_i64)
                    .bind(&u.state)
                    .bind(u.status.as_str())
                    .bind(&u.context)
                    .bind(i64::from(u.attempt))
                    .bind(i64::from(u.total_attempts))
                    .bind(to_millis(u.state_entered_at))
                    .bind(u.next_run_at.map(to_millis))
                    .bind(&u.last_error)
                    .bind(&u.wait_reason),
                Change::Lease { next_run_at } => {
                    let mut q = query.bind(0_i64);
                    for _ in 0..6 {
                        q = q.bind(None::<i64>);
                    }
                    q.bind(next_run_at.map(to_millis))
                        .bind(None::<String>)
                        .bind(None::<String>)
                }
            };
            let (definition, schema) = match &commit.change {
                Change::Saga(u) => (
                    Some(i64::from(u.definition)),
                    Some(i64::from(u.context_schema)),
                ),
                Change::Lease { .. } => (None, None),
            };
            query = query
                .bind(owner)
                .bind(lease_until)
                .bind(to_millis(commit.now))
                .bind(commit.expected_version)
                .bind(fence_owner)
                .bind(operator)
                .bind(definition)
                .bind(schema);
        }
        for _ in chunk.len()..statement_rows(chunk.len()) {
            for _ in 0..19 {
                query = query.bind(None::<i64>);
            }
        }
    }
    query
}

/// Applies many fenced commits (of distinct sagas) with [`commits_sql`]; inside a transaction
/// the caller opened, or (`transaction`) as one of its own. Each commit's answer is its new
/// version, or `Fenced` if its row did not match.
pub(super) async fn apply_commits(
    conn: &mut SqliteConnection,
    commits: &[&Commit],
    transaction: bool,
) -> Result<Vec<Result<i64, StoreError>>, StoreError> {
    let sql = commits_sql(commits, transaction);
    let rows = bind_commits(sqlx::query(&sql), commits)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error)?;
    let mut updated = std::collections::HashSet::with_capacity(rows.len());
    for row in rows {
        updated.insert(row.try_get::<String, _>(0).map_err(db_error)?);
    }
    Ok(commits
        .iter()
        .map(|c| {
            if updated.contains(&c.id) {
                Ok(c.expected_version + 1)
            } else {
                Err(StoreError::Fenced {
                    id: c.id.clone(),
                    expected: c.expected_version,
                })
            }
        })
        .collect())
}

/// Inserts history rows in order, [`MAX_ROWS_PER_STATEMENT`] to a statement (SQLite caps the
/// variables of one statement). The statement's row count is padded like the commits' (see
/// [`statement_rows`]); padding rows have a NULL saga id and are filtered out, and the last
/// column keeps the rows in the order given.
async fn insert_history(
    conn: &mut SqliteConnection,
    rows: &[(&str, DateTime<Utc>, &HistoryEvent)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(MAX_ROWS_PER_STATEMENT) {
        let padded = statement_rows(chunk.len());
        let sql = format!(
            "INSERT INTO history (saga_id, at, kind, state, to_state, call, http_status, latency_ms, request_id, \
             error_class, error, detail) \
             SELECT column1, column2, column3, column4, column5, column6, column7, column8, column9, column10, \
             column11, column12 FROM (VALUES {}) WHERE column1 IS NOT NULL ORDER BY column13",
            vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; padded].join(", ")
        );
        let mut query = sqlx::query(&sql);
        for (order, (saga_id, at, event)) in chunk.iter().enumerate() {
            query = bind_event(query, saga_id, *at, event, order);
        }
        for _ in chunk.len()..padded {
            for _ in 0..13 {
                query = query.bind(None::<i64>);
            }
        }
        query.execute(&mut *conn).await.map_err(db_error)?;
    }
    Ok(())
}

/// Binds a history row's thirteen values: the row, then its place in the statement.
fn bind_event<'q>(
    query: SqliteQuery<'q>,
    saga_id: &'q str,
    at: DateTime<Utc>,
    event: &'q HistoryEvent,
    order: usize,
) -> SqliteQuery<'q> {
    let attempt = event.attempt.as_ref();
    query
        .bind(saga_id)
        .bind(to_millis(at))
        .bind(event.kind.map_or("transition", EventKind::as_str))
        .bind(event.state.as_deref())
        .bind(event.to_state.as_deref())
        .bind(attempt.map(|a| a.call.as_str()))
        .bind(attempt.and_then(|a| a.http_status).map(i64::from))
        .bind(attempt.map(|a| i64::try_from(a.latency_ms).unwrap_or(i64::MAX)))
        .bind(attempt.and_then(|a| a.request_id.as_deref()))
        .bind(attempt.and_then(|a| a.error_class.as_deref()))
        .bind(attempt.and_then(|a| a.error.as_deref()))
        .bind(event.detail.as_deref())
        .bind(i64::try_from(order).unwrap_or(i64::MAX))
}

impl Store for SqliteStore {
    fn scoped(&self, workflow: &'static str) -> Self {
        Self {
            scope: Some(Arc::from(workflow)),
            ..self.clone()
        }
    }

    async fn insert(&self, saga: NewSaga, event: HistoryEvent) -> Result<Inserted, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(WriteOp::Insert { saga, event, reply }, rx).await
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
        let (reply, rx) = oneshot::channel();
        self.send(
            WriteOp::Claim {
                workflow: self.scope.clone(),
                owner: owner.to_owned(),
                avoid,
                per_customer,
                now,
                lease_until,
                limit,
                reply,
            },
            rx,
        )
        .await
    }

    async fn commit(&self, commit: Commit) -> Result<i64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(WriteOp::Commit { commit, reply }, rx).await
    }

    async fn get(&self, id: &str) -> Result<Option<SagaRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {SAGA_COLUMNS} FROM sagas WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.readers)
            .await
            .map_err(db_error)?;
        row.as_ref().map(saga_from_row).transpose()
    }

    async fn ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        // A range on the primary key's index: every id that starts with `prefix` sorts between
        // it and `prefix` followed by the highest character.
        let rows =
            sqlx::query("SELECT id FROM sagas WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3")
                .bind(prefix)
                .bind(format!("{prefix}\u{10FFFF}"))
                .bind(i64::from(limit))
                .fetch_all(&self.readers)
                .await
                .map_err(db_error)?;
        rows.iter()
            .map(|row| row.try_get::<String, _>(0).map_err(db_error))
            .collect()
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>, StoreError> {
        let (predicate, binds) = list_predicate(filter);
        let sql = format!(
            "SELECT {SAGA_COLUMNS} FROM sagas {predicate} ORDER BY created_at DESC, id DESC LIMIT ?"
        );
        let mut query = sqlx::query(&sql);
        for bind in &binds {
            query = bind.apply(query);
        }
        let rows = query
            .bind(i64::from(if filter.limit == 0 {
                u32::MAX
            } else {
                filter.limit
            }))
            .fetch_all(&self.readers)
            .await
            .map_err(db_error)?;
        rows.iter().map(saga_from_row).collect()
    }

    async fn count(&self, filter: &ListFilter, cap: u64) -> Result<u64, StoreError> {
        let (predicate, binds) = list_predicate(filter);
        let sql = format!("SELECT COUNT(*) FROM (SELECT 1 FROM sagas {predicate} LIMIT ?)");
        let mut query = sqlx::query(&sql);
        for bind in &binds {
            query = bind.apply(query);
        }
        let n: i64 = query
            .bind(i64::try_from(cap).unwrap_or(i64::MAX))
            .fetch_one(&self.readers)
            .await
            .map_err(db_error)?
            .try_get(0)
            .map_err(db_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn history(&self, id: &str) -> Result<Vec<HistoryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, saga_id, at, kind, state, to_state, call, http_status, latency_ms, request_id, error_class, \
             error, detail FROM history WHERE saga_id = ? ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.readers)
        .await
        .map_err(db_error)?;
        rows.iter().map(super::rows::history).collect()
    }

    async fn next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        let sql = match self.scope {
            Some(_) => {
                "SELECT MIN(next_run_at) FROM sagas INDEXED BY sagas_due_by_workflow \
                        WHERE workflow = ?1 AND next_run_at IS NOT NULL"
            }
            None => "SELECT MIN(next_run_at) FROM sagas WHERE next_run_at IS NOT NULL",
        };
        let row = sqlx::query(sql)
            .bind(self.scope.as_deref().unwrap_or(""))
            .fetch_one(&self.readers)
            .await
            .map_err(db_error)?;
        Ok(row
            .try_get::<Option<i64>, _>(0)
            .map_err(db_error)?
            .map(from_millis))
    }

    async fn count_by_status(&self) -> Result<BTreeMap<SagaStatus, u64>, StoreError> {
        let sql = match self.scope {
            Some(_) => "SELECT status, COUNT(*) FROM sagas WHERE workflow = ?1 GROUP BY status",
            None => "SELECT status, COUNT(*) FROM sagas WHERE ?1 = ?1 GROUP BY status",
        };
        let rows = sqlx::query(sql)
            .bind(self.scope.as_deref().unwrap_or(""))
            .fetch_all(&self.readers)
            .await
            .map_err(db_error)?;
        let mut out = BTreeMap::new();
        for row in rows {
            let status: String = row.try_get(0).map_err(db_error)?;
            let count: i64 = row.try_get(1).map_err(db_error)?;
            if let Some(status) = SagaStatus::parse(&status) {
                out.insert(status, u64::try_from(count).unwrap_or(0));
            }
        }
        Ok(out)
    }

    async fn count_active_by_state(
        &self,
        now: DateTime<Utc>,
    ) -> Result<BTreeMap<String, (u64, u64)>, StoreError> {
        let scoped = if self.scope.is_some() {
            "AND workflow = ?2"
        } else {
            "AND ?2 = ?2"
        };
        let sql = format!(
            "SELECT state, COUNT(*), SUM(CASE WHEN next_run_at <= ?1 THEN 1 ELSE 0 END) \
             FROM sagas WHERE status = 'active' {scoped} GROUP BY state"
        );
        let rows = sqlx::query(&sql)
            .bind(to_millis(now))
            .bind(self.scope.as_deref().unwrap_or(""))
            .fetch_all(&self.readers)
            .await
            .map_err(db_error)?;
        let mut out = BTreeMap::new();
        for row in rows {
            let state: String = row.try_get(0).map_err(db_error)?;
            let count: i64 = row.try_get(1).map_err(db_error)?;
            let due: i64 = row
                .try_get::<Option<i64>, _>(2)
                .map_err(db_error)?
                .unwrap_or(0);
            out.insert(
                state,
                (
                    u64::try_from(count).unwrap_or(0),
                    u64::try_from(due).unwrap_or(0),
                ),
            );
        }
        Ok(out)
    }
}

/// A value bound to a list query.
enum Bind {
    Text(String),
    Millis(i64),
}

impl Bind {
    fn apply<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        match self {
            Self::Text(t) => query.bind(t.clone()),
            Self::Millis(m) => query.bind(*m),
        }
    }
}

/// The WHERE clause of `list`: only the filters given, so that the planner can use the index
/// of each (`(?1 IS NULL OR status = ?1)` defeats every index and scans the table). With
/// `ORDER BY created_at DESC` each filter's index (status, state or customer, then
/// created_at; or created_at alone) serves the order too.
fn list_predicate(filter: &ListFilter) -> (String, Vec<Bind>) {
    let mut clauses = Vec::new();
    let mut binds = Vec::new();
    if let Some(workflow) = &filter.workflow {
        clauses.push("workflow = ?".to_owned());
        binds.push(Bind::Text(workflow.clone()));
    }
    if let Some(status) = filter.status {
        clauses.push("status = ?".to_owned());
        binds.push(Bind::Text(status.as_str().to_owned()));
    }
    if let Some(state) = &filter.state {
        clauses.push("state = ?".to_owned());
        binds.push(Bind::Text(state.clone()));
    }
    if let Some(customer) = &filter.customer_id {
        clauses.push("customer_id = ?".to_owned());
        binds.push(Bind::Text(customer.clone()));
    }
    if let Some(after) = filter.created_after {
        clauses.push("created_at >= ?".to_owned());
        binds.push(Bind::Millis(to_millis(after)));
    }
    if let Some(stuck) = &filter.stuck {
        if filter.status.is_none() {
            clauses.push("status = 'active'".to_owned());
        }
        let mut case = String::from("attempt > 0");
        if !stuck.is_empty() {
            case.push_str(" OR state_entered_at < CASE state");
            for (state, before) in stuck {
                case.push_str(" WHEN ? THEN ?");
                binds.push(Bind::Text(state.clone()));
                binds.push(Bind::Millis(to_millis(*before)));
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

/// The query plan SQLite chooses for `list` with `filter` (for the store tests that pin the
/// index each filter uses).
pub async fn list_plan(store: &SqliteStore, filter: &ListFilter) -> Result<String, StoreError> {
    let (predicate, binds) = list_predicate(filter);
    let sql = format!(
        "EXPLAIN QUERY PLAN SELECT {SAGA_COLUMNS} FROM sagas {predicate} ORDER BY created_at DESC, id DESC LIMIT ?"
    );
    let mut query = sqlx::query(&sql);
    for bind in &binds {
        query = bind.apply(query);
    }
    let rows = query
        .bind(1000_i64)
        .fetch_all(&store.readers)
        .await
        .map_err(db_error)?;
    Ok(rows
        .iter()
        .filter_map(|r| r.try_get::<String, _>("detail").ok())
        .collect::<Vec<_>>()
        .join("; "))
}

impl SqliteStore {
    /// Runs one checkpoint now, as the background checkpointer does every
    /// [`CHECKPOINT_EVERY`]: copies committed pages from the WAL into the database file.
    pub async fn checkpoint(&self) -> Result<Checkpointed, StoreError> {
        let mut conn = self.maintenance_connection().await?;
        let done = checkpoint(&mut conn).await;
        let _ = conn.close().await;
        done
    }

    /// A writable connection of its own, for maintenance outside the writer.
    pub(super) async fn maintenance_connection(&self) -> Result<SqliteConnection, StoreError> {
        let options = self.readers.connect_options();
        options
            .as_ref()
            .clone()
            .read_only(false)
            .connect()
            .await
            .map_err(db_error)
    }

    /// Benchmarks only: fills an empty database with `n` sagas shaped like a partner's book
    /// (statuses 85% succeeded, 7% failed, 3% parked, 5% active; every state; 2,000 customers;
    /// created over 90 days before `now`), each with two history rows, in one transaction.
    pub async fn bench_populate(
        &self,
        n: u64,
        now: DateTime<Utc>,
        context: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.maintenance_connection().await?;
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let now = to_millis(now);
        let day = 86_400_000_i64;
        let mut tx = conn.begin().await.map_err(db_error)?;
        sqlx::query(
            "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1) \
             INSERT INTO sagas (id, workflow, idempotency_key, state, status, context, input, customer_id, \
               attempt, total_attempts, state_entered_at, next_run_at, version, created_at, updated_at, last_error, wait_reason) \
             SELECT printf('%08x-0000-7000-8000-%012x', i / 65536, i), 'one-time-purchase', 'bench-' || i, \
               CASE i % 8 WHEN 0 THEN 'Enablement' WHEN 1 THEN 'RegistrationPolling' WHEN 2 THEN 'Discovery' \
                 WHEN 3 THEN 'InventoryCheck' WHEN 4 THEN 'CartBuild' WHEN 5 THEN 'Checkout' \
                 WHEN 6 THEN 'OrderVisibilityPolling' ELSE 'EntitlementFetch' END, \
               CASE WHEN i % 100 < 85 THEN 'succeeded' WHEN i % 100 < 92 THEN 'failed' \
                 WHEN i % 100 < 95 THEN 'needs_attention' ELSE 'active' END, \
               ?2, '{}', printf('%08x-0000-4000-8000-%012x', i % 2000, i % 2000), \
               i % 3, 5 + i % 7, ?3 - (?1 - i) * (?4 * 90 / ?1), \
               CASE WHEN i % 100 >= 95 THEN ?3 + (i % 600) * 1000 END, 3, ?3 - (?1 - i) * (?4 * 90 / ?1), \
               ?3 - (?1 - i) * (?4 * 90 / ?1), \
               CASE WHEN i % 100 >= 85 AND i % 100 < 95 THEN 'HTTP 400 code 800002: Invalid request input' END, \
               CASE WHEN i % 100 >= 95 THEN 'retry 1 of 11' END \
             FROM k",
        )
        .bind(n)
        .bind(context)
        .bind(now)
        .bind(day)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query(
            "INSERT INTO history (saga_id, at, kind, state, to_state, detail) \
             SELECT id, created_at, 'submitted', 'Enablement', NULL, 'bench' FROM sagas \
             UNION ALL SELECT id, updated_at, 'transition', state, status, 'bench' FROM sagas",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        let _ = conn.close().await;
        Ok(())
    }

    /// Moves every active saga's next run to `until` (a maintenance operation: pause the
    /// queue; the benchmark uses it to park a backlog). Returns how many moved.
    pub async fn defer_all(&self, until: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut conn = self.maintenance_connection().await?;
        let result = sqlx::query("UPDATE sagas SET next_run_at = ? WHERE status = 'active'")
            .bind(to_millis(until))
            .execute(&mut conn)
            .await
            .map_err(db_error)?;
        let _ = conn.close().await;
        Ok(result.rows_affected())
    }
}
