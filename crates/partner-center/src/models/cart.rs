//! Carts and checkout (spec 7.5-7.7, calls E10-E13).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::catalog::BillingCycle;
use super::common::{KeyValue, Links, ResourceAttributes};
use super::datetime;
use super::lenient::{de, lenient_enum};
use super::order::Order;

lenient_enum! {
    /// Cart status: `Active` (editable, submittable) or `Ordered` (submitted).
    pub enum CartStatus {
        Active = "Active",
        Ordered = "Ordered",
    }
}

lenient_enum! {
    /// Line-item error codes (spec 8). The wire form is a snake_case name or the number.
    pub enum CartErrorCode {
        CurrencyIsNotSupported = "currency_is_not_supported" | 10000,
        CatalogItemIdIsNotValid = "catalog_item_id_is_not_valid" | 10001,
        QuotaNotAvailable = "quota_not_available" | 10002,
        InventoryNotAvailable = "inventory_not_available" | 10003,
        ParticipantsIsNotSupportedForPartner = "participants_is_not_supported_for_partner" | 10004,
        UnableToProcessCartLineItem = "unable_to_process_cart_line_item" | 10006,
        SubscriptionIsNotValid = "subscription_is_not_valid" | 10007,
        SubscriptionIsNotEnabledForRi = "subscription_is_not_enabled_for_r_i" | 10008,
        SandboxLimitExceeded = "sandbox_limit_exceeded" | 10009,
        InvalidInput = "invalid_input" | 10010,
        SubscriptionNotRegistered = "subscription_not_registered" | 10011,
        AttestationNotAccepted = "attestation_not_accepted" | 10012,
        BillingPlanNotSupported = "billing_plan_not_supported" | 10013,
        InvalidPromotionId = "invalid_promotion_id" | 10014,
        MaxAllowedSeatsPerSubscriptionExceeded = "max_allowed_seats_per_subscription_exceeded" | 10015,
        LegacyOfferNotEligibleForPurchase = "legacy_offer_not_eligible_for_purchase" | 500600,
    }
}

impl CartErrorCode {
    /// The documented number of this code, if it is a known one.
    pub fn number(&self) -> Option<u32> {
        Some(match self {
            Self::CurrencyIsNotSupported => 10000,
            Self::CatalogItemIdIsNotValid => 10001,
            Self::QuotaNotAvailable => 10002,
            Self::InventoryNotAvailable => 10003,
            Self::ParticipantsIsNotSupportedForPartner => 10004,
            Self::UnableToProcessCartLineItem => 10006,
            Self::SubscriptionIsNotValid => 10007,
            Self::SubscriptionIsNotEnabledForRi => 10008,
            Self::SandboxLimitExceeded => 10009,
            Self::InvalidInput => 10010,
            Self::SubscriptionNotRegistered => 10011,
            Self::AttestationNotAccepted => 10012,
            Self::BillingPlanNotSupported => 10013,
            Self::InvalidPromotionId => 10014,
            Self::MaxAllowedSeatsPerSubscriptionExceeded => 10015,
            Self::LegacyOfferNotEligibleForPurchase => 500600,
            Self::Unknown(raw) => return raw.parse().ok(),
        })
    }
}

/// The `error` of a cart line (server output only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CartError {
    pub error_code: CartErrorCode,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub additional_information: Option<BTreeMap<String, serde_json::Value>>,
}

/// One line of a cart. Fields the server assigns are `None` in requests and skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CartLineItem {
    /// Line number; an integer in every JSON example, a string in one table, so both decode.
    #[serde(
        deserialize_with = "de::opt_int_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<i64>,
    pub catalog_item_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    pub quantity: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_cycle: Option<BillingCycle>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term_duration: Option<String>,
    #[serde(
        deserialize_with = "de::null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub participants: Vec<KeyValue>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub provisioning_context: BTreeMap<String, String>,
    #[serde(
        deserialize_with = "de::opt_string_or_number",
        skip_serializing_if = "Option::is_none"
    )]
    pub order_group: Option<String>,
    /// `renewsTo` is an object in the examples and an array in one table; kept as raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renews_to: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attestation_accepted: Option<bool>,
    #[serde(skip_serializing)]
    pub error: Option<CartError>,
}

/// A cart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Cart {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(with = "datetime::opt", skip_serializing)]
    pub creation_timestamp: Option<DateTime<Utc>>,
    #[serde(with = "datetime::opt", skip_serializing)]
    pub last_modified_timestamp: Option<DateTime<Utc>>,
    #[serde(with = "datetime::opt", skip_serializing)]
    pub expiration_timestamp: Option<DateTime<Utc>>,
    #[serde(skip_serializing)]
    pub last_modified_user: Option<String>,
    #[serde(skip_serializing)]
    pub status: Option<CartStatus>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub line_items: Vec<CartLineItem>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_on_record_attestation_accepted: Option<bool>,
    #[serde(skip_serializing)]
    pub links: Links,
    #[serde(skip_serializing)]
    pub attributes: ResourceAttributes,
}

impl Cart {
    /// The lines that carry an error; the saga must not check out while any exist.
    pub fn lines_with_errors(&self) -> impl Iterator<Item = (&CartLineItem, &CartError)> {
        self.line_items
            .iter()
            .filter_map(|line| line.error.as_ref().map(|error| (line, error)))
    }
}

/// A failed order group in a checkout result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OrderError {
    #[serde(deserialize_with = "de::opt_string_or_number")]
    pub order_group_id: Option<String>,
    /// The numeric error code, kept as text (it arrives as a number or a string).
    #[serde(deserialize_with = "de::opt_string_or_number")]
    pub code: Option<String>,
    pub description: Option<String>,
}

/// The response of E13: one order per successful group, one error per failed group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CartCheckoutResult {
    #[serde(deserialize_with = "de::null_as_empty")]
    pub orders: Vec<Order>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub order_errors: Vec<OrderError>,
    pub attributes: ResourceAttributes,
}
