//! The auditor every reliability test ends with, and the seeded randomness they share.
//!
//! The auditor reads the two witnesses of a run, the simulator (its ledger and request log) and
//! the database (sagas and history), and checks the promise pcsaga makes:
//!
//! 1. no purchase was checked out twice (carts checked out and orders created per purchase,
//!    matched by the saga token every cart line carries);
//! 2. no purchase was lost (every accepted request is a purchase; once faults stop, every
//!    purchase is terminal, and every failed or parked one says why);
//! 3. every side-effecting request that reached the simulator had a committed intent with its
//!    `MS-RequestId` first;
//! 4. every saga's history is a path through the transition table, and none goes back before
//!    Checkout once a checkout intent exists;
//! 5. `PRAGMA integrity_check` is `ok`;
//! 6. no request was sent to an endpoint before the `Retry-After` it was given ran out.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use pcsaga_engine::{HistoryRow, ListFilter, SagaStatus, SqliteStore, Store};
use pcsaga_simulator::{Ledger, RequestRecord};

/// The purchase states in order, as stored (kept here so the auditor does not trust the code
/// it audits for the shape of the table).
pub const STATES: &[&str] = &[
    "Enablement",
    "RegistrationPolling",
    "Discovery",
    "InventoryCheck",
    "CartBuild",
    "Checkout",
    "OrderVisibilityPolling",
    "EntitlementFetch",
];

/// The forward edges of the transition table (staying in a state and stopping are always
/// allowed).
pub const EDGES: &[(&str, &str)] = &[
    ("Enablement", "RegistrationPolling"),
    ("Enablement", "Discovery"),
    ("RegistrationPolling", "Discovery"),
    ("Discovery", "InventoryCheck"),
    ("Discovery", "CartBuild"),
    ("InventoryCheck", "CartBuild"),
    ("CartBuild", "Checkout"),
    // Stale catalog ids: discover again and fix the cart (only before any checkout).
    ("CartBuild", "Discovery"),
    ("Checkout", "OrderVisibilityPolling"),
    ("OrderVisibilityPolling", "EntitlementFetch"),
];

const STOPS: &[&str] = &["succeeded", "failed", "needs_attention", "cancelled"];
const SIDE_EFFECTING: &[&str] = &[
    "register",
    "create_cart",
    "update_cart",
    "checkout",
    "cancel_order",
];

/// What the audit should expect.
#[derive(Debug, Clone)]
pub struct Expect {
    /// How many purchases were accepted.
    pub purchases: usize,
    /// Faults have stopped: every purchase must have stopped too.
    pub settled: bool,
    /// Both witnesses used the wall clock, so intent and `Retry-After` timing can be checked.
    pub wall_clock: bool,
}

/// The findings.
#[derive(Debug, Default)]
pub struct Audit {
    pub purchases: usize,
    pub checkouts: usize,
    pub orders: usize,
    /// Purchases whose token appears in more than one checked-out cart.
    pub duplicates: usize,
    /// Accepted purchases missing, or active when they should have stopped.
    pub lost: usize,
    pub violations: Vec<String>,
    pub by_status: BTreeMap<String, usize>,
}

impl Audit {
    /// Panics with every violation, and `rerun` (the command that reproduces the run).
    pub fn assert_clean(&self, rerun: &str) {
        assert!(
            self.violations.is_empty(),
            "{} violation(s) of the promise:\n  {}\nrerun: {rerun}",
            self.violations.len(),
            self.violations
                .iter()
                .take(40)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
}

/// Audits a run.
pub async fn audit(
    store: &SqliteStore,
    ledger: &Ledger,
    requests: &[RequestRecord],
    expect: &Expect,
) -> Audit {
    let mut audit = Audit::default();
    let sagas = match store.list(&ListFilter::default()).await {
        Ok(sagas) => sagas,
        Err(e) => {
            audit.violations.push(format!("cannot list purchases: {e}"));
            return audit;
        }
    };
    audit.purchases = sagas.len();
    audit.checkouts = ledger.checkouts.len();
    audit.orders = ledger.orders.len();
    if sagas.len() != expect.purchases {
        audit.lost += expect.purchases.saturating_sub(sagas.len());
        audit.violations.push(format!(
            "{} purchases accepted, {} in the database",
            expect.purchases,
            sagas.len()
        ));
    }
    let mut intents: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut tokens = Vec::new();
    for saga in &sagas {
        *audit.by_status.entry(saga.status.to_string()).or_default() += 1;
        let context: serde_json::Value = serde_json::from_str(&saga.context).unwrap_or_default();
        let Some(token) = context["token"].as_str().map(str::to_owned) else {
            audit
                .violations
                .push(format!("{}: the context has no token", saga.id));
            continue;
        };
        // 1. Never bought twice.
        let checked_out = ledger.checkouts_with_token(&token).len();
        if checked_out > 1 {
            audit.duplicates += 1;
            audit.violations.push(format!(
                "{} ({}): {checked_out} carts checked out",
                saga.id, saga.idempotency_key
            ));
        }
        let items = context["request"]["items"].as_array().map_or(1, Vec::len);
        let orders = ledger.orders_with_token(&token).len();
        if orders > items {
            audit.duplicates += 1;
            audit.violations.push(format!(
                "{} ({}): {orders} orders for {items} items",
                saga.id, saga.idempotency_key
            ));
        }
        // 2. Never lost.
        if expect.settled && saga.status == SagaStatus::Active {
            audit.lost += 1;
            audit.violations.push(format!(
                "{} ({}): still active in {} ({:?})",
                saga.id, saga.idempotency_key, saga.state, saga.wait_reason
            ));
        }
        if matches!(saga.status, SagaStatus::Failed | SagaStatus::NeedsAttention)
            && saga.last_error.as_deref().is_none_or(str::is_empty)
        {
            audit
                .violations
                .push(format!("{}: {} without a reason", saga.id, saga.status));
        }
        if saga.status == SagaStatus::Succeeded && orders == 0 {
            audit.violations.push(format!(
                "{} ({}): succeeded without an order in the ledger",
                saga.id, saga.idempotency_key
            ));
        }
        // 4. A path through the transition table.
        match store.history(&saga.id).await {
            Ok(history) => {
                check_path(&saga.id, &history, &mut audit.violations);
                for row in history.iter().filter(|r| r.kind == "intent") {
                    if let Some(id) = row.detail.as_deref().and_then(request_id_of) {
                        intents.entry(id).or_insert(row.at);
                    }
                }
            }
            Err(e) => audit
                .violations
                .push(format!("{}: cannot read history: {e}", saga.id)),
        }
        tokens.push(token);
    }
    // Every checkout in the ledger belongs to an accepted purchase.
    for checkout in &ledger.checkouts {
        if !tokens.iter().any(|t| {
            checkout
                .friendly_names
                .iter()
                .any(|n| n.contains(t.as_str()))
        }) {
            audit.violations.push(format!(
                "cart {} was checked out but belongs to no purchase",
                checkout.cart_id
            ));
        }
    }
    // 3. Intent before every side-effecting request.
    for record in requests
        .iter()
        .filter(|r| SIDE_EFFECTING.contains(&r.endpoint.as_str()))
    {
        let Some(id) = record.request_id.as_ref() else {
            audit.violations.push(format!(
                "request {} to {} carried no MS-RequestId",
                record.seq, record.endpoint
            ));
            continue;
        };
        match intents.get(&id.to_ascii_lowercase()) {
            None => audit.violations.push(format!(
                "{} request {id} reached the simulator without a committed intent",
                record.endpoint
            )),
            Some(at) if expect.wall_clock && *at > record.at => audit.violations.push(format!(
                "{} request {id} arrived before its intent was committed",
                record.endpoint
            )),
            Some(_) => {}
        }
    }
    // 6. Retry-After respected, per purchase (correlation id) and endpoint.
    if expect.wall_clock {
        let mut last_429: HashMap<(String, String), (DateTime<Utc>, u64)> = HashMap::new();
        let mut ordered: Vec<&RequestRecord> = requests.iter().collect();
        ordered.sort_by_key(|r| (r.at, r.seq));
        for record in ordered {
            let Some(correlation) = record.correlation_id.clone() else {
                continue;
            };
            let key = (correlation, record.endpoint.clone());
            if let Some((at, seconds)) = last_429.get(&key) {
                let allowed = *at
                    + chrono::Duration::seconds(i64::try_from(*seconds).unwrap_or(i64::MAX / 1000))
                    - chrono::Duration::milliseconds(20);
                if record.at < allowed {
                    audit.violations.push(format!(
                        "{} for purchase {} sent {} ms before its Retry-After ({seconds}s) ran out",
                        record.endpoint,
                        key.0,
                        (allowed - record.at).num_milliseconds()
                    ));
                }
            }
            match record.retry_after_s {
                Some(seconds) if record.status == Some(429) => {
                    last_429.insert(key, (record.at, seconds));
                }
                _ => {
                    last_429.remove(&key);
                }
            }
        }
    }
    // 5. The file is sound.
    match store.integrity_check().await {
        Ok(result) if result == "ok" => {}
        Ok(result) => audit.violations.push(format!("integrity_check: {result}")),
        Err(e) => audit
            .violations
            .push(format!("integrity_check failed: {e}")),
    }
    audit
}

/// The `request_id` in an intent row's JSON.
fn request_id_of(detail: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(detail).ok()?;
    value["request_id"].as_str().map(str::to_ascii_lowercase)
}

fn check_path(id: &str, history: &[HistoryRow], violations: &mut Vec<String>) {
    let index = |state: &str| STATES.iter().position(|s| *s == state);
    let mut current = STATES[0].to_owned();
    let mut checkout_sent = false;
    for row in history {
        if row.kind == "intent"
            && row
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("\"call\":\"checkout\""))
        {
            checkout_sent = true;
        }
        let (Some(from), Some(to)) = (&row.state, &row.to_state) else {
            continue;
        };
        if row.kind != "transition" && row.kind != "operator" {
            continue;
        }
        if from != &current && !STOPS.contains(&current.as_str()) {
            violations.push(format!(
                "{id}: history row {} leaves {from} but the saga was in {current}",
                row.seq
            ));
        }
        let allowed = from == to
            || STOPS.contains(&to.as_str())
            || EDGES.contains(&(from.as_str(), to.as_str()))
            || (row.kind == "operator" && index(to).is_some());
        if !allowed {
            violations.push(format!(
                "{id}: {from} -> {to} is not in the transition table (history row {})",
                row.seq
            ));
        }
        if checkout_sent && index(to).is_some_and(|i| i < 5) {
            violations.push(format!(
                "{id}: went back to {to} after a checkout was sent (history row {})",
                row.seq
            ));
        }
        current = to.clone();
    }
}

/// SplitMix64: the battery's only source of randomness, so a seed reproduces a run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[low, high]`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }
}

/// The seed of a randomized test: `PCSAGA_SEED` if set, else a fresh one (printed by the test).
pub fn seed() -> u64 {
    std::env::var("PCSAGA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            (nanos as u64) ^ u64::from(std::process::id())
        })
}
