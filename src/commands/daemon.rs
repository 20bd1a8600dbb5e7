//! `pcsaga daemon`: workers draining the queue until a signal.

use std::time::Duration;

use pcsaga_engine::{Engine, EngineConfig, SagaStatus, Store, SystemClock};
use pcsaga_purchase::PurchaseWorkflow;
use tokio::sync::watch;

use crate::cli::{DaemonArgs, Global};
use crate::config::{ConfigError, FileConfig};
use crate::exit::{Exit, Failed};

pub async fn run(global: &Global, args: &DaemonArgs, file: &FileConfig) -> Result<Exit, Failed> {
    let client = crate::app::client(file)?;
    let timeout = client.config().timeout;
    let workflow_path = args
        .workflow
        .clone()
        .or_else(|| file.daemon.workflow.clone());
    let policies = crate::app::policies(workflow_path.as_deref())?;
    let mut config = EngineConfig::new(crate::app::owner_name("daemon"));
    config.concurrency = args.concurrency.or(file.daemon.concurrency).unwrap_or(64);
    config.max_calls_in_flight = args
        .max_calls
        .or(file.daemon.max_calls_in_flight)
        .unwrap_or(16);
    let lease_s = args
        .lease_s
        .or(file.daemon.lease_s)
        .unwrap_or_else(|| (timeout.as_secs() * 2).max(120));
    if lease_s > crate::cli::MAX_LEASE_S {
        return Err(Failed::new(
            Exit::InvalidInput,
            ConfigError(format!(
                "daemon.lease_s = {lease_s}: at most {} (a day); a crashed daemon's purchases wait this long before another daemon takes them",
                crate::cli::MAX_LEASE_S
            )),
        ));
    }
    config.lease = Duration::from_secs(lease_s);
    let credentials_retry_s = args
        .credentials_retry_s
        .or(file.daemon.credentials_retry_s)
        .unwrap_or(60);
    if !(1..=3600).contains(&credentials_retry_s) {
        return Err(Failed::new(
            Exit::InvalidInput,
            ConfigError(format!(
                "daemon.credentials_retry_s = {credentials_retry_s}: must be between 1 and 3600"
            )),
        ));
    }
    let credentials_retry = Duration::from_secs(credentials_retry_s);
    if !(1..=10_000).contains(&config.concurrency) {
        return Err(Failed::new(
            Exit::InvalidInput,
            ConfigError(format!(
                "daemon.concurrency = {}: must be between 1 and 10000",
                config.concurrency
            )),
        ));
    }
    if !(1..=1_000).contains(&config.max_calls_in_flight) {
        return Err(Failed::new(
            Exit::InvalidInput,
            ConfigError(format!(
                "daemon.max_calls_in_flight = {}: must be between 1 and 1000",
                config.max_calls_in_flight
            )),
        ));
    }
    // A lease shorter than a call could expire mid-call; the write would then be refused and
    // the step repeated. Safe, but wasteful: refuse the setting.
    if config.lease <= timeout + Duration::from_secs(1) {
        return Err(Failed::new(
            Exit::InvalidInput,
            ConfigError(format!("daemon.lease_s = {lease_s} must be longer than partner_center.timeout_s = {} (plus a second)", timeout.as_secs())),
        ));
    }
    config.budgets =
        crate::config::budgets(file).map_err(|e| Failed::new(Exit::InvalidInput, e))?;
    config.tenant = client.tenant().to_owned();
    let cache_ttl =
        crate::config::cache_ttl(file).map_err(|e| Failed::new(Exit::InvalidInput, e))?;
    let direct_order =
        crate::config::direct_order(file).map_err(|e| Failed::new(Exit::InvalidInput, e))?;
    // Not a refusal: a book without direct orders runs fine with any Checkout policy.
    if let Err(e) = crate::config::direct_order_fits(&direct_order, &policies.get("Checkout")) {
        tracing::warn!(
            "direct orders (\"orderPath\": \"direct\") would not be bought as configured: {e}"
        );
    }
    config.dropped_log_lines = Some(crate::logging::dropped);
    config.command = format!("pcsaga{}", crate::output::db_flag(global));
    // Test-only switches of the reliability battery. Loud, because they break guarantees.
    if let Ok(point) = std::env::var("PCSAGA_TEST_CRASH_AT") {
        let point = pcsaga_engine::CrashPoint::parse(&point).map_err(|e| {
            Failed::new(
                Exit::InvalidInput,
                ConfigError(format!("PCSAGA_TEST_CRASH_AT {e}")),
            )
        })?;
        tracing::warn!(
            ?point,
            "TEST ONLY: this daemon aborts itself at a crash point"
        );
        config.crash_at = Some(point);
    }
    let mut direct_order = direct_order;
    if std::env::var("PCSAGA_TEST_UNSAFE_DIRECT_RESEND").is_ok_and(|v| v == "1") {
        tracing::error!("TEST ONLY: direct orders are sent again after a lost reply without looking for them; never run this in production");
        direct_order.unsafe_resend_without_proof = true;
    }
    if std::env::var("PCSAGA_TEST_UNSAFE_SKIP_INTENT").is_ok_and(|v| v == "1") {
        tracing::error!("TEST ONLY: intents are NOT committed before side-effecting calls; never run this in production");
        config.unsafe_skip_intent = true;
    }
    let listen = crate::web::listen::resolve(
        "daemon.listen (--listen, PCSAGA_LISTEN)",
        args.listen.as_deref().or(file.daemon.listen.as_deref()),
        crate::web::listen::DEFAULT_LISTEN,
        file,
    )?;
    // Bound before the database is opened: a taken port fails the start at once.
    let listener = match &listen {
        Some(listen) => Some(
            crate::web::bind(listen.addr)
                .await
                .map_err(|e| Failed::new(Exit::InvalidInput, ConfigError(e)))?,
        ),
        None => None,
    };
    let metrics = listener
        .as_ref()
        .and_then(|_| crate::web::metrics::install());
    let (store, path) = crate::app::open_store(global.db.as_deref(), file).await?;
    let owner = config.owner.clone();
    let (_, schedule) =
        crate::config::billing(file).map_err(|e| Failed::new(Exit::InvalidInput, e))?;
    let reconciler = crate::app::reconcile_engine(
        store.clone(),
        &path,
        client.clone(),
        file,
        format!("{owner}/billing"),
    )
    .await?;
    let engine = Engine::new(
        PurchaseWorkflow::new(client)
            .with_credentials_retry(credentials_retry)
            .with_cache(cache_ttl, std::sync::Arc::new(SystemClock))
            .with_direct_settings(direct_order),
        store.clone(),
        policies.clone(),
        std::sync::Arc::new(SystemClock),
        config.clone(),
    );
    settle_incompatible(&engine, global, args.park_incompatible).await?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(signals(stop.clone()));
    if args.exit_when_idle {
        tokio::spawn(stop_when_idle(store.clone(), stop.clone()));
    }
    tracing::info!(
        db = %path.display(),
        owner = %owner,
        concurrency = config.concurrency,
        max_calls_in_flight = config.max_calls_in_flight,
        lease_s,
        "daemon started"
    );
    let row = pcsaga_engine::DaemonRow {
        id: owner.clone(),
        host: crate::app::host_name(),
        pid: std::process::id(),
        started_at: chrono::Utc::now(),
        heartbeat_at: None,
        stopped_at: None,
        governor: None,
    };
    // The listener outlives the engine's loop: while purchases finish their step after a
    // signal, /readyz says the daemon is stopping.
    let (close_listener, listener_closed) = watch::channel(false);
    let serving = match (listener, &listen) {
        (Some(listener), Some(listen)) => {
            let mut site = crate::web::Site::new(
                store.clone(),
                path.clone(),
                crate::output::db_flag(global),
                policies,
                listen,
            );
            site.metrics = metrics;
            site.daemon = Some(crate::web::Daemon {
                engine: engine.clone(),
                row: row.clone(),
                stopping: stopped.clone(),
            });
            let addr = listener
                .local_addr()
                .map_or_else(|_| listen.addr.to_string(), |a| a.to_string());
            tracing::info!(url = %format!("http://{addr}/"), "listening: /metrics, /healthz, /readyz and the read-only console");
            Some(tokio::spawn(crate::web::serve(
                listener,
                site,
                listener_closed,
            )))
        }
        _ => {
            tracing::info!(
                "no listener (--listen off): no /metrics, /readyz or console from this daemon"
            );
            None
        }
    };
    let heartbeat = tokio::spawn(heartbeats(
        store.clone(),
        row.clone(),
        engine.governor().clone(),
    ));
    let sharing = tokio::spawn(share_pauses(
        store.clone(),
        row.clone(),
        engine.governor().clone(),
    ));
    // Billing reconciliation runs in the same process, on its own engine (its own workflow).
    let reconciling = {
        let (reconciler, stopped) = (reconciler.clone(), stopped.clone());
        tokio::spawn(async move { reconciler.run(stopped).await })
    };
    match (schedule, args.exit_when_idle) {
        (Some(every), false) => {
            tokio::spawn(schedule_reconciliation(reconciler, every, stopped.clone()));
        }
        (Some(_), true) => tracing::info!("--exit-when-idle: no scheduled billing reconciliation in a batch run (`pcsaga reconcile` runs one)"),
        (None, _) => tracing::info!("billing.reconcile_every_h = 0: no scheduled billing reconciliation"),
    }
    let ran = engine.run(stopped).await;
    if let Ok(Err(error)) = reconciling.await {
        tracing::warn!(%error, "the billing reconciliation engine stopped with an error");
    }
    heartbeat.abort();
    sharing.abort();
    let _ = close_listener.send(true);
    if let Some(serving) = serving {
        let _ = serving.await;
    }
    let mut row = row;
    row.governor = serde_json::to_string(&engine.governor().snapshot()).ok();
    if let Err(error) = store.daemon_beat(&row, chrono::Utc::now(), true).await {
        tracing::warn!(%error, "cannot record that this daemon stopped");
    }
    ran?;
    tracing::info!("daemon stopped cleanly");
    Ok(Exit::Ok)
}

/// Before any claim: the active purchases this binary cannot continue (a newer release's, a
/// state or context it does not know) make it refuse to start, or, told so, are parked.
async fn settle_incompatible(
    engine: &Engine<PurchaseWorkflow, pcsaga_engine::AnyStore>,
    global: &Global,
    park: bool,
) -> Result<(), Failed> {
    let incompatible = engine.incompatible().await?;
    if incompatible.is_empty() {
        return Ok(());
    }
    let db = crate::output::db_flag(global);
    if !park {
        return Err(Failed::new(
            Exit::Incompatible,
            anyhow::anyhow!(
                "{} active purchase(s) cannot be continued by this pcsaga ({}): `pcsaga{db} check-upgrade` lists them and why. Run the release that wrote them until they finish, or start with `pcsaga{db} daemon --park-incompatible` to park exactly those for an operator",
                incompatible.len(),
                env!("CARGO_PKG_VERSION")
            ),
        ));
    }
    let mut parked = 0;
    for (saga, why) in incompatible {
        let id = saga.id.clone();
        match engine.park_incompatible(saga, &why).await {
            Ok(_) => {
                parked += 1;
                tracing::error!(purchase = %id, reason = %why, "parked: this pcsaga cannot continue it. Next: `pcsaga{db} show {id}`");
            }
            // Held by another daemon (which can continue it, or parks it itself).
            Err(error) => tracing::warn!(purchase = %id, %error, "could not park it"),
        }
    }
    tracing::warn!(
        parked,
        "parked the purchases this pcsaga cannot continue (--park-incompatible)"
    );
    Ok(())
}

/// Starts a reconciliation of the previous and the current month once per `every`: the runs'
/// keys name the interval, so several daemons start each run once between them.
async fn schedule_reconciliation(
    engine: Engine<pcsaga_billing::ReconcileWorkflow, pcsaga_engine::AnyStore>,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let every_s = every.as_secs().max(60);
    loop {
        let now = chrono::Utc::now();
        let bucket = now.timestamp().max(0) as u64 / every_s;
        for period in [
            pcsaga_billing::PeriodSpec::Previous,
            pcsaga_billing::PeriodSpec::Current,
        ] {
            let key = format!("scheduled:{every_s}:{bucket}:{}", period.label());
            let input = match pcsaga_billing::workflow::run_input(&period) {
                Ok(input) => input,
                Err(error) => {
                    tracing::warn!(%error, "cannot start the scheduled billing reconciliation; the next interval tries again");
                    continue;
                }
            };
            match engine
                .submit(&key, input, &pcsaga_billing::RunContext::new(period), None)
                .await
            {
                Ok(s) if s.created => {
                    tracing::info!(run = %s.saga.id, key, "billing reconciliation run started")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "cannot start the scheduled billing reconciliation; the next interval tries again")
                }
            }
        }
        let next = (bucket + 1) * every_s;
        let wait = next.saturating_sub(chrono::Utc::now().timestamp().max(0) as u64);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(wait.max(1))) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// How often daemons of one database exchange their rate governors' pauses.
pub const SHARE_PAUSES: Duration = Duration::from_millis(500);

/// Shares this daemon's 429 pauses with the other daemons of the database, and adopts theirs:
/// every [`SHARE_PAUSES`] it writes its governor's state to its row (the heartbeat's) and, for
/// each other live daemon's class paused now, holds that class here until the same instant. So
/// a 429 answered to one daemon holds the class for the tenant on every machine within two
/// exchanges (a second): one to write it, one to read it.
async fn share_pauses(
    store: pcsaga_engine::AnyStore,
    mut row: pcsaga_engine::DaemonRow,
    governor: std::sync::Arc<pcsaga_engine::Governor>,
) {
    loop {
        tokio::time::sleep(SHARE_PAUSES).await;
        let now = chrono::Utc::now();
        let mine = governor.snapshot();
        if mine.iter().any(|c| c.paused_ms > 0) {
            row.governor = serde_json::to_string(&mine).ok();
            if let Err(error) = store.daemon_beat(&row, now, false).await {
                tracing::warn!(%error, "cannot share this daemon's rate pauses");
            }
        }
        let others = match store.daemons().await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "cannot read the other daemons' rate pauses");
                continue;
            }
        };
        for other in others
            .iter()
            .filter(|d| d.id != row.id && d.stopped_at.is_none())
        {
            let Some(written) = other
                .heartbeat_at
                .filter(|at| now - *at < chrono::Duration::seconds(30))
            else {
                continue;
            };
            let classes: Vec<pcsaga_engine::ClassSnapshot> = other
                .governor
                .as_deref()
                .and_then(|g| serde_json::from_str(g).ok())
                .unwrap_or_default();
            for class in classes.iter().filter(|c| c.paused_ms > 0) {
                let ends = written
                    + chrono::Duration::milliseconds(
                        i64::try_from(class.paused_ms).unwrap_or(i64::MAX / 2),
                    );
                let Ok(left) = (ends - now).to_std() else {
                    continue;
                };
                if governor.adopt_pause(&class.class, left) {
                    tracing::info!(class = %class.class, from = %other.id, pause_ms = left.as_millis() as u64, "holding a call class another daemon was throttled on");
                }
            }
        }
    }
}

/// How often a daemon records that it is alive (`pcsaga status` shows the age of the last).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

async fn heartbeats(
    store: pcsaga_engine::AnyStore,
    mut row: pcsaga_engine::DaemonRow,
    governor: std::sync::Arc<pcsaga_engine::Governor>,
) {
    loop {
        row.governor = serde_json::to_string(&governor.snapshot()).ok();
        if let Err(error) = store.daemon_beat(&row, chrono::Utc::now(), false).await {
            tracing::warn!(%error, "cannot record this daemon's heartbeat");
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

pub(crate) async fn signals(stop: watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the daemon cleanly");
                let _ = ctrl_c.await;
                let _ = stop.send(true);
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    let _ = stop.send(true);
}

async fn stop_when_idle<S: Store>(store: S, stop: watch::Sender<bool>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match store.count_by_status().await {
            Ok(counts) if counts.get(&SagaStatus::Active).copied().unwrap_or(0) == 0 => {
                tracing::info!("no active purchase left: stopping (--exit-when-idle)");
                let _ = stop.send(true);
                return;
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot count active purchases"),
        }
    }
}

/// Used by the demo: the same run loop on an existing engine.
pub async fn run_engine(
    engine: &Engine<PurchaseWorkflow, pcsaga_engine::AnyStore>,
    stopped: watch::Receiver<bool>,
) -> Result<(), Failed> {
    engine.run(stopped).await.map_err(Failed::from)
}
