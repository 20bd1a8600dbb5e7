//! What the daemon tells the people who run it.
//!
//! - one line per Partner Center call: the call, its method and path template, the HTTP
//!   status, the latency, the error class, the `MS-RequestId`, the purchase and the customer
//!   (INFO; WARN when throttled, a 5xx or an unknown outcome);
//! - WARN for every retry and hold, with how long it waits and why;
//! - ERROR with the full reason when a purchase fails or parks;
//! - the step bookkeeping (advance, continue, poll) at DEBUG;
//! - a summary every minute while there is work, and once when the queue empties.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::schedule::{human, Scheduled};
use crate::store::{SagaRecord, SagaStatus};
use crate::workflow::{AttemptRecord, SagaState};

/// Counters of what happened since the last summary.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    calls: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    parked: AtomicU64,
}

impl Tally {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last call, reset.
    fn take(&self) -> [u64; 6] {
        [
            &self.calls,
            &self.throttled,
            &self.retries,
            &self.succeeded,
            &self.failed,
            &self.parked,
        ]
        .map(|c| c.swap(0, Ordering::Relaxed))
    }
}

/// Logs one Partner Center call.
pub(crate) fn call(tally: &Tally, saga: &SagaRecord, route: &str, attempt: &AttemptRecord) {
    Tally::add(&tally.calls);
    let status = attempt
        .http_status
        .map_or_else(|| "-".to_owned(), |s| s.to_string());
    let class = attempt.error_class.as_deref().unwrap_or("ok");
    let request_id = attempt.request_id.as_deref().unwrap_or("-");
    let customer = saga.customer_id.as_deref().unwrap_or("-");
    let worrying = class == "throttled"
        || class == "outcome_unknown"
        || attempt.http_status.is_some_and(|s| s >= 500);
    if class == "throttled" {
        Tally::add(&tally.throttled);
    }
    if worrying {
        tracing::warn!(
            call = %attempt.call, route, status, latency_ms = attempt.latency_ms, class,
            request_id, purchase = %saga.id, customer,
            error = attempt.error.as_deref().unwrap_or(""),
            "partner center call"
        );
    } else {
        tracing::info!(
            call = %attempt.call, route, status, latency_ms = attempt.latency_ms, class,
            request_id, purchase = %saga.id, customer,
            "partner center call"
        );
    }
}

/// Logs what a step decided, at the level an operator needs.
pub(crate) fn decided<S: SagaState, C>(
    tally: &Tally,
    saga: &SagaRecord,
    kind: &str,
    scheduled: &Scheduled<S, C>,
    now: DateTime<Utc>,
    command: &str,
) {
    let wait = scheduled
        .next_run_at
        .and_then(|at| (at - now).to_std().ok())
        .map_or_else(|| "-".to_owned(), human);
    let customer = saga.customer_id.as_deref().unwrap_or("-");
    let error = scheduled.last_error.as_deref().unwrap_or("");
    match (kind, scheduled.status) {
        (_, SagaStatus::Failed) => {
            Tally::add(&tally.failed);
            tracing::error!(purchase = %saga.id, customer, state = scheduled.state.name(), reason = error, "purchase failed; nothing was bought. Next: `{command} show {}`", saga.id);
        }
        (_, SagaStatus::NeedsAttention) => {
            Tally::add(&tally.parked);
            tracing::error!(purchase = %saga.id, customer, state = scheduled.state.name(), reason = error, "purchase parked for an operator. Next: `{command} show {}`", saga.id);
        }
        (_, SagaStatus::Succeeded) => {
            Tally::add(&tally.succeeded);
            tracing::info!(purchase = %saga.id, customer, detail = scheduled.event.detail.as_deref().unwrap_or(""), "purchase succeeded");
        }
        ("retry", _) => {
            Tally::add(&tally.retries);
            tracing::warn!(purchase = %saga.id, customer, state = scheduled.state.name(), wait, attempt = scheduled.attempt, error, "retrying");
        }
        ("hold", _) => {
            tracing::warn!(purchase = %saga.id, customer, state = scheduled.state.name(), wait, reason = error, "holding");
        }
        _ => {
            tracing::debug!(purchase = %saga.id, decision = kind, to = scheduled.state.name(), wait, "step decided");
        }
    }
}

/// The minute's summary: what is active (and due) by state, what stopped, the calls and 429s
/// of the interval, and log lines that could not be written.
pub(crate) fn summary(
    tally: &Tally,
    active: &BTreeMap<String, (u64, u64)>,
    interval: Duration,
    dropped_log_lines: u64,
) {
    let [calls, throttled, retries, succeeded, failed, parked] = tally.take();
    let total: u64 = active.values().map(|(n, _)| n).sum();
    let due: u64 = active.values().map(|(_, d)| d).sum();
    let by_state = active
        .iter()
        .map(|(state, (n, d))| format!("{state}={n} ({d} due)"))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        active = total,
        due,
        waiting = total - due.min(total),
        by_state,
        succeeded,
        failed,
        parked,
        calls,
        throttled,
        retries,
        dropped_log_lines,
        interval = %human(interval),
        "summary"
    );
}

/// The governor's part of the summary: one line per class that has calls waiting, a pause in
/// force, or an allowed rate below its budget (nothing when all is calm).
pub(crate) fn governor(classes: &[crate::governor::ClassSnapshot]) {
    for c in classes {
        let below = c.allowed_per_minute + 0.5 < f64::from(c.budget_per_minute);
        if c.waiting == 0 && c.paused_ms == 0 && !below {
            continue;
        }
        tracing::info!(
            class = %c.class,
            budget_per_minute = c.budget_per_minute,
            allowed_per_minute = c.allowed_per_minute.round() as u64,
            waiting = c.waiting,
            paused_ms = c.paused_ms,
            throttled = c.throttled,
            last_retry_after_s = c.last_retry_after_s,
            "governor"
        );
    }
}
