//! What clients that pcsaga did not write can tell about the simulator: JWT access tokens,
//! the tenant as a domain name, the customer-scoped catalog, orders in the customer's currency
//! and country, timestamps with seven fractional digits, customers and subscriptions.

use std::time::Duration;

use pcsaga_simulator::SimConfig;
use serde_json::{json, Value};

use crate::support::{Harness, CUSTOMER, SUBSCRIPTION};

/// Northwind Traders, a GB customer of the catalog file.
const GB_CUSTOMER: &str = "b0d70a69-4c42-4b27-b17b-91a835d8686a";

fn claims(token: &Value) -> Value {
    pcsaga_simulator::jwt::claims(token["access_token"].as_str().expect("token")).expect("a JWT")
}

#[tokio::test]
async fn access_tokens_are_jwts_with_the_claims_clients_read() {
    let h = Harness::start(SimConfig::default()).await;
    let c = h.sim.config().clone();
    let app = h.token("client_credentials").await;
    let app_claims = claims(&app);
    assert_eq!(app_claims["aud"], json!(c.resource));
    assert_eq!(app_claims["tid"], json!(c.tenant_id));
    assert_eq!(app_claims["appid"], json!(c.client_id));
    let (iat, nbf, exp) = (
        app_claims["iat"].as_i64().expect("iat"),
        app_claims["nbf"].as_i64().expect("nbf"),
        app_claims["exp"].as_i64().expect("exp"),
    );
    assert_eq!((nbf, exp - iat), (iat, c.token_ttl_s as i64));
    assert!(app_claims.get("oid").is_none() && app_claims.get("scp").is_none());
    let user_claims = claims(&h.token("refresh_token").await);
    assert_eq!(user_claims["oid"], json!(c.user_object_id));
    assert_eq!(user_claims["scp"], "user_impersonation");
    // The token still opens the API, as before.
    let call = h.call("GET", &format!("/customers/{CUSTOMER}"), None).await;
    assert_eq!(call.status, 200, "{call:?}");
}

#[tokio::test]
async fn the_token_url_takes_the_tenant_as_a_guid_or_a_verified_domain() {
    let h = Harness::start(SimConfig::default()).await;
    let c = h.sim.config().clone();
    let form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("client_id", c.client_id.clone()),
        ("client_secret", c.client_secret.clone()),
        ("resource", c.resource.clone()),
    ];
    let base = h.sim.base_url();
    for (tenant, status) in [
        (c.tenant_id.clone(), 200),
        ("PCSAGASIM.onmicrosoft.com".to_owned(), 200),
        ("contoso.onmicrosoft.com".to_owned(), 400),
    ] {
        let answer = h
            .form(&format!("{base}/{tenant}/oauth2/token"), &form)
            .await;
        assert_eq!(answer.status, status, "{tenant}: {answer:?}");
    }
}

/// A client that caches its token until the token's own `exp` asks once per lifetime.
#[tokio::test]
async fn a_client_caching_by_exp_asks_for_one_token_per_lifetime() {
    let h = Harness::start(SimConfig {
        token_ttl_s: 600,
        ..SimConfig::default()
    })
    .await;
    let before = tokens_requested(&h);
    let mut cached: Option<(String, i64)> = None;
    for minute in 0..20 {
        let now = sim_now(&h).await;
        let token = match &cached {
            Some((token, exp)) if now < *exp - 60 => token.clone(),
            _ => {
                let fresh = h.token("client_credentials").await;
                let exp = claims(&fresh)["exp"].as_i64().expect("exp");
                let token = fresh["access_token"].as_str().expect("token").to_owned();
                cached = Some((token.clone(), exp));
                token
            }
        };
        let answer = h
            .call_as(&token, "GET", &format!("/customers/{CUSTOMER}"), None)
            .await;
        assert_eq!(answer.status, 200, "minute {minute}");
        h.sim.advance_clock(Duration::from_secs(60));
    }
    // 20 minutes of 10-minute tokens, renewed a minute early: at 0, 9 and 18.
    assert_eq!(tokens_requested(&h) - before, 3);
}

fn tokens_requested(h: &Harness) -> usize {
    h.sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "token")
        .count()
}

async fn sim_now(h: &Harness) -> i64 {
    let clock = h.admin("clock").await;
    chrono::DateTime::parse_from_rfc3339(clock["now"].as_str().expect("now"))
        .expect("a time")
        .timestamp()
}

#[tokio::test]
async fn the_customer_scoped_catalog_answers_for_the_customers_country() {
    let h = Harness::start(SimConfig::default()).await;
    let product = "DG7GMGF0FKZV";
    for (scoped, partner) in [
        (
            format!("/customers/{GB_CUSTOMER}/products/{product}"),
            format!("/products/{product}?country=GB"),
        ),
        (
            format!("/customers/{GB_CUSTOMER}/products/{product}/skus"),
            format!("/products/{product}/skus?country=GB"),
        ),
        (
            format!("/customers/{GB_CUSTOMER}/products/{product}/skus/0003"),
            format!("/products/{product}/skus/0003?country=GB"),
        ),
        (
            format!("/customers/{GB_CUSTOMER}/products/{product}/skus/0003/availabilities"),
            format!("/products/{product}/skus/0003/availabilities?country=GB"),
        ),
    ] {
        let a = h.call("GET", &scoped, None).await;
        let b = h.call("GET", &partner, None).await;
        assert_eq!((a.status, &a.json), (200, &b.json), "{scoped}");
    }
    let availabilities = h
        .call(
            "GET",
            &format!("/customers/{GB_CUSTOMER}/products/{product}/skus/0003/availabilities"),
            None,
        )
        .await;
    assert_eq!(
        availabilities.json["items"][0]["defaultCurrency"]["code"],
        "GBP"
    );
    let id = availabilities.json["items"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let one = h
        .call(
            "GET",
            &format!("/customers/{GB_CUSTOMER}/products/{product}/skus/0003/availabilities/{id}"),
            None,
        )
        .await;
    assert_eq!((one.status, one.json["id"].clone()), (200, json!(id)));
}

#[tokio::test]
async fn orders_carry_the_customers_currency_and_country_and_seven_digit_times() {
    let h = Harness::start(SimConfig::default()).await;
    let availabilities = h
        .call(
            "GET",
            "/products/DG7GMGF0FKZV/skus/0003/availabilities?country=GB",
            None,
        )
        .await;
    let catalog_item = availabilities.json["items"][0]["catalogItemId"]
        .as_str()
        .expect("catalog item")
        .to_owned();
    let cart = h
        .call(
            "POST",
            &format!("/customers/{GB_CUSTOMER}/carts"),
            Some(json!({"lineItems": [{"id": 0, "catalogItemId": catalog_item, "quantity": 2, "billingCycle": "one_time", "termDuration": "P1Y", "friendlyName": "gb"}]})),
        )
        .await;
    assert_eq!(cart.status, 201, "{cart:?}");
    let checkout = h
        .call(
            "POST",
            &format!(
                "/customers/{GB_CUSTOMER}/carts/{}/checkout",
                cart.json["id"].as_str().expect("id")
            ),
            None,
        )
        .await;
    let order = &checkout.json["orders"][0];
    assert_eq!(order["currencyCode"], "GBP");
    assert_eq!(order["currencySymbol"], "£");
    let sku_link = order["lineItems"][0]["links"]["sku"]["uri"]
        .as_str()
        .expect("sku link");
    assert!(sku_link.ends_with("country=GB"), "{sku_link}");
    let created = order["creationDate"].as_str().expect("creationDate");
    let fraction = created
        .split_once('.')
        .map(|(_, f)| f.trim_end_matches('Z'))
        .expect("fractional seconds");
    assert_eq!(fraction.len(), 7, "{created}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );

    // The software subscription bought is one of the customer's subscriptions now.
    let subscription_id = order["lineItems"][0]["subscriptionId"]
        .as_str()
        .expect("a subscription line")
        .to_owned();
    let list = h
        .call(
            "GET",
            &format!("/customers/{GB_CUSTOMER}/subscriptions"),
            None,
        )
        .await;
    let bought: Vec<&Value> = list.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|s| s["id"] == json!(subscription_id))
        .collect();
    assert_eq!(bought.len(), 1, "{list:?}");
    assert_eq!(
        (
            bought[0]["offerId"].clone(),
            bought[0]["quantity"].clone(),
            bought[0]["status"].clone()
        ),
        (json!(catalog_item), json!(2), json!("active"))
    );
    let one = h
        .call(
            "GET",
            &format!("/customers/{GB_CUSTOMER}/subscriptions/{subscription_id}"),
            None,
        )
        .await;
    assert_eq!(one.json["orderId"], order["id"]);
}

#[tokio::test]
async fn customers_and_azure_subscriptions_are_served_read_only() {
    let h = Harness::start(SimConfig::default()).await;
    let customer = h.call("GET", &format!("/customers/{CUSTOMER}"), None).await;
    assert_eq!(customer.status, 200);
    assert_eq!(customer.json["companyProfile"]["tenantId"], json!(CUSTOMER));
    assert_eq!(
        customer.json["companyProfile"]["companyName"],
        "Contoso Ltd"
    );
    assert_eq!(
        customer.json["billingProfile"]["defaultAddress"]["country"],
        "US"
    );
    assert_eq!(customer.json["attributes"]["objectType"], "Customer");
    // The Azure subscription an RI registration names reads active before registration.
    let azure = h
        .call(
            "GET",
            &format!("/customers/{CUSTOMER}/subscriptions/{SUBSCRIPTION}"),
            None,
        )
        .await;
    assert_eq!(
        (azure.status, azure.json["status"].clone()),
        (200, json!("active"))
    );
    assert_eq!(azure.json["offerName"], "Azure plan");
    let listed = h.call("GET", "/customers", None).await;
    let ids: Vec<&str> = listed.json["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert!(
        ids.contains(&CUSTOMER) && ids.contains(&GB_CUSTOMER),
        "{ids:?}"
    );
    // Read-only: writes are refused; not a GUID is a 400.
    assert_eq!(
        h.call("DELETE", &format!("/customers/{CUSTOMER}"), None)
            .await
            .status,
        405
    );
    assert_eq!(
        h.call("GET", "/customers/not-a-guid", None).await.status,
        400
    );
}
