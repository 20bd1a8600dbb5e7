//! Every JSON example of the spec decodes into the client's models.
//!
//! Method: each fixture under `spec/examples/` is decoded into its model and the result is
//! snapshotted, so a change in what the client reads out of the spec's own examples shows up
//! as a snapshot diff. Decoding must succeed: a failure here means the client would reject a
//! documented response.

use pcsaga_partner_center::models::{
    ApiFault, Availability, Cart, CartCheckoutResult, Collection, Entitlement,
    InventoryCheckRequest, InventoryItem, Order, OrderCancellation,
    OrderLineItemProvisioningStatus, Product, ReservedInstanceArtifactDetails, Sku,
    SubscriptionRegistrationStatus, ThrottleFault,
};
use serde::de::DeserializeOwned;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../../spec/examples/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Decodes fixture `name` as `T`, or fails naming the fixture and the serde error.
#[track_caller]
fn check<T: DeserializeOwned>(name: &str) -> T {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name} does not decode: {e}"))
}

#[test]
fn error_bodies() {
    let fault: ApiFault = check("error-body");
    assert_eq!(fault.code.as_deref(), Some("800065"));
    let throttle: ThrottleFault = check("throttle-body");
    assert_eq!(throttle.status_code, Some(429));
    insta::assert_debug_snapshot!((fault, throttle));
}

#[test]
fn registration_status() {
    let status: SubscriptionRegistrationStatus = check("e02-registration-status");
    assert_eq!(
        status.status,
        pcsaga_partner_center::models::RegistrationState::Registered
    );
}

#[test]
fn catalog() {
    let products: Collection<Product> = check("e03-products");
    let skus: Collection<Sku> = check("e05-skus");
    let availabilities: Collection<Availability> = check("e07-availabilities");
    let sku = &skus.items[0];
    assert_eq!(
        sku.dynamic_attribute("armRegionName").as_deref(),
        Some("westus2")
    );
    assert!(sku.requires(&pcsaga_partner_center::models::PurchasePrerequisite::InventoryCheck));
    assert_eq!(
        availabilities.items[0].catalog_item_id,
        "DZH318Z0BQ3Q:0001:DZH318XZXVNF"
    );
    assert!(availabilities.items[0].has_term("p1y"));
    insta::assert_debug_snapshot!((products, skus, availabilities));
}

#[test]
fn inventory() {
    let request: InventoryCheckRequest = check("e09-inventory-request");
    let response: Vec<InventoryItem> = check("e09-inventory-response");
    assert!(response[0].is_restricted && !response[1].is_restricted);
    // What we send must be what the spec shows.
    let reencoded = serde_json::to_value(&request).expect("encodes");
    let original: serde_json::Value =
        serde_json::from_str(&fixture("e09-inventory-request")).expect("json");
    assert_eq!(reencoded, original);
    insta::assert_debug_snapshot!(response);
}

#[test]
fn carts() {
    let request: Cart = check("e10-create-cart-request");
    let response: Cart = check("e10-create-cart-response");
    let update: Cart = check("e12-update-cart-request");
    assert_eq!(
        response.status,
        Some(pcsaga_partner_center::models::CartStatus::Active)
    );
    assert!(response.expiration_timestamp.is_some());
    assert_eq!(response.lines_with_errors().count(), 0);
    // A create-cart request we encode carries no server-assigned fields.
    let encoded = serde_json::to_value(&request).expect("encodes");
    for server_field in [
        "creationTimestamp",
        "status",
        "expirationTimestamp",
        "links",
        "attributes",
    ] {
        assert!(
            encoded.get(server_field).is_none(),
            "{server_field} must not be sent"
        );
    }
    insta::assert_debug_snapshot!((request, response, update));
}

#[test]
fn checkout_and_orders() {
    let result: CartCheckoutResult = check("e13-checkout-result");
    assert_eq!(result.orders.len(), 1);
    assert_eq!(result.order_errors[0].code.as_deref(), Some("800010"));
    let order: Order = check("e14-order");
    assert_eq!(
        order.status,
        Some(pcsaga_partner_center::models::OrderStatus::Completed)
    );
    let provisioning: Collection<OrderLineItemProvisioningStatus> =
        check("e17-provisioning-status");
    assert_eq!(
        provisioning.items[0].status,
        Some(pcsaga_partner_center::models::ProvisioningState::Fulfilled)
    );
    let cancel: OrderCancellation = check("e20-cancel-request");
    assert_eq!(cancel.line_items.len(), 1);
    insta::assert_debug_snapshot!((result, order, provisioning, cancel));
}

#[test]
fn entitlements() {
    let entitlements: Collection<Entitlement> = check("e18-entitlements");
    let ri = &entitlements.items[0];
    assert_eq!(
        ri.reference_order.as_ref().map(|r| r.id.as_str()),
        Some("KaJ8XvkKc_GoNZOUyjVaRJalTBN5MWdV1")
    );
    assert!(ri.entitled_artifacts[0].link.is_some());
    let details: ReservedInstanceArtifactDetails = check("e19-artifact-details");
    assert_eq!(details.reservations.len(), 1);
    insta::assert_debug_snapshot!((entitlements, details));
}

/// The spec's other spellings decode too: `virtualMachineReservations`, `skuID`, a string
/// line id, integer enum values, unknown enum values and unknown fields.
#[test]
fn documented_variants_decode() {
    let details: ReservedInstanceArtifactDetails = serde_json::from_str(
        r#"{"type":"virtual_machine_reserved_instance","virtualMachineReservations":[{"reservationId":"r1","quantity":2,"expiryDateTime":"2019-02-23T00:00:00"}]}"#,
    )
    .expect("legacy artifact shape");
    assert_eq!(details.reservations[0].quantity, 2);
    assert!(details.reservations[0].expiry_date_time.is_some());

    let line: pcsaga_partner_center::models::CartLineItem = serde_json::from_str(
        r#"{"id":"3","catalogItemId":"A:B:C","quantity":1,"billingCycle":4,"error":{"errorCode":10011,"errorDescription":"x"},"brandNewField":{"a":1}}"#,
    )
    .expect("line with variants");
    assert_eq!(line.id, Some(3));
    assert_eq!(
        line.billing_cycle,
        Some(pcsaga_partner_center::models::BillingCycle::OneTime)
    );
    assert_eq!(
        line.error.map(|e| e.error_code),
        Some(pcsaga_partner_center::models::CartErrorCode::SubscriptionNotRegistered)
    );

    let order: Order =
        serde_json::from_str(r#"{"id":"o","status":"Completing","billingCycle":"ONE_TIME"}"#)
            .expect("order");
    assert_eq!(
        order.status,
        Some(pcsaga_partner_center::models::OrderStatus::Unknown(
            "Completing".to_owned()
        ))
    );
    assert_eq!(
        order.billing_cycle,
        Some(pcsaga_partner_center::models::BillingCycle::OneTime)
    );

    let entitlement: Entitlement =
        serde_json::from_str(r#"{"skuID":"0003","quantity":1}"#).expect("skuID");
    assert_eq!(entitlement.sku_id.as_deref(), Some("0003"));

    let availability: Availability =
        serde_json::from_str(r#"{"id":"A","defaultCurrency":"USD"}"#).expect("currency string");
    assert_eq!(
        availability
            .default_currency
            .map(|c| c.code().to_owned())
            .as_deref(),
        Some("USD")
    );
}

/// E21 (addendum §6): the request example decodes into the body the client sends and encodes
/// back with the same fields; the response example is an `Order`.
#[test]
fn direct_order() {
    use pcsaga_partner_center::models::NewOrder;
    let request: NewOrder = check("e21-create-order-request");
    assert_eq!(request.line_items[0].line_item_number, 0);
    let sent = serde_json::to_value(&request).expect("encodes");
    let example: serde_json::Value =
        serde_json::from_str(&fixture("e21-create-order-request")).expect("JSON");
    assert_eq!(
        sent, example,
        "the client sends what the example shows, nothing more"
    );
    let order: Order = check("e21-create-order-response");
    assert_eq!(
        order.status,
        Some(pcsaga_partner_center::models::OrderStatus::Pending)
    );
    assert_eq!(
        order.line_items[0].friendly_name.as_deref(),
        Some("pcsaga:po-2026-00017:0")
    );
}

/// An order's price is money: read exactly as sent, as a number or a string, never through a
/// float's value (0.1 + 0.2 must be 0.3).
#[test]
fn order_amounts_are_exact_decimals() {
    use rust_decimal::Decimal;
    use std::str::FromStr;
    let check = |json: &str, expected: Option<&str>| {
        let order: Order = serde_json::from_str(json).expect("decodes");
        assert_eq!(
            order.total_price,
            expected.map(|e| Decimal::from_str(e).expect("decimal")),
            "{json}"
        );
    };
    check(r#"{"id":"o","totalPrice":0.1}"#, Some("0.1"));
    check(
        r#"{"id":"o","totalPrice":"1234567.89"}"#,
        Some("1234567.89"),
    );
    check(r#"{"id":"o","totalPrice":120}"#, Some("120"));
    check(r#"{"id":"o","totalPrice":1.5e2}"#, Some("150"));
    check(r#"{"id":"o","totalPrice":null}"#, None);
    check(r#"{"id":"o"}"#, None);
    let a: Order = serde_json::from_str(r#"{"id":"a","totalPrice":0.1}"#).expect("a");
    let b: Order = serde_json::from_str(r#"{"id":"b","totalPrice":0.2}"#).expect("b");
    assert_eq!(
        a.total_price.zip(b.total_price).map(|(a, b)| a + b),
        Decimal::from_str("0.3").ok()
    );
}

// ---- billing (addendum E22-E29) --------------------------------------------------------------

use pcsaga_partner_center::billing::{BillingLine, ChargeType, LineSource};
use pcsaga_partner_center::models::{Invoice, InvoiceSummary};

#[test]
fn balances_and_invoices() {
    use rust_decimal::Decimal;
    let balance: InvoiceSummary = check("e22-account-balance");
    assert_eq!(balance.balance_amount, Some(Decimal::new(481_240, 2)));
    // `0001-01-01T00:00:00` is the documented "never".
    assert_eq!(
        balance.details[1]
            .summary
            .as_ref()
            .and_then(|s| s.last_payment_date),
        None
    );
    let summaries: Collection<InvoiceSummary> = check("e23-invoice-summaries");
    assert_eq!(
        summaries
            .items
            .iter()
            .map(|s| s.currency_code.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["USD", "EUR"]
    );
    let invoices: Collection<Invoice> = check("e24-invoices");
    assert!(invoices.items[0].is_one_time() && !invoices.items[1].is_one_time());
    assert_eq!(
        invoices.next_link().map(|l| l.uri.as_str()),
        Some("/invoices?size=2&offset=2")
    );
    let invoice: Invoice = check("e25-invoice");
    assert_eq!(invoice.total_charges, Some(Decimal::new(390_524, 2)));
    assert!(invoice.covers(
        chrono::DateTime::parse_from_rfc3339("2026-05-31T18:00:00Z")
            .expect("date")
            .to_utc()
    ));
    insta::assert_debug_snapshot!((balance, summaries, invoices, invoice));
}

/// The v1 lines (E26, E27) and the v2 record (E29.4) of the same documented charge read into
/// the same normalised line; money stays exact.
#[test]
fn one_time_lines_from_v1_and_v2_read_alike() {
    let page: serde_json::Value = check("e26-onetime-lines");
    let items = page["items"].as_array().expect("items");
    let v1 = BillingLine::read(&items[0], LineSource::V1).expect("the E26 line reads");
    let unbilled: serde_json::Value = check("e27-unbilled-lines");
    let u = BillingLine::read(&unbilled["items"][0], LineSource::V1).expect("the E27 line reads");
    assert_eq!(u.invoice_number, None, "unbilled: invoiceNumber \"\"");
    let record: serde_json::Value = check("e29-export-line");
    let v2 = BillingLine::read(&record, LineSource::V2).expect("the E29 record reads");
    assert_eq!(v1.subtotal.to_string(), "2046.24");
    assert_eq!(v1.charge_type, ChargeType::New);
    assert_eq!(v1.formula_subtotal(), Some(v1.subtotal));
    assert!(v1.joins("kPz3notThisOne", Some("5b0e8c2d41a7")));
    // Source and the fractional digits of orderDate aside, the three agree.
    let same = |mut l: BillingLine| {
        l.source = LineSource::V1;
        l.order_date = None;
        l.invoice_number = None;
        l
    };
    assert_eq!(same(v1.clone()), same(u));
    assert_eq!(same(v1.clone()), same(v2));
    let perpetual = BillingLine::read(&items[1], LineSource::V1).expect("the second line reads");
    insta::assert_debug_snapshot!((v1, perpetual));
}

#[test]
fn the_documented_export_operations_read_as_what_they_say() {
    // The Graph types decode through the client (see the billing tests against the simulator);
    // here: the examples are JSON objects with the discriminator the client reads.
    for (name, kind) in [
        ("e29-operation-running", "runningOperation"),
        ("e29-operation-succeeded", "exportSuccessOperation"),
        ("e29-operation-failed", "failedOperation"),
    ] {
        let value: serde_json::Value = check(name);
        assert!(
            value["@odata.type"]
                .as_str()
                .is_some_and(|t| t.ends_with(kind)),
            "{name}"
        );
    }
    let manifest: pcsaga_partner_center::billing::Manifest = check("e29-manifest");
    assert_eq!(manifest.blobs.len(), 1);
    assert!(
        !format!("{manifest:?}").contains("sig=REDACTED"),
        "the SAS never prints"
    );
}
