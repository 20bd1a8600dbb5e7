//! A Partner Center simulator: the REST API of `shared/partner-center-api.md` (calls E1-E20,
//! E21-E29 of its billing and orders addendum, and the Entra ID token endpoint) on a local port,
//! with fault injection, a purchase ledger and a billing ledger.
//!
//! It is a product feature, like stripe-mock: the demo, the tests, the benchmarks and users'
//! own integration tests run against it. It is written from the spec, independently of the
//! `pcsaga-partner-center` client (it shares none of its types), so a misreading of the spec
//! cannot hide in both.
//!
//! ```no_run
//! # async fn example() -> Result<(), pcsaga_simulator::Error> {
//! let sim = pcsaga_simulator::Simulator::start(Default::default()).await?;
//! println!("Partner Center at {}, tokens at {}", sim.base_url(), sim.token_url());
//! let ledger = sim.ledger(); // every cart checked out and every order created
//! sim.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Decisions on the spec's ambiguities (section 11), made here and documented in the README:
//! - 1: a repeated checkout replays the first result (201); `checkout_replay = "already_submitted"`
//!   answers 400/800065 instead. A checkout of a cart being checked out answers 409/800064.
//! - 2: cart creation is de-duplicated by `(customer, MS-RequestId)`; other calls are
//!   idempotent by nature (registration) or per cart (checkout).
//! - 3: a repeated checkout after `orderErrors` re-attempts only the failed groups.
//! - 4: a line's `friendlyName` is echoed into the order line.
//! - 5: carts live 7 days (`cart_ttl_s`).
//! - 6: re-registering a registered or registering subscription is accepted (202), no change.
//! - 11: status values are written in the spec examples' casing (`Registered`, `Active`, ...).
//! - 12: order and entitlement lists page with `links.next` (`page_size`).
//! - 18: provisioning status, entitlements and artifact details answer 403 to app-only tokens.
//! - Billing (addendum §14, `billing.rs`): lines are made lazily from the order ledger on each
//!   billing call, deterministically; one invoice per (currency, month); the price list is a
//!   fixed function of product and SKU in USD, with EUR 0.92 and GBP 0.79 exchange rates and no
//!   tax; E23, E25 and E28 answer app-only tokens 401 (code 400); a Graph token (resource
//!   `https://graph.microsoft.com`) is good only under `/graph/v1.0` and a Partner Center token
//!   only under `/v1`; export files are served under `/sim-blob/` to a SAS signed with an HMAC
//!   of the path and the expiry (1 h); a continuation token is base64url of the query and the
//!   next offset, refused (400/800002) for another query; the invoice calls are the `billing`
//!   throttle class.

pub mod billing;
mod catalog;
pub mod clock;
pub mod config;
mod direct;
pub mod faults;
pub mod jwt;
mod server;
mod service;
pub mod throttle;
pub mod world;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use catalog::Catalog;
pub use config::{CheckoutReplay, DirectOrderReplay, SimCloud, SimConfig};
pub use faults::{Fault, FaultPlan, FaultRule};
pub use world::{Ledger, RequestRecord};

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}; choose another address or port")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid simulator configuration: {0}")]
    Config(String),
}

/// A running simulator. Dropping it stops the server too.
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<service::Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Starts on `127.0.0.1` with a free port and the built-in catalog.
    pub async fn start(config: SimConfig) -> Result<Self, Error> {
        Self::start_with(
            config,
            Catalog::builtin(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
    }

    /// Starts on a given address with a given catalog.
    pub async fn start_with(
        config: SimConfig,
        catalog: Catalog,
        addr: SocketAddr,
    ) -> Result<Self, Error> {
        for (index, rule) in config.faults.rules.iter().enumerate() {
            rule.validate()
                .map_err(|e| Error::Config(format!("faults.rules[{index}]: {e}")))?;
        }
        if config.page_size == 0 {
            return Err(Error::Config("page_size must be at least 1".to_owned()));
        }
        let listener = server::bind(addr)
            .await
            .map_err(|source| Error::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr, source })?;
        let injector = faults::Injector::new(config.faults.clone());
        let throttle_config = config.throttle.clone();
        let restrictions = service::Restrictions {
            restricted_regions: config.restricted_regions.clone(),
            checkout_restricted_regions: config.checkout_restricted_regions.clone(),
        };
        let shared = Arc::new(service::Shared {
            config,
            catalog,
            clock: clock::SimClock::default(),
            injector,
            world: std::sync::Mutex::new(world::World::default()),
            checkout_started: tokio::sync::Notify::new(),
            in_flight: std::sync::atomic::AtomicU64::new(0),
            max_in_flight: std::sync::atomic::AtomicU64::new(0),
            restrictions: std::sync::RwLock::new(restrictions),
            throttle: throttle::Throttle::new(throttle_config),
            signer: jwt::Signer::default(),
        });
        let (shutdown, receiver) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, shared.clone(), receiver));
        Ok(Self {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Partner Center base URL (calls go under `{base}/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Microsoft Graph's base (with the version) as the simulator serves it: the billing
    /// export (E29) lives under it.
    pub fn graph_url(&self) -> String {
        format!("http://{}/graph/v1.0", self.addr)
    }

    /// Closes the billing period at once: every open billing line goes on an invoice
    /// (`POST /_sim/billing/close`). Returns the invoice ids made.
    pub fn close_billing_period(&self) -> Vec<String> {
        let resp = crate::billing::close_now(&self.shared);
        resp.body
            .and_then(|b| {
                b["invoices"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// Sets the billing faults (as `PUT /_sim/billing`).
    pub fn set_billing_faults(&self, faults: crate::billing::BillingFaults) {
        self.shared.world().billing.set_faults(faults);
    }

    /// The v1 token endpoint for the configured tenant.
    pub fn token_url(&self) -> String {
        format!(
            "http://{}/{}/oauth2/token",
            self.addr, self.shared.config.tenant_id
        )
    }

    /// The configuration in force (credentials included: it is a simulator).
    pub fn config(&self) -> &SimConfig {
        &self.shared.config
    }

    /// A copy of the ledger.
    pub fn ledger(&self) -> Ledger {
        self.shared.world().ledger.clone()
    }

    /// The requests seen so far (at most [`world::REQUEST_LOG_CAPACITY`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.world().requests.iter().cloned().collect()
    }

    /// Moves the business clock forward (order completion, list lag, expiries).
    pub fn advance_clock(&self, by: Duration) {
        self.shared.clock.advance(by);
    }

    /// Replaces the fault plan.
    pub fn set_faults(&self, plan: FaultPlan) -> Result<(), Error> {
        for (index, rule) in plan.rules.iter().enumerate() {
            rule.validate()
                .map_err(|e| Error::Config(format!("rules[{index}]: {e}")))?;
        }
        self.shared.injector.replace(plan);
        Ok(())
    }

    /// The most Partner Center requests ever handled at once (token requests excluded).
    pub fn throttle_stats(&self) -> std::collections::BTreeMap<String, throttle::ClassStats> {
        self.shared.throttle.stats()
    }

    /// The most Partner Center requests handled at once so far.
    pub fn max_in_flight(&self) -> u64 {
        self.shared
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Resolves when a checkout has started processing (each start is remembered once).
    pub async fn checkout_started(&self) {
        self.shared.checkout_started.notified().await;
    }

    /// Stops accepting, lets in-flight requests finish briefly, and waits for the server.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
