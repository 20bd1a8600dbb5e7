//! What the simulator does: timings, restrictions, credentials and faults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::faults::FaultPlan;

/// Simulator settings. Every field has a default; `pcsaga sim` reads them from flags and a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// The partner tenant the token endpoint serves (`/{tenant}/oauth2/token`).
    pub tenant_id: String,
    /// The tenant's verified domain names, accepted in the token URL instead of its GUID.
    pub tenant_domains: Vec<String>,
    /// The signed-in user of app+user tokens (their `oid` claim).
    pub user_object_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// The refresh token accepted for app+user tokens.
    pub refresh_token: String,
    /// The audience tokens must be requested for.
    pub resource: String,
    /// Lifetime of issued access tokens.
    pub token_ttl_s: u64,
    /// Registration status polls after E1 before a subscription reads `Registered`.
    pub registration_polls: u32,
    /// Subscription ids that are registered from the start.
    pub preregistered_subscriptions: Vec<String>,
    /// Azure regions (`armRegionName`) whose RI SKUs check-inventory reports restricted.
    pub restricted_regions: Vec<String>,
    /// Regions whose RI lines fail at checkout with 800010 (inventory gone after the check).
    pub checkout_restricted_regions: Vec<String>,
    /// How long after creation an order moves from `pending` to `completed`.
    pub order_completion_s: u64,
    /// How long after creation an order appears in the customer's order list (real: ≤ 15 min).
    pub order_list_lag_s: u64,
    /// How long a cart lives (current docs: 7 days).
    pub cart_ttl_s: u64,
    /// Real time a checkout takes; a second checkout of the same cart meanwhile gets 409/800064.
    pub checkout_duration_ms: u64,
    /// What a second checkout of an already checked-out cart returns (spec ambiguity 1).
    pub checkout_replay: CheckoutReplay,
    /// What a direct order (E21) posted again with the same `MS-RequestId` does (addendum rule
    /// 9.20, ambiguity 26): Partner Center documents no dedup, so tests run all three.
    pub direct_order_replay: DirectOrderReplay,
    /// The Partner Center cloud simulated: reservations can be ordered directly (E21) only in
    /// the public one (addendum §6 E21, ambiguity 27).
    pub cloud: SimCloud,
    /// Days after purchase within which software can be cancelled (E20).
    pub cancellation_window_days: u64,
    /// Country of customers not listed in the catalog file; `None` refuses them (403/20002).
    pub default_customer_country: Option<String>,
    /// Items per page of the order and entitlement lists (`links.next` beyond).
    pub page_size: usize,
    /// Largest request body accepted.
    pub max_request_bytes: usize,
    /// How long a `hang` fault holds a request before giving up on it.
    pub hang_s: u64,
    /// Faults to inject.
    pub faults: FaultPlan,
    /// Whether a cart line's `friendlyName` is copied into its order line (the spec does not
    /// promise it, ambiguity 4); off, order lines carry the SKU's title.
    pub echo_friendly_names: bool,
    /// Rate limits per tenant and call class (off by default).
    pub throttle: crate::throttle::ThrottleConfig,
    /// The billing model (addendum §14).
    pub billing: crate::billing::BillingConfig,
}

/// What a direct order posted again with an `MS-RequestId` already seen does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectOrderReplay {
    /// Return the first order again (201): the service deduplicates.
    Replay,
    /// 409/800060 "your order is in progress".
    Conflict,
    /// Create a second order: the pessimistic case, where only proven absence may allow a
    /// second send.
    Ignore,
}

/// A Partner Center cloud.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimCloud {
    Public,
    UsGovernment,
    China,
}

/// Replay behaviour of a repeated checkout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutReplay {
    /// Current docs: return the first result again (201).
    Replay,
    /// Older error table: 400/800065 "cannot check out an already submitted cart".
    AlreadySubmitted,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            tenant_id: "5b2d0d1c-8c1e-4d51-9d7f-7c4f1e0b2a11".to_owned(),
            tenant_domains: vec!["pcsagasim.onmicrosoft.com".to_owned()],
            user_object_id: "0e6f1b7a-3c2d-4e5f-8a9b-1c2d3e4f5a6b".to_owned(),
            client_id: "6f1c3a52-2b8e-4a6b-9d1e-3c2f4b5a6d7e".to_owned(),
            client_secret: "sim-client-secret".to_owned(),
            refresh_token: "sim-refresh-token".to_owned(),
            resource: "https://api.partnercenter.microsoft.com".to_owned(),
            token_ttl_s: 3600,
            registration_polls: 2,
            preregistered_subscriptions: Vec::new(),
            restricted_regions: vec!["japanwest".to_owned()],
            checkout_restricted_regions: Vec::new(),
            order_completion_s: 2,
            order_list_lag_s: 5,
            cart_ttl_s: 7 * 24 * 3600,
            checkout_duration_ms: 0,
            checkout_replay: CheckoutReplay::Replay,
            direct_order_replay: DirectOrderReplay::Replay,
            cloud: SimCloud::Public,
            cancellation_window_days: 7,
            default_customer_country: Some("US".to_owned()),
            page_size: 100,
            max_request_bytes: 1024 * 1024,
            hang_s: 600,
            faults: FaultPlan::default(),
            echo_friendly_names: true,
            throttle: crate::throttle::ThrottleConfig::default(),
            billing: crate::billing::BillingConfig::default(),
        }
    }
}

impl SimConfig {
    pub(crate) fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_s)
    }
}
