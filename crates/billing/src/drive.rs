//! Driving one reconciliation run in this process (`pcsaga reconcile`, the demo, the bench):
//! the engine's loop runs until the run stops, whoever holds it (a daemon may).

use std::time::{Duration, Instant};

use pcsaga_engine::{Engine, SagaRecord, SagaStatus, Store};
use tokio::sync::watch;

use crate::workflow::ReconcileWorkflow;

/// How often the run's row is read while it runs.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Runs `engine` until run `id` is no longer active or `deadline` passes, calling `progress`
/// with each look at the run; returns its last record (still active if the deadline passed or
/// the engine stopped first).
pub async fn drive<S: Store + Clone>(
    engine: &Engine<ReconcileWorkflow, S>,
    id: &str,
    deadline: Duration,
    mut progress: impl FnMut(&SagaRecord),
) -> Result<SagaRecord, pcsaga_engine::Error> {
    let (stop, stopped) = watch::channel(false);
    let runner = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(stopped).await })
    };
    let started = Instant::now();
    let last = loop {
        tokio::time::sleep(LOOK_EVERY).await;
        let saga = engine.get(id).await?;
        progress(&saga);
        if saga.status != SagaStatus::Active || started.elapsed() > deadline || runner.is_finished()
        {
            break saga;
        }
    };
    let _ = stop.send(true);
    match runner.await {
        Ok(result) => result?,
        Err(e) => return Err(pcsaga_engine::Error::Task(e.to_string())),
    }
    Ok(last)
}
