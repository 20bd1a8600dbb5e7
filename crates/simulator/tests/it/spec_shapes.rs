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

/// Addendum E22-E29: the billing answers carry every field of the examples; the Graph export
/// answers only a Graph token, and its files carry every field of the example record.
#[tokio::test]
async fn billing_answers_carry_every_field_of_the_examples() {
    let h = Harness::start(SimConfig {
        preregistered_subscriptions: vec![SUBSCRIPTION.to_owned()],
        order_completion_s: 0,
        ..SimConfig::default()
    })
    .await;
    for _ in 0..3 {
        let created = h
            .call(
                "POST",
                &format!("/customers/{CUSTOMER}/orders"),
                Some(example("e21-create-order-request")),
            )
            .await;
        assert_eq!(created.status, 201, "{:#}", created.json);
    }
    let unbilled = h
        .call("GET", "/invoices/unbilled/lineitems?provider=onetime&invoicelineitemtype=billinglineitems&currencycode=usd&period=current&size=2000", None)
        .await;
    assert_eq!(unbilled.status, 200, "{:#}", unbilled.json);
    check("e27-unbilled-lines", &unbilled.json);
    assert_eq!(unbilled.json["items"][0]["invoiceNumber"], "");
    let closed = h
        .http
        .post(format!("{}/_sim/billing/close", h.sim.base_url()))
        .send()
        .await
        .expect("close");
    assert_eq!(closed.status(), 200);
    // A second invoice (another order, closed again), so the list pages as the example does.
    let created = h
        .call(
            "POST",
            &format!("/customers/{CUSTOMER}/orders"),
            Some(example("e21-create-order-request")),
        )
        .await;
    assert_eq!(created.status, 201);
    h.http
        .post(format!("{}/_sim/billing/close", h.sim.base_url()))
        .send()
        .await
        .expect("close");
    let invoices = h.call("GET", "/invoices?size=1&offset=0", None).await;
    let id = invoices.json["items"][0]["id"]
        .as_str()
        .expect("an invoice")
        .to_owned();
    check("e24-invoices", &invoices.json);
    let invoice = h
        .call_as(
            &h.user_token.clone(),
            "GET",
            &format!("/invoices/{id}"),
            None,
        )
        .await;
    check("e25-invoice", &invoice.json);
    // App-only tokens are refused on E25 (addendum §14.10).
    let refused = h.call("GET", &format!("/invoices/{id}"), None).await;
    assert_eq!(refused.status, 401, "{:#}", refused.json);
    let balance = h.call("GET", "/invoices/summary", None).await;
    check("e22-account-balance", &balance.json);
    let summaries = h
        .call_as(&h.user_token.clone(), "GET", "/invoices/summaries", None)
        .await;
    check("e23-invoice-summaries", &summaries.json);
    let lines = h
        .call("GET", &format!("/invoices/{id}/lineitems?provider=onetime&invoicelineitemtype=billinglineitems&size=2"), None)
        .await;
    check("e26-onetime-lines", &lines.json);
    let token = lines.json["continuationToken"]
        .as_str()
        .expect("a token")
        .to_owned();
    assert_eq!(
        lines.json["links"]["next"]["headers"][0]["value"],
        token.as_str()
    );
    let next = h
        .http
        .get(format!("{}/v1/invoices/{id}/lineitems?provider=onetime&invoicelineitemtype=billinglineitems&size=2&seekOperation=Next", h.sim.base_url()))
        .bearer_auth(&h.app_token)
        .header("MS-ContinuationToken", &token)
        .send()
        .await
        .expect("next page");
    let next = support::answer(next).await;
    assert_eq!(
        next.json["items"].as_array().map(Vec::len),
        Some(1),
        "{:#}",
        next.json
    );
    assert!(
        next.json.get("continuationToken").is_none(),
        "the last page has no token"
    );
    // Graph: a Partner Center token is refused; a Graph token starts the export.
    let export = format!(
        "{}/graph/v1.0/reports/partners/billing/reconciliation/billed/export",
        h.sim.base_url()
    );
    let refused = h
        .http
        .post(&export)
        .bearer_auth(&h.app_token)
        .json(&json!({"invoiceId": id}))
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 401);
    let c = h.sim.config();
    let graph = h
        .form(
            &h.sim.token_url(),
            &[
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", c.client_id.clone()),
                ("client_secret", c.client_secret.clone()),
                ("resource", "https://graph.microsoft.com".to_owned()),
            ],
        )
        .await;
    let graph_token = graph.json["access_token"]
        .as_str()
        .expect("a Graph token")
        .to_owned();
    // ... which is good for Graph only.
    let wrong = h.call_as(&graph_token, "GET", "/invoices", None).await;
    assert_eq!(wrong.status, 401);
    let started = h
        .http
        .post(&export)
        .bearer_auth(&graph_token)
        .json(&json!({"invoiceId": id, "attributeSet": "full"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(started.status(), 202);
    let operation = started.headers()["location"]
        .to_str()
        .expect("Location")
        .to_owned();
    let poll = || async {
        support::answer(
            h.http
                .get(&operation)
                .bearer_auth(&graph_token)
                .send()
                .await
                .expect("answer"),
        )
        .await
    };
    let running = poll().await;
    check("e29-operation-running", &running.json);
    assert!(running.headers.contains_key("retry-after"));
    let _ = poll().await;
    let done = poll().await;
    check("e29-operation-succeeded", &done.json);
    let link = done.json["resourceLocation@odata.navigationLink"]
        .as_str()
        .expect("link")
        .to_owned();
    let manifest = support::answer(
        h.http
            .get(&link)
            .bearer_auth(&graph_token)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    check("e29-manifest", &manifest.json);
    let url = format!(
        "{}/{}?{}",
        manifest.json["rootDirectory"].as_str().expect("dir"),
        manifest.json["blobs"][0]["name"].as_str().expect("name"),
        manifest.json["sasToken"].as_str().expect("sas")
    );
    let gz = h
        .http
        .get(&url)
        .send()
        .await
        .expect("blob")
        .bytes()
        .await
        .expect("bytes");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
        .expect("gzip");
    let record: Value = serde_json::from_str(text.lines().next().expect("a line")).expect("JSON");
    check("e29-export-line", &record);
    let unsigned = h
        .http
        .get(url.split('?').next().expect("path"))
        .send()
        .await
        .expect("answer");
    assert_eq!(unsigned.status(), 403);
    let failed = h
        .http
        .post(&export)
        .bearer_auth(&graph_token)
        .json(&json!({"invoiceId": "D02005YFHI"}))
        .send()
        .await
        .expect("answer");
    let failed_op = failed.headers()["location"]
        .to_str()
        .expect("Location")
        .to_owned();
    let failed = support::answer(
        h.http
            .get(&failed_op)
            .bearer_auth(&graph_token)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    check("e29-operation-failed", &failed.json);
}
