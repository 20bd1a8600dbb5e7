//! The simulated service's state: tokens, registrations, carts, orders, and the ledger.
//!
//! Everything lives in one [`World`] behind one mutex. Handlers hold the lock only while they
//! compute, never across an await, so a request is atomic with respect to every other one.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::catalog::{link, ProductKind};

/// Most requests kept in the request log; older ones are dropped first.
pub const REQUEST_LOG_CAPACITY: usize = 200_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    AppOnly,
    AppUser,
}

#[derive(Debug, Clone)]
pub struct TokenInfo {
    pub grant: Grant,
    /// Issued for Microsoft Graph (the billing export) rather than Partner Center.
    pub graph: bool,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    NotRegistered,
    /// Registering, with the number of status polls seen since.
    Registering(u32),
    Registered,
}

/// A cart line after validation, with what the simulator needs to fulfil it.
#[derive(Debug, Clone)]
pub struct CartLine {
    /// The line as the client sent it (keys normalised to camelCase), plus server fields.
    pub json: Value,
    pub error: Option<(String, String)>,
    pub order_group: String,
    pub kind: Option<ProductKind>,
    pub region: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CartRecord {
    pub id: String,
    pub customer_id: String,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
    pub expires: DateTime<Utc>,
    pub ordered: bool,
    pub checkout_in_progress: bool,
    pub lines: Vec<CartLine>,
    pub attestation: Option<bool>,
    /// Outcome per order group once checked out: the order id, or (code, description).
    pub groups: BTreeMap<String, Result<String, (u32, String)>>,
}

#[derive(Debug, Clone)]
pub struct OrderLine {
    pub number: i64,
    pub offer_id: String,
    pub product_id: String,
    pub sku_id: String,
    pub kind: ProductKind,
    pub term: Option<String>,
    pub friendly_name: String,
    pub quantity: i64,
    pub cancelled: bool,
    pub provisioning_context: Value,
    pub resource_id: String,
}

#[derive(Debug, Clone)]
pub struct OrderRecord {
    pub id: String,
    pub alternate_id: String,
    pub customer_id: String,
    pub cart_id: String,
    pub order_group: String,
    pub created: DateTime<Utc>,
    pub currency: String,
    pub currency_symbol: String,
    /// The customer's country: the catalog links of the order's lines are for it.
    pub country: String,
    pub lines: Vec<OrderLine>,
}

/// A checkout as the ledger records it: one entry per cart, however often it was posted.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerCheckout {
    pub cart_id: String,
    pub customer_id: String,
    /// Checkout POSTs that reached processing for this cart (replays included).
    pub calls: u32,
    pub request_ids: Vec<String>,
    pub first_at: DateTime<Utc>,
    pub orders: Vec<String>,
    pub order_errors: Vec<String>,
    /// The `friendlyName` of every line: where a saga puts its token.
    pub friendly_names: Vec<String>,
}

/// An order as the ledger records it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerOrder {
    pub order_id: String,
    pub cart_id: String,
    pub customer_id: String,
    pub order_group: String,
    pub created_at: DateTime<Utc>,
    pub offer_ids: Vec<String>,
    pub friendly_names: Vec<String>,
    pub quantities: Vec<i64>,
    pub cancelled_lines: Vec<i64>,
}

/// A cart as the ledger records it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerCart {
    pub cart_id: String,
    pub customer_id: String,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub friendly_names: Vec<String>,
}

/// Everything that was bought, for tests that assert nothing was bought twice.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    pub carts: Vec<LedgerCart>,
    pub checkouts: Vec<LedgerCheckout>,
    pub orders: Vec<LedgerOrder>,
    /// Direct orders (E21), one entry per customer and `MS-RequestId`, however often posted.
    pub direct_orders: Vec<LedgerDirectOrder>,
}

/// A direct order (E21) as the ledger records it: every post of one `MS-RequestId`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerDirectOrder {
    pub customer_id: String,
    pub request_id: String,
    /// Posts with this request id that were accepted (validation passed).
    pub calls: u32,
    pub first_at: DateTime<Utc>,
    /// The orders these posts created: one, unless `direct_order_replay` is `ignore`.
    pub orders: Vec<String>,
    pub friendly_names: Vec<String>,
}

impl Ledger {
    /// Orders whose lines carry `token` in their friendly names.
    pub fn orders_with_token(&self, token: &str) -> Vec<&LedgerOrder> {
        self.orders
            .iter()
            .filter(|o| o.friendly_names.iter().any(|n| n.contains(token)))
            .collect()
    }

    /// Checked-out carts whose lines carry `token` in their friendly names.
    pub fn checkouts_with_token(&self, token: &str) -> Vec<&LedgerCheckout> {
        self.checkouts
            .iter()
            .filter(|c| c.friendly_names.iter().any(|n| n.contains(token)))
            .collect()
    }
}

/// One request as the simulator saw it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub seq: u64,
    /// Wall-clock time the request arrived.
    pub at: DateTime<Utc>,
    pub endpoint: String,
    pub method: String,
    pub path: String,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    /// The status sent; `None` when no response was sent (dropped or hung).
    pub status: Option<u16>,
    pub fault: Option<String>,
    /// Whether the request took effect.
    pub processed: bool,
    /// The `Retry-After` sent with a 429, in seconds (an HTTP date is converted).
    pub retry_after_s: Option<u64>,
}

#[derive(Debug, Default)]
pub struct World {
    pub tokens: HashMap<String, TokenInfo>,
    pub registrations: HashMap<(String, String), Registration>,
    pub carts: HashMap<String, CartRecord>,
    /// `(customer, MS-RequestId)` of cart creations → cart id, so a retried create with the
    /// same request id returns the same cart (our decision on spec ambiguity 2).
    pub cart_requests: HashMap<(String, String), String>,
    pub orders: HashMap<String, OrderRecord>,
    pub customer_orders: HashMap<String, Vec<String>>,
    /// The first order of each (customer, `MS-RequestId`) of E21, lowercase.
    pub direct_requests: HashMap<(String, String), String>,
    pub ledger: Ledger,
    pub billing: crate::billing::Billing,
    pub requests: VecDeque<RequestRecord>,
    pub request_seq: u64,
    pub id_counter: u64,
}

impl World {
    /// A fresh opaque order id in the 33-character base64url style of the examples.
    pub fn new_order_id(&mut self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        self.id_counter += 1;
        let bytes = uuid::Uuid::new_v4().as_u128() ^ u128::from(self.id_counter);
        let mut out: String = (0..32)
            .map(|i| ALPHABET[((bytes >> (i * 4)) as usize + i * 7) % 64] as char)
            .collect();
        out.push('1');
        out
    }

    pub fn log(&mut self, mut record: RequestRecord) {
        self.request_seq += 1;
        record.seq = self.request_seq;
        if self.requests.len() >= REQUEST_LOG_CAPACITY {
            self.requests.pop_front();
        }
        self.requests.push_back(record);
    }

    pub fn order_status(
        &self,
        order: &OrderRecord,
        now: DateTime<Utc>,
        completion: chrono::Duration,
    ) -> &'static str {
        if !order.lines.is_empty() && order.lines.iter().all(|l| l.cancelled) {
            "cancelled"
        } else if now >= order.created + completion {
            "completed"
        } else {
            "pending"
        }
    }

    pub fn order_json(&self, order: &OrderRecord, status: &str) -> Value {
        let base = format!("/customers/{}/orders/{}", order.customer_id, order.id);
        let lines: Vec<Value> = order
            .lines
            .iter()
            .map(|line| {
                let mut value = json!({
                    "lineItemNumber": line.number,
                    "offerId": line.offer_id,
                    "transactionType": "New",
                    "friendlyName": line.friendly_name,
                    "quantity": if line.cancelled { 0 } else { line.quantity },
                    "links": {
                        "product": link(&format!("/products/{}?country={}", line.product_id, order.country)),
                        "sku": link(&format!("/products/{}/skus/{}?country={}", line.product_id, line.sku_id, order.country)),
                    },
                });
                if let Some(term) = &line.term {
                    value["termDuration"] = json!(term);
                }
                if line.kind == ProductKind::SoftwareSubscription {
                    // The subscription the purchase created (`GET …/subscriptions/{id}`).
                    value["subscriptionId"] = json!(line.resource_id);
                }
                if line.provisioning_context.as_object().is_some_and(|m| !m.is_empty()) {
                    value["provisioningContext"] = line.provisioning_context.clone();
                }
                value
            })
            .collect();
        json!({
            "id": order.id,
            "alternateId": order.alternate_id,
            "referenceCustomerId": order.customer_id,
            "billingCycle": "one_time",
            "currencyCode": order.currency,
            "currencySymbol": order.currency_symbol,
            "lineItems": lines,
            "creationDate": timestamp(order.created),
            "status": status,
            "transactionType": "UserPurchase",
            "links": {
                "self": link(&base),
                "provisioningStatus": link(&format!("{base}/provisioningstatus")),
                "patchOperation": {"uri": base, "method": "PATCH", "headers": []},
            },
            "client": {},
            "attributes": {"objectType": "Order"},
        })
    }
}

/// A timestamp as Partner Center usually writes it: UTC, seven fractional digits
/// (`2026-12-04T18:22:31.1234567Z`, spec §4).
pub fn timestamp(at: DateTime<Utc>) -> String {
    format!(
        "{}.{:07}Z",
        at.format("%Y-%m-%dT%H:%M:%S"),
        at.timestamp_subsec_nanos() / 100
    )
}
