//! The five measurements of BENCHMARKS.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pcsaga_engine::{
    Engine, EngineConfig, SagaStatus, SqliteConfig, SqliteStore, Store, SystemClock,
};
use pcsaga_purchase::PurchaseWorkflow;
use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig, Simulator};
use serde_json::json;
use tokio::sync::watch;

use super::noop::{NoopContext, NoopWorkflow};

type Failure = anyhow::Error;

/// A fresh directory for one measurement, removed afterwards.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "pcsaga-bench-{name}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("bench.db")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Resident set size now and at its peak, in MiB (Linux; zero elsewhere).
pub fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// 1. The raw ceiling: single-row commits/s, and rows/s with one 100-row `INSERT` per commit.
pub async fn raw(scratch: &Scratch) -> Result<(f64, f64), Failure> {
    Ok(pcsaga_engine::store::ceiling::raw_ceiling(
        &scratch.db(),
        pcsaga_engine::Durability::Full,
        300,
        100,
    )
    .await?)
}

/// The no-op workflow's engine on `store`, with the daemon's default settings.
fn noop_engine(store: &SqliteStore) -> Result<Engine<NoopWorkflow, SqliteStore>, Failure> {
    Ok(Engine::new(
        NoopWorkflow::default(),
        store.clone(),
        policies()?,
        Arc::new(SystemClock),
        EngineConfig::new("bench"),
    ))
}

/// 1b. The engine's own batch SQL with no engine around it: transitions/s when `batch` sagas
/// are committed at a time (the orchestration bench's sagas, steps and contexts).
pub async fn engine_sql(batch: usize, rounds: u32) -> Result<f64, Failure> {
    let scratch = Scratch::new("engine-sql")?;
    let store = open(&scratch.db()).await?;
    let engine = noop_engine(&store)?;
    fill(&engine, batch, "sql").await?;
    let batch = u32::try_from(batch).unwrap_or(u32::MAX);
    Ok(pcsaga_engine::store::ceiling::engine_sql_ceiling(
        &store,
        "bench",
        batch,
        rounds,
        chrono::Utc::now(),
        &pcsaga_purchase::State::ALL.map(pcsaga_purchase::State::name),
    )
    .await?)
}

pub(crate) async fn open(path: &Path) -> Result<SqliteStore, Failure> {
    Ok(SqliteStore::open(SqliteConfig::new(path)).await?)
}

pub(crate) fn policies() -> Result<pcsaga_engine::Policies, Failure> {
    crate::app::policies(None)
}

/// Submits `n` sagas concurrently (not timed).
pub(crate) async fn fill<W, S>(engine: &Engine<W, S>, n: usize, prefix: &str) -> Result<(), Failure>
where
    W: pcsaga_engine::Workflow,
    W::Context: Default,
    S: Store + Clone + Send + Sync + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 64.min(n.max(1));
    for w in 0..workers {
        let engine = engine.clone();
        let prefix = prefix.to_owned();
        tasks.spawn(async move {
            let mut i = w;
            while i < n {
                engine
                    .submit(
                        &format!("{prefix}-{i}"),
                        "{}".into(),
                        &W::Context::default(),
                        None,
                    )
                    .await?;
                i += workers;
            }
            Ok::<_, pcsaga_engine::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Runs the daemon loop until `done` says so; returns the elapsed time.
/// How long a measurement waits before it counts again whether its work is done: the count is
/// a scan of the table on the database the daemons are writing to, so counting every 5 ms took
/// a fifth of PostgreSQL's time in a three-daemon run. A pause of 0.5% of the time elapsed so
/// far (5 to 50 ms) bounds the error that adds to a figure at 0.5%.
pub(super) fn recount_pause(elapsed: Duration) -> Duration {
    (elapsed / 200).clamp(Duration::from_millis(5), Duration::from_millis(50))
}

pub(super) async fn run_until<
    W: pcsaga_engine::Workflow,
    S: Store + Clone + Send + Sync + 'static,
>(
    engine: &Engine<W, S>,
    done: impl Fn(&std::collections::BTreeMap<SagaStatus, u64>) -> bool,
) -> Result<Duration, Failure> {
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(stopped).await })
    };
    loop {
        tokio::time::sleep(recount_pause(started.elapsed())).await;
        let counts = engine.store().count_by_status().await?;
        if done(&counts) {
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    runner.await??;
    Ok(elapsed)
}

/// 2. Orchestration overhead.
pub struct Orchestration {
    pub seconds: f64,
    pub transitions: usize,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub async fn orchestration(n: usize, concurrency: usize) -> Result<Orchestration, Failure> {
    let scratch = Scratch::new("orchestration")?;
    let store = open(&scratch.db()).await?;
    let workflow = NoopWorkflow {
        record: true,
        ..NoopWorkflow::default()
    };
    let mut config = EngineConfig::new("bench");
    config.concurrency = concurrency;
    config.max_calls_in_flight = concurrency.max(16);
    config.idle_poll = Duration::from_millis(20);
    let engine = Engine::new(workflow, store, policies()?, Arc::new(SystemClock), config);
    fill(&engine, n, "noop").await?;
    let elapsed = run_until(&engine, |c| {
        c.get(&SagaStatus::Succeeded).copied().unwrap_or(0) as usize >= n
    })
    .await?;
    let marks = engine
        .workflow()
        .marks
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let mut by_saga: HashMap<String, Vec<Instant>> = HashMap::new();
    for (id, at) in marks {
        by_saga.entry(id).or_default().push(at);
    }
    let mut gaps: Vec<f64> = by_saga
        .values()
        .flat_map(|marks| {
            marks
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64() * 1e6)
                .collect::<Vec<_>>()
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    Ok(Orchestration {
        seconds: elapsed.as_secs_f64(),
        transitions: n * 8,
        p50_us: percentile(&gaps, 0.5),
        p99_us: percentile(&gaps, 0.99),
    })
}

/// 3. End to end through the real client and the simulator.
pub struct EndToEnd {
    pub seconds: f64,
    pub calls: usize,
    pub p50_s: f64,
    pub p99_s: f64,
    pub peak_rss_mb: f64,
    pub succeeded: usize,
}

pub async fn end_to_end(n: usize, latency_ms: u64) -> Result<EndToEnd, Failure> {
    let scratch = Scratch::new("e2e")?;
    let store = pcsaga_engine::AnyStore::Sqlite(open(&scratch.db()).await?);
    end_to_end_on(store, n, latency_ms).await
}

/// [`end_to_end`] on a given store (the PostgreSQL phase uses it too).
pub async fn end_to_end_on(
    store: pcsaga_engine::AnyStore,
    n: usize,
    latency_ms: u64,
) -> Result<EndToEnd, Failure> {
    let faults = if latency_ms > 0 {
        latency(latency_ms, latency_ms)
    } else {
        FaultPlan::default()
    };
    let sim = Simulator::start(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        faults,
        page_size: 1000,
        ..SimConfig::default()
    })
    .await?;
    let client = crate::app::simulator_client(&sim, Duration::from_secs(60))?;
    let engine = Engine::new(
        PurchaseWorkflow::new(client),
        store,
        policies()?,
        Arc::new(SystemClock),
        EngineConfig::new("bench"),
    );
    // A different customer per purchase keeps each customer's entitlement list short, as
    // in a real partner's book.
    for i in 0..n {
        let customer = uuid::Uuid::new_v4().to_string();
        let request = demo_mix_request(&format!("bench-{i}"), &customer, i)?;
        pcsaga_purchase::submit(&engine, &request).await?;
    }
    engine.store().refresh_statistics().await?;
    let before = sim.requests().len();
    let elapsed = run_until(&engine, |c| {
        c.get(&SagaStatus::Active).copied().unwrap_or(0) == 0
    })
    .await?;
    let calls = sim
        .requests()
        .iter()
        .skip(before)
        .filter(|r| r.endpoint != "token")
        .count();
    let sagas = engine.list(&pcsaga_engine::ListFilter::default()).await?;
    let succeeded = sagas
        .iter()
        .filter(|s| s.status == SagaStatus::Succeeded)
        .count();
    // A purchase's latency: from its first claim to its last transition.
    let mut latencies = Vec::with_capacity(sagas.len());
    for saga in &sagas {
        let history = engine.history(&saga.id).await?;
        if let (Some(first), Some(last)) =
            (history.iter().find(|r| r.kind == "claimed"), history.last())
        {
            latencies.push((last.at - first.at).num_milliseconds() as f64 / 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    sim.shutdown().await;
    Ok(EndToEnd {
        seconds: elapsed.as_secs_f64(),
        calls,
        p50_s: percentile(&latencies, 0.5),
        p99_s: percentile(&latencies, 0.99),
        peak_rss_mb: rss_mb().1,
        succeeded,
    })
}

/// Latency between `min_ms` and `max_ms` on every call, and nothing else.
pub(super) fn latency(min_ms: u64, max_ms: u64) -> FaultPlan {
    FaultPlan {
        seed: 1,
        rules: vec![FaultRule {
            endpoint: "*".into(),
            probability: 1.0,
            after: 0,
            limit: None,
            fault: Fault::Latency { min_ms, max_ms },
        }],
    }
}

/// The demo mix, in turn by `kind`: a reservation (registration, inventory), a software
/// subscription, perpetual software; one of each item, in the US.
pub(super) fn demo_mix_request(
    key: &str,
    customer: &str,
    kind: usize,
) -> Result<pcsaga_purchase::PurchaseRequest, Failure> {
    let kinds = [
        ("DZH318Z0BQ3Q", "0001", Some("P1Y")),
        ("DG7GMGF0FKZV", "0003", Some("P1Y")),
        ("DG7GMGF0DWTL", "0001", None),
    ];
    let (product, sku, term) = kinds[kind % kinds.len()];
    let mut item = json!({"productId": product, "skuId": sku, "quantity": 1});
    if let Some(term) = term {
        item["termDuration"] = json!(term);
    }
    if product == "DZH318Z0BQ3Q" {
        item["provisioningContext"] =
            json!({"subscriptionId": uuid::Uuid::new_v4().to_string(), "scope": "shared"});
    }
    let request =
        json!({"idempotencyKey": key, "customerId": customer, "country": "US", "items": [item]});
    pcsaga_purchase::parse_value(&request).map_err(|e| anyhow::anyhow!("bench request: {e}"))
}

/// 4. Claim time with a parked backlog.
pub struct Backlog {
    pub claim_p50_us: f64,
    pub claim_p99_us: f64,
    pub rss_mb: f64,
}

pub async fn backlog(parked: usize, probes: usize) -> Result<Backlog, Failure> {
    let scratch = Scratch::new("backlog")?;
    let store = open(&scratch.db()).await?;
    let engine = noop_engine(&store)?;
    fill(&engine, parked, "parked").await?;
    let moved = store
        .defer_all(chrono::Utc::now() + chrono::Duration::days(1))
        .await?;
    anyhow::ensure!(moved as usize == parked, "parked {moved} of {parked}");
    let mut times = Vec::with_capacity(probes);
    for i in 0..probes {
        engine
            .submit(
                &format!("due-{i}"),
                "{}".into(),
                &NoopContext::default(),
                None,
            )
            .await?;
        let now = chrono::Utc::now();
        let started = Instant::now();
        let claimed = store
            .claim_due("bench", now, now + chrono::Duration::seconds(60), 1)
            .await?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(
            claimed.len() == 1 && claimed[0].idempotency_key == format!("due-{i}"),
            "claimed the wrong saga"
        );
    }
    times.sort_by(f64::total_cmp);
    Ok(Backlog {
        claim_p50_us: percentile(&times, 0.5),
        claim_p99_us: percentile(&times, 0.99),
        rss_mb: rss_mb().0,
    })
}

/// 5. Recovery: a cold start with sagas in flight under a dead worker's expired leases.
pub struct Recovery {
    pub in_flight: usize,
    pub first_step_ms: f64,
    pub all_claimed_ms: f64,
}

pub async fn recovery(in_flight: usize) -> Result<Recovery, Failure> {
    let scratch = Scratch::new("recovery")?;
    let store = open(&scratch.db()).await?;
    {
        let setup = Engine::new(
            NoopWorkflow::default(),
            store.clone(),
            policies()?,
            Arc::new(SystemClock),
            EngineConfig::new("setup"),
        );
        fill(&setup, in_flight, "inflight").await?;
        let now = chrono::Utc::now();
        let mut claimed = 0;
        while claimed < in_flight {
            // A worker that died: its leases ran out a second ago.
            let batch = store
                .claim_due("dead-worker", now, now - chrono::Duration::seconds(1), 512)
                .await?;
            anyhow::ensure!(!batch.is_empty(), "could not put the sagas in flight");
            claimed += batch.len();
        }
    }
    drop(store);
    // Cold start: open the database and start the daemon loop, as `pcsaga daemon` does.
    let started = Instant::now();
    let store = open(&scratch.db()).await?;
    let workflow = NoopWorkflow {
        record: true,
        ..NoopWorkflow::default()
    };
    let engine = Engine::new(
        workflow,
        store,
        policies()?,
        Arc::new(SystemClock),
        EngineConfig::new("recovering"),
    );
    let (stop, stopped) = watch::channel(false);
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(stopped).await })
    };
    let mut first_step = None;
    let all_claimed;
    loop {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let marks = engine
            .workflow()
            .marks
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        if first_step.is_none() {
            first_step = marks.iter().map(|(_, at)| *at).min();
        }
        let distinct: std::collections::HashSet<&String> = marks.iter().map(|(id, _)| id).collect();
        if distinct.len() >= in_flight {
            all_claimed = marks
                .iter()
                .map(|(_, at)| *at)
                .max()
                .unwrap_or_else(Instant::now);
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "recovery did not finish"
        );
    }
    let _ = stop.send(true);
    runner.await??;
    Ok(Recovery {
        in_flight,
        first_step_ms: first_step.map_or(0.0, |t| (t - started).as_secs_f64() * 1000.0),
        all_claimed_ms: (all_claimed - started).as_secs_f64() * 1000.0,
    })
}

/// Measurement 6, inspection at scale: `list` (as the CLI runs it: the newest 1,000 and, when cut, the
/// bounded count) with each filter, and `show` (the saga and its history), on a database of
/// `n` purchases shaped like a partner's book.
pub struct Inspect {
    /// (filter, p50 ms, p99 ms)
    pub list: Vec<(&'static str, f64, f64)>,
    pub show_p50_ms: f64,
    pub show_p99_ms: f64,
}

pub async fn inspect(n: u64, probes: usize) -> Result<Inspect, Failure> {
    use pcsaga_engine::{ListFilter, SagaStatus, Store};
    let scratch = Scratch::new("inspect")?;
    let store = open(&scratch.db()).await?;
    let now = chrono::Utc::now();
    // A context of a realistic size (a purchase's is 1-3 KB).
    let context = format!("{{\"pad\":\"{}\"}}", "x".repeat(800));
    store.bench_populate(n, now, &context).await?;
    let filters: Vec<(&'static str, ListFilter)> = vec![
        ("none", ListFilter::default()),
        (
            "--status failed",
            ListFilter {
                status: Some(SagaStatus::Failed),
                ..Default::default()
            },
        ),
        (
            "--state Checkout",
            ListFilter {
                state: Some("Checkout".into()),
                ..Default::default()
            },
        ),
        (
            "--customer",
            ListFilter {
                customer_id: Some("00000007-0000-4000-8000-000000000007".into()),
                ..Default::default()
            },
        ),
        (
            "--since 24h",
            ListFilter {
                created_after: Some(now - chrono::Duration::hours(24)),
                ..Default::default()
            },
        ),
        (
            "--stuck",
            ListFilter {
                stuck: Some(vec![("Checkout".into(), now - chrono::Duration::hours(1))]),
                ..Default::default()
            },
        ),
    ];
    let mut list = Vec::new();
    for (name, mut filter) in filters {
        filter.limit = 1000;
        let mut times = Vec::with_capacity(probes);
        for _ in 0..probes {
            let started = Instant::now();
            let rows = store.list(&filter).await?;
            if rows.len() >= 1000 {
                store.count(&filter, 10_001).await?;
            }
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        list.push((name, percentile(&times, 0.5), percentile(&times, 0.99)));
    }
    let mut times = Vec::with_capacity(probes);
    for i in 0..probes as u64 {
        let k = 1 + (i * 7919) % n.max(1);
        let id = format!("{:08x}-0000-7000-8000-{:012x}", k / 65536, k);
        let started = Instant::now();
        let saga = store.get(&id).await?;
        let history = store.history(&id).await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            saga.is_some_and(|s| s.id == id) && history.len() == 2,
            "show read the wrong purchase"
        );
    }
    times.sort_by(f64::total_cmp);
    Ok(Inspect {
        list,
        show_p50_ms: percentile(&times, 0.5),
        show_p99_ms: percentile(&times, 0.99),
    })
}
