//! Each injected fault kind, with the client's classification asserted.

use std::collections::BTreeMap;
use std::time::Duration;

use pcsaga_partner_center::models::{BillingCycle, Cart, CartLineItem};
use pcsaga_partner_center::{Client, ErrorClass, RequestId};
use pcsaga_simulator::{CheckoutReplay, Fault, FaultPlan, FaultRule, SimConfig, Simulator};

use crate::support::{self, cid, CUSTOMER};

fn plan(endpoint: &str, fault: Fault) -> FaultPlan {
    FaultPlan {
        seed: 1,
        rules: vec![FaultRule {
            endpoint: endpoint.to_owned(),
            probability: 1.0,
            after: 0,
            limit: Some(1),
            fault,
        }],
    }
}

fn fast_client(sim: &Simulator, timeout: Duration) -> Client {
    let mut config = support::client_config(sim);
    config.timeout = timeout;
    Client::new(config, support::credentials(sim, true)).expect("client")
}

/// A cart of one perpetual-software line, ready to check out.
async fn ready_cart(client: &Client, token: &str) -> String {
    let cart = Cart {
        line_items: vec![CartLineItem {
            catalog_item_id: "DG7GMGF0DWTL:0001:DG7GMGF0DSFM".to_owned(),
            quantity: 1,
            billing_cycle: Some(BillingCycle::OneTime),
            friendly_name: Some(token.to_owned()),
            provisioning_context: BTreeMap::new(),
            ..CartLineItem::default()
        }],
        ..Cart::default()
    };
    let cart = client
        .create_cart(cid(), RequestId::new(), CUSTOMER, &cart)
        .await
        .expect("cart")
        .value;
    cart.id.expect("cart id")
}

#[tokio::test]
async fn throttling_carries_retry_after_in_seconds_or_as_a_date() {
    let sim = support::sim(SimConfig::default()).await;
    let client = support::client(&sim);
    sim.set_faults(plan(
        "list_products",
        Fault::Throttle {
            retry_after_s: 7,
            http_date: false,
        },
    ))
    .expect("plan");
    let err = client
        .list_products(cid(), "US", "Software", None)
        .await
        .expect_err("429");
    assert_eq!(err.class(), ErrorClass::Throttled);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert!(err
        .context()
        .and_then(|c| c.description.as_deref())
        .is_some_and(|d| d.contains("Try again in 7 seconds")));

    sim.set_faults(plan(
        "list_products",
        Fault::Throttle {
            retry_after_s: 30,
            http_date: true,
        },
    ))
    .expect("plan");
    let err = client
        .list_products(cid(), "US", "Software", None)
        .await
        .expect_err("429");
    assert_eq!(err.class(), ErrorClass::Throttled);
    // An HTTP date has one-second resolution and is read against our clock.
    let after = err.retry_after().expect("date parsed").as_secs();
    assert!(
        (28..=30).contains(&after),
        "Retry-After date read as {after}s"
    );

    // The next call is served: the rule fired once.
    client
        .list_products(cid(), "US", "Software", None)
        .await
        .expect("served after the storm");
}

#[tokio::test]
async fn server_errors_are_transient_and_keep_support_ids() {
    let sim = support::sim(SimConfig::default()).await;
    let client = support::client(&sim);
    for status in [500, 502, 503, 504] {
        sim.set_faults(plan("get_product", Fault::Status { status, code: None }))
            .expect("plan");
        let correlation = cid();
        let err = client
            .get_product(correlation, "DG7GMGF0DWTL", "US")
            .await
            .expect_err("5xx");
        assert_eq!(err.class(), ErrorClass::Transient, "{status}");
        let context = err.context().expect("context");
        assert_eq!(context.status, Some(status));
        assert_eq!(context.code.as_deref(), Some("800003"));
        assert_eq!(context.correlation_id, Some(correlation));
        assert!(context.request_id.is_some());
        assert!(
            err.to_string().contains(&correlation.to_string()),
            "the message names the correlation id"
        );
    }
}

/// A hang that never processed the checkout: the client times out and cannot know; the
/// ledger shows nothing was bought.
#[tokio::test]
async fn a_hung_checkout_is_outcome_unknown() {
    let sim = support::sim(SimConfig {
        hang_s: 30,
        ..SimConfig::default()
    })
    .await;
    let client = fast_client(&sim, Duration::from_millis(500));
    let cart_id = ready_cart(&client, "hang").await;
    sim.set_faults(plan("checkout", Fault::Hang { processed: false }))
        .expect("plan");
    let err = client
        .checkout(cid(), RequestId::new(), CUSTOMER, &cart_id)
        .await
        .expect_err("timeout");
    assert_eq!(err.class(), ErrorClass::OutcomeUnknown);
    assert!(sim.ledger().checkouts.is_empty());

    // The same hang on a read is plainly transient: there is no outcome to be unknown about.
    sim.set_faults(plan("get_cart", Fault::Hang { processed: false }))
        .expect("plan");
    let err = client
        .get_cart(cid(), CUSTOMER, &cart_id)
        .await
        .expect_err("timeout");
    assert_eq!(err.class(), ErrorClass::Transient);
}

/// The ambiguous case: the checkout took effect and the connection dropped. Re-calling
/// checkout on the same cart with the same request id replays the result: one order in all.
#[tokio::test]
async fn a_dropped_checkout_is_outcome_unknown_and_replays_on_the_same_cart() {
    let sim = support::sim(SimConfig::default()).await;
    let client = support::client(&sim);
    let cart_id = ready_cart(&client, "drop").await;
    sim.set_faults(plan("checkout", Fault::Drop)).expect("plan");
    let request_id = RequestId::new();
    let err = client
        .checkout(cid(), request_id, CUSTOMER, &cart_id)
        .await
        .expect_err("dropped");
    assert_eq!(err.class(), ErrorClass::OutcomeUnknown);
    assert_eq!(sim.ledger().orders.len(), 1, "the checkout took effect");
    let replay = client
        .checkout(cid(), request_id, CUSTOMER, &cart_id)
        .await
        .expect("replay")
        .value;
    assert_eq!(replay.orders[0].id, sim.ledger().orders[0].order_id);
    assert_eq!(sim.ledger().orders.len(), 1, "never bought twice");
    assert_eq!(
        sim.ledger().checkouts[0].request_ids,
        vec![request_id.to_string(), request_id.to_string()]
    );
}

#[tokio::test]
async fn malformed_json_is_outcome_unknown_for_writes_and_transient_for_reads() {
    let sim = support::sim(SimConfig::default()).await;
    let client = support::client(&sim);
    let cart_id = ready_cart(&client, "malformed").await;
    sim.set_faults(plan("checkout", Fault::Malformed))
        .expect("plan");
    let err = client
        .checkout(cid(), RequestId::new(), CUSTOMER, &cart_id)
        .await
        .expect_err("truncated");
    assert_eq!(err.class(), ErrorClass::OutcomeUnknown);
    assert_eq!(err.status(), Some(200));
    sim.set_faults(plan("get_cart", Fault::Malformed))
        .expect("plan");
    let err = client
        .get_cart(cid(), CUSTOMER, &cart_id)
        .await
        .expect_err("truncated");
    assert_eq!(err.class(), ErrorClass::Transient);
}

#[tokio::test]
async fn latency_is_waited_out_and_timeouts_are_classified() {
    let sim = support::sim(SimConfig::default()).await;
    sim.set_faults(plan(
        "get_product",
        Fault::Latency {
            min_ms: 300,
            max_ms: 300,
        },
    ))
    .expect("plan");
    let impatient = fast_client(&sim, Duration::from_millis(100));
    let err = impatient
        .get_product(cid(), "DG7GMGF0DWTL", "US")
        .await
        .expect_err("too slow");
    assert_eq!(err.class(), ErrorClass::Transient);
    sim.set_faults(plan(
        "get_product",
        Fault::Latency {
            min_ms: 50,
            max_ms: 50,
        },
    ))
    .expect("plan");
    let patient = support::client(&sim);
    patient
        .get_product(cid(), "DG7GMGF0DWTL", "US")
        .await
        .expect("served after the delay");
}

/// 409/800064 while another request checks out the same cart.
#[tokio::test]
async fn a_concurrent_checkout_of_the_same_cart_is_in_flight() {
    let sim = std::sync::Arc::new(
        support::sim(SimConfig {
            checkout_duration_ms: 30_000,
            ..SimConfig::default()
        })
        .await,
    );
    let client = support::client(&sim);
    let cart_id = ready_cart(&client, "concurrent").await;
    let first = {
        let (client, cart_id) = (client.clone(), cart_id.clone());
        tokio::spawn(async move {
            client
                .checkout(cid(), RequestId::new(), CUSTOMER, &cart_id)
                .await
        })
    };
    sim.checkout_started().await;
    let err = client
        .checkout(cid(), RequestId::new(), CUSTOMER, &cart_id)
        .await
        .expect_err("in flight");
    assert_eq!(
        (err.class(), err.status(), err.code()),
        (ErrorClass::InFlight, Some(409), Some("800064"))
    );
    first.abort();
}

/// The older behaviour of a repeated checkout: 400/800065.
#[tokio::test]
async fn an_already_submitted_cart_is_reported_as_such() {
    let sim = support::sim(SimConfig {
        checkout_replay: CheckoutReplay::AlreadySubmitted,
        ..SimConfig::default()
    })
    .await;
    let client = support::client(&sim);
    let cart_id = ready_cart(&client, "submitted").await;
    client
        .checkout(cid(), RequestId::new(), CUSTOMER, &cart_id)
        .await
        .expect("first checkout");
    let err = client
        .checkout(cid(), RequestId::new(), CUSTOMER, &cart_id)
        .await
        .expect_err("second");
    assert_eq!(
        (err.class(), err.code()),
        (ErrorClass::AlreadySubmitted, Some("800065"))
    );
    assert_eq!(sim.ledger().orders.len(), 1);
}

/// The request and correlation ids we send are the ones the service sees.
#[tokio::test]
async fn request_and_correlation_ids_reach_the_service() {
    let sim = support::sim(SimConfig::default()).await;
    let client = support::client(&sim);
    let cart_id = ready_cart(&client, "ids").await;
    let (correlation, request) = (cid(), RequestId::new());
    let reply = client
        .checkout(correlation, request, CUSTOMER, &cart_id)
        .await
        .expect("checkout");
    assert_eq!(
        (reply.meta.request_id, reply.meta.correlation_id),
        (request, correlation)
    );
    let seen = support::requests_to(&sim, "checkout");
    assert_eq!(
        seen[0].request_id.as_deref(),
        Some(request.to_string().as_str())
    );
    assert_eq!(
        seen[0].correlation_id.as_deref(),
        Some(correlation.to_string().as_str())
    );
}

#[tokio::test]
async fn oversized_responses_are_refused() {
    let sim = support::sim(SimConfig::default()).await;
    let mut config = support::client_config(&sim);
    config.max_response_bytes = 512;
    let client = Client::new(config, support::credentials(&sim, true)).expect("client");
    let err = client
        .list_products(cid(), "US", "Azure", None)
        .await
        .expect_err("too big");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert!(err.to_string().contains("512-byte limit"), "{err}");
}
