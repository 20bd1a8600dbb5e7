//! `/metrics`: the Prometheus text format.
//!
//! The counters and histograms are recorded where things happen (the engine, the client, the
//! purchase workflow) through the `metrics` facade; this process installs the Prometheus
//! recorder of `metrics-exporter-prometheus` and renders it per scrape. Chosen over
//! `prometheus-client` because the facade needs no registry handle threaded through the
//! library crates (a no-op until a recorder is installed, so their tests and embedders pay
//! nothing), and the exporter renders without an HTTP server of its own. The gauges that
//! describe the queue (sagas by status and state, the due backlog, the oldest due purchase's
//! age) are read from the database at each scrape: they then hold for the whole database,
//! whichever daemon is scraped, and are never stale.

use hyper::StatusCode;
use metrics::gauge;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pcsaga_engine::metrics as names;
use pcsaga_engine::{SagaStatus, Store};

use super::{reply, Reply, Site};

/// The statuses, for gauges that must read 0 when none is left.
const STATUSES: [SagaStatus; 5] = [
    SagaStatus::Active,
    SagaStatus::Succeeded,
    SagaStatus::Failed,
    SagaStatus::NeedsAttention,
    SagaStatus::Cancelled,
];

/// Installs the process's recorder (once; a second call gives `None`).
pub fn install() -> Option<PrometheusHandle> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), names::SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(names::COMMIT_BATCH.into()),
                names::BATCH_BUCKETS,
            )
        });
    let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
        Ok(handle) => handle,
        Err(error) => {
            tracing::warn!(%error, "no metrics in this process: the recorder could not be installed");
            return None;
        }
    };
    pcsaga_engine::metrics::describe();
    pcsaga_partner_center::metrics::describe();
    pcsaga_purchase::metrics::describe();
    metrics::describe_counter!(
        LOG_LINES_DROPPED,
        "Log lines dropped because the log writer could not keep up."
    );
    // Series that exist from the start read 0 instead of being absent, so that `rate()` and
    // alerts on them work before the first event.
    metrics::counter!(names::LEASES_LOST).increment(0);
    for path in ["cart", "direct"] {
        metrics::counter!(pcsaga_purchase::metrics::CHECKOUTS_SENT, "path" => path).increment(0);
        metrics::counter!(pcsaga_purchase::metrics::CHECKOUTS_CONFIRMED, "path" => path)
            .increment(0);
    }
    Some(handle)
}

const LOG_LINES_DROPPED: &str = "pcsaga_log_lines_dropped_total";

pub async fn scrape(site: &Site) -> Reply {
    let Some(handle) = &site.metrics else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "no metrics here: `pcsaga console` only shows the database; scrape the daemon's listener (`pcsaga daemon --listen ADDR`)\n",
        );
    };
    if let Err(error) = queue_gauges(&site.store).await {
        // The counters are still worth serving; the gauges keep their last values, and the
        // failure shows on /readyz and in the log.
        tracing::warn!(%error, "/metrics: cannot read the queue's figures from the database");
    }
    metrics::counter!(LOG_LINES_DROPPED).absolute(crate::logging::dropped());
    handle.run_upkeep();
    reply(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        handle.render(),
    )
}

/// Sets the gauges of every workflow's queue from the database.
async fn queue_gauges(store: &pcsaga_engine::AnyStore) -> Result<(), pcsaga_engine::StoreError> {
    let now = chrono::Utc::now();
    let workflows: [(&'static str, Vec<&'static str>); 2] = [
        (
            pcsaga_purchase::WORKFLOW_NAME,
            pcsaga_purchase::STATE_NAMES.to_vec(),
        ),
        (
            pcsaga_billing::WORKFLOW_NAME,
            <pcsaga_billing::State as pcsaga_engine::SagaState>::names(),
        ),
    ];
    for (workflow, states) in workflows {
        let scoped = store.scoped(workflow);
        let counts = scoped.count_by_status().await?;
        for status in STATUSES {
            gauge!(names::SAGAS, "workflow" => workflow, "status" => status.as_str())
                .set(counts.get(&status).copied().unwrap_or(0) as f64);
        }
        let active = scoped.count_active_by_state(now).await?;
        for state in states {
            let (n, _) = active.get(state).copied().unwrap_or((0, 0));
            gauge!(names::ACTIVE_BY_STATE, "workflow" => workflow, "state" => state).set(n as f64);
        }
        let due: u64 = active.values().map(|(_, due)| due).sum();
        gauge!(names::DUE, "workflow" => workflow).set(due as f64);
    }
    let snapshot = store.status_snapshot(now, 1).await?;
    let age = snapshot.oldest_due.map_or(0.0, |(_, at)| {
        (now - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    gauge!(names::OLDEST_DUE_AGE).set(age);
    Ok(())
}
