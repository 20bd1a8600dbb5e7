//! Configuration: a TOML file plus environment variables. Secrets (client secret, refresh
//! token) come only from the environment or from files, never from the TOML file, and are
//! held as `Secret`s that never print.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pcsaga_partner_center::{Cloud, Credentials, Secret};
use serde::Deserialize;

/// A configuration problem; the message names the key and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(message: impl Into<String>) -> ConfigError {
    ConfigError(message.into())
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub partner_center: PartnerCenterFile,
    #[serde(default)]
    pub daemon: DaemonFile,
    #[serde(default)]
    pub database: DatabaseFile,
    #[serde(default)]
    pub governor: GovernorFile,
    #[serde(default)]
    pub direct_order: DirectOrderFile,
    #[serde(default)]
    pub billing: BillingFile,
}

/// `[billing]`: billing reconciliation (README "Billing reconciliation").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingFile {
    /// Invoices of this month (`YYYY-MM`) and later are read through the Graph export (v2),
    /// older ones through the v1 line-item calls (default `2024-02`).
    pub v2_from_period: Option<String>,
    /// Read unbilled lines through the Graph export instead of E27 (default false).
    pub unbilled_via_graph: Option<bool>,
    /// How often the daemon starts a reconciliation run, in hours (default 24; 0 turns the
    /// schedule off, `pcsaga reconcile` still works).
    pub reconcile_every_h: Option<u64>,
    /// Hours after an order before its absence from the unbilled lines is a warning (48).
    pub unbilled_grace_h: Option<u32>,
    /// Day of the month on which the previous month's one-time invoice is issued (8).
    pub invoice_day: Option<u32>,
    /// Days after the invoice day before an order on no invoice is `missing` (3).
    pub invoice_grace_days: Option<u32>,
    /// The reconciliation run's policy file (default: the built-in
    /// workflows/billing-reconciliation.toml); also `PCSAGA_RECONCILE_WORKFLOW`.
    pub workflow: Option<PathBuf>,
}

/// The reconciliation settings and the schedule (`None`: off) from `[billing]`.
pub fn billing(
    file: &FileConfig,
) -> Result<(pcsaga_billing::BillingSettings, Option<Duration>), ConfigError> {
    let b = &file.billing;
    let mut settings = pcsaga_billing::BillingSettings::default();
    if let Some(text) = &b.v2_from_period {
        let parsed = text
            .split_once('-')
            .and_then(|(y, m)| Some((y.parse::<i32>().ok()?, m.parse::<u32>().ok()?)))
            .filter(|(y, m)| (2000..=2100).contains(y) && (1..=12).contains(m));
        let Some((year, month)) = parsed else {
            return Err(bad(format!(
                "billing.v2_from_period = {text:?}: give a month as YYYY-MM, e.g. \"2024-02\""
            )));
        };
        settings.v2_from = pcsaga_billing::Month { year, month };
    }
    settings.unbilled_via_graph = b.unbilled_via_graph == Some(true);
    if let Some(h) = b.unbilled_grace_h {
        if !(1..=24 * 90).contains(&h) {
            return Err(bad(format!(
                "billing.unbilled_grace_h = {h}: between 1 and 2160 hours"
            )));
        }
        settings.timing.unbilled_grace = chrono::Duration::hours(i64::from(h));
    }
    if let Some(day) = b.invoice_day {
        if !(1..=28).contains(&day) {
            return Err(bad(format!(
                "billing.invoice_day = {day}: a day between 1 and 28"
            )));
        }
        settings.timing.invoice_day = day;
    }
    if let Some(days) = b.invoice_grace_days {
        if days > 60 {
            return Err(bad(format!(
                "billing.invoice_grace_days = {days}: at most 60"
            )));
        }
        settings.timing.invoice_grace = chrono::Duration::days(i64::from(days));
    }
    let every = match std::env::var("PCSAGA_RECONCILE_EVERY_H") {
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            bad(format!(
                "PCSAGA_RECONCILE_EVERY_H = {v:?}: a whole number of hours (0: off)"
            ))
        })?,
        Err(_) => b.reconcile_every_h.unwrap_or(24),
    };
    if every > 24 * 31 {
        return Err(bad(format!(
            "billing.reconcile_every_h = {every}: at most 744 (a month); 0 turns the schedule off"
        )));
    }
    let schedule = (every > 0).then(|| Duration::from_secs(every * 3600));
    Ok((settings, schedule))
}

/// `[direct_order]`: how a direct order (`"orderPath": "direct"`) whose reply was lost proves
/// its absence before it is sent again (README "Two purchase paths").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectOrderFile {
    /// How long after the last send an order list showing nothing proves absence (default
    /// 1200: Partner Center's list lags up to 15 minutes).
    pub absence_wait_s: Option<u64>,
    /// Sends after proven absence, at most (default 1).
    pub max_resends: Option<u32>,
}

/// Whether the direct-order settings fit the Checkout policy: every absence period (one per
/// send) inside the poll deadline, and the looks at the order list of one period within the
/// attempts, or direct orders would park before their absence is proven. The daemon warns at
/// start when they do not (a book without direct orders is not concerned).
pub fn direct_order_fits(
    direct: &pcsaga_purchase::direct::DirectSettings,
    checkout: &pcsaga_engine::StatePolicy,
) -> Result<(), ConfigError> {
    let wait = direct.absence_wait.to_std().unwrap_or_default();
    let sends = direct.max_resends + 1;
    if wait * sends >= checkout.poll.deadline {
        return Err(bad(format!(
            "direct_order.absence_wait_s × (direct_order.max_resends + 1) = {} s must be shorter than the Checkout poll deadline of the workflow policies ({} s, states.Checkout.poll.deadline_s), or a direct order parks before its absence is proven",
            (wait * sends).as_secs(),
            checkout.poll.deadline.as_secs()
        )));
    }
    let looks = wait.as_millis() / checkout.poll.interval.as_millis().max(1);
    if looks >= u128::from(checkout.retry.max_attempts) {
        return Err(bad(format!(
            "direct_order.absence_wait_s = {} s means {looks} looks at the order list at the Checkout poll interval ({} ms), not fewer than states.Checkout.retry.max_attempts ({}): raise the interval or the attempts in the workflow policies, or shorten the wait",
            wait.as_secs(),
            checkout.poll.interval.as_millis(),
            checkout.retry.max_attempts
        )));
    }
    Ok(())
}

/// The direct-order settings from the file, checked.
pub fn direct_order(
    file: &FileConfig,
) -> Result<pcsaga_purchase::direct::DirectSettings, ConfigError> {
    let defaults = pcsaga_purchase::direct::DirectSettings::default();
    let wait = file
        .direct_order
        .absence_wait_s
        .unwrap_or_else(|| defaults.absence_wait.num_seconds().unsigned_abs());
    if !(1..=86_400).contains(&wait) {
        return Err(bad(format!(
            "direct_order.absence_wait_s = {wait}: must be between 1 and 86400 seconds (Partner Center's order list lags up to 900)"
        )));
    }
    let max_resends = file
        .direct_order
        .max_resends
        .unwrap_or(defaults.max_resends);
    if max_resends > 3 {
        return Err(bad(format!(
            "direct_order.max_resends = {max_resends}: at most 3; each is sent only after its absence is proven"
        )));
    }
    Ok(pcsaga_purchase::direct::DirectSettings {
        absence_wait: chrono::Duration::seconds(i64::try_from(wait).unwrap_or(86_400)),
        max_resends,
        unsafe_resend_without_proof: false,
    })
}

/// `[governor]`: good manners toward Partner Center (README "Rate limits").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernorFile {
    /// How long catalog replies and registered subscriptions are reused; 0 turns it off.
    pub cache_ttl_s: Option<u64>,
    /// Budgets in calls per minute for the whole partner tenant, by call class.
    #[serde(default)]
    pub per_minute: std::collections::BTreeMap<String, u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerCenterFile {
    pub cloud: Option<String>,
    pub base_url: Option<String>,
    /// Microsoft Graph, for the billing export (default https://graph.microsoft.com/v1.0).
    pub graph_url: Option<String>,
    pub token_url: Option<String>,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub refresh_token_file: Option<PathBuf>,
    pub timeout_s: Option<u64>,
    /// The partner's own Partner ID (MPN id): a purchase may not name it as
    /// `partnerIdOnRecord`, which is for an indirect reseller's id only.
    pub partner_id: Option<String>,
    /// Refused with a clear message: secrets do not belong in this file.
    pub client_secret: Option<toml::Value>,
    pub refresh_token: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonFile {
    pub concurrency: Option<usize>,
    pub max_calls_in_flight: Option<usize>,
    pub lease_s: Option<u64>,
    pub workflow: Option<PathBuf>,
    pub credentials_retry_s: Option<u64>,
    /// Where the listener serves /metrics, /healthz, /readyz and the console (`off`: none).
    pub listen: Option<String>,
    /// A file holding the listener's bearer token (needed off loopback). The file, never the
    /// token itself, goes in the configuration.
    pub listen_token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseFile {
    pub path: Option<PathBuf>,
    /// A PostgreSQL server instead of a SQLite file: `postgres://USER@HOST:PORT/DATABASE`.
    pub url: Option<String>,
    /// Connections to PostgreSQL per process (default 16).
    pub pool_size: Option<u32>,
    /// `full` (default) or `normal`.
    pub synchronous: Option<String>,
    /// Cap on the database size in MiB (beyond it writes fail as on a full disk).
    pub max_size_mb: Option<u64>,
}

/// Where Partner Center is and who we are there.
#[derive(Debug, Clone)]
pub struct PartnerCenterConfig {
    pub base_url: String,
    pub graph_url: String,
    pub credentials: Credentials,
    pub timeout: Duration,
}

/// Reads the file at `path` (if any) into a [`FileConfig`].
pub fn load_file(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad(format!(
            "cannot read the configuration file {}: {e}",
            path.display()
        ))
    })?;
    let config: FileConfig = toml::from_str(&text).map_err(|e| {
        bad(format!(
            "configuration file {}: {}",
            path.display(),
            e.to_string().trim()
        ))
    })?;
    if config.partner_center.client_secret.is_some() {
        return Err(bad(format!("{}: partner_center.client_secret may not be in the configuration file; set PCSAGA_CLIENT_SECRET or partner_center.client_secret_file", path.display())));
    }
    if config.partner_center.refresh_token.is_some() {
        return Err(bad(format!("{}: partner_center.refresh_token may not be in the configuration file; set PCSAGA_REFRESH_TOKEN or partner_center.refresh_token_file", path.display())));
    }
    Ok(config)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn secret(
    env_name: &str,
    file_env: &str,
    file: Option<&PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(value) = env(env_name) {
        return Ok(Some(Secret::new(value)));
    }
    let path = env(file_env).map(PathBuf::from).or_else(|| file.cloned());
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                bad(format!(
                    "cannot read the secret file {} ({file_env}): {e}",
                    path.display()
                ))
            })?;
            let value = text.trim().to_owned();
            if value.is_empty() {
                return Err(bad(format!("the secret file {} is empty", path.display())));
            }
            Ok(Some(Secret::new(value)))
        }
        None => Ok(None),
    }
}

/// The partner's own Partner ID (`PCSAGA_PARTNER_ID`, then the file), if configured: digits.
pub fn own_partner_id(file: &FileConfig) -> Result<Option<String>, ConfigError> {
    let id = env("PCSAGA_PARTNER_ID").or_else(|| file.partner_center.partner_id.clone());
    match id {
        Some(id) if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) => {
            Err(bad(format!(
                "partner_center.partner_id (PCSAGA_PARTNER_ID) = {id:?}: the partner's own Partner ID (MPN id), digits"
            )))
        }
        other => Ok(other),
    }
}

/// Whether the configured Partner Center cloud is the public one (`PCSAGA_CLOUD`, then the
/// file; default public), without the rest of the Partner Center settings (`submit` needs no
/// credentials).
pub fn public_cloud(file: &FileConfig) -> Result<bool, ConfigError> {
    let name = env("PCSAGA_CLOUD")
        .or_else(|| file.partner_center.cloud.clone())
        .unwrap_or_else(|| "public".to_owned());
    let cloud = Cloud::parse(&name).ok_or_else(|| {
        bad(format!(
            "partner_center.cloud (PCSAGA_CLOUD) = {name:?}: use public, usgov or china"
        ))
    })?;
    Ok(cloud == Cloud::Public)
}

/// Resolves the Partner Center settings: environment first, then the file, then the cloud's
/// defaults. Fails naming the first missing or invalid key.
pub fn partner_center(file: &FileConfig) -> Result<PartnerCenterConfig, ConfigError> {
    let pc = &file.partner_center;
    let cloud_name = env("PCSAGA_CLOUD")
        .or_else(|| pc.cloud.clone())
        .unwrap_or_else(|| "public".to_owned());
    let cloud = Cloud::parse(&cloud_name).ok_or_else(|| {
        bad(format!(
            "partner_center.cloud (PCSAGA_CLOUD) = {cloud_name:?}: use public, usgov or china"
        ))
    })?;
    let base_url = env("PCSAGA_BASE_URL")
        .or_else(|| pc.base_url.clone())
        .unwrap_or_else(|| cloud.base_url().to_owned());
    // The client checks both URLs again; checking here names the setting in the error.
    pcsaga_partner_center::checked_url("partner_center.base_url (PCSAGA_BASE_URL)", &base_url)
        .map_err(bad)?;
    let tenant_id = env("PCSAGA_TENANT_ID").or_else(|| pc.tenant_id.clone());
    let token_url = match env("PCSAGA_TOKEN_URL").or_else(|| pc.token_url.clone()) {
        Some(url) => url,
        None => cloud.token_url(tenant_id.as_deref().ok_or_else(|| bad("partner_center.tenant_id (PCSAGA_TENANT_ID) is required: the partner's Entra ID tenant"))?),
    };
    pcsaga_partner_center::checked_url("partner_center.token_url (PCSAGA_TOKEN_URL)", &token_url)
        .map_err(bad)?;
    let client_id = env("PCSAGA_CLIENT_ID")
        .or_else(|| pc.client_id.clone())
        .ok_or_else(|| bad("partner_center.client_id (PCSAGA_CLIENT_ID) is required: the application id registered in Partner Center"))?;
    let client_secret = secret("PCSAGA_CLIENT_SECRET", "PCSAGA_CLIENT_SECRET_FILE", pc.client_secret_file.as_ref())?
        .ok_or_else(|| bad("the client secret is required: set PCSAGA_CLIENT_SECRET, PCSAGA_CLIENT_SECRET_FILE or partner_center.client_secret_file"))?;
    let refresh_token = secret(
        "PCSAGA_REFRESH_TOKEN",
        "PCSAGA_REFRESH_TOKEN_FILE",
        pc.refresh_token_file.as_ref(),
    )?;
    let timeout_s = match env("PCSAGA_TIMEOUT_S") {
        Some(v) => v.parse::<u64>().map_err(|_| {
            bad(format!(
                "PCSAGA_TIMEOUT_S = {v:?}: a whole number of seconds"
            ))
        })?,
        None => pc.timeout_s.unwrap_or(60),
    };
    if !(1..=600).contains(&timeout_s) {
        return Err(bad(format!(
            "partner_center.timeout_s = {timeout_s}: must be between 1 and 600"
        )));
    }
    let graph_url = env("PCSAGA_GRAPH_URL")
        .or_else(|| pc.graph_url.clone())
        .unwrap_or_else(|| pcsaga_partner_center::GRAPH_URL.to_owned());
    pcsaga_partner_center::checked_url("partner_center.graph_url (PCSAGA_GRAPH_URL)", &graph_url)
        .map_err(bad)?;
    Ok(PartnerCenterConfig {
        base_url,
        graph_url,
        credentials: Credentials {
            token_url,
            resource: cloud.resource().to_owned(),
            client_id,
            client_secret,
            refresh_token,
        },
        timeout: Duration::from_secs(timeout_s),
    })
}

/// The database path: `--db`, then `PCSAGA_DB` (clap reads both), then the file, then
/// `pcsaga.db` in the working directory.
pub fn database_path(flag: Option<&Path>, file: &FileConfig) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| file.database.url.clone().map(PathBuf::from))
        .or_else(|| file.database.path.clone())
        .unwrap_or_else(|| PathBuf::from("pcsaga.db"))
}

/// The PostgreSQL pool size: `database.pool_size`, 1 to 200, default 16.
pub fn pool_size(file: &FileConfig) -> Result<u32, ConfigError> {
    match file.database.pool_size {
        None => Ok(16),
        Some(n) if (1..=200).contains(&n) => Ok(n),
        Some(n) => Err(bad(format!(
            "database.pool_size = {n}: between 1 and 200 connections"
        ))),
    }
}

/// The database size cap: `PCSAGA_DB_MAX_SIZE_MB`, then the file.
pub fn max_size_mb(file: &FileConfig) -> Result<Option<u64>, ConfigError> {
    let mb = match env("PCSAGA_DB_MAX_SIZE_MB") {
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            bad(format!(
                "PCSAGA_DB_MAX_SIZE_MB = {v:?}: a whole number of MiB"
            ))
        })?),
        None => file.database.max_size_mb,
    };
    match mb {
        Some(mb) if mb > MAX_DB_SIZE_MB => Err(bad(format!(
            "database.max_size_mb (PCSAGA_DB_MAX_SIZE_MB) = {mb}: at most {MAX_DB_SIZE_MB} (16 TiB); 0 allows no growth at all"
        ))),
        other => Ok(other),
    }
}

/// The governor's budgets: the defaults of `pcsaga_purchase::budgets`, with the file's
/// overrides. Unknown classes and budgets out of range are refused by name.
pub fn budgets(file: &FileConfig) -> Result<Vec<pcsaga_engine::ClassBudget>, ConfigError> {
    let mut budgets = pcsaga_purchase::budgets::default_budgets();
    for (class, per_minute) in &file.governor.per_minute {
        let Some(budget) = budgets.iter_mut().find(|b| &b.name == class) else {
            return Err(bad(format!(
                "governor.per_minute.{class}: no such call class; the classes are {}",
                pcsaga_purchase::budgets::DEFAULT_BUDGETS
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if !(1..=MAX_PER_MINUTE).contains(per_minute) {
            return Err(bad(format!(
                "governor.per_minute.{class} = {per_minute}: must be between 1 and {MAX_PER_MINUTE} calls per minute"
            )));
        }
        budget.per_minute = *per_minute;
    }
    Ok(budgets)
}

/// Largest budget accepted for a class, in calls per minute (well above any real limit).
pub const MAX_PER_MINUTE: u32 = 10_000_000;

/// How long shared replies are reused: `PCSAGA_CACHE_TTL_S`, then the file, then one hour.
pub fn cache_ttl(file: &FileConfig) -> Result<Duration, ConfigError> {
    let ttl = match env("PCSAGA_CACHE_TTL_S") {
        Some(v) => v.parse::<u64>().map_err(|_| {
            bad(format!(
                "PCSAGA_CACHE_TTL_S = {v:?}: a whole number of seconds (0 turns the cache off)"
            ))
        })?,
        None => file
            .governor
            .cache_ttl_s
            .unwrap_or(pcsaga_purchase::cache::DEFAULT_TTL.as_secs()),
    };
    if ttl > 7 * 24 * 3600 {
        return Err(bad(format!(
            "governor.cache_ttl_s (PCSAGA_CACHE_TTL_S) = {ttl}: at most 604800 (a week); catalog ids change"
        )));
    }
    Ok(Duration::from_secs(ttl))
}

/// Largest database size cap accepted, in MiB.
const MAX_DB_SIZE_MB: u64 = 16 * 1024 * 1024;

/// The database durability from the file.
pub fn durability(file: &FileConfig) -> Result<pcsaga_engine::Durability, ConfigError> {
    match file
        .database
        .synchronous
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("full") => Ok(pcsaga_engine::Durability::Full),
        Some("normal") => Ok(pcsaga_engine::Durability::Normal),
        Some(other) => Err(bad(format!(
            "database.synchronous = {other:?}: use \"full\" (default) or \"normal\""
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `contrib/pcsaga.toml`, the example a production install starts from: every key in it is
    /// one pcsaga reads (the sections deny unknown keys), every value passes the checks the
    /// daemon makes, and where it states a default it states the real one.
    #[test]
    fn the_example_configuration_loads_and_states_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/pcsaga.toml");
        let file = load_file(Some(&path)).expect("contrib/pcsaga.toml loads");
        assert_eq!(
            file.database.path.as_deref(),
            Some(Path::new("/var/lib/pcsaga/pcsaga.db"))
        );
        assert_eq!(file.daemon.listen.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(
            file.daemon.listen.as_deref(),
            Some(crate::web::listen::DEFAULT_LISTEN)
        );
        assert_eq!(file.daemon.concurrency, Some(64));
        assert_eq!(file.daemon.max_calls_in_flight, Some(16));
        let budgets = budgets(&file).expect("budgets");
        assert_eq!(
            budgets,
            pcsaga_purchase::budgets::default_budgets(),
            "the example's budgets are the defaults"
        );
        let (settings, every) = billing(&file).expect("billing");
        assert_eq!(settings, pcsaga_billing::BillingSettings::default());
        assert_eq!(every, Some(Duration::from_secs(24 * 3600)));
        assert_eq!(
            direct_order(&file).expect("direct_order"),
            pcsaga_purchase::direct::DirectSettings::default()
        );
        assert_eq!(cache_ttl(&file).expect("cache"), Duration::from_secs(3600));
        assert!(crate::web::listen::Listen::parse(
            "daemon.listen",
            file.daemon.listen.as_deref().unwrap_or_default(),
            None,
            None
        )
        .is_ok());
    }

    /// `[billing]`: the defaults, each setting read, and each value out of range refused naming
    /// its key. (PCSAGA_RECONCILE_EVERY_H is not set by the test runner.)
    #[test]
    fn billing_settings_are_read_and_checked() {
        let parse = |text: &str| -> FileConfig { toml::from_str(text).expect("TOML") };
        let (defaults, every) = billing(&FileConfig::default()).expect("defaults");
        assert_eq!(defaults, pcsaga_billing::BillingSettings::default());
        assert_eq!(every, Some(Duration::from_secs(24 * 3600)));
        let (set, every) = billing(&parse(
            "[billing]\nv2_from_period = \"2025-04\"\nunbilled_via_graph = true\nunbilled_grace_h = 72\ninvoice_day = 10\ninvoice_grace_days = 5\nreconcile_every_h = 0\n",
        ))
        .expect("valid");
        assert_eq!(
            set.v2_from,
            pcsaga_billing::Month {
                year: 2025,
                month: 4
            }
        );
        assert!(set.unbilled_via_graph);
        assert_eq!(set.timing.unbilled_grace, chrono::Duration::hours(72));
        assert_eq!(set.timing.invoice_day, 10);
        assert_eq!(set.timing.invoice_grace, chrono::Duration::days(5));
        assert_eq!(every, None, "0 turns the schedule off");
        for (text, key) in [
            ("v2_from_period = \"April\"", "billing.v2_from_period"),
            ("v2_from_period = \"2024-13\"", "billing.v2_from_period"),
            ("unbilled_grace_h = 0", "billing.unbilled_grace_h"),
            ("invoice_day = 29", "billing.invoice_day"),
            ("invoice_grace_days = 61", "billing.invoice_grace_days"),
            ("reconcile_every_h = 745", "billing.reconcile_every_h"),
        ] {
            let error = billing(&parse(&format!("[billing]\n{text}\n"))).expect_err(text);
            assert!(error.to_string().contains(key), "{text}: {error}");
        }
    }

    /// The defaults fit the built-in policies; a wait longer than the Checkout deadline allows,
    /// or more looks than attempts, is named.
    #[test]
    fn direct_order_settings_must_fit_the_checkout_policy() {
        let policies = crate::app::policies(None).expect("built-in policies");
        let checkout = policies.get("Checkout");
        let defaults = pcsaga_purchase::direct::DirectSettings::default();
        direct_order_fits(&defaults, &checkout).expect("the defaults fit");
        let long = pcsaga_purchase::direct::DirectSettings {
            max_resends: 3,
            ..defaults
        };
        let refused = direct_order_fits(&long, &checkout)
            .expect_err("80 minutes of waits")
            .0;
        assert!(
            refused.contains("states.Checkout.poll.deadline_s"),
            "{refused}"
        );
        let mut fast = checkout.clone();
        fast.poll.interval = Duration::from_secs(1);
        let refused = direct_order_fits(&defaults, &fast)
            .expect_err("1,200 looks")
            .0;
        assert!(
            refused.contains("states.Checkout.retry.max_attempts"),
            "{refused}"
        );
    }

    /// `[direct_order]`: defaults, a setting taken, and each bound refused by name.
    #[test]
    fn direct_order_settings_are_checked() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pcsaga.toml");
        let settings = |text: &str| {
            std::fs::write(&path, text).expect("write");
            direct_order(&load_file(Some(&path)).expect("parses"))
        };
        assert_eq!(
            settings("").expect("defaults"),
            pcsaga_purchase::direct::DirectSettings::default()
        );
        let taken =
            settings("[direct_order]\nabsence_wait_s = 30\nmax_resends = 0\n").expect("valid");
        assert_eq!(taken.absence_wait, chrono::Duration::seconds(30));
        assert_eq!(taken.max_resends, 0);
        for (text, says) in [
            (
                "[direct_order]\nabsence_wait_s = 0\n",
                "direct_order.absence_wait_s = 0",
            ),
            (
                "[direct_order]\nabsence_wait_s = 90000\n",
                "direct_order.absence_wait_s = 90000",
            ),
            (
                "[direct_order]\nmax_resends = 4\n",
                "direct_order.max_resends = 4",
            ),
        ] {
            let refused = settings(text).expect_err(text).0;
            assert!(refused.contains(says), "{refused}");
        }
    }

    #[test]
    fn secrets_in_the_file_and_unknown_keys_are_refused_by_name() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("pcsaga.toml");
        std::fs::write(&path, "[partner_center]\nclient_secret = \"x\"\n").expect("write");
        assert!(load_file(Some(&path))
            .expect_err("refused")
            .0
            .contains("partner_center.client_secret may not be"));
        std::fs::write(&path, "[daemon]\nconcurency = 3\n").expect("write");
        assert!(load_file(Some(&path))
            .expect_err("refused")
            .0
            .contains("concurency"));
        std::fs::write(&path, "[governor.per_minute]\ncatalogue = 10\n").expect("write");
        let file = load_file(Some(&path)).expect("parses");
        let refused = budgets(&file).expect_err("refused").0;
        assert!(
            refused.contains("governor.per_minute.catalogue: no such call class"),
            "{refused}"
        );
        std::fs::write(&path, "[governor.per_minute]\ncheckout = 0\n").expect("write");
        let file = load_file(Some(&path)).expect("parses");
        assert!(budgets(&file)
            .expect_err("refused")
            .0
            .contains("between 1 and"));
        std::fs::write(
            &path,
            "[governor]\ncache_ttl_s = 0\n[governor.per_minute]\ncheckout = 100\n",
        )
        .expect("write");
        let file = load_file(Some(&path)).expect("parses");
        let checkout = budgets(&file)
            .expect("valid")
            .into_iter()
            .find(|b| b.name == "checkout");
        assert_eq!(checkout.map(|b| b.per_minute), Some(100));
        assert_eq!(cache_ttl(&file).expect("valid"), Duration::ZERO);
        std::fs::write(&path, "[database]\nsynchronous = \"off\"\n").expect("write");
        let file = load_file(Some(&path)).expect("parses");
        assert!(durability(&file)
            .expect_err("refused")
            .0
            .contains("database.synchronous"));
    }
}
