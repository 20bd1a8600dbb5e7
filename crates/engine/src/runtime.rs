//! The engine: submits sagas, claims due ones, drives each through plan → (intent) → call →
//! decision → commit, and runs as a daemon until told to stop.
//!
//! Architecture invariants kept here:
//! - no database transaction is open while a call is made (the store commits, then the call
//!   runs, then the store commits again);
//! - a side-effecting call is made only after its intent is committed;
//! - every write is fenced by the saga's version and the worker's lease;
//! - time comes from the injected clock; no task sleeps per saga (waiting sagas are rows).

use std::sync::Arc;
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use chrono::{DateTime, Utc};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::policy::{after, Policies};
use crate::store::{
    Change, Commit, EventKind, HistoryEvent, HistoryRow, Inserted, ListFilter, NewSaga, SagaRecord,
    SagaStatus, SagaUpdate, Store, StoreError, Writer,
};
use crate::workflow::{SagaState, SagaView, Workflow};
use crate::Error;

/// How long claims stop skipping customers at their share after a skipping claim found no
/// other customer's saga due: a new customer's purchases wait at most this long for a slot.
const NOBODY_ELSE_QUIET: Duration = Duration::from_millis(250);

/// How often the daemon repeats, at ERROR, why it claims no work.
const HOLD_REPORT: Duration = Duration::from_secs(60);

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This process's lease owner name; unique per process run.
    pub owner: String,
    /// How long a claim lasts without a commit. Must be longer than the slowest call.
    pub lease: Duration,
    /// Sagas driven at once.
    pub concurrency: usize,
    /// Partner Center calls in flight at once, across all sagas.
    pub max_calls_in_flight: usize,
    /// The rate governor's budgets per call class (none: only `max_calls_in_flight` limits
    /// calls) and the tenant they are for.
    pub budgets: Vec<crate::governor::ClassBudget>,
    pub tenant: String,
    /// Steps one claim may run before the saga goes back to the queue (fairness).
    pub max_steps_per_claim: u32,
    /// Longest the daemon sleeps before looking for due work again (other processes submit).
    pub idle_poll: Duration,
    /// Test only (the reliability battery): abort the process at this point, like a crash.
    pub crash_at: Option<CrashPoint>,
    /// Test only (the battery's canary): do not commit intents before side-effecting calls.
    /// This breaks the exactly-once protocol on purpose, so the battery can show it notices.
    pub unsafe_skip_intent: bool,
    /// How often the daemon logs its summary while there is work.
    pub summary_every: Duration,
    /// Log lines the process could not write, for the summary (the binary's writer counts).
    pub dropped_log_lines: Option<fn() -> u64>,
    /// How log lines spell the command an operator runs next (`pcsaga --db /var/lib/x.db`),
    /// so that it runs as printed.
    pub command: String,
}

/// Where a test-only crash happens, for which call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashPoint {
    pub point: CrashAt,
    /// The call's name (`checkout`, `create_cart`, `register`, ...).
    pub call: String,
}

/// The named crash points of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashAt {
    /// The saga is claimed and its next call planned; nothing else happened.
    AfterClaim,
    /// The intent is committed; the call was not sent.
    AfterIntent,
    /// The call returned; its outcome is not recorded.
    BeforeRecord,
    /// The outcome is recorded.
    AfterRecord,
}

impl CrashPoint {
    /// Parses `after_claim:checkout`, `after_intent:create_cart`, `before_record:register`,
    /// `after_record:checkout`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (point, call) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: use POINT:CALL, e.g. after_intent:checkout"))?;
        let point = match point {
            "after_claim" => CrashAt::AfterClaim,
            "after_intent" => CrashAt::AfterIntent,
            "before_record" => CrashAt::BeforeRecord,
            "after_record" => CrashAt::AfterRecord,
            other => {
                return Err(format!(
                "{other:?}: the points are after_claim, after_intent, before_record, after_record"
            ))
            }
        };
        Ok(Self {
            point,
            call: call.to_owned(),
        })
    }
}

impl EngineConfig {
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            lease: Duration::from_secs(120),
            concurrency: 64,
            max_calls_in_flight: 16,
            budgets: Vec::new(),
            tenant: String::new(),
            max_steps_per_claim: 64,
            idle_poll: Duration::from_secs(1),
            crash_at: None,
            unsafe_skip_intent: false,
            summary_every: Duration::from_secs(60),
            dropped_log_lines: None,
            command: "pcsaga".to_owned(),
        }
    }
}

/// The result of a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub saga: SagaRecord,
    /// False when the idempotency key was already known and the first saga is returned.
    pub created: bool,
}

/// How one drive of a saga ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driven {
    /// It waits for a timer, or stopped.
    Settled,
    /// It gave the lease back while it could still run (step limit or shutdown).
    Released,
    /// Another writer took it over; this worker's write was refused.
    Fenced,
}

struct Inner<W, S> {
    workflow: W,
    store: S,
    policies: Policies,
    clock: Arc<dyn Clock>,
    config: EngineConfig,
    governor: Arc<crate::governor::Governor>,
    shares: Arc<crate::fair::Shares>,
    wake: Notify,
    tally: crate::oplog::Tally,
    health: std::sync::Mutex<LoopHealth>,
}

/// What the daemon loop last did, for readiness (`/readyz`).
#[derive(Debug, Clone, Default)]
struct LoopHealth {
    running: bool,
    /// When the loop last went round (it does at least every `idle_poll`).
    beat: Option<Instant>,
    /// Why the last claim failed, while claims fail.
    claim_error: Option<String>,
}

/// Whether an engine's loop is claiming work, as [`Engine::run_health`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunHealth {
    /// The loop runs (started, not stopped).
    pub running: bool,
    /// How long since the loop last went round (`None`: never).
    pub since_beat: Option<Duration>,
    /// Why the last claim failed, while claims fail.
    pub claim_error: Option<String>,
    /// How often the loop goes round at least when nothing happens.
    pub idle_poll: Duration,
}

/// The durable runtime for one workflow over one store.
pub struct Engine<W, S> {
    inner: Arc<Inner<W, S>>,
}

impl<W, S> Clone for Engine<W, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<W, S> std::fmt::Debug for Engine<W, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl<W: Workflow, S: Store> Engine<W, S> {
    pub fn new(
        workflow: W,
        store: S,
        policies: Policies,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Self {
        let governor = crate::governor::Governor::new(&crate::governor::GovernorConfig {
            tenant: config.tenant.clone(),
            classes: config.budgets.clone(),
            call_slots: config.max_calls_in_flight.max(1),
            burst: Duration::from_secs(1),
        });
        // Architecture invariant: an engine claims only its own workflow's sagas.
        let store = store.scoped(workflow.name());
        Self {
            inner: Arc::new(Inner {
                workflow,
                store,
                policies,
                clock,
                config,
                governor,
                shares: Arc::default(),
                wake: Notify::new(),
                tally: crate::oplog::Tally::default(),
                health: std::sync::Mutex::default(),
            }),
        }
    }

    pub fn store(&self) -> &S {
        &self.inner.store
    }

    pub fn workflow(&self) -> &W {
        &self.inner.workflow
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Creates a saga, or returns the one that already has this idempotency key.
    pub async fn submit(
        &self,
        idempotency_key: &str,
        input: String,
        context: &W::Context,
        customer_id: Option<String>,
    ) -> Result<Submitted, Error> {
        let workflow = &self.inner.workflow;
        let now = self.now();
        let saga = NewSaga {
            id: uuid::Uuid::now_v7().to_string(),
            workflow: workflow.name().to_owned(),
            idempotency_key: idempotency_key.to_owned(),
            state: W::State::ALL
                .first()
                .map_or("start", |s| s.name())
                .to_owned(),
            context: serde_json::to_string(context).map_err(|e| Error::Context(e.to_string()))?,
            input,
            customer_id,
            now,
            definition: workflow.definition(),
            context_schema: workflow.context_schema(),
        };
        let event = HistoryEvent::new(EventKind::Submitted)
            .state(saga.state.clone())
            .detail(format!("idempotency key {idempotency_key}"));
        let submitted = match self.inner.store.insert(saga, event).await? {
            Inserted::Created(saga) => Submitted {
                saga,
                created: true,
            },
            Inserted::Existing(saga) => Submitted {
                saga,
                created: false,
            },
        };
        self.inner.wake.notify_one();
        Ok(submitted)
    }

    /// Claims and drives due sagas until none is due at the clock's "now". Tests use this
    /// with a manual clock: move the clock, call `run_due`, assert.
    pub async fn run_due(&self) -> Result<usize, Error> {
        let (_tx, shutdown) = watch::channel(false);
        let mut driven = 0;
        loop {
            let now = self.now();
            let claimed = self
                .inner
                .store
                .claim_due(
                    &self.inner.config.owner,
                    now,
                    after(now, self.inner.config.lease),
                    self.inner.config.concurrency as u32,
                )
                .await?;
            if claimed.is_empty() {
                return Ok(driven);
            }
            driven += claimed.len();
            let mut tasks = JoinSet::new();
            for saga in claimed {
                let engine = self.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move { engine.drive(saga, &shutdown).await });
            }
            while let Some(result) = tasks.join_next().await {
                result.map_err(|e| Error::Task(e.to_string()))??;
            }
        }
    }

    /// The daemon loop: claim due sagas up to the concurrency limit and drive them, until
    /// `shutdown` turns true. Then it stops claiming, lets each saga finish its current step,
    /// gives the lease back, and returns.
    pub async fn run(&self, shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        self.note_health(|h| h.running = true);
        let ran = self.run_loop(shutdown).await;
        self.note_health(|h| h.running = false);
        ran
    }

    fn note_health(&self, change: impl FnOnce(&mut LoopHealth)) {
        // A poisoned lock only means a panic elsewhere mid-update; the fields stay usable.
        let mut health = self
            .inner
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut health);
    }

    /// Whether the daemon loop runs and claims: the loop's last round and the last claim's
    /// error, if claims fail.
    pub fn run_health(&self) -> RunHealth {
        let health = self
            .inner
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        RunHealth {
            running: health.running,
            since_beat: health.beat.map(|b| b.elapsed()),
            claim_error: health.claim_error,
            idle_poll: self.inner.config.idle_poll,
        }
    }

    async fn run_loop(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let config = &self.inner.config;
        let mut tasks: JoinSet<Result<Driven, Error>> = JoinSet::new();
        let mut store_backoff = backoff::ExponentialBackoff {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        let mut held_since: Option<(Instant, Instant)> = None;
        let mut last_summary = Instant::now();
        let mut had_work = false;
        // After a claim that skipped customers found no one else due, skipping is pointless
        // for a moment (it walks the skipped customers' due rows): until then, claim plainly.
        let mut nobody_else_until: Option<Instant> = None;
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.note_health(|h| h.beat = Some(Instant::now()));
            if last_summary.elapsed() >= config.summary_every {
                had_work = self.summarize(last_summary.elapsed(), had_work).await;
                last_summary = Instant::now();
            }
            while let Some(done) = tasks.try_join_next() {
                report(done);
            }
            let free = config.concurrency.saturating_sub(tasks.len());
            let mut claimed = 0;
            if free > 0 {
                if let Some(reason) = self.inner.workflow.hold().await {
                    // Claiming now would only hold each purchase; sagas in flight finish their
                    // step. Said at ERROR once a minute while it lasts.
                    if held_since
                        .is_none_or(|(_, said): (Instant, Instant)| said.elapsed() >= HOLD_REPORT)
                    {
                        tracing::error!(%reason, "claiming no work until this is fixed; checking again every minute");
                        held_since = Some((
                            held_since.map_or_else(Instant::now, |(s, _)| s),
                            Instant::now(),
                        ));
                    }
                    tokio::select! {
                        Some(done) = tasks.join_next(), if !tasks.is_empty() => report(done),
                        () = tokio::time::sleep(config.idle_poll.max(Duration::from_millis(100))) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
                if let Some((since, _)) = held_since.take() {
                    tracing::info!(
                        held_s = since.elapsed().as_secs(),
                        "the hold is lifted: claiming work again"
                    );
                }
                let claiming = Instant::now();
                let claim = self.claim_fairly(free, &mut nobody_else_until).await;
                crate::metrics::claim(claiming.elapsed());
                match claim {
                    Ok(sagas) => {
                        store_backoff.reset();
                        self.note_health(|h| h.claim_error = None);
                        claimed = sagas.len();
                        for saga in sagas {
                            let engine = self.clone();
                            let shutdown = shutdown.clone();
                            let seat = self.inner.shares.enter(saga.customer_id.clone());
                            tasks.spawn(async move {
                                let _seat = seat;
                                engine.drive(saga, &shutdown).await
                            });
                        }
                    }
                    Err(error) if error.is_fatal() => {
                        // A damaged or foreign database: no pause fixes it. Stop the sagas in
                        // flight (their leases run out; nothing is lost) and say why.
                        tracing::error!(%error, "stopping: the database cannot be used");
                        tasks.shutdown().await;
                        return Err(Error::Store(error));
                    }
                    Err(error) => {
                        self.note_health(|h| h.claim_error = Some(error.to_string()));
                        let delay = store_backoff
                            .next_backoff()
                            .unwrap_or(Duration::from_secs(30));
                        tracing::error!(%error, retry_in_ms = delay.as_millis() as u64, "cannot claim work; nothing was lost, claiming again after a pause");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = shutdown.changed() => {}
                        }
                        continue;
                    }
                }
            }
            if claimed > 0 && tasks.len() < config.concurrency {
                continue; // more may be due right now
            }
            // Never spin: if something is overdue but could not be claimed (all slots busy),
            // the join below wakes us when a slot frees. With every slot busy the next due
            // time cannot shorten the wait, so it is not read (a query per freed slot).
            let sleep_for = if tasks.len() >= config.concurrency {
                config.idle_poll
            } else {
                match self.inner.store.next_due().await {
                    Ok(Some(due)) => (due - self.now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(config.idle_poll),
                    Ok(None) => config.idle_poll,
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the next due time");
                        config.idle_poll
                    }
                }
                .max(Duration::from_millis(1))
            };
            tokio::select! {
                Some(done) = tasks.join_next(), if !tasks.is_empty() => report(done),
                () = self.inner.wake.notified() => {}
                // Work submitted or resumed by another process (PostgreSQL's NOTIFY).
                () = self.inner.store.work_arrived() => {}
                () = tokio::time::sleep(sleep_for) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!(
            in_flight = tasks.len(),
            "shutting down: finishing the current steps and releasing leases"
        );
        while let Some(done) = tasks.join_next().await {
            report(done);
        }
        self.summarize(last_summary.elapsed(), true).await;
        Ok(())
    }

    /// Claims up to `free` due sagas fairly (see `fair.rs`): at most half the daemon's slots
    /// for one customer per round (the oldest due sagas may all be one customer's batch; the
    /// next round, at once, sees that customer at its share), first skipping the customers at
    /// or over their share, then filling what is left with anyone's.
    async fn claim_fairly(
        &self,
        free: usize,
        nobody_else_until: &mut Option<Instant>,
    ) -> Result<Vec<SagaRecord>, StoreError> {
        let config = &self.inner.config;
        let store = &self.inner.store;
        let per_customer = (config.concurrency / 2).max(1) as u32;
        let now = self.now();
        let until = after(now, config.lease);
        let quiet = nobody_else_until.is_some_and(|t| Instant::now() < t);
        let avoid = if quiet {
            Vec::new()
        } else {
            self.inner.shares.over_share(config.concurrency)
        };
        let skipping = !avoid.is_empty();
        let mut sagas = store
            .claim_due_fairly(&config.owner, now, until, free as u32, avoid, per_customer)
            .await?;
        if skipping && sagas.is_empty() {
            *nobody_else_until = Some(Instant::now() + NOBODY_ELSE_QUIET);
        }
        if skipping && sagas.len() < free {
            let rest = (free - sagas.len()) as u32;
            sagas.extend(
                store
                    .claim_due_fairly(&config.owner, now, until, rest, Vec::new(), per_customer)
                    .await?,
            );
        }
        Ok(sagas)
    }

    /// Logs the summary when there is work, and once when the queue has emptied. Returns
    /// whether there is work.
    async fn summarize(&self, interval: Duration, had_work: bool) -> bool {
        let inner = &self.inner;
        match inner.store.count_active_by_state(self.now()).await {
            Ok(active) => {
                let has_work = !active.is_empty();
                if has_work || had_work {
                    let dropped = inner.config.dropped_log_lines.map_or(0, |f| f());
                    crate::oplog::summary(&inner.tally, &active, interval, dropped);
                    crate::oplog::governor(&inner.governor.snapshot());
                    if !has_work {
                        tracing::info!("the queue is empty: every purchase has stopped");
                    }
                }
                has_work
            }
            Err(error) => {
                tracing::warn!(%error, "cannot count active purchases for the summary");
                had_work
            }
        }
    }

    /// Wakes the daemon loop (after a submission from this process).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub(crate) fn policies(&self) -> &Policies {
        &self.inner.policies
    }

    pub(crate) fn tally(&self) -> &crate::oplog::Tally {
        &self.inner.tally
    }

    /// The rate governor's classes, as status shows them.
    pub fn governor(&self) -> &Arc<crate::governor::Governor> {
        &self.inner.governor
    }

    /// Aborts the process at a configured crash point (test only).
    pub(crate) fn crash_if(&self, at: CrashAt, call: &str) {
        if let Some(point) = &self.inner.config.crash_at {
            if point.point == at && point.call == call {
                tracing::error!(?at, call, "test crash point reached: aborting the process");
                std::process::abort();
            }
        }
    }

    /// Extends a saga's lease: a fenced write of the lease columns only.
    pub(crate) async fn renew(&self, saga: &mut SagaRecord, owner: &str) -> Result<Driven, Error> {
        let now = self.now();
        let lease_until = after(now, self.inner.config.lease);
        let writer = Writer::Worker {
            owner: owner.to_owned(),
            lease_until: Some(lease_until),
        };
        let change = Change::Lease {
            next_run_at: Some(lease_until),
        };
        self.write(saga, writer, now, change, Vec::new()).await
    }

    /// Gives a saga back to the queue, due now: the lease columns only, and a history row.
    pub(crate) async fn release(&self, saga: &mut SagaRecord, why: &str) -> Result<Driven, Error> {
        let now = self.now();
        let event = HistoryEvent::new(EventKind::Released)
            .state(saga.state.clone())
            .detail(why.to_owned());
        let writer = Writer::Worker {
            owner: self.inner.config.owner.clone(),
            lease_until: None,
        };
        let change = Change::Lease {
            next_run_at: Some(now),
        };
        match self.write(saga, writer, now, change, vec![event]).await? {
            Driven::Fenced => Ok(Driven::Fenced),
            _ => Ok(Driven::Released),
        }
    }

    /// Commits a step's write of the saga's columns; a fenced write is reported, not raised.
    pub(crate) async fn commit(
        &self,
        saga: &mut SagaRecord,
        writer: Writer,
        now: DateTime<Utc>,
        update: SagaUpdate,
        events: Vec<HistoryEvent>,
    ) -> Result<Driven, Error> {
        self.write(saga, writer, now, Change::Saga(update), events)
            .await
    }

    /// Commits a fenced write and, once it is durable, applies it to the record held.
    async fn write(
        &self,
        saga: &mut SagaRecord,
        writer: Writer,
        now: DateTime<Utc>,
        change: Change,
        events: Vec<HistoryEvent>,
    ) -> Result<Driven, Error> {
        // The record held is updated from these once the write is durable.
        let (applied, lease) = (change.clone(), writer.clone());
        let commit = Commit {
            id: saga.id.clone(),
            expected_version: saga.version,
            writer,
            now,
            change,
            events,
        };
        let started = std::time::Instant::now();
        let written = self.inner.store.commit(commit).await;
        crate::metrics::commit(started.elapsed());
        match written {
            Ok(version) => {
                saga.apply(&lease, now, applied, version);
                Ok(Driven::Settled)
            }
            Err(StoreError::Fenced { .. }) => {
                crate::metrics::lease_lost();
                tracing::warn!(purchase = %saga.id, "lost the lease; another worker owns this purchase now, stepping back");
                Ok(Driven::Fenced)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `update` carrying `context`, encoded by this binary: in its definition and schema.
    pub(crate) fn with_context(
        &self,
        update: SagaUpdate,
        context: &W::Context,
    ) -> Result<SagaUpdate, Error> {
        Ok(SagaUpdate {
            context: to_json(context)?,
            definition: self.inner.workflow.definition(),
            context_schema: self.inner.workflow.context_schema(),
            ..update
        })
    }

    // ---- operator actions --------------------------------------------------------------

    /// The full id of the saga `given` names: its id, or a prefix of exactly one saga's id
    /// (as `git` takes commit ids). An ambiguous prefix is an error that lists some matches.
    pub async fn resolve(&self, given: &str) -> Result<String, Error> {
        let given = given.trim();
        if given.is_empty() {
            return Err(Error::NotFound("\"\"".into()));
        }
        if self.inner.store.get(given).await?.is_some() {
            return Ok(given.to_owned());
        }
        const SHOWN: u32 = 5;
        let mut matches = self.inner.store.ids_with_prefix(given, SHOWN + 1).await?;
        match matches.len() {
            0 => Err(Error::NotFound(given.to_owned())),
            1 => Ok(matches.remove(0)),
            n => {
                let more = n > SHOWN as usize;
                matches.truncate(SHOWN as usize);
                Err(Error::Ambiguous {
                    prefix: given.to_owned(),
                    matches,
                    more,
                })
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<SagaRecord, Error> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    pub async fn history(&self, id: &str) -> Result<Vec<HistoryRow>, Error> {
        self.inner.store.history(id).await.map_err(Error::from)
    }

    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<SagaRecord>, Error> {
        self.inner.store.list(filter).await.map_err(Error::from)
    }

    /// Resumes a failed or parked saga in `from` (default: where it stopped).
    pub async fn resume(
        &self,
        id: &str,
        from: Option<&str>,
        reason: &str,
    ) -> Result<SagaRecord, Error> {
        let saga = self.get(id).await?;
        if !matches!(saga.status, SagaStatus::Failed | SagaStatus::NeedsAttention) {
            return Err(Error::Refused(format!(
                "purchase {id} is {}; only failed or needs_attention purchases can be resumed",
                saga.status
            )));
        }
        let view = self.view(&saga)?;
        let from = match from {
            None => view.state,
            Some(name) => W::State::parse(name).ok_or_else(|| {
                Error::Refused(format!(
                    "no state {name:?}; the states are {}",
                    self.inner.workflow.states().join(", ")
                ))
            })?,
        };
        let context = self
            .inner
            .workflow
            .prepare_resume(&view, from)
            .map_err(Error::Refused)?;
        self.operator_continue(saga, from, &context, "resume", reason)
            .await
    }

    /// Cancels a saga the workflow allows to be cancelled.
    pub async fn cancel(&self, id: &str, reason: &str) -> Result<SagaRecord, Error> {
        let saga = self.get(id).await?;
        if matches!(saga.status, SagaStatus::Succeeded | SagaStatus::Cancelled) {
            return Err(Error::Refused(format!(
                "purchase {id} is already {}",
                saga.status
            )));
        }
        let view = self.view(&saga)?;
        self.inner
            .workflow
            .check_cancel(&view)
            .map_err(Error::Refused)?;
        let update = SagaUpdate {
            status: SagaStatus::Cancelled,
            next_run_at: None,
            wait_reason: None,
            ..SagaUpdate::from(&saga)
        };
        let event = HistoryEvent::new(EventKind::Operator)
            .state(saga.state.clone())
            .to_state("cancelled")
            .detail(format!("cancel: {reason}"));
        self.operator_commit(saga, update, event).await
    }

    /// The active sagas this binary cannot continue, each with the reason
    /// ([`Workflow::continues`]): what `pcsaga check-upgrade` lists before a new binary takes
    /// over a database. Reads every active saga.
    pub async fn incompatible(&self) -> Result<Vec<(SagaRecord, String)>, Error> {
        let active = self
            .list(&ListFilter {
                status: Some(SagaStatus::Active),
                workflow: Some(self.inner.workflow.name().to_owned()),
                ..ListFilter::default()
            })
            .await?;
        let workflow = &self.inner.workflow;
        Ok(active
            .into_iter()
            .filter_map(|saga| workflow.continues(&saga).err().map(|why| (saga, why)))
            .collect())
    }

    /// Parks one saga this binary cannot continue, as an operator would, keeping its state,
    /// context and definition as they are (a release that knows them can resume it).
    pub async fn park_incompatible(
        &self,
        saga: SagaRecord,
        why: &str,
    ) -> Result<SagaRecord, Error> {
        let (update, reason) = cannot_continue(&saga, why);
        let event = HistoryEvent::new(EventKind::Operator)
            .state(saga.state.clone())
            .to_state("needs_attention")
            .detail(format!("park-incompatible: {reason}"));
        self.operator_commit(saga, update, event).await
    }

    /// Continues a stopped saga in `state` with a context the workflow prepared from outside
    /// evidence (an operator attaching the orders they found), recording `action` and `reason`.
    /// Only a failed or parked saga, and never one a worker holds.
    pub async fn operator_continue(
        &self,
        saga: SagaRecord,
        state: W::State,
        context: &W::Context,
        action: &str,
        reason: &str,
    ) -> Result<SagaRecord, Error> {
        let state = state.name();
        if !matches!(saga.status, SagaStatus::Failed | SagaStatus::NeedsAttention) {
            return Err(Error::Refused(format!(
                "purchase {} is {}; only failed or needs_attention purchases can be continued",
                saga.id, saga.status
            )));
        }
        let now = self.now();
        let update = SagaUpdate {
            state: state.to_owned(),
            status: SagaStatus::Active,
            attempt: 0,
            state_entered_at: now,
            next_run_at: Some(now),
            last_error: None,
            wait_reason: None,
            ..SagaUpdate::from(&saga)
        };
        let update = self.with_context(update, context)?;
        let event = HistoryEvent::new(EventKind::Operator)
            .state(saga.state.clone())
            .to_state(state)
            .detail(format!("{action}: {reason}"));
        self.operator_commit(saga, update, event).await
    }

    /// Makes an active saga that waits on a backoff, a poll or a hold due now. Its attempt
    /// counts are unchanged: this moves a timer, it does not grant retries.
    pub async fn retry_now(&self, id: &str, reason: &str) -> Result<SagaRecord, Error> {
        let saga = self.get(id).await?;
        if saga.status != SagaStatus::Active {
            return Err(Error::Refused(format!(
                "purchase {id} is {}; retry moves only active purchases that wait (use resume for failed or needs_attention ones)",
                saga.status
            )));
        }
        let now = self.now();
        if saga.next_run_at.is_none_or(|at| at <= now) {
            return Err(Error::Refused(format!(
                "purchase {id} is not waiting: it is due now or being worked on"
            )));
        }
        let waited_for = saga.wait_reason.clone().unwrap_or_default();
        let update = SagaUpdate {
            next_run_at: Some(now),
            wait_reason: Some("due now (operator retry)".to_owned()),
            ..SagaUpdate::from(&saga)
        };
        let event = HistoryEvent::new(EventKind::Operator)
            .state(saga.state.clone())
            .to_state(saga.state.clone())
            .detail(format!("retry: {reason} (it waited for: {waited_for})"));
        self.operator_commit(saga, update, event).await
    }

    async fn operator_commit(
        &self,
        saga: SagaRecord,
        update: SagaUpdate,
        event: HistoryEvent,
    ) -> Result<SagaRecord, Error> {
        let id = saga.id.clone();
        let commit = Commit {
            id: id.clone(),
            expected_version: saga.version,
            writer: Writer::Operator,
            now: self.now(),
            change: Change::Saga(update),
            events: vec![event],
        };
        match self.inner.store.commit(commit).await {
            Ok(_) => {
                self.inner.wake.notify_one();
                self.get(&id).await
            }
            Err(StoreError::Fenced { .. }) => Err(Error::Refused(format!(
                "purchase {id} is being worked on right now (or changed while you looked); run the command again in a moment"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The saga as the workflow sees it; an operator action on a saga this binary cannot
    /// continue is refused with the reason.
    fn view(&self, saga: &SagaRecord) -> Result<SagaView<W::State, W::Context>, Error> {
        let (state, context) = self.inner.workflow.continues(saga).map_err(|why| {
            Error::Refused(format!(
                "purchase {}: this pcsaga cannot act on it: {why}",
                saga.id
            ))
        })?;
        Ok(SagaView {
            id: saga.id.clone(),
            state,
            context,
            attempt: saga.attempt,
            state_entered_at: saga.state_entered_at,
            created_at: saga.created_at,
        })
    }
}

/// A saga this binary cannot continue, parked as it is (state, context and definition kept):
/// the row to write, and the reason.
pub(crate) fn cannot_continue(saga: &SagaRecord, why: &str) -> (SagaUpdate, String) {
    let reason = format!(
        "this pcsaga ({}) cannot continue the saga: {why}",
        env!("CARGO_PKG_VERSION")
    );
    let update = SagaUpdate {
        status: SagaStatus::NeedsAttention,
        next_run_at: None,
        wait_reason: None,
        last_error: Some(reason.clone()),
        ..SagaUpdate::from(saga)
    };
    (update, reason)
}

use crate::drive::to_json;

fn report(done: Result<Result<Driven, Error>, tokio::task::JoinError>) {
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::error!(%error, "a purchase step could not be recorded; it will be picked up again when its lease runs out")
        }
        Err(error) => {
            tracing::error!(%error, "a purchase task ended abnormally; it will be picked up again when its lease runs out")
        }
    }
}
