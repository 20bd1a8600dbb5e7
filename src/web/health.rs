//! `/healthz`: the process answers. `/readyz`: the database takes a write now and the daemon's
//! loop claims work; when not, a 503 whose JSON says which check failed and why.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::json;

use super::{json_reply, Reply, Site};

/// How long the write probe may take before the database counts as not writable. A write that
/// takes longer is an incident already (a commit normally takes milliseconds).
const WRITE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The loop goes round at least every `idle_poll`; missing this many rounds means it is stuck.
const MISSED_ROUNDS: u32 = 5;

/// Shortest bound on the loop's silence (an `idle_poll` of milliseconds would make a
/// scheduler hiccup look like a stuck loop).
const MIN_SILENCE: Duration = Duration::from_secs(10);

/// What readiness looks at in a daemon.
#[derive(Clone)]
pub struct Daemon {
    pub engine: pcsaga_engine::Engine<pcsaga_purchase::PurchaseWorkflow, pcsaga_engine::AnyStore>,
    /// The daemon's row: the write probe writes its heartbeat, a write the daemon makes anyway.
    pub row: pcsaga_engine::DaemonRow,
    /// Turns true when the daemon was told to stop: it then takes no new work.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

pub fn healthz() -> Reply {
    json_reply(
        StatusCode::OK,
        &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}),
    )
}

pub async fn readyz(site: &Site) -> Reply {
    let mut checks = serde_json::Map::new();
    let database = match &site.daemon {
        Some(daemon) => write_probe(site, daemon).await,
        None => read_probe(site).await,
    };
    checks.insert("database".into(), database);
    if let Some(daemon) = &site.daemon {
        checks.insert("claims".into(), claims(daemon));
    }
    let ready = checks.values().all(|c| c["ok"] == json!(true));
    json_reply(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &json!({"ready": ready, "checks": checks}),
    )
}

fn check(ok: bool, detail: String) -> serde_json::Value {
    json!({"ok": ok, "detail": detail})
}

/// Writes the daemon's heartbeat, within [`WRITE_PROBE_TIMEOUT`].
async fn write_probe(site: &Site, daemon: &Daemon) -> serde_json::Value {
    let mut row = daemon.row.clone();
    row.governor = serde_json::to_string(&daemon.engine.governor().snapshot()).ok();
    let wrote = tokio::time::timeout(
        WRITE_PROBE_TIMEOUT,
        site.store.daemon_beat(&row, chrono::Utc::now(), false),
    )
    .await;
    match wrote {
        Ok(Ok(())) => check(true, "the database took a write".into()),
        Ok(Err(error)) => check(false, format!("the database refused a write: {error}")),
        Err(_) => check(
            false,
            format!(
                "the database did not take a write within {} s: another process may hold its write lock, or its disk stalls",
                WRITE_PROBE_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// `pcsaga console` writes nothing: it checks that the database answers a read.
async fn read_probe(site: &Site) -> serde_json::Value {
    let read = tokio::time::timeout(
        WRITE_PROBE_TIMEOUT,
        pcsaga_engine::Store::count_by_status(&site.store),
    )
    .await;
    match read {
        Ok(Ok(_)) => check(
            true,
            "the database answers (this console only reads)".into(),
        ),
        Ok(Err(error)) => check(false, format!("the database cannot be read: {error}")),
        Err(_) => check(
            false,
            format!(
                "the database did not answer within {} s",
                WRITE_PROBE_TIMEOUT.as_secs()
            ),
        ),
    }
}

fn claims(daemon: &Daemon) -> serde_json::Value {
    if *daemon.stopping.borrow() {
        return check(false, "the daemon is stopping: it takes no new work".into());
    }
    let health = daemon.engine.run_health();
    let silence = (health.idle_poll * MISSED_ROUNDS).max(MIN_SILENCE);
    match (health.running, health.since_beat, health.claim_error) {
        (false, _, _) => check(false, "the daemon's loop is not running".into()),
        (true, _, Some(error)) => check(false, format!("claims fail: {error}")),
        (true, Some(since), None) if since > silence => check(
            false,
            format!(
                "the daemon's loop has not gone round for {} s (it should at least every {} ms)",
                since.as_secs(),
                health.idle_poll.as_millis()
            ),
        ),
        (true, None, None) => check(false, "the daemon's loop has not started".into()),
        (true, Some(_), None) => check(true, "the daemon claims work".into()),
    }
}
