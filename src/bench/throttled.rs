//! The `throttled` phase: purchases against a simulator that throttles like Partner Center,
//! with the daemon's governor told the same budgets (as an operator configures the published
//! limits). What it shows: how close the completion time comes to the least the budgets
//! allow for the calls the purchases needed, how many calls were answered 429, the calls per
//! purchase, and, for a mixed load, whether small customers wait behind a big one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use pcsaga_engine::{ClassBudget, Engine, EngineConfig, SagaStatus, SystemClock};
use pcsaga_purchase::PurchaseWorkflow;
use pcsaga_simulator::throttle::ThrottleConfig;
use pcsaga_simulator::{SimConfig, Simulator};

use super::run::{demo_mix_request, latency, open, policies, run_until, Scratch};

type Failure = anyhow::Error;

/// The tenant's budgets in calls per minute, the same on both sides. The checkout class (one
/// call per purchase) is the tightest: 10,000 purchases need at least 125 s of it.
pub const BUDGETS: &[(&str, u32)] = &[
    ("catalog", 3000),
    ("registration", 6000),
    ("inventory", 6000),
    ("cart", 6000),
    ("checkout", 4800),
    ("order_reads", 6000),
    ("entitlements", 6000),
    ("billing", 60),
];

/// Seconds of its budget a class of the simulator may bank: Partner Center counts per minute;
/// the daemon's governor banks one second, so the simulator's head start is not used.
const SIM_BURST_S: u64 = 10;

/// One class's calls.
pub struct ClassCalls {
    pub class: String,
    /// Answered (not 429): the calls the purchases needed.
    pub needed: u64,
    pub throttled: u64,
    pub per_minute: u32,
}

/// What one run shows.
pub struct Throttled {
    pub purchases: usize,
    pub seconds: f64,
    /// The least time the budgets allow for the calls needed: the slowest class's calls at
    /// its rate.
    pub minimum_s: f64,
    /// The same, crediting the simulator's initial bucket (a strict lower bound).
    pub bound_s: f64,
    pub classes: Vec<ClassCalls>,
    pub by_status: BTreeMap<String, u64>,
    /// Stopped for throttling: failed or parked with a 429 as their last error.
    pub stopped_for_throttling: usize,
    /// Mixed load only: when the last small customer's last purchase finished, how many of the
    /// big customer's were done, and how many it has.
    pub big_done_at_last_small: Option<(usize, usize)>,
}

impl Throttled {
    pub fn calls(&self) -> u64 {
        self.classes.iter().map(|c| c.needed + c.throttled).sum()
    }

    pub fn throttled(&self) -> u64 {
        self.classes.iter().map(|c| c.throttled).sum()
    }
}

/// Runs `n` purchases, one customer each; or, `mixed`, one customer with `n` purchases
/// submitted first and 50 customers with 5 each after it.
pub async fn throttled(n: usize, mixed: bool) -> Result<Throttled, Failure> {
    let scratch = Scratch::new("throttled")?;
    let per_minute: BTreeMap<String, u32> =
        BUDGETS.iter().map(|(c, n)| ((*c).to_owned(), *n)).collect();
    let sim = Simulator::start(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        page_size: 1000,
        faults: latency(20, 80),
        throttle: ThrottleConfig {
            enabled: true,
            burst_s: SIM_BURST_S,
            penalize_early_retries: true,
            per_minute: per_minute.clone(),
        },
        ..SimConfig::default()
    })
    .await?;
    let client = crate::app::simulator_client(&sim, Duration::from_secs(60))?;
    let store = open(&scratch.db()).await?;
    let mut config = EngineConfig::new("bench");
    config.concurrency = 256;
    config.max_calls_in_flight = 64;
    config.tenant = client.tenant().to_owned();
    config.budgets = BUDGETS
        .iter()
        .map(|(name, per_minute)| ClassBudget {
            name: (*name).to_owned(),
            per_minute: *per_minute,
        })
        .collect();
    let engine = Engine::new(
        PurchaseWorkflow::new(client),
        store,
        policies()?,
        Arc::new(SystemClock),
        config,
    );
    let big = uuid::Uuid::new_v4().to_string();
    let mut customers: Vec<(String, String)> = Vec::new(); // (key, customer)
    if mixed {
        customers.extend((0..n).map(|i| (format!("big-{i}"), big.clone())));
        for c in 0..50 {
            let customer = uuid::Uuid::new_v4().to_string();
            customers.extend((0..5).map(|i| (format!("small-{c}-{i}"), customer.clone())));
        }
    } else {
        customers.extend((0..n).map(|i| (format!("t-{i}"), uuid::Uuid::new_v4().to_string())));
    }
    for (i, (key, customer)) in customers.iter().enumerate() {
        pcsaga_purchase::submit(&engine, &demo_mix_request(key, customer, i)?).await?;
    }
    let elapsed = run_until(&engine, |c| {
        c.get(&SagaStatus::Active).copied().unwrap_or(0) == 0
    })
    .await?;
    let stats = sim.throttle_stats();
    sim.shutdown().await;
    let classes: Vec<ClassCalls> = stats
        .iter()
        .map(|(class, s)| ClassCalls {
            class: class.clone(),
            needed: s.requests - s.throttled,
            throttled: s.throttled,
            per_minute: per_minute.get(class).copied().unwrap_or(u32::MAX),
        })
        .collect();
    let time_for = |c: &ClassCalls, credit: f64| {
        (c.needed as f64 - credit).max(0.0) / (f64::from(c.per_minute) / 60.0)
    };
    let minimum_s = classes.iter().map(|c| time_for(c, 0.0)).fold(0.0, f64::max);
    let bound_s = classes
        .iter()
        .map(|c| time_for(c, f64::from(c.per_minute) / 60.0 * SIM_BURST_S as f64))
        .fold(0.0, f64::max);
    let sagas = engine.list(&pcsaga_engine::ListFilter::default()).await?;
    let mut by_status = BTreeMap::new();
    for s in &sagas {
        *by_status.entry(s.status.as_str().to_owned()).or_insert(0) += 1;
    }
    let stopped_for_throttling = sagas
        .iter()
        .filter(|s| matches!(s.status, SagaStatus::Failed | SagaStatus::NeedsAttention))
        .filter(|s| s.last_error.as_deref().is_some_and(|e| e.contains("429")))
        .count();
    let big_done_at_last_small = mixed.then(|| {
        let mut last: HashMap<&str, chrono::DateTime<chrono::Utc>> = HashMap::new();
        for s in sagas
            .iter()
            .filter(|s| s.customer_id.as_deref() != Some(big.as_str()))
        {
            let customer = s.customer_id.as_deref().unwrap_or("");
            let at = last.entry(customer).or_insert(s.updated_at);
            *at = (*at).max(s.updated_at);
        }
        let last_small = last.values().max().copied();
        let big_sagas = sagas
            .iter()
            .filter(|s| s.customer_id.as_deref() == Some(big.as_str()));
        let done = last_small.map_or(0, |at| {
            big_sagas
                .clone()
                .filter(|s| s.status != SagaStatus::Active && s.updated_at <= at)
                .count()
        });
        (done, big_sagas.count())
    });
    Ok(Throttled {
        purchases: customers.len(),
        seconds: elapsed.as_secs_f64(),
        minimum_s,
        bound_s,
        classes,
        by_status,
        stopped_for_throttling,
        big_done_at_last_small,
    })
}
