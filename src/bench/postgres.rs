//! The `postgres` measurements: orchestration with one and with three daemons on one
//! PostgreSQL database, and end to end, next to one daemon on SQLite in the same run.
//!
//! The server is `PCSAGA_BENCH_PG` (default `postgres://root@127.0.0.1:5432/postgres`); each
//! measurement creates a scratch database on it and drops it. "Daemons" here are engines in
//! this process, each with its own connection pool and lease owner, as separate daemons have.

use std::sync::Arc;
use std::time::Duration;

use pcsaga_engine::{AnyStore, Engine, EngineConfig, SagaStatus, SystemClock};

use super::noop::NoopWorkflow;
use super::run::{fill, open, policies, Scratch};

type Failure = anyhow::Error;

fn server() -> String {
    std::env::var("PCSAGA_BENCH_PG")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".to_owned())
}

/// A scratch PostgreSQL database, dropped on [`ScratchPg::drop_now`].
struct ScratchPg {
    name: String,
    url: String,
}

impl ScratchPg {
    async fn create() -> Result<Self, Failure> {
        let server = server();
        let name = format!("pcsaga_bench_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&server).await.map_err(|e| {
            anyhow::anyhow!("PostgreSQL at {server} cannot be reached ({e}); set PCSAGA_BENCH_PG")
        })?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await?;
        admin.close().await;
        let (base, _) = server.rsplit_once('/').unwrap_or((server.as_str(), ""));
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
        })
    }

    async fn store(&self) -> Result<AnyStore, Failure> {
        Ok(AnyStore::Postgres(
            pcsaga_engine::PgStore::connect(pcsaga_engine::PgConfig::new(&self.url)).await?,
        ))
    }

    async fn drop_now(self) -> Result<(), Failure> {
        let admin = sqlx::PgPool::connect(&server()).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&admin)
        .await?;
        Ok(())
    }
}

/// N no-op sagas driven by one engine per store (each a daemon); transitions per second.
async fn orchestration_on(
    stores: Vec<AnyStore>,
    n: usize,
    concurrency: usize,
) -> Result<f64, Failure> {
    let engines: Vec<Engine<NoopWorkflow, AnyStore>> = stores
        .into_iter()
        .enumerate()
        .map(|(i, store)| -> Result<_, Failure> {
            let mut config = EngineConfig::new(format!("bench-{i}"));
            config.concurrency = concurrency;
            config.max_calls_in_flight = concurrency.max(16);
            config.idle_poll = Duration::from_millis(20);
            Ok(Engine::new(
                NoopWorkflow::default(),
                store,
                policies()?,
                Arc::new(SystemClock),
                config,
            ))
        })
        .collect::<Result<_, _>>()?;
    let first = engines
        .first()
        .ok_or_else(|| anyhow::anyhow!("no engine"))?
        .clone();
    fill(&first, n, "noop").await?;
    first.store().refresh_statistics().await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let started = std::time::Instant::now();
    let mut runners = Vec::new();
    for engine in engines {
        let stopped = stopped.clone();
        runners.push(tokio::spawn(async move { engine.run(stopped).await }));
    }
    loop {
        tokio::time::sleep(super::run::recount_pause(started.elapsed())).await;
        let counts = pcsaga_engine::Store::count_by_status(first.store()).await?;
        if counts.get(&SagaStatus::Succeeded).copied().unwrap_or(0) as usize >= n {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    for runner in runners {
        runner.await??;
    }
    Ok((n * 8) as f64 / seconds)
}

pub struct PgFigures {
    pub sqlite_one: f64,
    pub postgres_one: f64,
    pub postgres_three: f64,
    pub e2e_sqlite: f64,
    pub e2e_postgres: f64,
}

pub async fn measure(n: usize, concurrency: usize) -> Result<PgFigures, Failure> {
    say!("bench: orchestration, {n} no-op purchases, one daemon on SQLite...");
    let scratch = Scratch::new("pg-reference")?;
    let sqlite = AnyStore::Sqlite(open(&scratch.db()).await?);
    let sqlite_one = orchestration_on(vec![sqlite], n, concurrency).await?;
    drop(scratch);
    say!("bench: orchestration, {n} no-op purchases, one daemon on PostgreSQL...");
    let db = ScratchPg::create().await?;
    let postgres_one = orchestration_on(vec![db.store().await?], n, concurrency).await?;
    db.drop_now().await?;
    say!("bench: orchestration, {n} no-op purchases, three daemons on PostgreSQL...");
    let db = ScratchPg::create().await?;
    let stores = vec![db.store().await?, db.store().await?, db.store().await?];
    let postgres_three = orchestration_on(stores, n, concurrency).await?;
    db.drop_now().await?;
    let e2e_n = n.min(2000);
    say!("bench: end to end, {e2e_n} purchases, one daemon on SQLite, then on PostgreSQL...");
    let scratch = Scratch::new("pg-e2e")?;
    let e =
        super::run::end_to_end_on(AnyStore::Sqlite(open(&scratch.db()).await?), e2e_n, 0).await?;
    let e2e_sqlite = e2e_n as f64 / e.seconds;
    drop(scratch);
    let db = ScratchPg::create().await?;
    let e = super::run::end_to_end_on(db.store().await?, e2e_n, 0).await?;
    let e2e_postgres = e2e_n as f64 / e.seconds;
    db.drop_now().await?;
    Ok(PgFigures {
        sqlite_one,
        postgres_one,
        postgres_three,
        e2e_sqlite,
        e2e_postgres,
    })
}
