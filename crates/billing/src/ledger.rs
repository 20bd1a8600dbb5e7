//! The billing tables (migration `20261205000001_billing.sql`, and `20261207000001_billing.sql`
//! on PostgreSQL): lines as read, sources, each purchase's billing status and each run's
//! report. The store migrates them; this module only reads and writes these tables (and reads
//! purchase rows): on SQLite through a pool of its own, on PostgreSQL through the store's.
//!
//! One SQL text serves both databases: parameters are written `$1`, `$2`, … in order of first
//! use (SQLite takes `$1` as a named parameter, numbered by first appearance, so the numbers
//! agree), upserts are `ON CONFLICT … DO UPDATE`, and the one SQLite-only phrase (`INDEXED BY`)
//! is added per database. [`on_pool!`] runs a body once per database type.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use pcsaga_partner_center::billing::{BadLine, BillingLine};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, Row};

use crate::classify::{
    OrderFacts, OrderLineFacts, PurchaseFacts, SourceFacts, StagedBad, StagedLine, Verdicts,
};
use crate::report::Report;
use crate::Error;

/// Lines per INSERT statement when staging (8 values each, well under SQLite's 32766).
const ROWS_PER_INSERT: usize = 200;

/// The billing tables of one database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Ledger {
    pool: Pool,
}

#[derive(Debug, Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the ledger's pool, typed per database: the body is
/// compiled once for SQLite and once for PostgreSQL from the same text.
macro_rules! on_pool {
    ($self:expr, $pool:ident => $body:expr) => {
        match &$self.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// One purchase's billing status as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRow {
    pub purchase_id: String,
    pub status: String,
    pub final_: bool,
    pub run_id: String,
    pub detail: serde_json::Value,
    pub updated_at: DateTime<Utc>,
}

fn db(e: sqlx::Error) -> Error {
    Error::Database(e.to_string())
}

impl Ledger {
    /// Opens the billing tables of a database the store has created and migrated.
    pub async fn open(path: &Path) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db)?
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30))
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
        })
    }

    /// The billing tables of a PostgreSQL database, on the store's pool (the store has
    /// migrated them).
    pub fn on_postgres(pool: PgPool) -> Self {
        Self {
            pool: Pool::Postgres(pool),
        }
    }

    /// Opens the billing tables to read only (`show`, `list`): nothing is written.
    pub async fn open_read_only(path: &Path) -> Result<Self, Error> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db)?
            .read_only(true)
            .busy_timeout(Duration::from_secs(30))
            .disable_statement_logging();
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(Self {
            pool: Pool::Sqlite(pool),
        })
    }

    /// Writes lines read from `source` by `run`, numbered from `first_seq`. Writing the same
    /// rows again (a resumed page) replaces them: a crash mid-read loses nothing and doubles
    /// nothing.
    pub async fn stage(
        &self,
        source: &str,
        run: &str,
        first_seq: i64,
        lines: &[Result<BillingLine, BadLine>],
    ) -> Result<(), Error> {
        // One transaction per page; rows go in statements of ROWS_PER_INSERT (one round trip
        // to the database for each, not one per line).
        on_pool!(self, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        for (chunk_index, chunk) in lines.chunks(ROWS_PER_INSERT).enumerate() {
            let mut sql = String::from(
                "INSERT INTO billing_lines \
                 (source, run_id, seq, order_id, alternate_id, customer_id, bad, line) VALUES ",
            );
            for i in 0..chunk.len() {
                let n = i * 8;
                sql.push_str(&format!(
                    "{}(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    if i == 0 { "" } else { ", " },
                    n + 1, n + 2, n + 3, n + 4, n + 5, n + 6, n + 7, n + 8
                ));
            }
            sql.push_str(
                " ON CONFLICT (source, run_id, seq) DO UPDATE SET order_id = excluded.order_id, \
                 alternate_id = excluded.alternate_id, customer_id = excluded.customer_id, \
                 bad = excluded.bad, line = excluded.line",
            );
            let mut query = sqlx::query(&sql);
            for (i, line) in chunk.iter().enumerate() {
                let seq = first_seq + (chunk_index * ROWS_PER_INSERT + i) as i64;
                let (order, alternate, customer, bad, json) = match line {
                    Ok(l) => (
                        Some(l.order_id.clone()),
                        l.alternate_id.clone(),
                        Some(l.customer_id.clone()),
                        None,
                        serde_json::to_string(l),
                    ),
                    Err(b) => (
                        b.order_id.clone(),
                        None,
                        b.customer_id.clone(),
                        Some(b.reason.clone()),
                        serde_json::to_string(b),
                    ),
                };
                let json = json.map_err(|e| Error::Database(format!("encoding a line: {e}")))?;
                query = query
                    .bind(source)
                    .bind(run)
                    .bind(seq)
                    .bind(order)
                    .bind(alternate)
                    .bind(customer)
                    .bind(bad)
                    .bind(json);
            }
            query.execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(())
        })
    }

    /// A source was read (to its end, or as far as it could be): its rows of `run` become the
    /// source's evidence and other runs' rows of it go.
    pub async fn finish_source(
        &self,
        facts: &SourceFacts,
        run: &str,
        lines: u64,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let json = serde_json::to_string(facts)
            .map_err(|e| Error::Database(format!("encoding a source: {e}")))?;
        on_pool!(self, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO billing_sources (source, run_id, complete, problem, lines, read_at, facts) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (source) DO UPDATE SET run_id = excluded.run_id, \
             complete = excluded.complete, problem = excluded.problem, lines = excluded.lines, \
             read_at = excluded.read_at, facts = excluded.facts",
        )
        .bind(&facts.key)
        .bind(run)
        .bind(facts.complete)
        .bind(&facts.problem)
        .bind(i64::try_from(lines).unwrap_or(i64::MAX))
        .bind(now.timestamp_millis())
        .bind(json)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM billing_lines WHERE source = $1 AND run_id <> $2")
            .bind(&facts.key)
            .bind(run)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
        })
    }

    /// Every purchase that has orders (succeeded, stopped for an operator, or still running
    /// with orders known), as reconciliation sees it.
    pub async fn purchases(&self) -> Result<Vec<PurchaseFacts>, Error> {
        const SQL: &str = "SELECT id, context, input, context_schema FROM sagas \
             WHERE workflow = $1 AND status IN ('succeeded', 'needs_attention', 'active') ORDER BY id";
        let rows: Vec<(String, String, String, i64)> = on_pool!(self, pool => {
            let rows = sqlx::query(SQL)
                .bind(pcsaga_purchase::WORKFLOW_NAME)
                .fetch_all(pool)
                .await
                .map_err(db)?;
            rows.iter()
                .map(|row| -> Result<_, Error> {
                    Ok((
                        row.try_get("id").map_err(db)?,
                        row.try_get("context").map_err(db)?,
                        row.try_get("input").map_err(db)?,
                        row.try_get("context_schema").map_err(db)?,
                    ))
                })
                .collect::<Result<Vec<_>, Error>>()?
        });
        let mut out = Vec::new();
        for (id, context, input, schema) in rows {
            let decoded = match pcsaga_purchase::context::decode(
                u32::try_from(schema).unwrap_or(u32::MAX),
                &context,
                &input,
            ) {
                Ok(decoded) => decoded,
                Err(why) => {
                    tracing::warn!(purchase = %id, %why, "cannot read this purchase for billing reconciliation; `pcsaga check-upgrade` says why");
                    continue;
                }
            };
            if decoded.orders.is_empty() {
                continue;
            }
            let reservation_offers: Vec<String> = decoded
                .request
                .items
                .iter()
                .filter(|i| i.term_duration.is_some() && !i.provisioning_context.is_empty())
                .map(|i| format!("{}:{}", i.product_id, i.sku_id).to_ascii_uppercase())
                .collect();
            let orders = decoded
                .orders
                .iter()
                .map(|o| OrderFacts {
                    id: o.id.clone(),
                    alternate_id: o.alternate_id.clone(),
                    currency: o.currency.clone(),
                    created_at: o.created_at,
                    lines: o
                        .lines
                        .iter()
                        .map(|(_, offer, quantity)| {
                            let mut parts = offer.split(':');
                            let product = parts.next().unwrap_or("").to_owned();
                            let sku = parts.next().unwrap_or("").to_owned();
                            let availability = parts.next().map(str::to_owned);
                            let reservation = reservation_offers
                                .contains(&format!("{product}:{sku}").to_ascii_uppercase());
                            OrderLineFacts {
                                product_id: product,
                                sku_id: sku,
                                availability_id: availability,
                                quantity: *quantity,
                                reservation,
                            }
                        })
                        .collect(),
                })
                .collect();
            out.push(PurchaseFacts {
                id,
                customer_id: decoded.request.customer_id.clone(),
                orders,
            });
        }
        Ok(out)
    }

    /// Every line of every source's current evidence, and the sources.
    pub async fn evidence(
        &self,
    ) -> Result<(Vec<StagedLine>, Vec<StagedBad>, Vec<SourceFacts>), Error> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        on_pool!(self, pool => {
        let sources: Vec<SourceFacts> =
            sqlx::query("SELECT facts FROM billing_sources ORDER BY source")
                .fetch_all(pool)
                .await
                .map_err(db)?
                .iter()
                .filter_map(|row| {
                    let facts: String = row.try_get("facts").ok()?;
                    serde_json::from_str(&facts).ok()
                })
                .collect();
        // Streamed: rows are decoded one at a time, never all held as text.
        let mut rows = sqlx::query(
            "SELECT l.source, l.seq, l.bad, l.line FROM billing_lines l \
             JOIN billing_sources s ON s.source = l.source AND s.run_id = l.run_id \
             ORDER BY l.source, l.seq",
        )
        .fetch(pool);
        while let Some(row) = futures_util::TryStreamExt::try_next(&mut rows)
            .await
            .map_err(db)?
        {
            let source: String = row.try_get("source").map_err(db)?;
            let seq: i64 = row.try_get("seq").map_err(db)?;
            let is_bad: Option<String> = row.try_get("bad").map_err(db)?;
            let json: String = row.try_get("line").map_err(db)?;
            if is_bad.is_some() {
                if let Ok(b) = serde_json::from_str::<BadLine>(&json) {
                    bad.push(StagedBad {
                        source,
                        seq,
                        bad: b,
                    });
                }
            } else if let Ok(line) = serde_json::from_str::<BillingLine>(&json) {
                good.push(StagedLine { source, seq, line });
            }
        }
        Ok((good, bad, sources))
        })
    }

    /// Currencies of the purchases' orders (E27 is asked per currency).
    pub async fn currencies(&self) -> Result<Vec<String>, Error> {
        let mut currencies: Vec<String> = self
            .purchases()
            .await?
            .iter()
            .flat_map(|p| p.orders.iter().filter_map(|o| o.currency.clone()))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        currencies.sort();
        currencies.dedup();
        Ok(currencies)
    }

    /// Records a run's verdicts and report.
    pub async fn record(
        &self,
        run: &str,
        verdicts: &Verdicts,
        report: &Report,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let report_json = serde_json::to_string(report)
            .map_err(|e| Error::Database(format!("encoding a report: {e}")))?;
        on_pool!(self, pool => {
        let mut tx = pool.begin().await.map_err(db)?;
        for p in &verdicts.purchases {
            let detail = serde_json::to_string(&p.orders)
                .map_err(|e| Error::Database(format!("encoding a verdict: {e}")))?;
            sqlx::query(
                "INSERT INTO billing_status (purchase_id, status, final, run_id, customer_id, currency, detail, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (purchase_id) DO UPDATE SET \
                 status = excluded.status, final = excluded.final, run_id = excluded.run_id, \
                 customer_id = excluded.customer_id, currency = excluded.currency, \
                 detail = excluded.detail, updated_at = excluded.updated_at",
            )
            .bind(&p.purchase_id)
            .bind(p.status.as_str())
            .bind(p.final_)
            .bind(run)
            .bind(&p.customer_id)
            .bind(&p.currency)
            .bind(detail)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        sqlx::query(
            "INSERT INTO billing_runs (run_id, period, report, finished_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (run_id) DO UPDATE SET period = excluded.period, report = excluded.report, \
             finished_at = excluded.finished_at",
        )
        .bind(run)
        .bind(&report.period)
        .bind(report_json)
        .bind(now.timestamp_millis())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
        })
    }

    /// A run's report, once it finished.
    pub async fn report(&self, run: &str) -> Result<Option<Report>, Error> {
        let json: Option<String> = on_pool!(self, pool => {
            sqlx::query("SELECT report FROM billing_runs WHERE run_id = $1")
                .bind(run)
                .fetch_optional(pool)
                .await
                .map_err(db)?
                .map(|row| row.try_get("report"))
                .transpose()
                .map_err(db)?
        });
        match json {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| Error::Database(format!("run {run}'s report: {e}"))),
        }
    }

    /// A purchase's billing status, if a run has classified it.
    pub async fn status_of(&self, purchase: &str) -> Result<Option<StatusRow>, Error> {
        const SQL: &str = "SELECT purchase_id, status, final, run_id, detail, updated_at \
             FROM billing_status WHERE purchase_id = $1";
        on_pool!(self, pool => {
        let row = sqlx::query(SQL)
            .bind(purchase)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let detail: String = row.try_get("detail").map_err(db)?;
        let updated: i64 = row.try_get("updated_at").map_err(db)?;
        Ok(Some(StatusRow {
            purchase_id: row.try_get("purchase_id").map_err(db)?,
            status: row.try_get("status").map_err(db)?,
            final_: row.try_get("final").map_err(db)?,
            run_id: row.try_get("run_id").map_err(db)?,
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
            updated_at: DateTime::from_timestamp_millis(updated).unwrap_or_default(),
        }))
        })
    }

    /// Ids of the purchases with a billing status, at most `limit`, in id order.
    pub async fn with_status(&self, status: &str, limit: u32) -> Result<Vec<String>, Error> {
        // SQLite is told the index (its planner may otherwise scan); PostgreSQL's picks it.
        let hint = match self.pool {
            Pool::Sqlite(_) => "INDEXED BY billing_status_status",
            Pool::Postgres(_) => "",
        };
        let sql = format!(
            "SELECT purchase_id FROM billing_status {hint} \
             WHERE status = $1 ORDER BY purchase_id LIMIT $2"
        );
        on_pool!(self, pool => {
        let rows = sqlx::query(&sql)
            .bind(status)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("purchase_id").map_err(db))
            .collect()
        })
    }

    /// The billing lines (current evidence) joined to an order (`show`).
    pub async fn lines_of(&self, order_ids: &[String]) -> Result<Vec<StagedLine>, Error> {
        let mut out = Vec::new();
        for id in order_ids {
            const SQL: &str = "SELECT l.source, l.seq, l.line FROM billing_lines l \
                 JOIN billing_sources s ON s.source = l.source AND s.run_id = l.run_id \
                 WHERE l.bad IS NULL AND (l.order_id = $1 OR l.alternate_id = $1) ORDER BY l.source, l.seq";
            let rows: Vec<(String, i64, String)> = on_pool!(self, pool => {
                sqlx::query(SQL)
                    .bind(id)
                    .fetch_all(pool)
                    .await
                    .map_err(db)?
                    .iter()
                    .map(|row| -> Result<_, Error> {
                        Ok((
                            row.try_get("source").map_err(db)?,
                            row.try_get("seq").map_err(db)?,
                            row.try_get("line").map_err(db)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, Error>>()?
            });
            for (source, seq, json) in rows {
                if let Ok(line) = serde_json::from_str::<BillingLine>(&json) {
                    out.push(StagedLine { source, seq, line });
                }
            }
        }
        out.sort_by(|a, b| (&a.source, a.seq).cmp(&(&b.source, b.seq)));
        out.dedup_by(|a, b| a.source == b.source && a.seq == b.seq);
        Ok(out)
    }
}
