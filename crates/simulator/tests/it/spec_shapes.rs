//! The simulator answers in the spec's shapes: every field of every response example is
//! present in the simulator's answer to the same call, and every request example is accepted.

use std::time::Duration;

use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig};
use serde_json::{json, Value};

use crate::support::{self, Harness, CUSTOMER, SUBSCRIPTION};

fn example(name: &str) -> Value {
    let path = format!(
        "{}/../../spec/examples/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Collects the key paths of `example` missing from `actual`, or of another JSON type there.
/// Arrays compare their first elements; an empty object or array in the example demands only
/// that the key exists. `null` stands only where the example has `null`. Values are compared
/// where the spec fixes them (`objectType`); elsewhere the types must match.
fn missing_keys(example: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    match (example, actual) {
        (Value::Object(expected), Value::Object(got)) => {
            for (key, value) in expected {
                match got.get(key) {
                    Some(inner) if key == "objectType" && inner != value => out.push(format!(
                        "{path}.{key} ({inner} where the example has {value})"
                    )),
                    Some(inner) => missing_keys(value, inner, &format!("{path}.{key}"), out),
                    None => out.push(format!("{path}.{key}")),
                }
            }
        }
        (Value::Array(expected), Value::Array(got)) => {
            if let (Some(e), Some(g)) = (expected.first(), got.first()) {
                missing_keys(e, g, &format!("{path}[0]"), out);
            } else if !expected.is_empty() {
                out.push(format!("{path}[0] (empty array)"));
            }
        }
        (Value::Null, _) => {}
        (e, a) if kind(e) != kind(a) => out.push(format!(
            "{path} ({} where the example has a {})",
            kind(a),
            kind(e)
        )),
        _ => {}
    }
}

/// Asserts the simulator's answer carries every field of the named example.
#[track_caller]
fn check(name: &str, actual: &Value) {
    let mut missing = Vec::new();
    missing_keys(&example(name), actual, "$", &mut missing);
    assert!(
        missing.is_empty(),
        "{name}: the simulator's answer lacks {missing:?}\nanswer: {actual:#}"
    );
}

#[tokio::test]
async fn responses_carry_every_field_of_the_examples() {
    let h = Harness::start(SimConfig {
        checkout_restricted_regions: vec!["eastus".to_owned()],
        order_completion_s: 0,
        order_list_lag_s: 0,
        ..SimConfig::default()
    })
    .await;

    check("token-response", &h.token("client_credentials").await);
    check(
        "error-body",
        &h.call("GET", "/products/NOPE?country=US", None).await.json,
    );
    h.sim
        .set_faults(FaultPlan {
            seed: 0,
            rules: vec![FaultRule {
                endpoint: "get_product".into(),
                probability: 1.0,
                after: 0,
                limit: Some(1),
                fault: Fault::Throttle {
                    retry_after_s: 57,
                    http_date: false,
                },
            }],
        })
        .expect("plan");
    let throttled = h
        .call("GET", "/products/DZH318Z0BQ3Q?country=US", None)
        .await;
    assert_eq!(throttled.status, 429);
    assert_eq!(
        throttled
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("57")
    );
    check("throttle-body", &throttled.json);

    support::register(&h).await;
    check(
        "e02-registration-status",
        &h.call(
            "GET",
            &format!("/customers/{CUSTOMER}/subscriptions/{SUBSCRIPTION}/registrationstatus"),
            None,
        )
        .await
        .json,
    );
    check(
        "e03-products",
        &h.call(
            "GET",
            "/products?country=US&targetView=AzureReservationsVM",
            None,
        )
        .await
        .json,
    );
    check(
        "e05-skus",
        &h.call("GET", "/products/DZH318Z0BQ5S/skus?country=US", None)
            .await
            .json,
    );
    check(
        "e07-availabilities",
        &h.call(
            "GET",
            "/products/DZH318Z0BQ3Q/skus/0001/availabilities?country=US&targetSegment=commercial",
            None,
        )
        .await
        .json,
    );
    let inventory = h
        .call("POST", "/extensions/product/checkinventory?country=US", Some(json!({
            "targetItems": [{"productId": "DZH318Z0BQ3Q", "skuId": "0003"}],
            "inventoryContext": {"customerId": CUSTOMER, "azureSubscriptionId": SUBSCRIPTION, "armRegionName": "japanwest"}})))
        .await;
    check("e09-inventory-response", &inventory.json);

    // A cart like the example's: a reservation and a software subscription (two groups, so
    // the checkout below can show a populated `orderErrors`, as the example does).
    let cart = h
        .call("POST", &format!("/customers/{CUSTOMER}/carts"), Some(json!({"lineItems": [
            {"id": 0, "catalogItemId": "DZH318Z0BQ3Q:0001:DZH318XZXVNF", "quantity": 1, "billingCycle": "one_time", "termDuration": "P1Y",
             "provisioningContext": {"subscriptionId": SUBSCRIPTION, "scope": "shared", "duration": "1Year"}},
            {"id": 1, "catalogItemId": "DG7GMGF0FKZV:0003:DG7GMGF0DWMS", "quantity": 1, "billingCycle": "one_time", "termDuration": "P1Y", "friendlyName": "sw"}]})))
        .await;
    assert_eq!(cart.status, 201, "{:?}", cart.json);
    check("e10-create-cart-response", &cart.json);
    let cart_id = cart.json["id"].as_str().expect("cart id").to_owned();
    let checkout = h
        .call(
            "POST",
            &format!("/customers/{CUSTOMER}/carts/{cart_id}/checkout"),
            None,
        )
        .await;
    assert_eq!(checkout.status, 201);
    check("e13-checkout-result", &checkout.json);
    let order_id = checkout.json["orders"][0]["id"]
        .as_str()
        .expect("order id")
        .to_owned();
    check(
        "e14-order",
        &h.call(
            "GET",
            &format!("/customers/{CUSTOMER}/orders/{order_id}"),
            None,
        )
        .await
        .json,
    );
    check(
        "e17-provisioning-status",
        &h.call_as(
            &h.user_token.clone(),
            "GET",
            &format!("/customers/{CUSTOMER}/orders/{order_id}/provisioningstatus"),
            None,
        )
        .await
        .json,
    );

    // A reservation bought on its own, for the entitlement and artifact examples.
    let ri_cart = h
        .call("POST", &format!("/customers/{CUSTOMER}/carts"), Some(json!({"lineItems": [
            {"id": 0, "catalogItemId": "DZH318Z0BQ3Q:0002:DZH318XZXVNG", "quantity": 1, "billingCycle": "one_time", "termDuration": "P3Y",
             "provisioningContext": {"subscriptionId": SUBSCRIPTION, "scope": "shared", "duration": "3Years"}}]})))
        .await;
    let ri_cart_id = ri_cart.json["id"].as_str().expect("cart id").to_owned();
    assert_eq!(
        h.call(
            "POST",
            &format!("/customers/{CUSTOMER}/carts/{ri_cart_id}/checkout"),
            None
        )
        .await
        .status,
        201
    );
    h.sim.advance_clock(Duration::from_secs(1));
    let entitlements = h
        .call_as(
            &h.user_token.clone(),
            "GET",
            &format!("/customers/{CUSTOMER}/entitlements?entitlementType=reservedInstance"),
            None,
        )
        .await;
    check("e18-entitlements", &entitlements.json);
    let link = entitlements.json["items"][0]["entitledArtifacts"][0]["link"]["uri"]
        .as_str()
        .expect("artifact link")
        .to_owned();
    check(
        "e19-artifact-details",
        &h.call_as(&h.user_token.clone(), "GET", &link, None)
            .await
            .json,
    );
}

#[tokio::test]
async fn request_examples_are_accepted_as_written() {
    let h = Harness::start(SimConfig::default()).await;
    // The examples name catalog items the simulator does not sell: carts are created (201)
    // with line errors, inventory omits unknown items (200, []).
    let inventory = h
        .call(
            "POST",
            "/extensions/product/checkinventory?country=US",
            Some(example("e09-inventory-request")),
        )
        .await;
    assert_eq!((inventory.status, inventory.json.clone()), (200, json!([])));
    let created = h
        .call(
            "POST",
            &format!("/customers/{CUSTOMER}/carts"),
            Some(example("e10-create-cart-request")),
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        created.json["lineItems"][0]["error"]["errorCode"],
        "catalog_item_id_is_not_valid"
    );
    let cart_id = created.json["id"].as_str().expect("id");
    let updated = h
        .call(
            "PUT",
            &format!("/customers/{CUSTOMER}/carts/{cart_id}"),
            Some(example("e12-update-cart-request")),
        )
        .await;
    assert_eq!(updated.status, 201, "{:?}", updated.json);
    let cancel = h
        .call(
            "PATCH",
            &format!("/customers/{CUSTOMER}/orders/2y6dF_rVgDAXMxypQPPnTquuXhKVK_3N1"),
            Some(example("e20-cancel-request")),
        )
        .await;
    assert_eq!(
        (cancel.status, cancel.json["code"].clone()),
        (404, json!("20000")),
        "unknown order"
    );
}

/// The shape check itself catches what it claims to: a missing key, `null` for an object, a
/// number for a string, another `objectType`.
#[test]
fn the_shape_check_catches_each_kind_of_difference() {
    let example = json!({"id": "a", "quantity": 1, "links": {"self": {"uri": "/x"}}, "attributes": {"objectType": "Order"}, "note": null});
    let cases = [
        (
            json!({"quantity": 1, "links": {"self": {"uri": "/x"}}, "attributes": {"objectType": "Order"}}),
            "$.id",
        ),
        (
            json!({"id": "a", "quantity": 1, "links": null, "attributes": {"objectType": "Order"}}),
            "$.links (null where the example has a object)",
        ),
        (
            json!({"id": 7, "quantity": 1, "links": {"self": {"uri": "/x"}}, "attributes": {"objectType": "Order"}}),
            "$.id (number where the example has a string)",
        ),
        (
            json!({"id": "a", "quantity": 1, "links": {"self": {"uri": "/x"}}, "attributes": {"objectType": "Cart"}}),
            "$.attributes.objectType",
        ),
    ];
    for (actual, finding) in cases {
        let mut out = Vec::new();
        missing_keys(&example, &actual, "$", &mut out);
        assert!(
            out.iter().any(|f| f.starts_with(finding)),
            "{finding}: {out:?}"
        );
    }
    let mut out = Vec::new();
    missing_keys(
        &example,
        &json!({"id": "b", "quantity": 2, "links": {"self": {"uri": "/y"}}, "attributes": {"objectType": "Order"}, "note": "x"}),
        "$",
        &mut out,
    );
    assert!(out.is_empty(), "same shape, other values: {out:?}");
}

/// E21 (addendum §6): the request example, as written, creates an order whose answer has every
/// field of the response example.
#[tokio::test]
async fn the_direct_order_example_is_accepted_and_answered_in_shape() {
    let h = Harness::start(SimConfig {
        preregistered_subscriptions: vec!["1c461a25-f729-4fa5-aadb-280947dd05e8".to_owned()],
        ..SimConfig::default()
    })
    .await;
    let created = h
        .call(
            "POST",
            &format!("/customers/{CUSTOMER}/orders"),
            Some(example("e21-create-order-request")),
        )
        .await;
    assert_eq!(created.status, 201, "{:#}", created.json);
    check("e21-create-order-response", &created.json);
    assert_eq!(created.json["status"], "pending");
}
