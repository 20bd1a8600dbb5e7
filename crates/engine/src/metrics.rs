//! What the engine counts for monitoring, through the `metrics` facade.
//!
//! Recording is a no-op until the binary installs a recorder (`pcsaga daemon` installs the
//! Prometheus one and serves it at `/metrics`), so tests and embedders pay nothing. Every name
//! the engine records is here, with its description, so the set is reviewed in one place.
//!
//! Architecture invariant: every label has a bounded set of values (a workflow, a state, a
//! call class, a call's name, an HTTP status, an error class), never an id: a purchase id as a
//! label would make a new series per purchase and exhaust the monitoring system.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, histogram, Unit};

pub const TRANSITIONS: &str = "pcsaga_transitions_total";
pub const FINISHED: &str = "pcsaga_sagas_finished_total";
pub const RETRIES: &str = "pcsaga_retries_total";
pub const CALLS: &str = "pcsaga_partner_center_calls_total";
pub const THROTTLED: &str = "pcsaga_partner_center_throttled_total";
pub const OUTCOME_UNKNOWN: &str = "pcsaga_partner_center_outcome_unknown_total";
pub const GOVERNOR_WAIT: &str = "pcsaga_governor_wait_seconds";
pub const COMMIT_DURATION: &str = "pcsaga_commit_duration_seconds";
pub const COMMIT_BATCH: &str = "pcsaga_commit_batch_size";
pub const CLAIM_DURATION: &str = "pcsaga_claim_duration_seconds";
pub const LEASES_LOST: &str = "pcsaga_leases_lost_total";

/// Gauges the binary sets from the database at each scrape (the engine does not keep them).
pub const SAGAS: &str = "pcsaga_sagas";
pub const ACTIVE_BY_STATE: &str = "pcsaga_active_sagas";
pub const DUE: &str = "pcsaga_due_sagas";
pub const OLDEST_DUE_AGE: &str = "pcsaga_oldest_due_age_seconds";

/// The histogram buckets of the durations (seconds): 100 µs to a minute. A governor wait can
/// last a 429's pause; a commit or a claim beyond a second is already an incident.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

/// The buckets of commit batch sizes: 1 to the largest batch a store writes (256).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Describes the engine's metrics to the installed recorder (`# HELP` and `# TYPE` lines).
pub fn describe() {
    describe_counter!(
        TRANSITIONS,
        "Steps committed, by workflow and decision (advance, retry, poll, hold, fail, park, complete, ...)."
    );
    describe_counter!(
        FINISHED,
        "Sagas that reached an end (succeeded, failed, needs_attention), by workflow and status."
    );
    describe_counter!(
        RETRIES,
        "Steps retried after a failed call, by workflow and state."
    );
    describe_counter!(
        CALLS,
        "Partner Center calls made, by call class, call and HTTP status of the last reply (none: no reply)."
    );
    describe_counter!(THROTTLED, "Calls answered 429, by call class.");
    describe_counter!(
        OUTCOME_UNKNOWN,
        "Side-effecting calls whose reply was lost (the effect may have happened), by call class."
    );
    describe_histogram!(
        GOVERNOR_WAIT,
        Unit::Seconds,
        "Time a call waited in the rate governor before it was sent, by call class."
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time from a step's commit request to its durable write (group commit included)."
    );
    describe_histogram!(
        COMMIT_BATCH,
        Unit::Count,
        "Commits written together in one database transaction, by store."
    );
    describe_histogram!(
        CLAIM_DURATION,
        Unit::Seconds,
        "Time a claim of due sagas took."
    );
    describe_counter!(
        LEASES_LOST,
        "Writes refused because another worker owns the saga now (the step is given up, nothing lost)."
    );
    describe_gauge!(
        SAGAS,
        "Sagas by workflow and status, as the database says at the scrape."
    );
    describe_gauge!(ACTIVE_BY_STATE, "Active sagas by workflow and state.");
    describe_gauge!(DUE, "Active sagas due now (the backlog), by workflow.");
    describe_gauge!(
        OLDEST_DUE_AGE,
        Unit::Seconds,
        "How long the oldest due saga (a purchase or a reconciliation run) has been due (0 when none is)."
    );
}

pub(crate) fn transition(workflow: &'static str, decision: &'static str) {
    counter!(TRANSITIONS, "workflow" => workflow, "decision" => decision).increment(1);
}

pub(crate) fn finished(workflow: &'static str, status: &'static str) {
    counter!(FINISHED, "workflow" => workflow, "status" => status).increment(1);
}

pub(crate) fn retry(workflow: &'static str, state: &'static str) {
    counter!(RETRIES, "workflow" => workflow, "state" => state).increment(1);
}

/// One call made: its class, its name and the status of its last reply.
pub(crate) fn call(class: &'static str, attempt: &crate::AttemptRecord) {
    let status = attempt
        .http_status
        .map_or_else(|| "none".to_owned(), |s| s.to_string());
    // The call's name comes from the workflow's fixed set of calls.
    counter!(CALLS, "class" => class, "call" => attempt.call.clone(), "status" => status)
        .increment(1);
    match attempt.error_class.as_deref() {
        Some("throttled") => counter!(THROTTLED, "class" => class).increment(1),
        Some("outcome_unknown") => counter!(OUTCOME_UNKNOWN, "class" => class).increment(1),
        _ => {}
    }
}

pub(crate) fn governor_wait(class: &'static str, waited: Duration) {
    histogram!(GOVERNOR_WAIT, "class" => class).record(waited.as_secs_f64());
}

pub(crate) fn commit(took: Duration) {
    histogram!(COMMIT_DURATION).record(took.as_secs_f64());
}

pub(crate) fn lease_lost() {
    counter!(LEASES_LOST).increment(1);
}

pub(crate) fn claim(took: Duration) {
    histogram!(CLAIM_DURATION).record(took.as_secs_f64());
}

/// A store wrote `size` commits in one transaction.
pub(crate) fn batch(store: &'static str, size: usize) {
    histogram!(COMMIT_BATCH, "store" => store).record(size as f64);
}
