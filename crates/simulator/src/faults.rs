//! Fault injection, reproducible from a seed.
//!
//! A [`FaultPlan`] is a list of rules. Each request to an endpoint gets a sequence number `n`
//! for that endpoint; whether a rule fires for it is a pure function of `(seed, endpoint, n,
//! rule)`, so the same plan and the same request order give the same faults, whatever the
//! timing. Latency rules all apply; of the other rules the first that fires wins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The endpoints faults can target, by name (`"*"` targets all of them).
pub const ENDPOINTS: &[&str] = &[
    "token",
    "register",
    "registration_status",
    "list_products",
    "get_product",
    "list_skus",
    "get_sku",
    "list_availabilities",
    "get_availability",
    "check_inventory",
    "create_cart",
    "get_cart",
    "update_cart",
    "checkout",
    "create_order",
    "get_order",
    "list_orders",
    "provisioning_status",
    "list_entitlements",
    "artifact_details",
    "cancel_order",
    "account_balance",
    "invoice_summaries",
    "list_invoices",
    "get_invoice",
    "invoice_lines",
    "unbilled_lines",
    "invoice_statement",
    "billed_export",
    "unbilled_export",
    "export_operation",
    "export_manifest",
];

/// The faults to inject.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultPlan {
    /// Seed of every random decision.
    pub seed: u64,
    pub rules: Vec<FaultRule>,
}

/// One rule: on `endpoint`, with `probability`, inject `fault`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// An endpoint name from [`ENDPOINTS`], or `*`.
    pub endpoint: String,
    /// Chance per request, 0.0 to 1.0.
    #[serde(default = "one")]
    pub probability: f64,
    /// Skip the first `after` requests to the endpoint.
    #[serde(default)]
    pub after: u64,
    /// Fire at most this many times in all.
    #[serde(default)]
    pub limit: Option<u64>,
    pub fault: Fault,
}

fn one() -> f64 {
    1.0
}

/// What to do to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Delay the response by a uniform random time in `[min_ms, max_ms]`.
    Latency { min_ms: u64, max_ms: u64 },
    /// 429 with `Retry-After` (seconds, or an HTTP date when `http_date`); not processed.
    Throttle {
        retry_after_s: u64,
        #[serde(default)]
        http_date: bool,
    },
    /// A response with this status and a standard error body with `code` (default 800003);
    /// not processed. Any status from 200 to 599: a 200 carrying an error code is documented.
    Status {
        status: u16,
        #[serde(default)]
        code: Option<String>,
    },
    /// Never answer (until `hang_s`): the client times out. `processed` says whether the
    /// request took effect first.
    Hang {
        #[serde(default)]
        processed: bool,
    },
    /// Process the request, then close the connection without a response: the ambiguous case.
    Drop,
    /// Process the request, then answer 200 with truncated JSON.
    Malformed,
    /// Answer with exactly this status, body and headers (for malformed-response tests:
    /// HTML with 200, missing fields, odd `Retry-After` values, huge bodies, ...).
    /// `processed` says whether the request took effect first.
    Respond {
        status: u16,
        #[serde(default)]
        body: String,
        /// Repeat `body` this many times (a huge body without a huge plan).
        #[serde(default = "one_u32")]
        repeat: u32,
        #[serde(default)]
        content_type: Option<String>,
        #[serde(default)]
        retry_after: Option<String>,
        #[serde(default)]
        processed: bool,
    },
    /// Process the request, send the status line, headers and half of the body, then drop
    /// the connection.
    BodyDrop,
}

fn one_u32() -> u32 {
    1
}

impl FaultRule {
    /// Validates a rule; the message names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoint != "*" && !ENDPOINTS.contains(&self.endpoint.as_str()) {
            return Err(format!(
                "unknown endpoint {:?}; use '*' or one of: {}",
                self.endpoint,
                ENDPOINTS.join(", ")
            ));
        }
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(format!(
                "probability {} is not between 0 and 1",
                self.probability
            ));
        }
        match &self.fault {
            Fault::Latency { min_ms, max_ms } if min_ms > max_ms => {
                Err(format!("latency min_ms {min_ms} is above max_ms {max_ms}"))
            }
            Fault::Status { status, .. } | Fault::Respond { status, .. }
                if !(200..=599).contains(status) =>
            {
                Err(format!("status {status} is not between 200 and 599"))
            }
            Fault::Respond { repeat, body, .. }
                if u64::from(*repeat) * body.len() as u64 > 256 * 1024 * 1024 =>
            {
                Err("a response body above 256 MiB is not served".to_owned())
            }
            _ => Ok(()),
        }
    }
}

/// What the injector decided for one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    pub latency: Duration,
    pub fault: Option<Fault>,
}

/// Applies a plan, counting requests per endpoint and firings per rule.
#[derive(Debug, Default)]
pub struct Injector {
    state: Mutex<InjectorState>,
}

#[derive(Debug, Default)]
struct InjectorState {
    plan: FaultPlan,
    requests: HashMap<String, u64>,
    fired: Vec<u64>,
}

impl Injector {
    pub fn new(plan: FaultPlan) -> Self {
        let fired = vec![0; plan.rules.len()];
        Self {
            state: Mutex::new(InjectorState {
                plan,
                requests: HashMap::new(),
                fired,
            }),
        }
    }

    /// Replaces the plan (counters restart).
    pub fn replace(&self, plan: FaultPlan) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.fired = vec![0; plan.rules.len()];
        state.requests.clear();
        state.plan = plan;
    }

    /// The current plan.
    pub fn plan(&self) -> FaultPlan {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .plan
            .clone()
    }

    /// Decides the faults of the next request to `endpoint`.
    pub fn decide(&self, endpoint: &str) -> Decision {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = &mut *guard;
        let n = {
            let counter = state.requests.entry(endpoint.to_owned()).or_insert(0);
            *counter += 1;
            *counter
        };
        let mut decision = Decision::default();
        for (index, rule) in state.plan.rules.iter().enumerate() {
            if rule.endpoint != "*" && rule.endpoint != endpoint {
                continue;
            }
            if n <= rule.after || rule.limit.is_some_and(|limit| state.fired[index] >= limit) {
                continue;
            }
            let roll = unit(mix(state.plan.seed, endpoint, n, index as u64, 0));
            if roll >= rule.probability {
                continue;
            }
            match &rule.fault {
                Fault::Latency { min_ms, max_ms } => {
                    let span = max_ms - min_ms;
                    let pick = if span == 0 {
                        0
                    } else {
                        mix(state.plan.seed, endpoint, n, index as u64, 1) % (span + 1)
                    };
                    decision.latency += Duration::from_millis(min_ms + pick);
                    state.fired[index] += 1;
                }
                other => {
                    if decision.fault.is_none() {
                        decision.fault = Some(other.clone());
                        state.fired[index] += 1;
                    }
                }
            }
        }
        decision
    }
}

/// SplitMix64 over the inputs: a stable hash, the same on every platform and Rust version.
fn mix(seed: u64, endpoint: &str, n: u64, rule: u64, salt: u64) -> u64 {
    let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
    for byte in endpoint.bytes() {
        h = splitmix(h ^ u64::from(byte));
    }
    splitmix(splitmix(splitmix(h ^ n) ^ rule) ^ salt)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(seed: u64, probability: f64) -> FaultPlan {
        FaultPlan {
            seed,
            rules: vec![FaultRule {
                endpoint: "checkout".to_owned(),
                probability,
                after: 0,
                limit: None,
                fault: Fault::Status {
                    status: 503,
                    code: None,
                },
            }],
        }
    }

    fn fired(injector: &Injector, endpoint: &str, n: usize) -> Vec<bool> {
        (0..n)
            .map(|_| injector.decide(endpoint).fault.is_some())
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let a = fired(&Injector::new(plan(7, 0.3)), "checkout", 200);
        let b = fired(&Injector::new(plan(7, 0.3)), "checkout", 200);
        let c = fired(&Injector::new(plan(8, 0.3)), "checkout", 200);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let rate = a.iter().filter(|f| **f).count();
        assert!(
            (30..=90).contains(&rate),
            "30% of 200 should fire about 60 times, got {rate}"
        );
    }

    #[test]
    fn rules_respect_endpoint_after_and_limit() {
        let mut p = plan(1, 1.0);
        p.rules[0].after = 2;
        p.rules[0].limit = Some(3);
        let injector = Injector::new(p);
        assert_eq!(fired(&injector, "get_cart", 3), vec![false; 3]);
        assert_eq!(
            fired(&injector, "checkout", 7),
            vec![false, false, true, true, true, false, false]
        );
    }

    #[test]
    fn invalid_rules_are_named() {
        let mut p = plan(1, 1.5);
        assert!(p.rules[0].validate().unwrap_err().contains("probability"));
        p.rules[0].probability = 0.5;
        p.rules[0].endpoint = "chekout".to_owned();
        assert!(p.rules[0]
            .validate()
            .unwrap_err()
            .contains("unknown endpoint \"chekout\""));
    }
}
