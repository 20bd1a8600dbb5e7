//! `pcsaga migrate --from sqlite:PATH --to postgres://…`: moves a SQLite database's sagas and
//! their whole history to an empty PostgreSQL database, verified, leaving the file untouched.
//!
//! Refused while any lease is live (a daemon is working on the file: stop the daemons first),
//! and into a database that already holds sagas. Rows are streamed from the file (opened
//! read-only) and written in transactions of [`CHUNK`] sagas with their history; then both sides
//! are counted and checksummed (SHA-256 over every saga's id, version, state, status and
//! context, and every history row, in id and sequence order) and must agree. The billing
//! tables (statuses, reports, sources and the lines that prove them) follow, each verified by
//! its row count, so reconciliation goes on where it stood.

use std::path::PathBuf;
use std::str::FromStr;

use futures_util::TryStreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{ConnectOptions, Row};

use crate::config::ConfigError;
use crate::exit::{Exit, Failed};
use crate::output::{print, print_json};

/// Sagas per PostgreSQL transaction.
const CHUNK: usize = 500;

const SAGA_COLUMNS: &str = "id, workflow, idempotency_key, state, status, context, input, customer_id, attempt, \
     total_attempts, state_entered_at, next_run_at, lease_owner, lease_expires_at, version, created_at, \
     updated_at, last_error, wait_reason, definition, context_schema";

const HISTORY_COLUMNS: &str =
    "seq, saga_id, at, kind, state, to_state, call, http_status, latency_ms, \
     request_id, error_class, error, detail";

fn bad(text: String) -> Failed {
    Failed::new(Exit::InvalidInput, ConfigError(text))
}

fn db(e: impl std::fmt::Display) -> Failed {
    Failed::new(Exit::Database, anyhow::anyhow!("{e}"))
}

pub async fn run(from: &str, to: &str, json_out: bool) -> Result<Exit, Failed> {
    let Some(path) = from.strip_prefix("sqlite:") else {
        return Err(bad(format!(
            "--from {from:?}: give the SQLite file as sqlite:PATH, e.g. --from sqlite:pcsaga.db"
        )));
    };
    if !pcsaga_engine::is_postgres_url(to) {
        return Err(bad(format!(
            "--to {:?}: give the PostgreSQL database as postgres://USER@HOST:PORT/DATABASE",
            pcsaga_engine::store::postgres::redact(to)
        )));
    }
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(Failed::new(
            Exit::Database,
            anyhow::anyhow!("no pcsaga database at {}; check --from", path.display()),
        ));
    }
    // The source is opened read-only: nothing about the file changes.
    let source = {
        let store = pcsaga_engine::SqliteStore::open(pcsaga_engine::SqliteConfig {
            read_only: true,
            ..pcsaga_engine::SqliteConfig::new(&path)
        })
        .await?;
        drop(store); // only to check the schema is this binary's
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db)?
            .read_only(true)
            .disable_statement_logging();
        SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(db)?
    };
    let now = chrono::Utc::now().timestamp_millis();
    let live: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sagas WHERE lease_owner IS NOT NULL AND lease_expires_at > ?",
    )
    .bind(now)
    .fetch_one(&source)
    .await
    .map_err(db)?;
    if live > 0 {
        return Err(Failed::new(
            Exit::Refused,
            anyhow::anyhow!(
                "refused: {live} purchase(s) in {} are leased by a running daemon; stop every daemon on it (SIGTERM gives the leases back), then run this again",
                path.display()
            ),
        ));
    }
    let target = pcsaga_engine::PgStore::connect(pcsaga_engine::PgConfig::new(to)).await?;
    let pool = target.pool().clone();
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sagas")
        .fetch_one(&pool)
        .await
        .map_err(db)?;
    if existing > 0 {
        return Err(Failed::new(
            Exit::Refused,
            anyhow::anyhow!(
                "refused: the PostgreSQL database already holds {existing} saga(s); move into an empty database"
            ),
        ));
    }
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sagas")
        .fetch_one(&source)
        .await
        .map_err(db)?;
    say!(
        "moving {total} saga(s) and their history from {} ...",
        path.display()
    );
    let (sagas, history) = copy(&source, &pool, total).await?;
    // The sequence continues after the copied history.
    sqlx::query("SELECT setval(pg_get_serial_sequence('history', 'seq'), GREATEST((SELECT MAX(seq) FROM history), 1))")
        .execute(&pool)
        .await
        .map_err(db)?;
    let billing = copy_billing(&source, &pool).await?;
    let before = checksums(&source_rows(&source), "SQLite").await?;
    let after = checksums(&target_rows(&pool), "PostgreSQL").await?;
    if before != after || before.0 != sagas || before.1 != history {
        return Err(Failed::new(
            Exit::Database,
            anyhow::anyhow!(
                "the copy does not match the file (SQLite: {} sagas, {} history rows, {}; PostgreSQL: {} sagas, {} history rows, {}); the file is untouched: drop the PostgreSQL database's tables and run this again",
                before.0, before.1, before.2, after.0, after.1, after.2
            ),
        ));
    }
    if json_out {
        print_json(
            &json!({"from": path, "to": pcsaga_engine::store::postgres::redact(to), "sagas": sagas, "history": history, "sha256": after.2, "billing": billing.iter().map(|(t, n)| (t.to_string(), json!(n))).collect::<serde_json::Map<_, _>>()}),
        );
    } else {
        let billing = billing
            .iter()
            .map(|(table, n)| format!("{n} {table}"))
            .collect::<Vec<_>>()
            .join(", ");
        print(&format!(
            "moved {sagas} saga(s) and {history} history row(s) to {}; counts and checksums agree (sha256 {}); billing rows, counts agreeing: {billing}; {} is untouched. Start the daemons with --db {}\n",
            pcsaga_engine::store::postgres::redact(to),
            after.2,
            path.display(),
            pcsaga_engine::store::postgres::redact(to)
        ));
    }
    Ok(Exit::Ok)
}

/// Copies every saga (in id order) with its history, [`CHUNK`] sagas per transaction.
async fn copy(
    source: &sqlx::SqlitePool,
    target: &sqlx::PgPool,
    total: i64,
) -> Result<(u64, u64), Failed> {
    let mut sagas = 0_u64;
    let mut history = 0_u64;
    let mut after = String::new();
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {SAGA_COLUMNS} FROM sagas WHERE id > ? ORDER BY id LIMIT {CHUNK}"
        ))
        .bind(&after)
        .fetch_all(source)
        .await
        .map_err(db)?;
        let Some(last) = rows.last() else {
            return Ok((sagas, history));
        };
        after = last.try_get("id").map_err(db)?;
        let mut tx = target.begin().await.map_err(db)?;
        for row in &rows {
            let text = |c: &str| row.try_get::<Option<String>, _>(c);
            let int = |c: &str| row.try_get::<Option<i64>, _>(c);
            sqlx::query(&format!(
                "INSERT INTO sagas ({SAGA_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
            ))
            .bind(text("id").map_err(db)?)
            .bind(text("workflow").map_err(db)?)
            .bind(text("idempotency_key").map_err(db)?)
            .bind(text("state").map_err(db)?)
            .bind(text("status").map_err(db)?)
            .bind(text("context").map_err(db)?)
            .bind(text("input").map_err(db)?)
            .bind(text("customer_id").map_err(db)?)
            .bind(int("attempt").map_err(db)?)
            .bind(int("total_attempts").map_err(db)?)
            .bind(int("state_entered_at").map_err(db)?)
            .bind(int("next_run_at").map_err(db)?)
            .bind(text("lease_owner").map_err(db)?)
            .bind(int("lease_expires_at").map_err(db)?)
            .bind(int("version").map_err(db)?)
            .bind(int("created_at").map_err(db)?)
            .bind(int("updated_at").map_err(db)?)
            .bind(text("last_error").map_err(db)?)
            .bind(text("wait_reason").map_err(db)?)
            .bind(int("definition").map_err(db)?)
            .bind(int("context_schema").map_err(db)?)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            let id: String = row.try_get("id").map_err(db)?;
            let events = sqlx::query(&format!(
                "SELECT {HISTORY_COLUMNS} FROM history WHERE saga_id = ? ORDER BY seq"
            ))
            .bind(&id)
            .fetch_all(source)
            .await
            .map_err(db)?;
            for e in &events {
                let text = |c: &str| e.try_get::<Option<String>, _>(c);
                let int = |c: &str| e.try_get::<Option<i64>, _>(c);
                sqlx::query(&format!(
                    "INSERT INTO history ({HISTORY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                ))
                .bind(int("seq").map_err(db)?)
                .bind(text("saga_id").map_err(db)?)
                .bind(int("at").map_err(db)?)
                .bind(text("kind").map_err(db)?)
                .bind(text("state").map_err(db)?)
                .bind(text("to_state").map_err(db)?)
                .bind(text("call").map_err(db)?)
                .bind(int("http_status").map_err(db)?)
                .bind(int("latency_ms").map_err(db)?)
                .bind(text("request_id").map_err(db)?)
                .bind(text("error_class").map_err(db)?)
                .bind(text("error").map_err(db)?)
                .bind(text("detail").map_err(db)?)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            history += events.len() as u64;
        }
        tx.commit().await.map_err(db)?;
        sagas += rows.len() as u64;
        say!("  {sagas} of {total} saga(s), {history} history row(s)");
    }
}

/// How a billing column is read from SQLite and bound for PostgreSQL.
#[derive(Clone, Copy)]
enum Column {
    Text,
    Int,
    /// 0 or 1 in SQLite, BOOLEAN in PostgreSQL.
    Flag,
}

/// The billing tables and their columns, in the order a run writes them.
const BILLING_TABLES: &[(&str, &[(&str, Column)])] = &[
    (
        "billing_sources",
        &[
            ("source", Column::Text),
            ("run_id", Column::Text),
            ("complete", Column::Flag),
            ("problem", Column::Text),
            ("lines", Column::Int),
            ("facts", Column::Text),
            ("read_at", Column::Int),
        ],
    ),
    (
        "billing_lines",
        &[
            ("source", Column::Text),
            ("run_id", Column::Text),
            ("seq", Column::Int),
            ("order_id", Column::Text),
            ("alternate_id", Column::Text),
            ("customer_id", Column::Text),
            ("bad", Column::Text),
            ("line", Column::Text),
        ],
    ),
    (
        "billing_status",
        &[
            ("purchase_id", Column::Text),
            ("status", Column::Text),
            ("final", Column::Flag),
            ("run_id", Column::Text),
            ("customer_id", Column::Text),
            ("currency", Column::Text),
            ("detail", Column::Text),
            ("updated_at", Column::Int),
        ],
    ),
    (
        "billing_runs",
        &[
            ("run_id", Column::Text),
            ("period", Column::Text),
            ("report", Column::Text),
            ("finished_at", Column::Int),
        ],
    ),
];

/// Copies the billing tables whole, streamed, [`CHUNK`] rows per transaction; each table's
/// row count must then agree. Returns (table, rows) per table.
async fn copy_billing(
    source: &sqlx::SqlitePool,
    target: &sqlx::PgPool,
) -> Result<Vec<(&'static str, u64)>, Failed> {
    let mut out = Vec::new();
    for (table, columns) in BILLING_TABLES {
        let names = columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ");
        let params = (1..=columns.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let insert = format!("INSERT INTO {table} ({names}) VALUES ({params})");
        let select = format!("SELECT {names} FROM {table}");
        let mut rows = sqlx::query(&select).fetch(source);
        let mut copied = 0_u64;
        let mut tx = target.begin().await.map_err(db)?;
        while let Some(row) = rows.try_next().await.map_err(db)? {
            let mut query = sqlx::query(&insert);
            for (name, kind) in columns.iter() {
                query = match kind {
                    Column::Text => {
                        query.bind(row.try_get::<Option<String>, _>(*name).map_err(db)?)
                    }
                    Column::Int => query.bind(row.try_get::<Option<i64>, _>(*name).map_err(db)?),
                    Column::Flag => query.bind(
                        row.try_get::<Option<i64>, _>(*name)
                            .map_err(db)?
                            .map(|v| v != 0),
                    ),
                };
            }
            query.execute(&mut *tx).await.map_err(db)?;
            copied += 1;
            if copied % CHUNK as u64 == 0 {
                tx.commit().await.map_err(db)?;
                tx = target.begin().await.map_err(db)?;
                say!("  {copied} {table} row(s)");
            }
        }
        tx.commit().await.map_err(db)?;
        let count = format!("SELECT COUNT(*) FROM {table}");
        let there: i64 = sqlx::query_scalar(&count)
            .fetch_one(target)
            .await
            .map_err(db)?;
        let here: i64 = sqlx::query_scalar(&count)
            .fetch_one(source)
            .await
            .map_err(db)?;
        if u64::try_from(there).ok() != Some(copied) || there != here {
            return Err(Failed::new(
                Exit::Database,
                anyhow::anyhow!(
                    "the copy of {table} does not match the file ({here} rows in SQLite, {there} in PostgreSQL); the file is untouched: drop the PostgreSQL database's tables and run this again"
                ),
            ));
        }
        out.push((*table, copied));
    }
    Ok(out)
}

const SUM_SAGAS: &str = "SELECT id, version, state, status, context FROM sagas ORDER BY id";
const SUM_HISTORY: &str =
    "SELECT seq, saga_id, at, kind, COALESCE(detail, '') AS detail FROM history ORDER BY seq";

enum Rows<'a> {
    Sqlite(&'a sqlx::SqlitePool),
    Postgres(&'a sqlx::PgPool),
}

fn source_rows(pool: &sqlx::SqlitePool) -> Rows<'_> {
    Rows::Sqlite(pool)
}

fn target_rows(pool: &sqlx::PgPool) -> Rows<'_> {
    Rows::Postgres(pool)
}

/// (sagas, history rows, SHA-256) of one side, streamed.
async fn checksums(rows: &Rows<'_>, side: &str) -> Result<(u64, u64, String), Failed> {
    let mut hash = Sha256::new();
    let mut sagas = 0_u64;
    let mut history = 0_u64;
    let fail = |e: sqlx::Error| db(format!("checksumming {side}: {e}"));
    macro_rules! each {
        ($pool:expr, $sql:expr, |$row:ident| $body:block) => {{
            let mut stream = sqlx::query($sql).fetch($pool);
            while let Some($row) = stream.try_next().await.map_err(fail)? $body
        }};
    }
    match rows {
        Rows::Sqlite(pool) => {
            each!(*pool, SUM_SAGAS, |r| {
                sagas += 1;
                saga_line(
                    &mut hash,
                    r.try_get(0),
                    r.try_get(1),
                    r.try_get(2),
                    r.try_get(3),
                    r.try_get(4),
                )
                .map_err(fail)?;
            });
            each!(*pool, SUM_HISTORY, |r| {
                history += 1;
                history_line(
                    &mut hash,
                    r.try_get(0),
                    r.try_get(1),
                    r.try_get(2),
                    r.try_get(3),
                    r.try_get(4),
                )
                .map_err(fail)?;
            });
        }
        Rows::Postgres(pool) => {
            each!(*pool, SUM_SAGAS, |r| {
                sagas += 1;
                saga_line(
                    &mut hash,
                    r.try_get(0),
                    r.try_get(1),
                    r.try_get(2),
                    r.try_get(3),
                    r.try_get(4),
                )
                .map_err(fail)?;
            });
            each!(*pool, SUM_HISTORY, |r| {
                history += 1;
                history_line(
                    &mut hash,
                    r.try_get(0),
                    r.try_get(1),
                    r.try_get(2),
                    r.try_get(3),
                    r.try_get(4),
                )
                .map_err(fail)?;
            });
        }
    }
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((sagas, history, digest))
}

type Got<T> = Result<T, sqlx::Error>;

fn saga_line(
    hash: &mut Sha256,
    id: Got<String>,
    version: Got<i64>,
    state: Got<String>,
    status: Got<String>,
    context: Got<String>,
) -> Result<(), sqlx::Error> {
    hash.update(format!(
        "s\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1e}",
        id?, version?, state?, status?, context?
    ));
    Ok(())
}

fn history_line(
    hash: &mut Sha256,
    seq: Got<i64>,
    saga: Got<String>,
    at: Got<i64>,
    kind: Got<String>,
    detail: Got<String>,
) -> Result<(), sqlx::Error> {
    hash.update(format!(
        "h\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1e}",
        seq?, saga?, at?, kind?, detail?
    ));
    Ok(())
}
