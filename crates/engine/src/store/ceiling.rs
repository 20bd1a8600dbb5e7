//! Benchmarks only: what this machine's disk allows, measured with the engine's settings, so
//! `pcsaga bench` can print every engine figure as a ratio to it (BENCHMARKS.md).
//!
//! Three ceilings, from the disk up to the engine's own statements:
//! 1. single-row commits per second (one fsync each);
//! 2. rows per second when one multi-row `INSERT` of ~300-byte rows is committed at a time, as
//!    the engine issues its statements;
//! 3. transitions per second of the engine's exact batch SQL (the fenced history `INSERT` and
//!    `UPDATE … FROM (VALUES …)` of the real schema, in one call with `BEGIN IMMEDIATE` and
//!    `COMMIT`) on a connection of the store's, with no engine around it.

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection, SqliteConnection};

use super::sqlite::{apply_commits, db_error, Durability, SqliteStore};
use super::{Change, Commit, EventKind, HistoryEvent, SagaUpdate, Store, StoreError, Writer};

/// Ceilings 1 and 2 on a scratch file: (single-row commits/s, rows/s at `rows` per commit).
pub async fn raw_ceiling(
    path: &Path,
    durability: Durability,
    commits: u32,
    rows: u32,
) -> Result<(f64, f64), StoreError> {
    let display = path.display().to_string();
    let open = |e: sqlx::Error| StoreError::Open {
        path: display.clone(),
        reason: e.to_string(),
    };
    let mut conn = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .map_err(open)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(match durability {
            Durability::Full => SqliteSynchronous::Full,
            Durability::Normal => SqliteSynchronous::Normal,
        })
        .disable_statement_logging()
        .connect()
        .await
        .map_err(open)?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, saga TEXT NOT NULL, body TEXT NOT NULL); \
         CREATE INDEX IF NOT EXISTS raw_saga ON raw (saga)",
    )
    .execute(&mut conn)
    .await
    .map_err(db_error)?;
    let single = timed_commits(&mut conn, commits, 1).await?;
    let batched = timed_commits(&mut conn, commits, rows.max(1)).await?;
    let _ = conn.close().await;
    Ok((single, batched))
}

/// Runs `commits` transactions, each one `INSERT` of `rows` ~300-byte rows into a table with
/// one index, `BEGIN IMMEDIATE` to `COMMIT` in one call; returns rows per second.
async fn timed_commits(
    conn: &mut SqliteConnection,
    commits: u32,
    rows: u32,
) -> Result<f64, StoreError> {
    let body = "x".repeat(264);
    let sql = format!(
        "BEGIN IMMEDIATE; INSERT INTO raw (saga, body) VALUES {}; COMMIT;",
        vec!["(?, ?)"; rows as usize].join(", ")
    );
    let started = Instant::now();
    for commit in 0..commits {
        let mut query = sqlx::query(&sql);
        for row in 0..rows {
            query = query
                .bind(format!("{:032x}", u64::from(commit) << 32 | u64::from(row)))
                .bind(&body);
        }
        query.execute(&mut *conn).await.map_err(db_error)?;
    }
    Ok(f64::from(commits * rows) / started.elapsed().as_secs_f64())
}

/// Ceiling 3: claims up to `batch` due sagas of `store` (submitted by the caller) for `owner`,
/// then commits `rounds` steps of each, a batch at a time, with the engine's batch SQL on a
/// connection of the store's: contexts of the bench's no-op workflow, one transition row per
/// step and an intent row on three steps of eight, as the engine writes them, moving through
/// `states` in turn. Returns transitions per second, counting only the time in SQLite.
pub async fn engine_sql_ceiling(
    store: &SqliteStore,
    owner: &str,
    batch: u32,
    rounds: u32,
    now: DateTime<Utc>,
    states: &[&str],
) -> Result<f64, StoreError> {
    let lease_until = now + chrono::Duration::minutes(10);
    let mut sagas = store.claim_due(owner, now, lease_until, batch).await?;
    let mut conn = store.maintenance_connection().await?;
    let mut in_sqlite = Duration::ZERO;
    let mut transitions = 0_u64;
    for round in 0..rounds {
        let commits: Vec<Commit> = sagas
            .iter()
            .map(|saga| step(saga, owner, (round, states), lease_until, now))
            .collect();
        let refs: Vec<&Commit> = commits.iter().collect();
        let started = Instant::now();
        let results = apply_commits(&mut conn, &refs, true).await?;
        in_sqlite += started.elapsed();
        for (saga, result) in sagas.iter_mut().zip(results) {
            saga.version = result?;
            transitions += 1;
        }
    }
    let _ = conn.close().await;
    Ok(transitions as f64 / in_sqlite.as_secs_f64().max(1e-9))
}

/// One step of the no-op workflow, as the engine would commit it.
fn step(
    saga: &super::SagaRecord,
    owner: &str,
    (round, states): (u32, &[&str]),
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Commit {
    let names = states.len().max(1);
    let name = |i: usize| states.get(i % names).copied().unwrap_or("step");
    let at = round as usize % names;
    let (from, to) = (name(at), name(at + 1));
    let mut events = vec![HistoryEvent::new(EventKind::Transition)
        .state(from)
        .to_state(to)
        .detail("noop")];
    if matches!(at % 8, 0 | 4 | 5) {
        events.push(
            HistoryEvent::new(EventKind::Intent)
                .state(to)
                .detail(format!("{}-{at}", saga.id)),
        );
    }
    Commit {
        id: saga.id.clone(),
        expected_version: saga.version,
        writer: Writer::Worker {
            owner: owner.to_owned(),
            lease_until: Some(lease_until),
        },
        now,
        change: Change::Saga(SagaUpdate {
            state: to.to_owned(),
            context: format!(
                "{{\"step\":{},\"request_id\":\"{}-{at}\"}}",
                at + 1,
                saga.id
            ),
            total_attempts: saga.total_attempts + round + 1,
            state_entered_at: now,
            next_run_at: Some(lease_until),
            ..SagaUpdate::from(saga)
        }),
        events,
    }
}
