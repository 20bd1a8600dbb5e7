//! Wiring: stores, engines and clients from the configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use pcsaga_engine::{
    AnyStore, Engine, EngineConfig, Policies, SqliteConfig, SqliteStore, SystemClock, Workflow,
};
use pcsaga_partner_center::{Client, ClientConfig};
use pcsaga_purchase::PurchaseWorkflow;

use crate::config::{self, ConfigError, FileConfig};

/// The built-in policy file.
pub const DEFAULT_POLICIES: &str = include_str!("../workflows/one-time-purchase.toml");

/// The built-in policies of the billing reconciliation run.
pub const RECONCILE_POLICIES: &str = include_str!("../workflows/billing-reconciliation.toml");

/// The billing tables of the store's database: on PostgreSQL through the store's pool, on
/// SQLite through a pool of their own on the file (read-only for the verbs that only look).
pub async fn ledger(
    store: &AnyStore,
    path: &Path,
    read_only: bool,
) -> anyhow::Result<pcsaga_billing::Ledger> {
    match store {
        AnyStore::Postgres(pg) => Ok(pcsaga_billing::Ledger::on_postgres(pg.pool().clone())),
        AnyStore::Sqlite(_) if read_only => pcsaga_billing::Ledger::open_read_only(path)
            .await
            .with_context(|| format!("opening the billing tables of {}", path.display())),
        AnyStore::Sqlite(_) => pcsaga_billing::Ledger::open(path)
            .await
            .with_context(|| format!("opening the billing tables of {}", path.display())),
    }
}

/// The engine of billing reconciliation runs, on the same database as the purchases (it
/// claims only its own workflow's sagas).
pub async fn reconcile_engine(
    store: AnyStore,
    path: &Path,
    client: Client,
    file: &FileConfig,
    owner: String,
) -> anyhow::Result<Engine<pcsaga_billing::ReconcileWorkflow, AnyStore>> {
    let (settings, _) = config::billing(file)?;
    let ledger = ledger(&store, path, false).await?;
    let tenant = client.tenant().to_owned();
    let workflow =
        pcsaga_billing::ReconcileWorkflow::new(client, ledger, settings, Arc::new(SystemClock));
    let path_given = std::env::var_os("PCSAGA_RECONCILE_WORKFLOW")
        .map(PathBuf::from)
        .or_else(|| file.billing.workflow.clone());
    let (text, origin) = match &path_given {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| {
                ConfigError(format!(
                    "cannot read the reconciliation policy file {}: {e}",
                    p.display()
                ))
            })?,
            p.display().to_string(),
        ),
        None => (
            RECONCILE_POLICIES.to_owned(),
            "built-in workflows/billing-reconciliation.toml".to_owned(),
        ),
    };
    let policies = Policies::parse(&text, workflow.name(), &workflow.states(), |s, p| {
        workflow.validate_policy(s, p)
    })
    .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
    let mut engine_config = EngineConfig::new(owner);
    // The daemon's lease: a crashed run is taken over after it, as a purchase is.
    let lease_s = match std::env::var("PCSAGA_LEASE_S") {
        Ok(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            ConfigError(format!("PCSAGA_LEASE_S = {v:?}: a whole number of seconds"))
        })?),
        Err(_) => file.daemon.lease_s,
    }
    .unwrap_or(120);
    if !(2..=crate::cli::MAX_LEASE_S).contains(&lease_s) {
        return Err(ConfigError(format!(
            "daemon.lease_s (PCSAGA_LEASE_S) = {lease_s}: between 2 and {} seconds",
            crate::cli::MAX_LEASE_S
        ))
        .into());
    }
    engine_config.lease = std::time::Duration::from_secs(lease_s);
    engine_config.concurrency = 2;
    engine_config.max_calls_in_flight = 2;
    engine_config.tenant = tenant;
    // Addendum §5.6: billing reads are throttleable; 60 per minute by default.
    engine_config.budgets = vec![pcsaga_engine::ClassBudget {
        name: pcsaga_billing::workflow::BILLING_CLASS.to_owned(),
        per_minute: 60,
    }];
    if let Ok(point) = std::env::var("PCSAGA_TEST_RECONCILE_CRASH_AT") {
        let point = pcsaga_engine::CrashPoint::parse(&point)
            .map_err(|e| ConfigError(format!("PCSAGA_TEST_RECONCILE_CRASH_AT {e}")))?;
        tracing::warn!(
            ?point,
            "TEST ONLY: reconciliation aborts the process at a crash point"
        );
        engine_config.crash_at = Some(point);
    }
    Ok(Engine::new(
        workflow,
        store,
        policies,
        Arc::new(SystemClock),
        engine_config,
    ))
}

/// How a verb opens the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Create it if missing, and migrate it: `daemon`, `submit`, `migrate`.
    Create,
    /// It must exist; writes allowed: the operator verbs.
    Existing,
    /// It must exist; nothing is written: the verbs that only look.
    ReadOnly,
}

/// Opens the database named by the flags and configuration (the verbs that create it).
pub async fn open_store(
    db: Option<&Path>,
    file: &FileConfig,
) -> anyhow::Result<(AnyStore, PathBuf)> {
    open(db, file, Open::Create).await
}

/// Opens the database named by the flags and configuration, as `how` says. A verb that does
/// not create databases refuses a path with none (a mistyped `--db` must not look empty).
pub async fn open(
    db: Option<&Path>,
    file: &FileConfig,
    how: Open,
) -> anyhow::Result<(AnyStore, PathBuf)> {
    let path = config::database_path(db, file);
    let text = path.to_string_lossy().into_owned();
    if pcsaga_engine::is_postgres_url(&text) {
        // One schema for all: every verb migrates on open (PostgreSQL serialises migrations).
        let mut pg = pcsaga_engine::PgConfig::new(text.clone());
        pg.max_connections = config::pool_size(file)?;
        let shown = pcsaga_engine::store::postgres::redact(&text);
        let store = pcsaga_engine::PgStore::connect(pg)
            .await
            .with_context(|| format!("opening the database {shown}"))?;
        return Ok((AnyStore::Postgres(store), PathBuf::from(shown)));
    }
    let mut sqlite = SqliteConfig::new(&path);
    sqlite.durability = config::durability(file)?;
    sqlite.max_size_mb = config::max_size_mb(file)?;
    sqlite.read_only = how == Open::ReadOnly;
    if how == Open::Existing && !path.is_file() {
        return Err(pcsaga_engine::StoreError::Missing(path.display().to_string()).into());
    }
    let store = SqliteStore::open(sqlite)
        .await
        .with_context(|| format!("opening the database {}", path.display()))?;
    Ok((AnyStore::Sqlite(store), path))
}

/// Loads and validates policies from a file, or the built-in ones.
pub fn policies(path: Option<&Path>) -> anyhow::Result<Policies> {
    let workflow = PurchaseWorkflow::offline();
    let (text, origin) = match path {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| {
                ConfigError(format!(
                    "cannot read the workflow file {}: {e}",
                    path.display()
                ))
            })?,
            path.display().to_string(),
        ),
        None => (
            DEFAULT_POLICIES.to_owned(),
            "built-in workflows/one-time-purchase.toml".to_owned(),
        ),
    };
    Policies::parse(&text, workflow.name(), &workflow.states(), |s, p| {
        workflow.validate_policy(s, p)
    })
    .map_err(|e| ConfigError(format!("{origin}: {e}")).into())
}

/// An engine for operator commands (no Partner Center calls).
pub fn offline_engine(store: AnyStore) -> Engine<PurchaseWorkflow, AnyStore> {
    let policies = policies(None).unwrap_or_else(|_| Policies {
        workflow: pcsaga_purchase::WORKFLOW_NAME.to_owned(),
        states: Default::default(),
    });
    Engine::new(
        PurchaseWorkflow::offline(),
        store,
        policies,
        Arc::new(SystemClock),
        EngineConfig::new(owner_name("cli")),
    )
}

/// A Partner Center client from the configuration.
pub fn client(file: &FileConfig) -> anyhow::Result<Client> {
    let pc = config::partner_center(file)?;
    let mut config = ClientConfig::new(pc.base_url);
    config.graph_url = pc.graph_url;
    config.timeout = pc.timeout;
    Ok(Client::new(config, pc.credentials)?)
}

/// A lease owner name unique to this process run: host, pid and a random suffix.
/// This machine's name, as far as the environment says (`HOSTNAME`, `/etc/hostname`).
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

pub fn owner_name(role: &str) -> String {
    let host = host_name();
    format!(
        "{role}@{host}:{}:{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// A client for an in-process simulator, with its credentials (app-only and app+user).
pub fn simulator_client(
    sim: &pcsaga_simulator::Simulator,
    timeout: std::time::Duration,
) -> anyhow::Result<Client> {
    let c = sim.config();
    let credentials = pcsaga_partner_center::Credentials {
        token_url: sim.token_url(),
        resource: c.resource.clone(),
        client_id: c.client_id.clone(),
        client_secret: pcsaga_partner_center::Secret::new(c.client_secret.clone()),
        refresh_token: Some(pcsaga_partner_center::Secret::new(c.refresh_token.clone())),
    };
    let mut config = ClientConfig::new(sim.base_url());
    config.graph_url = sim.graph_url();
    config.timeout = timeout;
    Ok(Client::new(config, credentials)?)
}
