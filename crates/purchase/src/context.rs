//! What a purchase saga remembers between steps (persisted as JSON in the saga row).
//!
//! Everything a decision needs is here, so a saga resumed by another process after a crash
//! decides exactly as the first would have. Secrets never enter the context.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::request::PurchaseRequest;

/// The newest shape of the context's JSON ([`pcsaga_engine::Workflow::context_schema`]):
/// 1. the request inside the context (a copy of the row's `input`);
/// 2. the request stored once, in the row's `input`, and put back by [`decode`].
pub const CONTEXT_SCHEMA: u32 = 3;

/// The saga's context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseContext {
    /// The request the purchase was submitted with. Not encoded (schema 2): it is the saga
    /// row's `input`, and [`decode`] puts it back; schema 1 contexts still carry it.
    #[serde(skip_serializing, default)]
    pub request: PurchaseRequest,
    /// `MS-CorrelationId` of every call of this purchase.
    pub correlation_id: Uuid,
    /// Put in every cart line's `friendlyName`, so the purchase's orders can be found in the
    /// customer's order list when a checkout reply is lost (spec 9.4).
    pub token: String,
    pub items: Vec<ItemState>,
    /// Azure subscriptions that must be registered before the cart (RI prerequisites).
    #[serde(default)]
    pub registrations: Vec<RegistrationState>,
    /// Set once every SKU is known and the registrations list is built.
    #[serde(default)]
    pub registrations_planned: bool,
    /// A side-effecting call sent (or about to be sent) without a reply yet: its request id is
    /// reused until a reply arrives (spec 9.2).
    #[serde(default)]
    pub pending: Option<Intent>,
    #[serde(default)]
    pub cart: Option<CartState>,
    #[serde(default)]
    pub checkout: CheckoutState,
    #[serde(default)]
    pub orders: Vec<OrderState>,
    /// Order groups that failed at checkout (`orderErrors`).
    #[serde(default)]
    pub order_errors: Vec<GroupError>,
    #[serde(default)]
    pub entitlements: Vec<EntitlementState>,
    /// Whether entitlements were read (or skipped without app+user credentials).
    #[serde(default)]
    pub entitlements_done: bool,
    /// How often the cart was rebuilt after catalog ids went stale; bounded.
    #[serde(default)]
    pub rediscoveries: u32,
    /// A direct order (`orderPath: "direct"`): its body and request id, fixed in CartBuild
    /// before the first send. Absent for a cart purchase (and not encoded, so a cart
    /// purchase's context reads as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct: Option<DirectOrder>,
}

/// A direct order as persisted before its first send (addendum rule 9.13): sent byte-identical,
/// with the same `MS-RequestId`, on every attempt, the re-send after proven absence included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectOrder {
    pub body: pcsaga_partner_center::models::NewOrder,
    pub request_id: Uuid,
    /// When the body was last sent: absence is concluded only
    /// [`crate::direct::ABSENCE_WAIT`] after it.
    #[serde(default)]
    pub last_sent_at: Option<DateTime<Utc>>,
    /// Sends whose outcome was recorded: fewer than `checkout.sent` means a send was in flight
    /// when the process stopped, and the order is looked for before anything is sent again.
    #[serde(default)]
    pub replies: u32,
    /// Sends after proven absence (at most [`crate::direct::MAX_RESENDS`]).
    #[serde(default)]
    pub resends: u32,
    /// The last look at the order list found nothing of this purchase.
    #[serde(default)]
    pub nothing_found: bool,
}

/// Decodes a context stored at `schema` with the request stored as the row's `input`: every
/// schema up to [`CONTEXT_SCHEMA`] decodes. The one way from a row to a context (the daemon,
/// `show`, `attach-order` and `check-upgrade` all read through it).
pub fn decode(schema: u32, context: &str, input: &str) -> Result<PurchaseContext, String> {
    if schema > CONTEXT_SCHEMA {
        return Err(format!(
            "context schema {schema} is newer than this binary's ({CONTEXT_SCHEMA})"
        ));
    }
    let mut decoded: PurchaseContext =
        serde_json::from_str(context).map_err(|e| format!("the context: {e}"))?;
    if schema >= 2 {
        decoded.request =
            serde_json::from_str(input).map_err(|e| format!("the saga's request: {e}"))?;
    }
    Ok(decoded)
}

impl PurchaseContext {
    /// A fresh context for a request.
    pub fn new(request: PurchaseRequest) -> Self {
        let correlation_id = Uuid::new_v4();
        let token = format!("pcs-{}", &correlation_id.simple().to_string()[..16]);
        let items = request.items.iter().map(|_| ItemState::default()).collect();
        Self {
            request,
            correlation_id,
            token,
            items,
            registrations: Vec::new(),
            registrations_planned: false,
            pending: None,
            cart: None,
            checkout: CheckoutState::default(),
            orders: Vec::new(),
            order_errors: Vec::new(),
            entitlements: Vec::new(),
            entitlements_done: false,
            rediscoveries: 0,
            direct: None,
        }
    }

    /// The request id for a side-effecting call: the pending one if the same call is in
    /// doubt, else a new one recorded as pending.
    pub fn request_id_for(&mut self, call: &str) -> Uuid {
        match &self.pending {
            Some(intent) if intent.call == call => intent.request_id,
            _ => {
                let request_id = Uuid::new_v4();
                self.pending = Some(Intent {
                    call: call.to_owned(),
                    request_id,
                });
                request_id
            }
        }
    }

    /// The rule for request ids, in one place (spec 9.2; ARCHITECTURE.md, the reply table):
    /// a reply to a side-effecting call that `settles` it (a success, or a refusal Partner
    /// Center made for a reason of its own) frees its id, so the next such call gets a new one;
    /// anything else (a lost reply, a timeout, 408, 5xx, 429, an unreadable 2xx) keeps it, and
    /// the same id is sent again.
    pub fn answered(&mut self, call: &crate::call::Call, settles: bool) {
        if settles && call.is_side_effecting() {
            self.pending = None;
        }
    }

    /// The friendly name of item `index`'s cart line: the caller's name and our token.
    pub fn friendly_name(&self, index: usize) -> String {
        match self
            .request
            .items
            .get(index)
            .and_then(|i| i.friendly_name.as_deref())
        {
            Some(name) => format!("{name} [{}]", self.token),
            None => format!("[{}]", self.token),
        }
    }
}

/// A side-effecting call in doubt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// Which call: `register:{subscription}`, `create_cart`, `update_cart`, `checkout`.
    pub call: String,
    pub request_id: Uuid,
}

/// What the saga learned about one requested item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemState {
    pub sku: Option<SkuFacts>,
    #[serde(default)]
    pub product_checked: bool,
    /// Chosen at discovery; what went into the cart.
    pub catalog_item_id: Option<String>,
    pub term_duration: Option<String>,
    #[serde(default)]
    pub provisioning_context: BTreeMap<String, String>,
    #[serde(default)]
    pub inventory_checked: bool,
}

/// The SKU facts decisions need (from E6).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkuFacts {
    pub title: String,
    pub needs_registration: bool,
    pub needs_inventory_check: bool,
    pub minimum_quantity: Option<i64>,
    pub maximum_quantity: Option<i64>,
    pub billing_cycles: Vec<String>,
    pub provisioning_variables: Vec<String>,
    pub inventory_variables: Vec<String>,
    pub arm_region_name: Option<String>,
    pub duration: Option<String>,
}

/// Registration of one Azure subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationState {
    pub subscription_id: String,
    pub status: Registration,
    /// E1 was answered for it.
    #[serde(default)]
    pub register_sent: bool,
}

/// What we know of a subscription's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Registration {
    Unknown,
    NotRegistered,
    Registering,
    Registered,
}

/// The cart, persisted the moment it exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CartState {
    pub id: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// The cart must be re-sent (E12) before checkout: lines were refreshed or need re-validation.
    #[serde(default)]
    pub needs_update: bool,
}

/// The checkout: the only step that spends money.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutState {
    /// A checkout intent was committed: money may have moved from here on. Never cleared.
    pub attempted: bool,
    /// The cart checked out (only ever one per purchase).
    pub cart_id: Option<String>,
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// Checkout calls sent (counted in the intent, so a crash mid-call still counts).
    pub sent: u32,
    /// Checkout calls answered definitively (a reply that is not 408 or 5xx). While
    /// `sent > answered`, an earlier call may have gone through unseen.
    pub answered: u32,
    /// A checkout reply was received.
    pub confirmed: bool,
    /// Looking for the orders in the customer's order list instead of checking out again.
    pub reconciling: bool,
    /// Set when the orders were adopted without the token (Partner Center did not echo the
    /// friendly names): the evidence of the match, kept for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_by_fallback: Option<String>,
    pub reconcile_reason: Option<String>,
    /// A checkout reply refused the purchase without proving that nothing was bought (any
    /// error that is not a documented "in flight" or "already submitted"): the refusal, kept
    /// while the cart is read (E11). `Active` proves the refusal; `Ordered` disproves it.
    #[serde(default)]
    pub verifying: Option<String>,
}

/// An order of this purchase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderState {
    pub id: String,
    pub status: String,
    /// `(lineItemNumber, offerId, quantity)` of each line.
    pub lines: Vec<(i64, String, i64)>,
    #[serde(default)]
    pub completed: bool,
    /// What billing reconciliation joins on (addendum §13.1): the order's 12-hex alternate id,
    /// its currency and its creation date (its billing month). Since context schema 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternate_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
}

/// A failed order group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupError {
    pub group: String,
    pub code: String,
    pub description: String,
}

/// An entitlement matched to an order line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementState {
    pub order_id: String,
    pub line_item_id: String,
    pub product_id: Option<String>,
    pub sku_id: Option<String>,
    pub quantity: i64,
    pub kind: Option<String>,
    /// Reserved-instance artifacts, with the reservations read from each (E19).
    #[serde(default)]
    pub artifacts: Vec<ArtifactState>,
}

/// A reserved-instance artifact of an entitlement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactState {
    pub uri: String,
    pub resource_id: Option<String>,
    /// `None` until E19 was read.
    pub reservation_ids: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine keeps the context typed between the steps of one claim and decodes the JSON
    /// only after a claim, so encoding must lose nothing: a saga resumed by another process
    /// must decide exactly as this one would. Every field is set (no `..Default::default()`),
    /// so a new field must be added here, and one that does not survive JSON fails.
    #[test]
    fn the_context_survives_its_json_encoding() {
        let request =
            crate::parse_request(include_str!("../../../workflows/examples/multi-item.json"))
                .expect("example request");
        let at = DateTime::parse_from_rfc3339("2026-11-22T06:14:01.403104451Z")
            .expect("instant")
            .with_timezone(&Utc);
        let context = PurchaseContext {
            request,
            correlation_id: Uuid::from_u128(1),
            token: "pcs-0000000000000001".into(),
            items: vec![ItemState {
                sku: Some(SkuFacts {
                    title: "Reserved VM Instance".into(),
                    needs_registration: true,
                    needs_inventory_check: true,
                    minimum_quantity: Some(1),
                    maximum_quantity: Some(999),
                    billing_cycles: vec!["one_time".into()],
                    provisioning_variables: vec!["Scope".into()],
                    inventory_variables: vec!["CustomerId".into()],
                    arm_region_name: Some("westus2".into()),
                    duration: Some("1Year".into()),
                }),
                product_checked: true,
                catalog_item_id: Some("DZH318Z0BQ5S:0001:X".into()),
                term_duration: Some("P1Y".into()),
                provisioning_context: BTreeMap::from([("scope".into(), "single".into())]),
                inventory_checked: true,
            }],
            registrations: vec![RegistrationState {
                subscription_id: "3d5eced6-1151-44c7-aee6-70a4bb725666".into(),
                status: Registration::Registering,
                register_sent: true,
            }],
            registrations_planned: true,
            pending: Some(Intent {
                call: "checkout".into(),
                request_id: Uuid::from_u128(2),
            }),
            cart: Some(CartState {
                id: "cart-1".into(),
                expires_at: Some(at),
                needs_update: true,
            }),
            checkout: CheckoutState {
                attempted: true,
                cart_id: Some("cart-1".into()),
                first_attempt_at: Some(at),
                sent: 2,
                answered: 1,
                confirmed: true,
                reconciling: true,
                matched_by_fallback: Some("order order-1 is the only one".into()),
                reconcile_reason: Some("reply lost".into()),
                verifying: Some("HTTP 403".into()),
            },
            orders: vec![OrderState {
                id: "order-1".into(),
                status: "pending".into(),
                lines: vec![(0, "DZH318Z0BQ5S:0001:X".into(), 1)],
                completed: true,
                alternate_id: Some("5b0e8c2d41a7".into()),
                currency: Some("USD".into()),
                created_at: Some(at),
            }],
            order_errors: vec![GroupError {
                group: "1".into(),
                code: "800002".into(),
                description: "failed".into(),
            }],
            entitlements: vec![EntitlementState {
                order_id: "order-1".into(),
                line_item_id: "0".into(),
                product_id: Some("DZH318Z0BQ5S".into()),
                sku_id: Some("0001".into()),
                quantity: 1,
                kind: Some("reservedinstance".into()),
                artifacts: vec![ArtifactState {
                    uri: "/artifacts/1".into(),
                    resource_id: Some("r-1".into()),
                    reservation_ids: Some(vec!["r-1".into()]),
                }],
            }],
            entitlements_done: true,
            rediscoveries: 1,
            direct: Some(DirectOrder {
                body: pcsaga_partner_center::models::NewOrder {
                    reference_customer_id: "c".into(),
                    billing_cycle: "one_time".into(),
                    line_items: vec![pcsaga_partner_center::models::NewOrderLineItem {
                        line_item_number: 0,
                        offer_id: "DZH318Z0BQ5S:0001:X".into(),
                        quantity: 1,
                        friendly_name: Some("pcs-x:0".into()),
                        provisioning_context: BTreeMap::from([("scope".into(), "shared".into())]),
                        partner_id_on_record: Some("1234567".into()),
                        term_duration: Some("P1Y".into()),
                        renews_to: None,
                    }],
                },
                request_id: Uuid::nil(),
                last_sent_at: Some(at),
                replies: 2,
                resends: 1,
                nothing_found: true,
            }),
        };
        let json = serde_json::to_string(&context).expect("encodes");
        assert!(
            !json.contains("idempotencyKey"),
            "the request is stored once, as the row's input: {json}"
        );
        let input = serde_json::to_string(&context.request).expect("encodes");
        let decoded = decode(CONTEXT_SCHEMA, &json, &input).expect("decodes");
        assert_eq!(decoded, context);
    }
}
