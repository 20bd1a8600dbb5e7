//! Orders and provisioning status (spec 7.8-7.10, calls E14-E17, E20), and the body of a
//! direct order (E21, addendum §6).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::catalog::BillingCycle;
use super::common::{Links, ResourceAttributes};
use super::datetime;
use super::lenient::{de, lenient_enum};

lenient_enum! {
    /// `OrderStatus` (spec 8).
    pub enum OrderStatus {
        Completed = "completed" | 1,
        Pending = "pending" | 2,
        Cancelled = "cancelled" | 3,
    }
}

lenient_enum! {
    /// Fulfilment of an order line (E17).
    pub enum ProvisioningState {
        Fulfilled = "Fulfilled",
        Unfulfilled = "Unfulfilled",
        PrefulfillmentPending = "PrefulfillmentPending",
    }
}

/// A line of an order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OrderLineItem {
    pub line_item_number: i64,
    /// The `catalogItemId` that went into the cart.
    pub offer_id: String,
    pub subscription_id: Option<String>,
    pub parent_subscription_id: Option<String>,
    pub term_duration: Option<String>,
    pub transaction_type: Option<String>,
    pub friendly_name: Option<String>,
    pub quantity: i64,
    pub partner_id_on_record: Option<String>,
    pub provisioning_context: Option<BTreeMap<String, String>>,
    pub links: Links,
}

/// An order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Order {
    pub id: String,
    pub alternate_id: Option<String>,
    pub reference_customer_id: Option<String>,
    pub billing_cycle: Option<BillingCycle>,
    pub transaction_type: Option<String>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub line_items: Vec<OrderLineItem>,
    pub currency_code: Option<String>,
    pub currency_symbol: Option<String>,
    #[serde(with = "datetime::opt")]
    pub creation_date: Option<DateTime<Utc>>,
    pub status: Option<OrderStatus>,
    /// Money: a decimal, never a float.
    #[serde(deserialize_with = "de::opt_decimal")]
    pub total_price: Option<rust_decimal::Decimal>,
    pub links: Links,
    pub attributes: ResourceAttributes,
}

/// Quantity-level provisioning information.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QuantityProvisioning {
    pub quantity: i64,
    pub status: Option<ProvisioningState>,
}

/// One element of E17's collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OrderLineItemProvisioningStatus {
    pub order_line_item_id: Option<i64>,
    pub line_item_number: Option<i64>,
    pub status: Option<ProvisioningState>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub quantity_provisioning_information: Vec<QuantityProvisioning>,
}

/// A line to cancel in E20.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelLine {
    pub line_item_number: i64,
    pub offer_id: String,
}

/// The body of E20: cancel a whole order, or the listed lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancellation {
    pub id: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub line_items: Vec<CancelLine>,
}

impl OrderCancellation {
    /// A cancellation of the given lines (all lines when `lines` is empty).
    pub fn new(order_id: impl Into<String>, lines: Vec<CancelLine>) -> Self {
        Self {
            id: order_id.into(),
            status: "cancelled".to_owned(),
            line_items: lines,
        }
    }
}

/// The body of E21, a direct order (addendum §6 E21). Sent camelCase; read-only fields of the
/// Order resource (`id`, `currencyCode`, `status`, ...) are never sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrder {
    /// Always the path's customer id (ambiguity 29 decided: always sent).
    pub reference_customer_id: String,
    /// `one_time` for reservations, perpetual software and upfront software subscriptions.
    pub billing_cycle: String,
    pub line_items: Vec<NewOrderLineItem>,
}

/// A line of a direct order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewOrderLineItem {
    /// 0..count-1, unique in the order (else 400/800071).
    pub line_item_number: i64,
    /// The availability's `catalogItemId` (`{product}:{sku}:{availability}`), or a legacy offer id.
    pub offer_id: String,
    pub quantity: i64,
    /// pcsaga's token for the purchase (rule 9.13): how a lost reply's order is found again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub provisioning_context: BTreeMap<String, String>,
    /// An indirect reseller's partner id, never the provider's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_id_on_record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term_duration: Option<String>,
    /// Sent as one object, as the resource page's examples show (main ambiguity 9).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renews_to: Option<RenewsTo>,
}

/// What a subscription renews to (`P1M` or `P1Y`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenewsTo {
    pub term_duration: String,
}
