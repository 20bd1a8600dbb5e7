//! Throttling as Partner Center does it: per partner tenant and call class, a budget of calls
//! per minute; a call over it gets 429 with `Retry-After` (seconds) and the 429 body of spec
//! §5.1 (`statusCode`/`message`, not the usual error body).
//!
//! Our model of "per minute": a token bucket per (tenant, class) that refills at the budget's
//! rate and holds `burst_s` seconds of it, so a client that keeps to the budget on average is
//! never refused, and one that bursts past it is, at once. Partner Center's guidance says early
//! retries count against the limit; `penalize_early_retries` makes that strict: any call of a
//! throttled class before its `Retry-After` ends is answered 429 again (with what is left of
//! it). Either way such calls are counted as early retries in `/_sim/stats`.
//!
//! The classes are the simulator's own reading of the spec (which endpoints share a budget),
//! independent of the client's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Throttling settings. Off by default: most tests want answers, not budgets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    pub enabled: bool,
    /// Seconds of its budget a class may bank (and spend in one burst).
    pub burst_s: u64,
    /// Answer calls of a throttled class with 429 again until its `Retry-After` ends.
    pub penalize_early_retries: bool,
    /// Calls per minute per tenant, by class. Classes left out are not throttled.
    pub per_minute: BTreeMap<String, u32>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            burst_s: 10,
            penalize_early_retries: false,
            // The Order resource's published 500/min, and the same for the other listed
            // endpoints; catalog reads are not in the throttled list: generous.
            per_minute: [
                ("catalog", 3000),
                ("registration", 500),
                ("inventory", 500),
                ("cart", 500),
                ("checkout", 500),
                ("order_reads", 500),
                ("entitlements", 500),
                ("billing", 500),
                ("customers", 500),
            ]
            .into_iter()
            .map(|(c, n)| (c.to_owned(), n))
            .collect(),
        }
    }
}

/// The class an endpoint's budget belongs to (`None`: not throttled: tokens, admin).
pub fn class_of(endpoint: &str) -> Option<&'static str> {
    Some(match endpoint {
        "list_products"
        | "get_product"
        | "list_skus"
        | "get_sku"
        | "list_availabilities"
        | "get_availability" => "catalog",
        "register" | "registration_status" => "registration",
        "check_inventory" => "inventory",
        "create_cart" | "get_cart" | "update_cart" => "cart",
        "checkout" | "create_order" | "list_orders" | "cancel_order" => "checkout",
        "get_order" | "provisioning_status" => "order_reads",
        "list_entitlements" | "artifact_details" => "entitlements",
        // Addendum §5.6: the invoice calls are throttleable too (Graph's export is not
        // Partner Center's and has limits of its own, not simulated).
        "account_balance" | "invoice_summaries" | "list_invoices" | "get_invoice"
        | "invoice_lines" | "unbilled_lines" | "invoice_statement" => "billing",
        _ => return None,
    })
}

/// What each class saw, for `/_sim/stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassStats {
    pub requests: u64,
    /// Answered 429.
    pub throttled: u64,
    /// Arrived while a `Retry-After` this class was given had not ended.
    pub early_retries: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// The end of the last `Retry-After` given.
    throttled_until: Option<Instant>,
}

/// The throttle's state.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    buckets: HashMap<(String, &'static str), Bucket>,
    stats: BTreeMap<String, ClassStats>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            state: Mutex::default(),
        }
    }

    /// Admits a call of `endpoint` for `tenant` arriving at `now`, or returns the
    /// `Retry-After` of its 429.
    pub fn check(&self, tenant: &str, endpoint: &str, now: Instant) -> Option<Duration> {
        if !self.config.enabled {
            return None;
        }
        let class = class_of(endpoint)?;
        let per_minute = *self.config.per_minute.get(class)?;
        let rate = f64::from(per_minute.max(1)) / 60.0;
        let capacity = (rate * self.config.burst_s as f64).max(1.0);
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = state
            .buckets
            .entry((tenant.to_owned(), class))
            .or_insert(Bucket {
                tokens: capacity,
                refilled: now,
                throttled_until: None,
            });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.refilled = now;
        let early = bucket.throttled_until.filter(|until| now < *until);
        let answer = if let (Some(until), true) = (early, self.config.penalize_early_retries) {
            Some(whole_seconds(until - now))
        } else if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            None
        } else {
            let wait = whole_seconds(Duration::from_secs_f64((1.0 - bucket.tokens) / rate));
            bucket.throttled_until = Some(now + wait);
            Some(wait)
        };
        let stats = state.stats.entry(class.to_owned()).or_default();
        stats.requests += 1;
        if early.is_some() {
            stats.early_retries += 1;
        }
        if answer.is_some() {
            stats.throttled += 1;
        }
        answer
    }

    /// Requests, 429s and early retries per class so far.
    pub fn stats(&self) -> BTreeMap<String, ClassStats> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .stats
            .clone()
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }
}

/// `Retry-After` is whole seconds: rounded up, at least one.
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().ceil().max(1.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(per_minute: u32, burst_s: u64, penalize: bool) -> Throttle {
        Throttle::new(ThrottleConfig {
            enabled: true,
            burst_s,
            penalize_early_retries: penalize,
            per_minute: [("cart".to_owned(), per_minute)].into_iter().collect(),
        })
    }

    #[test]
    fn a_class_over_its_budget_gets_429_with_the_time_to_the_next_token() {
        let t = throttle(60, 2, false);
        let t0 = Instant::now();
        // Two seconds of 60/min banked: two calls, then 429 for one second.
        assert_eq!(t.check("t", "create_cart", t0), None);
        assert_eq!(t.check("t", "get_cart", t0), None);
        assert_eq!(
            t.check("t", "update_cart", t0),
            Some(Duration::from_secs(1))
        );
        // Other classes and other tenants have their own budgets; unlisted classes have none.
        assert_eq!(t.check("other", "create_cart", t0), None);
        assert_eq!(t.check("t", "get_sku", t0), None);
        assert_eq!(t.check("t", "token", t0), None);
        // A token a second.
        assert_eq!(
            t.check("t", "create_cart", t0 + Duration::from_millis(1000)),
            None
        );
        let stats = t.stats();
        assert_eq!(
            stats["cart"],
            ClassStats {
                requests: 5,
                throttled: 1,
                early_retries: 0
            }
        );
    }

    #[test]
    fn early_retries_are_counted_and_refused_again_when_penalized() {
        let t0 = Instant::now();
        for (penalize, expected) in [(false, None), (true, Some(Duration::from_secs(1)))] {
            let t = throttle(600, 0, penalize);
            assert_eq!(t.check("t", "create_cart", t0), None);
            assert_eq!(
                t.check("t", "create_cart", t0),
                Some(Duration::from_secs(1)),
                "the bucket holds one token"
            );
            // 200 ms later a token is there, but the Retry-After (1 s) has not ended.
            let early = t0 + Duration::from_millis(200);
            assert_eq!(
                t.check("t", "create_cart", early),
                expected,
                "penalize={penalize}"
            );
            assert_eq!(t.stats()["cart"].early_retries, 1);
        }
    }

    #[test]
    fn disabled_throttling_admits_everything() {
        let t = Throttle::new(ThrottleConfig::default());
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| t.check("t", "checkout", t0).is_none()));
    }
}
