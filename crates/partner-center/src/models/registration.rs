//! Azure subscription registration for reservations (spec 7.12, calls E1-E2).

use serde::{Deserialize, Serialize};

use super::common::ResourceAttributes;
use super::lenient::lenient_enum;

lenient_enum! {
    /// Registration state; the docs use `registered`, the examples `NotRegistered`.
    pub enum RegistrationState {
        Registered = "registered",
        Registering = "registering",
        NotRegistered = "notregistered",
    }
}

/// The response of E2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionRegistrationStatus {
    #[serde(default)]
    pub subscription_id: Option<String>,
    pub status: RegistrationState,
    #[serde(default)]
    pub attributes: ResourceAttributes,
}
