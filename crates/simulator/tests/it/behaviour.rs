//! Behaviour of the simulated service over raw HTTP: authentication, routing, carts,
//! idempotency, expiry, faults and the admin API.

use std::time::Duration;

use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig};
use serde_json::json;

use crate::support::{self, Harness, CUSTOMER, SUBSCRIPTION};

fn perpetual_cart() -> serde_json::Value {
    json!({"lineItems": [{"id": 0, "catalogItemId": "DG7GMGF0DWTL:0001:DG7GMGF0DSFM", "quantity": 1, "billingCycle": "one_time", "friendlyName": "t"}]})
}

#[tokio::test]
async fn calls_without_a_valid_token_get_401() {
    let h = Harness::start(SimConfig::default()).await;
    let url = format!(
        "{}/v1/products?country=US&targetView=Software",
        h.sim.base_url()
    );
    let missing = support::answer(h.http.get(&url).send().await.expect("answer")).await;
    assert_eq!(
        (missing.status, missing.json["code"].clone()),
        (401, json!("800001"))
    );
    assert!(missing.headers.get("www-authenticate").is_some());
    let bogus = h
        .call_as(
            "made-up",
            "GET",
            "/products?country=US&targetView=Software",
            None,
        )
        .await;
    assert_eq!(
        (bogus.status, bogus.json["code"].clone()),
        (401, json!("400"))
    );
    h.sim.advance_clock(Duration::from_secs(3601));
    let expired = h
        .call("GET", "/products?country=US&targetView=Software", None)
        .await;
    assert_eq!(
        expired.status, 401,
        "tokens expire on the simulator's clock"
    );
}

#[tokio::test]
async fn the_token_endpoint_checks_every_credential() {
    let h = Harness::start(SimConfig::default()).await;
    let c = h.sim.config().clone();
    let base = |grant: &str| {
        vec![
            ("grant_type", grant.to_owned()),
            ("client_id", c.client_id.clone()),
            ("client_secret", c.client_secret.clone()),
            ("resource", c.resource.clone()),
        ]
    };
    let mut wrong_secret = base("client_credentials");
    wrong_secret[2].1 = "nope".into();
    let answer = h.form(&h.sim.token_url(), &wrong_secret).await;
    assert_eq!(
        (answer.status, answer.json["error"].clone()),
        (401, json!("invalid_client"))
    );
    let mut wrong_refresh = base("refresh_token");
    wrong_refresh.push(("refresh_token", "stale".into()));
    assert_eq!(
        h.form(&h.sim.token_url(), &wrong_refresh).await.json["error"],
        "invalid_grant"
    );
    let mut graph = base("client_credentials");
    graph[3].1 = "https://graph.windows.net".into();
    assert_eq!(
        h.form(&h.sim.token_url(), &graph).await.json["error"],
        "invalid_resource",
        "the deprecated audience is refused"
    );
    let wrong_tenant = format!(
        "{}/00000000-0000-0000-0000-000000000000/oauth2/token",
        h.sim.base_url()
    );
    assert_eq!(
        h.form(&wrong_tenant, &base("client_credentials"))
            .await
            .status,
        400
    );
    // The v2 endpoint takes a scope instead of a resource; numbers come as strings in v1.
    let v2 = format!("{}/{}/oauth2/v2.0/token", h.sim.base_url(), c.tenant_id);
    let mut scoped = base("client_credentials");
    scoped[3] = ("scope", format!("{}/.default", c.resource));
    assert_eq!(h.form(&v2, &scoped).await.status, 200);
    assert!(h.token("client_credentials").await["expires_in"].is_string());
}

#[tokio::test]
async fn app_user_only_calls_refuse_app_only_tokens() {
    let h = Harness::start(SimConfig::default()).await;
    let refused = h
        .call("GET", &format!("/customers/{CUSTOMER}/entitlements"), None)
        .await;
    assert_eq!(refused.status, 403);
    let allowed = h
        .call_as(
            &h.user_token.clone(),
            "GET",
            &format!("/customers/{CUSTOMER}/entitlements"),
            None,
        )
        .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(allowed.json["attributes"]["objectType"], "Collection");
}

#[tokio::test]
async fn routing_is_case_insensitive_and_strict_about_methods() {
    let h = Harness::start(SimConfig::default()).await;
    let body = json!({"targetItems": [{"productId": "DZH318Z0BQ3Q"}], "inventoryContext": {"customerId": CUSTOMER, "azureSubscriptionId": SUBSCRIPTION, "armRegionName": "eastus"}});
    // The docs spell it checkInventory, the SDK checkinventory. Without a skuId every SKU of
    // the product is checked; the region must match each SKU's, so only one SKU passes here.
    let answer = h
        .call(
            "POST",
            "/extensions/product/checkInventory?country=US",
            Some(body),
        )
        .await;
    assert_eq!(
        answer.status, 400,
        "westus2 and japanwest SKUs do not match armRegionName eastus: {:?}",
        answer.json
    );
    let body = json!({"targetItems": [{"productId": "DZH318Z0BQ3Q", "skuId": "0001"}], "inventoryContext": {"customerId": CUSTOMER, "azureSubscriptionId": SUBSCRIPTION, "armRegionName": "eastus"}});
    assert_eq!(
        h.call(
            "POST",
            "/extensions/product/checkInventory?country=US",
            Some(body)
        )
        .await
        .json[0]["isRestricted"],
        false
    );
    let missing_context = json!({"targetItems": [{"productId": "DZH318Z0BQ3Q", "skuId": "0001"}], "inventoryContext": {"customerId": CUSTOMER}});
    let refused = h
        .call(
            "POST",
            "/extensions/product/checkinventory?country=US",
            Some(missing_context),
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.json["description"]
        .as_str()
        .is_some_and(|d| d.contains("azureSubscriptionId")));
    assert_eq!(
        h.call("DELETE", "/products/DZH318Z0BQ3Q?country=US", None)
            .await
            .status,
        405
    );
    assert_eq!(h.call("GET", "/nothing/here", None).await.status, 404);
    assert_eq!(
        h.call("GET", "/products?targetView=Software", None)
            .await
            .status,
        400,
        "country is required"
    );
    assert_eq!(
        h.call("GET", "/products?country=US&targetView=Cars", None)
            .await
            .json["code"],
        "400036"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_and_cart_creation_is_deduplicated_by_them() {
    let h = Harness::start(SimConfig::default()).await;
    let url = format!("{}/v1/customers/{CUSTOMER}/carts", h.sim.base_url());
    let send = || {
        h.http
            .post(&url)
            .bearer_auth(&h.app_token)
            .header("MS-RequestId", "9b4e2c1a-0000-4000-8000-00000000abcd")
            .header("MS-CorrelationId", "9b4e2c1a-0000-4000-8000-00000000cccc")
            .json(&perpetual_cart())
            .send()
    };
    let first = support::answer(send().await.expect("answer")).await;
    let second = support::answer(send().await.expect("answer")).await;
    assert_eq!(
        first.headers["ms-requestid"],
        "9b4e2c1a-0000-4000-8000-00000000abcd"
    );
    assert_eq!(
        first.headers["ms-correlationid"],
        "9b4e2c1a-0000-4000-8000-00000000cccc"
    );
    assert_eq!(
        first.json["id"], second.json["id"],
        "a retried create returns the same cart"
    );
    assert_eq!(h.sim.ledger().carts.len(), 1);
}

#[tokio::test]
async fn pascal_case_bodies_are_accepted() {
    let h = Harness::start(SimConfig::default()).await;
    let body = json!({"LineItems": [{"Id": 0, "CatalogItemId": "DG7GMGF0DWTL:0001:DG7GMGF0DSFM", "Quantity": 2, "BillingCycle": "one_time"}]});
    let answer = h
        .call("POST", &format!("/customers/{CUSTOMER}/carts"), Some(body))
        .await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.json["lineItems"][0]["quantity"], 2);
    assert!(
        answer.json["lineItems"][0].get("error").is_none(),
        "{:?}",
        answer.json
    );
}

#[tokio::test]
async fn carts_expire_and_then_cannot_be_checked_out() {
    let mut h = Harness::start(SimConfig::default()).await;
    let cart = h
        .call(
            "POST",
            &format!("/customers/{CUSTOMER}/carts"),
            Some(perpetual_cart()),
        )
        .await
        .json;
    let id = cart["id"].as_str().expect("id");
    let created =
        chrono::DateTime::parse_from_rfc3339(cart["creationTimestamp"].as_str().expect("ts"))
            .expect("rfc3339");
    let expires =
        chrono::DateTime::parse_from_rfc3339(cart["expirationTimestamp"].as_str().expect("ts"))
            .expect("rfc3339");
    assert_eq!(expires - created, chrono::Duration::days(7));
    h.sim.advance_clock(Duration::from_secs(7 * 24 * 3600 + 1));
    h.renew_tokens().await;
    assert_eq!(
        h.call("GET", &format!("/customers/{CUSTOMER}/carts/{id}"), None)
            .await
            .json["code"],
        "800008"
    );
    assert_eq!(
        h.call(
            "POST",
            &format!("/customers/{CUSTOMER}/carts/{id}/checkout"),
            None
        )
        .await
        .json["code"],
        "800008"
    );
    assert!(h.sim.ledger().checkouts.is_empty());
}

#[tokio::test]
async fn orders_complete_after_a_delay_and_reach_the_list_after_the_lag() {
    let h = Harness::start(SimConfig {
        order_completion_s: 60,
        order_list_lag_s: 900,
        ..SimConfig::default()
    })
    .await;
    let cart = h
        .call(
            "POST",
            &format!("/customers/{CUSTOMER}/carts"),
            Some(perpetual_cart()),
        )
        .await
        .json;
    let result = h
        .call(
            "POST",
            &format!(
                "/customers/{CUSTOMER}/carts/{}/checkout",
                cart["id"].as_str().expect("id")
            ),
            None,
        )
        .await
        .json;
    let order_id = result["orders"][0]["id"]
        .as_str()
        .expect("order")
        .to_owned();
    let order_path = format!("/customers/{CUSTOMER}/orders/{order_id}");
    let list_path = format!("/customers/{CUSTOMER}/orders?billingType=OneTime");
    assert_eq!(
        h.call("GET", &order_path, None).await.json["status"],
        "pending"
    );
    assert_eq!(h.call("GET", &list_path, None).await.json["totalCount"], 0);
    h.sim.advance_clock(Duration::from_secs(61));
    assert_eq!(
        h.call("GET", &order_path, None).await.json["status"],
        "completed"
    );
    assert_eq!(
        h.call("GET", &list_path, None).await.json["totalCount"],
        0,
        "still inside the 15-minute lag"
    );
    h.sim.advance_clock(Duration::from_secs(900));
    assert_eq!(h.call("GET", &list_path, None).await.json["totalCount"], 1);
    assert_eq!(
        h.call(
            "GET",
            &format!("/customers/{CUSTOMER}/orders?billingType=onetime"),
            None
        )
        .await
        .json["totalCount"],
        1,
        "any casing"
    );
    assert_eq!(
        h.call(
            "GET",
            &format!("/customers/{CUSTOMER}/orders?billingType=Monthly"),
            None
        )
        .await
        .json["totalCount"],
        0
    );
    assert_eq!(
        h.call(
            "GET",
            &format!("/customers/{CUSTOMER}/orders?billingType=weekly"),
            None
        )
        .await
        .json["code"],
        "900126"
    );
}

#[tokio::test]
async fn registration_needs_the_configured_polls_and_tolerates_repeats() {
    let h = Harness::start(SimConfig {
        registration_polls: 4,
        ..SimConfig::default()
    })
    .await;
    let base = format!("/customers/{CUSTOMER}/subscriptions/{SUBSCRIPTION}");
    assert_eq!(
        h.call("GET", &format!("{base}/registrationstatus"), None)
            .await
            .json["status"],
        "NotRegistered"
    );
    let registered = h.call("POST", &format!("{base}/registrations"), None).await;
    assert_eq!(registered.status, 202);
    assert_eq!(
        registered.headers["location"],
        format!("{base}/registrationstatus").as_str()
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            h.call("GET", &format!("{base}/registrationstatus"), None)
                .await
                .json["status"]
                .clone(),
        );
        assert_eq!(
            h.call("POST", &format!("{base}/registrations"), None)
                .await
                .status,
            202,
            "repeats are accepted"
        );
    }
    assert_eq!(
        seen,
        vec![
            json!("Registering"),
            json!("Registering"),
            json!("Registering"),
            json!("Registered")
        ]
    );
}

#[tokio::test]
async fn a_dropped_connection_sends_no_response_but_the_request_took_effect() {
    let h = Harness::start(SimConfig::default()).await;
    h.sim
        .set_faults(FaultPlan {
            seed: 3,
            rules: vec![FaultRule {
                endpoint: "create_cart".into(),
                probability: 1.0,
                after: 0,
                limit: Some(1),
                fault: Fault::Drop,
            }],
        })
        .expect("plan");
    let url = format!("{}/v1/customers/{CUSTOMER}/carts", h.sim.base_url());
    let result = h
        .http
        .post(&url)
        .bearer_auth(&h.app_token)
        .json(&perpetual_cart())
        .send()
        .await;
    assert!(result.is_err(), "no response at all: {result:?}");
    assert_eq!(h.sim.ledger().carts.len(), 1, "processed before the drop");
    let record = h
        .sim
        .requests()
        .into_iter()
        .find(|r| r.endpoint == "create_cart")
        .expect("logged");
    assert_eq!(
        (record.status, record.processed, record.fault.as_deref()),
        (None, true, Some("drop"))
    );
}

#[tokio::test]
async fn the_admin_api_validates_fault_plans_and_moves_the_clock() {
    let h = Harness::start(SimConfig::default()).await;
    let url = format!("{}/_sim/faults", h.sim.base_url());
    let bad = json!({"seed": 1, "rules": [{"endpoint": "chekout", "fault": {"kind": "drop"}}]});
    let answer = support::answer(h.http.put(&url).json(&bad).send().await.expect("answer")).await;
    assert_eq!(answer.status, 400);
    assert!(answer.json["description"]
        .as_str()
        .is_some_and(|d| d.contains("rules[0]") && d.contains("chekout")));
    let good = json!({"seed": 1, "rules": [{"endpoint": "checkout", "probability": 0.5, "fault": {"kind": "status", "status": 503}}]});
    assert_eq!(
        support::answer(h.http.put(&url).json(&good).send().await.expect("answer"))
            .await
            .status,
        200
    );
    let advance = format!("{}/_sim/clock/advance?seconds=120", h.sim.base_url());
    let moved = support::answer(h.http.post(&advance).send().await.expect("answer")).await;
    assert_eq!(moved.json["offsetSeconds"], 120);
    let ledger = support::answer(
        h.http
            .get(format!("{}/_sim/ledger", h.sim.base_url()))
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(
        ledger.json,
        json!({"carts": [], "checkouts": [], "orders": [], "directOrders": []})
    );
}

/// The admin API changes restrictions and registrations while the simulator runs, and says
/// what it takes when a call is wrong.
#[tokio::test]
async fn restrictions_and_registrations_change_at_run_time() {
    let h = Harness::start(SimConfig::default()).await;
    let admin = |method: &str, action: &str, body: Option<serde_json::Value>| {
        let url = format!("{}/_sim/{action}", h.sim.base_url());
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = h.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { crate::support::answer(request.send().await.expect("answers")).await }
    };
    let inventory = json!({"targetItems": [{"productId": "DZH318Z0BQ3Q", "skuId": "0003"}],
        "inventoryContext": {"customerId": CUSTOMER, "azureSubscriptionId": SUBSCRIPTION, "armRegionName": "japanwest"}});
    let check = || {
        h.call(
            "POST",
            "/extensions/product/checkinventory?country=US",
            Some(inventory.clone()),
        )
    };
    assert_eq!(
        check().await.json[0]["isRestricted"],
        true,
        "japanwest is restricted by default"
    );
    let now = admin("GET", "restrictions", None).await;
    assert_eq!(now.json["restrictedRegions"], json!(["japanwest"]));
    let lifted = admin(
        "PUT",
        "restrictions",
        Some(json!({"restrictedRegions": [], "checkoutRestrictedRegions": ["eastus"]})),
    )
    .await;
    assert_eq!(lifted.status, 200);
    assert_eq!(
        check().await.json[0]["isRestricted"],
        false,
        "lifted without a restart"
    );
    let bad = admin("PUT", "restrictions", Some(json!({"regions": []}))).await;
    assert_eq!(bad.status, 400);
    assert!(bad.json["description"]
        .as_str()
        .is_some_and(|d| d.contains("restrictedRegions")));

    let path = format!("/customers/{CUSTOMER}/subscriptions/{SUBSCRIPTION}/registrationstatus");
    let status = || h.call("GET", &path, None);
    assert_eq!(status().await.json["status"], "NotRegistered");
    let body = json!({"customerId": CUSTOMER, "subscriptionId": SUBSCRIPTION, "registered": true});
    assert_eq!(admin("PUT", "registrations", Some(body)).await.status, 200);
    assert_eq!(status().await.json["status"], "Registered");
    let body = json!({"customerId": CUSTOMER, "subscriptionId": SUBSCRIPTION, "registered": false});
    assert_eq!(admin("PUT", "registrations", Some(body)).await.status, 200);
    assert_eq!(status().await.json["status"], "NotRegistered");
    let unknown = admin("POST", "faults", None).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.json["description"]
        .as_str()
        .is_some_and(|d| d.contains("PUT faults")));
}

/// The example settings file in the repository loads, with every field it names.
#[test]
fn example_sim_config_loads() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/sim-config.toml"
    );
    let text = std::fs::read_to_string(path).expect("the example exists");
    let config: SimConfig = toml::from_str(&text).expect("the example loads");
    assert_eq!(config.restricted_regions, vec!["japanwest".to_owned()]);
    assert_eq!(config.faults.rules.len(), 2);
    assert_eq!(config.order_list_lag_s, 5);
    assert_eq!(
        config.throttle,
        pcsaga_simulator::throttle::ThrottleConfig::default(),
        "the example shows the throttle's defaults"
    );
    assert_eq!(
        config.billing.invoice_day, 8,
        "the example shows the billing defaults"
    );
    assert_eq!(config.billing.graph_lines_per_blob, 2000);
}

/// Throttling: a class over its tenant budget gets Partner Center's 429 (its own body,
/// `Retry-After` in seconds); other classes go on; `/_sim/stats` counts per class.
#[tokio::test]
async fn a_class_over_its_budget_is_answered_429_with_retry_after() {
    let mut throttle = pcsaga_simulator::throttle::ThrottleConfig {
        enabled: true,
        burst_s: 1,
        penalize_early_retries: true,
        ..Default::default()
    };
    throttle.per_minute.insert("catalog".into(), 60);
    let h = Harness::start(SimConfig {
        throttle,
        ..SimConfig::default()
    })
    .await;
    let sku = "/products/DZH318Z0BQ3Q/skus/0001?country=US";
    assert_eq!(h.call("GET", sku, None).await.status, 200);
    let refused = h.call("GET", sku, None).await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.json,
        json!({"statusCode": 429, "message": "Rate limit is exceeded. Try again in 1 seconds."})
    );
    assert_eq!(
        refused
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // An early retry is refused again and counted; other classes are not affected.
    assert_eq!(h.call("GET", sku, None).await.status, 429);
    let cart = h
        .call(
            "POST",
            &format!("/customers/{CUSTOMER}/carts"),
            Some(perpetual_cart()),
        )
        .await;
    assert_eq!(cart.status, 201);
    let stats = h.admin("stats").await;
    assert_eq!(
        stats["throttle"]["classes"]["catalog"],
        json!({"requests": 3, "throttled": 2, "earlyRetries": 1})
    );
    assert_eq!(
        stats["throttle"]["classes"]["cart"],
        json!({"requests": 1, "throttled": 0, "earlyRetries": 0})
    );
    let logged: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(429))
        .map(|r| (r.endpoint, r.retry_after_s))
        .collect();
    assert_eq!(logged, vec![("get_sku".to_owned(), Some(1)); 2]);
}
