//! Per-state policies from a workflow TOML file, and how a decision becomes a schedule.
//!
//! ```toml
//! workflow = "one-time-purchase"
//! [defaults.retry]
//! initial_interval_ms = 1000
//! multiplier = 2.0
//! max_interval_ms = 300000
//! max_attempts = 10
//! jitter = 0.2
//! on_exhausted = "fail"
//! [defaults.poll]
//! interval_ms = 30000
//! deadline_s = 3600
//! on_deadline = "fail"
//! [states.Checkout.retry]
//! on_exhausted = "park"
//! ```
//!
//! Each state's policy is the defaults overlaid field by field with its own table. Unknown
//! keys and states are errors that name the key, so a typo cannot silently fall back to a
//! default.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What happens when retries or a poll deadline run out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExhausted {
    /// Fail the saga: safe only where no money can have moved.
    Fail,
    /// Park it for an operator (needs attention).
    Park,
}

/// Retry with exponential backoff.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    #[serde(rename = "initialIntervalMs", serialize_with = "as_ms")]
    pub initial_interval: Duration,
    pub multiplier: f64,
    #[serde(rename = "maxIntervalMs", serialize_with = "as_ms")]
    pub max_interval: Duration,
    /// Attempts in one state, the first included, before `on_exhausted`.
    pub max_attempts: u32,
    /// Fraction of the delay randomised either way (0.2 = ±20%), so retries spread out.
    pub jitter: f64,
    pub on_exhausted: OnExhausted,
}

/// Polling for a state that waits on Partner Center.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollPolicy {
    #[serde(rename = "intervalMs", serialize_with = "as_ms")]
    pub interval: Duration,
    /// How long the saga may stay in the state in all.
    #[serde(rename = "deadlineS", serialize_with = "as_s")]
    pub deadline: Duration,
    pub on_deadline: OnExhausted,
}

/// Durations in JSON output: whole milliseconds, as in the policy file.
fn as_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn as_s<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// The policy of one state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatePolicy {
    pub retry: RetryPolicy,
    pub poll: PollPolicy,
}

impl Default for StatePolicy {
    fn default() -> Self {
        Self {
            retry: RetryPolicy {
                initial_interval: Duration::from_secs(1),
                multiplier: 2.0,
                max_interval: Duration::from_secs(300),
                max_attempts: 10,
                jitter: 0.2,
                on_exhausted: OnExhausted::Fail,
            },
            poll: PollPolicy {
                interval: Duration::from_secs(30),
                deadline: Duration::from_secs(3600),
                on_deadline: OnExhausted::Fail,
            },
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    workflow: String,
    #[serde(default)]
    defaults: PolicyTable,
    #[serde(default)]
    states: BTreeMap<String, PolicyTable>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyTable {
    retry: Option<RetryTable>,
    poll: Option<PollTable>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryTable {
    initial_interval_ms: Option<u64>,
    multiplier: Option<f64>,
    max_interval_ms: Option<u64>,
    max_attempts: Option<u32>,
    jitter: Option<f64>,
    on_exhausted: Option<OnExhausted>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PollTable {
    interval_ms: Option<u64>,
    deadline_s: Option<u64>,
    on_deadline: Option<OnExhausted>,
}

/// A policy file that could not be used; the message names the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

/// The policies of every state of one workflow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policies {
    pub workflow: String,
    pub states: BTreeMap<String, StatePolicy>,
}

impl Policies {
    /// Parses and validates a policy file for a workflow with the given states.
    /// `check` applies the workflow's own rules to each state's policy.
    pub fn parse(
        text: &str,
        workflow: &str,
        states: &[&str],
        check: impl Fn(&str, &StatePolicy) -> Result<(), String>,
    ) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            PolicyError(format!("not a valid policy file: {}", e.to_string().trim()))
        })?;
        if file.workflow != workflow {
            return Err(PolicyError(format!(
                "workflow: the file is for {:?}, expected {workflow:?}",
                file.workflow
            )));
        }
        for name in file.states.keys() {
            if !states.contains(&name.as_str()) {
                return Err(PolicyError(format!(
                    "states.{name}: no such state; the states are {}",
                    states.join(", ")
                )));
            }
        }
        let defaults = overlay(&StatePolicy::default(), &file.defaults);
        validate(&defaults, "defaults")?;
        let mut resolved = BTreeMap::new();
        for state in states {
            let policy = file
                .states
                .get(*state)
                .map_or_else(|| defaults.clone(), |table| overlay(&defaults, table));
            validate(&policy, &format!("states.{state}"))?;
            check(state, &policy).map_err(|e| PolicyError(format!("states.{state}: {e}")))?;
            resolved.insert((*state).to_owned(), policy);
        }
        Ok(Self {
            workflow: workflow.to_owned(),
            states: resolved,
        })
    }

    /// The policy of a state (the defaults for a state the file does not know).
    pub fn get(&self, state: &str) -> StatePolicy {
        self.states.get(state).cloned().unwrap_or_default()
    }

    /// Every interval divided by `factor` (at least 1 ms), attempts and deadlines' ratio kept.
    /// Used by the demo to run production policies at a watchable speed.
    pub fn scaled(&self, factor: f64) -> Self {
        let scale =
            |d: Duration| Duration::from_secs_f64((d.as_secs_f64() / factor.max(1.0)).max(0.001));
        let states = self
            .states
            .iter()
            .map(|(name, p)| {
                let mut p = p.clone();
                p.retry.initial_interval = scale(p.retry.initial_interval);
                p.retry.max_interval = scale(p.retry.max_interval);
                p.poll.interval = scale(p.poll.interval);
                p.poll.deadline = scale(p.poll.deadline);
                (name.clone(), p)
            })
            .collect();
        Self {
            workflow: self.workflow.clone(),
            states,
        }
    }
}

fn overlay(base: &StatePolicy, table: &PolicyTable) -> StatePolicy {
    let mut out = base.clone();
    if let Some(r) = &table.retry {
        if let Some(v) = r.initial_interval_ms {
            out.retry.initial_interval = Duration::from_millis(v);
        }
        if let Some(v) = r.multiplier {
            out.retry.multiplier = v;
        }
        if let Some(v) = r.max_interval_ms {
            out.retry.max_interval = Duration::from_millis(v);
        }
        if let Some(v) = r.max_attempts {
            out.retry.max_attempts = v;
        }
        if let Some(v) = r.jitter {
            out.retry.jitter = v;
        }
        if let Some(v) = r.on_exhausted {
            out.retry.on_exhausted = v;
        }
    }
    if let Some(p) = &table.poll {
        if let Some(v) = p.interval_ms {
            out.poll.interval = Duration::from_millis(v);
        }
        if let Some(v) = p.deadline_s {
            out.poll.deadline = Duration::from_secs(v);
        }
        if let Some(v) = p.on_deadline {
            out.poll.on_deadline = v;
        }
    }
    out
}

fn validate(p: &StatePolicy, at: &str) -> Result<(), PolicyError> {
    let bad = |key: &str, why: String| Err(PolicyError(format!("{at}.{key}: {why}")));
    if p.retry.initial_interval.is_zero() {
        return bad("retry.initial_interval_ms", "must be at least 1".into());
    }
    if !(p.retry.multiplier.is_finite() && p.retry.multiplier >= 1.0 && p.retry.multiplier <= 10.0)
    {
        return bad(
            "retry.multiplier",
            format!("must be between 1.0 and 10.0 (got {})", p.retry.multiplier),
        );
    }
    if p.retry.max_interval < p.retry.initial_interval {
        return bad(
            "retry.max_interval_ms",
            "must not be below initial_interval_ms".into(),
        );
    }
    if p.retry.max_attempts == 0 || p.retry.max_attempts > 10_000 {
        return bad(
            "retry.max_attempts",
            format!("must be between 1 and 10000 (got {})", p.retry.max_attempts),
        );
    }
    if !(0.0..=1.0).contains(&p.retry.jitter) {
        return bad(
            "retry.jitter",
            format!("must be between 0.0 and 1.0 (got {})", p.retry.jitter),
        );
    }
    if p.poll.interval.is_zero() {
        return bad("poll.interval_ms", "must be at least 1".into());
    }
    if p.poll.deadline < p.poll.interval {
        return bad(
            "poll.deadline_s",
            "must not be shorter than poll.interval_ms".into(),
        );
    }
    Ok(())
}

/// The delay before retry number `attempt` (1-based: the delay after the first failure is
/// `attempt = 1`), with jitter drawn deterministically from `seed`.
pub fn retry_delay(policy: &RetryPolicy, attempt: u32, seed: u64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(64);
    let base = policy.initial_interval.as_secs_f64() * policy.multiplier.powi(exponent as i32);
    let capped = base.min(policy.max_interval.as_secs_f64());
    let u = unit(mix(seed, u64::from(attempt)));
    let factor = 1.0 - policy.jitter + 2.0 * policy.jitter * u;
    Duration::from_secs_f64((capped * factor).max(0.0))
}

/// A poll interval with the retry policy's jitter applied, so polls of many sagas spread.
pub fn poll_delay(policy: &StatePolicy, polls: u32, seed: u64) -> Duration {
    let u = unit(mix(seed ^ 0x5bd1_e995, u64::from(polls)));
    let jitter = policy.retry.jitter.min(0.5);
    Duration::from_secs_f64(policy.poll.interval.as_secs_f64() * (1.0 - jitter + 2.0 * jitter * u))
}

/// A stable seed from a saga id.
pub fn seed_of(id: &str) -> u64 {
    id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Adds a duration to an instant, saturating.
pub fn after(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    // Capped so that no setting or header, however absurd, overflows the calendar.
    let cap = chrono::Duration::days(365 * 100);
    let delay = chrono::Duration::from_std(delay).unwrap_or(cap).min(cap);
    now.checked_add_signed(delay)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: &[&str] = &["A", "B"];

    fn parse(text: &str) -> Result<Policies, PolicyError> {
        Policies::parse(text, "wf", STATES, |state, p| {
            if state == "B" && p.retry.on_exhausted == OnExhausted::Fail {
                Err("retry.on_exhausted must be \"park\"".into())
            } else {
                Ok(())
            }
        })
    }

    #[track_caller]
    fn check_error(text: &str, expected: &str) {
        let err = parse(text).expect_err("the file is refused");
        assert!(
            err.0.contains(expected),
            "expected {expected:?} in {:?}",
            err.0
        );
    }

    #[test]
    fn states_overlay_the_defaults_field_by_field() {
        let p = parse(
            r#"workflow = "wf"
            [defaults.retry]
            initial_interval_ms = 200
            max_attempts = 4
            [states.B.retry]
            max_attempts = 9
            on_exhausted = "park"
            [states.B.poll]
            interval_ms = 5000"#,
        )
        .expect("valid");
        assert_eq!(p.get("A").retry.max_attempts, 4);
        assert_eq!(p.get("B").retry.max_attempts, 9);
        assert_eq!(
            p.get("B").retry.initial_interval,
            Duration::from_millis(200)
        );
        assert_eq!(p.get("B").poll.interval, Duration::from_secs(5));
        assert_eq!(p.get("A").retry.on_exhausted, OnExhausted::Fail);
    }

    #[test]
    fn bad_files_name_the_key() {
        check_error(
            "workflow = \"other\"",
            "workflow: the file is for \"other\"",
        );
        check_error(
            "workflow = \"wf\"\n[states.C.retry]\nmax_attempts = 1",
            "states.C: no such state",
        );
        check_error(
            "workflow = \"wf\"\n[defaults.retry]\nmultiplier = 0.5",
            "defaults.retry.multiplier",
        );
        check_error(
            "workflow = \"wf\"\n[defaults.retry]\nmax_attemps = 3",
            "max_attemps",
        );
        check_error(
            "workflow = \"wf\"\n[states.A.poll]\ninterval_ms = 0",
            "states.A.poll.interval_ms",
        );
        check_error(
            "workflow = \"wf\"\n[states.B.retry]\nmax_attempts = 3",
            "states.B: retry.on_exhausted must be \"park\"",
        );
        check_error(
            "workflow = \"wf\"\n[defaults.retry]\njitter = 2.0",
            "defaults.retry.jitter",
        );
        check_error("workflow = [", "not a valid policy file");
    }

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let policy = RetryPolicy {
            initial_interval: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(10),
            max_attempts: 10,
            jitter: 0.0,
            on_exhausted: OnExhausted::Fail,
        };
        let delays: Vec<u64> = (1..=6)
            .map(|n| retry_delay(&policy, n, 1).as_secs())
            .collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 10, 10]);
        let jittered = RetryPolicy {
            jitter: 0.5,
            ..policy
        };
        let spread: Vec<Duration> = (0..50)
            .map(|seed| retry_delay(&jittered, 3, seed))
            .collect();
        assert!(spread
            .iter()
            .all(|d| *d >= Duration::from_secs(2) && *d <= Duration::from_secs(6)));
        assert!(
            spread.iter().any(|d| *d != spread[0]),
            "jitter spreads sagas apart"
        );
        // Sagas submitted together (time-ordered ids sharing their first characters) and
        // retried at the same moment come due at spread-out times over the whole range, not in
        // lockstep: no 20 ms slot holds more than a tenth of them.
        let ids: Vec<String> = (0..200)
            .map(|n| format!("01a2336a-0454-735c-a42b-{n:012x}"))
            .collect();
        let mut slots = std::collections::BTreeMap::new();
        for id in &ids {
            let d = retry_delay(&jittered, 3, seed_of(id));
            *slots.entry(d.as_millis() / 20).or_insert(0) += 1;
        }
        assert!(slots.len() >= 100, "{} distinct 20 ms slots", slots.len());
        assert!(slots.values().all(|n| *n <= 20), "{slots:?}");
        let (first, last) = (slots.keys().next().copied(), slots.keys().last().copied());
        assert!(
            first.is_some_and(|f| f < 2500 / 20) && last.is_some_and(|l| l > 5500 / 20),
            "spread over the range: {first:?}..{last:?} (× 20 ms)"
        );
        assert_eq!(
            retry_delay(&jittered, 3, 7),
            retry_delay(&jittered, 3, 7),
            "and is reproducible"
        );
    }
}
