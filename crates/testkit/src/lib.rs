//! The auditor every reliability test ends with, and the seeded randomness they share.
//!
//! The auditor reads the two witnesses of a run, the simulator (its ledger and request log) and
//! the database (sagas and history), and checks the promise pcsaga makes:
//!
//! 1. no purchase was checked out twice (carts checked out and orders created per purchase,
//!    matched by the saga token every cart line carries), and none created more than one cart
//!    (unless one expired before checkout);
//! 2. no purchase was lost (every accepted request is a purchase; once faults stop, every
//!    purchase is terminal, and every failed or parked one says why);
//! 3. every side-effecting request that reached the simulator had a committed intent with its
//!    `MS-RequestId` first;
//! 4. every saga's history is a path through the transition table, and none goes back before
//!    Checkout once a checkout intent exists;
//! 5. `PRAGMA integrity_check` is `ok`;
//! 6. no request was sent to an endpoint before the `Retry-After` it was given ran out.

pub mod pg;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use pcsaga_engine::{AnyStore, HistoryRow, ListFilter, SagaRecord, SagaStatus, Store};
use pcsaga_simulator::{Ledger, RequestRecord};

/// The purchase states in order, as stored.
pub const STATES: &[&str] = pcsaga_purchase::STATE_NAMES;

/// The forward state changes the transition table allows (staying in a state and stopping
/// are always allowed). Derived from the one declared table
/// (`crates/purchase/src/transitions.rs`), so the auditor and the saga cannot drift apart.
pub fn edges() -> Vec<(&'static str, &'static str)> {
    pcsaga_purchase::transitions::edges()
        .into_iter()
        .map(|(from, to)| (from.name(), to.name()))
        .collect()
}

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

/// What the auditor reads, gathered once from the two witnesses of a run: the database
/// (sagas, their histories, the integrity check) and the simulator (ledger, request log).
#[derive(Debug, Clone, Default)]
pub struct Witnesses {
    pub sagas: Vec<SagaRecord>,
    pub histories: HashMap<String, Vec<HistoryRow>>,
    pub integrity: String,
    pub ledger: Ledger,
    pub requests: Vec<RequestRecord>,
}

/// Reads the witnesses. A failure to read is itself a finding.
pub async fn gather(
    store: &AnyStore,
    ledger: &Ledger,
    requests: &[RequestRecord],
) -> Result<Witnesses, String> {
    let sagas = store
        .list(&ListFilter {
            workflow: Some(pcsaga_purchase::WORKFLOW_NAME.to_owned()),
            ..ListFilter::default()
        })
        .await
        .map_err(|e| format!("cannot list purchases: {e}"))?;
    let mut histories = HashMap::new();
    for saga in &sagas {
        let history = store
            .history(&saga.id)
            .await
            .map_err(|e| format!("{}: cannot read history: {e}", saga.id))?;
        histories.insert(saga.id.clone(), history);
    }
    let integrity = store
        .integrity_check()
        .await
        .unwrap_or_else(|e| format!("integrity_check failed: {e}"));
    Ok(Witnesses {
        sagas,
        histories,
        integrity,
        ledger: ledger.clone(),
        requests: requests.to_vec(),
    })
}

/// Audits a run: gathers the witnesses and applies every check of [`CHECKS`].
pub async fn audit(
    store: &AnyStore,
    ledger: &Ledger,
    requests: &[RequestRecord],
    expect: &Expect,
) -> Audit {
    match gather(store, ledger, requests).await {
        Ok(witnesses) => judge(&witnesses, expect, CHECKS),
        Err(finding) => Audit {
            violations: vec![finding],
            ..Audit::default()
        },
    }
}

/// One check of the promise. Its findings are prefixed with `[name]`, so a canary can show
/// which check caught it.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub name: &'static str,
    pub run: fn(&Witnesses, &Expect, &mut Vec<String>),
}

/// Every check, in the order of the module docs.
pub const CHECKS: &[Check] = &[
    Check {
        name: "bought twice",
        run: bought_twice,
    },
    Check {
        name: "extra cart",
        run: extra_carts,
    },
    Check {
        name: "lost",
        run: lost,
    },
    Check {
        name: "intent",
        run: intents,
    },
    Check {
        name: "path",
        run: paths,
    },
    Check {
        name: "integrity",
        run: integrity,
    },
    Check {
        name: "retry-after",
        run: retry_after,
    },
];

/// Applies `checks` to the witnesses.
pub fn judge(w: &Witnesses, expect: &Expect, checks: &[Check]) -> Audit {
    let mut audit = Audit {
        purchases: w.sagas.len(),
        checkouts: w.ledger.checkouts.len(),
        orders: w.ledger.orders.len(),
        ..Audit::default()
    };
    for saga in &w.sagas {
        *audit.by_status.entry(saga.status.to_string()).or_default() += 1;
    }
    audit.lost = expect.purchases.saturating_sub(w.sagas.len())
        + if expect.settled {
            w.sagas
                .iter()
                .filter(|s| s.status == SagaStatus::Active)
                .count()
        } else {
            0
        };
    for check in checks {
        let mut found = Vec::new();
        (check.run)(w, expect, &mut found);
        if check.name == "bought twice" {
            audit.duplicates += found.iter().filter(|f| !f.starts_with("cart ")).count();
        }
        audit
            .violations
            .extend(found.into_iter().map(|f| format!("[{}] {f}", check.name)));
    }
    audit
}

/// The saga token of a purchase (in every cart line's friendly name), from its context.
fn token_of(saga: &SagaRecord) -> Option<String> {
    let context: serde_json::Value = serde_json::from_str(&saga.context).unwrap_or_default();
    context["token"].as_str().map(str::to_owned)
}

/// The request as submitted (the row's `input`: since context schema 2 the context does not
/// copy it).
fn request_of(saga: &SagaRecord) -> serde_json::Value {
    serde_json::from_str(&saga.input).unwrap_or_default()
}

fn items_of(saga: &SagaRecord) -> usize {
    request_of(saga)["items"].as_array().map_or(1, Vec::len)
}

/// Carts created with `token` in a line's friendly name.
fn carts_with_token(w: &Witnesses, token: &str) -> usize {
    w.ledger
        .carts
        .iter()
        .filter(|c| c.friendly_names.iter().any(|n| n.contains(token)))
        .count()
}

fn is_direct(saga: &SagaRecord) -> bool {
    request_of(saga)["orderPath"] == "direct"
}

/// Check 1: No purchase checked out twice, no more orders than items, and every checked-out cart
/// belongs to an accepted purchase.
fn bought_twice(w: &Witnesses, _: &Expect, out: &mut Vec<String>) {
    let mut tokens = Vec::new();
    for saga in &w.sagas {
        let Some(token) = token_of(saga) else {
            out.push(format!("{}: the context has no token", saga.id));
            continue;
        };
        let checked_out = w.ledger.checkouts_with_token(&token).len();
        if checked_out > 1 {
            out.push(format!(
                "{} ({}): {checked_out} carts checked out",
                saga.id, saga.idempotency_key
            ));
        }
        let items = items_of(saga);
        let orders = w.ledger.orders_with_token(&token).len();
        if is_direct(saga) {
            // A direct order holds every line: one order per purchase, and never a cart.
            if orders > 1 {
                out.push(format!(
                    "{} ({}): {orders} direct orders for one purchase",
                    saga.id, saga.idempotency_key
                ));
            }
            let carts = carts_with_token(w, &token);
            if carts > 0 {
                out.push(format!(
                    "{} ({}): a direct purchase created {carts} cart(s)",
                    saga.id, saga.idempotency_key
                ));
            }
        }
        if orders > items {
            out.push(format!(
                "{} ({}): {orders} orders for {items} items",
                saga.id, saga.idempotency_key
            ));
        }
        tokens.push(token);
    }
    for checkout in &w.ledger.checkouts {
        if !tokens.iter().any(|t| {
            checkout
                .friendly_names
                .iter()
                .any(|n| n.contains(t.as_str()))
        }) {
            out.push(format!(
                "cart {} was checked out but belongs to no purchase",
                checkout.cart_id
            ));
        }
    }
}

/// Check 1': One cart per purchase: a second one means a create-cart was sent again under a new
/// request id after a reply that proved nothing (a lost reply followed by a 5xx). Carts that
/// expired before checkout are the one legitimate reason for another, and leave a `cart
/// expires soon` or `cart is gone` note in the history.
fn extra_carts(w: &Witnesses, _: &Expect, out: &mut Vec<String>) {
    for saga in &w.sagas {
        let Some(token) = token_of(saga) else {
            continue;
        };
        let carts = carts_with_token(w, &token);
        let expired = w.histories.get(&saga.id).map_or(0, |h| {
            h.iter()
                .filter(|r| {
                    r.detail.as_deref().is_some_and(|d| {
                        d.contains("expires soon") || d.contains("the cart is gone")
                    })
                })
                .count()
        });
        if carts > 1 + expired {
            out.push(format!(
                "{} ({}): {carts} carts created for one purchase",
                saga.id, saga.idempotency_key
            ));
        }
    }
}

/// Check 2: No purchase lost: every accepted request is a purchase; once faults stop, none is
/// active; every failed or parked one says why; every succeeded one has an order.
fn lost(w: &Witnesses, expect: &Expect, out: &mut Vec<String>) {
    if w.sagas.len() != expect.purchases {
        out.push(format!(
            "{} purchases accepted, {} in the database",
            expect.purchases,
            w.sagas.len()
        ));
    }
    for saga in &w.sagas {
        if expect.settled && saga.status == SagaStatus::Active {
            out.push(format!(
                "{} ({}): still active in {} ({:?})",
                saga.id, saga.idempotency_key, saga.state, saga.wait_reason
            ));
        }
        if matches!(saga.status, SagaStatus::Failed | SagaStatus::NeedsAttention)
            && saga.last_error.as_deref().is_none_or(str::is_empty)
        {
            out.push(format!("{}: {} without a reason", saga.id, saga.status));
        }
        let orders = token_of(saga).map_or(0, |t| w.ledger.orders_with_token(&t).len());
        if saga.status == SagaStatus::Succeeded && orders == 0 {
            out.push(format!(
                "{} ({}): succeeded without an order in the ledger",
                saga.id, saga.idempotency_key
            ));
        }
    }
}

/// Check 3: Every side-effecting request that reached the simulator had a committed intent with its
/// `MS-RequestId`, committed before the request arrived.
fn intents(w: &Witnesses, expect: &Expect, out: &mut Vec<String>) {
    let mut intents: HashMap<String, DateTime<Utc>> = HashMap::new();
    for row in w
        .histories
        .values()
        .flatten()
        .filter(|r| r.kind == "intent")
    {
        if let Some(id) = row.detail.as_deref().and_then(request_id_of) {
            intents.entry(id).or_insert(row.at);
        }
    }
    for record in w
        .requests
        .iter()
        .filter(|r| SIDE_EFFECTING.contains(&r.endpoint.as_str()))
    {
        let Some(id) = record.request_id.as_ref() else {
            out.push(format!(
                "request {} to {} carried no MS-RequestId",
                record.seq, record.endpoint
            ));
            continue;
        };
        match intents.get(&id.to_ascii_lowercase()) {
            None => out.push(format!(
                "{} request {id} reached the simulator without a committed intent",
                record.endpoint
            )),
            Some(at) if expect.wall_clock && *at > record.at => out.push(format!(
                "{} request {id} arrived before its intent was committed",
                record.endpoint
            )),
            Some(_) => {}
        }
    }
}

/// Check 4: Every history is a path through the transition table.
fn paths(w: &Witnesses, _: &Expect, out: &mut Vec<String>) {
    for saga in &w.sagas {
        if let Some(history) = w.histories.get(&saga.id) {
            check_path(&saga.id, history, out);
        }
    }
}

/// Check 5: The file is sound.
fn integrity(w: &Witnesses, _: &Expect, out: &mut Vec<String>) {
    if w.integrity != "ok" {
        out.push(format!("integrity_check: {}", w.integrity));
    }
}

/// Check 6: No request went to an endpoint, for the same purchase, before the `Retry-After` it was
/// given ran out.
fn retry_after(w: &Witnesses, expect: &Expect, out: &mut Vec<String>) {
    if !expect.wall_clock {
        return;
    }
    let mut last_429: HashMap<(String, String), (DateTime<Utc>, u64)> = HashMap::new();
    let mut ordered: Vec<&RequestRecord> = w.requests.iter().collect();
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
                out.push(format!(
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

/// The `request_id` in an intent row's JSON.
fn request_id_of(detail: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(detail).ok()?;
    value["request_id"].as_str().map(str::to_ascii_lowercase)
}

fn check_path(id: &str, history: &[HistoryRow], violations: &mut Vec<String>) {
    let index = |state: &str| STATES.iter().position(|s| *s == state);
    let edges = edges();
    let checkout = index("Checkout").unwrap_or(STATES.len());
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
            || edges.contains(&(from.as_str(), to.as_str()))
            || (row.kind == "operator" && index(to).is_some());
        if !allowed {
            violations.push(format!(
                "{id}: {from} -> {to} is not in the transition table (history row {})",
                row.seq
            ));
        }
        if checkout_sent && index(to).is_some_and(|i| i < checkout) {
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
