//! E21, a direct order, through the client and the simulator: each kind of product bought,
//! every class of addendum §5.5, and the three behaviours of a repeated `MS-RequestId`.

use std::collections::BTreeMap;

use pcsaga_partner_center::models::{NewOrder, NewOrderLineItem, OrderStatus, RenewsTo};
use pcsaga_partner_center::{Client, ErrorClass, RequestId};
use pcsaga_simulator::{
    DirectOrderReplay, Fault, FaultPlan, FaultRule, SimCloud, SimConfig, Simulator,
};

use crate::support::{self, cid, AZURE_SUBSCRIPTION, CUSTOMER};

/// The offers of the demo: a reservation (1 year), a software subscription and perpetual
/// software, as `(product, sku, term)`.
const RESERVATION: (&str, &str, Option<&str>) = ("DZH318Z0BQ3Q", "0001", Some("P1Y"));
const SUBSCRIPTION: (&str, &str, Option<&str>) = ("DG7GMGF0FKZV", "0003", Some("P1Y"));
const PERPETUAL: (&str, &str, Option<&str>) = ("DG7GMGF0DWTL", "0001", None);

fn config() -> SimConfig {
    SimConfig {
        preregistered_subscriptions: vec![AZURE_SUBSCRIPTION.to_owned()],
        order_completion_s: 0,
        order_list_lag_s: 0,
        ..SimConfig::default()
    }
}

/// The body of a one-line direct order of `offer`, its line named `token`.
async fn order_of(
    client: &Client,
    (product, sku, term): (&str, &str, Option<&str>),
    token: &str,
) -> NewOrder {
    let c = cid();
    let sku_info = client
        .get_sku(c, product, sku, "US")
        .await
        .expect("E6")
        .value;
    let availability = client
        .list_availabilities(c, product, sku, "US", Some("commercial"))
        .await
        .expect("E7")
        .value
        .into_iter()
        .find(|a| a.is_purchasable == Some(true) && term.is_none_or(|t| a.has_term(t)))
        .expect("a purchasable availability");
    let mut context = BTreeMap::new();
    if let Some(duration) = sku_info.dynamic_attribute("duration") {
        context.insert("subscriptionId".to_owned(), AZURE_SUBSCRIPTION.to_owned());
        context.insert("scope".to_owned(), "shared".to_owned());
        context.insert("duration".to_owned(), duration);
    }
    NewOrder {
        reference_customer_id: CUSTOMER.to_owned(),
        billing_cycle: "one_time".to_owned(),
        line_items: vec![NewOrderLineItem {
            line_item_number: 0,
            offer_id: availability.catalog_item_id,
            quantity: 1,
            friendly_name: Some(token.to_owned()),
            provisioning_context: context,
            partner_id_on_record: None,
            term_duration: term.map(str::to_owned),
            renews_to: None,
        }],
    }
}

#[tokio::test]
async fn a_direct_order_of_each_kind_is_created_pending_and_completes() {
    let sim = support::sim(SimConfig {
        order_completion_s: 60,
        ..config()
    })
    .await;
    let client = support::client(&sim);
    for (n, offer) in [RESERVATION, SUBSCRIPTION, PERPETUAL]
        .into_iter()
        .enumerate()
    {
        let token = format!("pcs-direct-{n}");
        let body = order_of(&client, offer, &token).await;
        let created = client
            .create_order(cid(), RequestId::new(), CUSTOMER, &body)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", offer.0))
            .value;
        assert_eq!(created.status, Some(OrderStatus::Pending), "{}", offer.0);
        let line = &created.line_items[0];
        assert_eq!(
            line.offer_id, body.line_items[0].offer_id,
            "the offer is echoed"
        );
        assert_eq!(line.friendly_name.as_deref(), Some(token.as_str()));
        sim.advance_clock(std::time::Duration::from_secs(61));
        let read = client
            .get_order(cid(), CUSTOMER, &created.id)
            .await
            .expect("E14")
            .value;
        assert_eq!(read.status, Some(OrderStatus::Completed), "{}", offer.0);
        let listed = client
            .list_orders(cid(), CUSTOMER, Some("OneTime"))
            .await
            .expect("E16")
            .value;
        assert!(
            listed.iter().any(|o| o.id == created.id),
            "{} is listed",
            offer.0
        );
    }
    let ledger = sim.ledger();
    assert_eq!(ledger.direct_orders.len(), 3);
    assert!(ledger
        .direct_orders
        .iter()
        .all(|d| d.calls == 1 && d.orders.len() == 1));
}

/// What a case changes: the body, the simulator's settings, or a fault on `create_order`.
enum Case {
    Body(fn(&mut NewOrder)),
    Config(fn(&mut SimConfig)),
    Fault(Fault),
}

/// Sends one direct order under `case` and asserts the class, status and code of the error,
/// and whether an order exists afterwards.
async fn check(label: &str, case: Case, expected: (ErrorClass, u16, Option<&str>), created: bool) {
    let mut settings = config();
    if let Case::Config(change) = &case {
        change(&mut settings);
    }
    let sim: Simulator = support::sim(settings).await;
    let client = support::client(&sim);
    let mut body = order_of(&client, RESERVATION, "pcs-check").await;
    match case {
        Case::Body(change) => change(&mut body),
        Case::Fault(fault) => sim
            .set_faults(FaultPlan {
                seed: 0,
                rules: vec![FaultRule {
                    endpoint: "create_order".to_owned(),
                    probability: 1.0,
                    after: 0,
                    limit: None,
                    fault,
                }],
            })
            .expect("plan"),
        Case::Config(_) => {}
    }
    let err = client
        .create_order(cid(), RequestId::new(), CUSTOMER, &body)
        .await
        .expect_err(label);
    let (class, status, code) = expected;
    assert_eq!(err.class(), class, "{label}: {err}");
    if status != 0 {
        assert_eq!(err.status(), Some(status), "{label}: {err}");
    }
    assert_eq!(err.code(), code, "{label}: {err}");
    let orders = sim.ledger().orders.len();
    assert_eq!(orders, usize::from(created), "{label}: orders created");
}

#[tokio::test]
async fn every_create_order_outcome_is_classified() {
    use ErrorClass::*;
    // No order was created: a refusal.
    check(
        "unknown offer",
        Case::Body(|b| b.line_items[0].offer_id = "DZH318Z0BQ3Q:0001:NOPE".into()),
        (Business, 400, Some("800004")),
        false,
    )
    .await;
    check(
        "line numbers not 0..n-1",
        Case::Body(|b| b.line_items[0].line_item_number = 1),
        (Business, 400, Some("800071")),
        false,
    )
    .await;
    check(
        "another customer in the body",
        Case::Body(|b| b.reference_customer_id = "d6bf25b7-e0a8-4f2d-a31b-97b55cfc774d".into()),
        (Business, 400, Some("800002")),
        false,
    )
    .await;
    check(
        "renewsTo of three years",
        Case::Body(|b| {
            b.line_items[0].renews_to = Some(RenewsTo {
                term_duration: "P3Y".into(),
            })
        }),
        (Business, 400, Some("800002")),
        false,
    )
    .await;
    check(
        "partnerIdOnRecord not a partner id",
        Case::Body(|b| b.line_items[0].partner_id_on_record = Some("not-an-id".into())),
        (Business, 400, Some("800002")),
        false,
    )
    .await;
    check(
        "subscription not registered",
        Case::Config(|c| c.preregistered_subscriptions.clear()),
        (Business, 400, Some("800030")),
        false,
    )
    .await;
    check(
        "a reservation outside the public cloud",
        Case::Config(|c| c.cloud = SimCloud::UsGovernment),
        (Business, 400, Some("800002")),
        false,
    )
    .await;
    check(
        "risk check refused",
        Case::Fault(Fault::Status {
            status: 403,
            code: Some("800069".into()),
        }),
        (Business, 403, Some("800069")),
        false,
    )
    .await;
    // Not processed: retry later with the same id.
    check(
        "throttled",
        Case::Fault(Fault::Throttle {
            retry_after_s: 7,
            http_date: false,
        }),
        (Throttled, 429, None),
        false,
    )
    .await;
    // May already exist: reconcile, never a plain re-send.
    check(
        "in progress",
        Case::Fault(Fault::Status {
            status: 409,
            code: Some("800060".into()),
        }),
        (InFlight, 409, Some("800060")),
        false,
    )
    .await;
    check(
        "500/800005 before processing",
        Case::Fault(Fault::Status {
            status: 500,
            code: Some("800005".into()),
        }),
        (OutcomeUnknown, 500, Some("800005")),
        false,
    )
    .await;
    check(
        "503",
        Case::Fault(Fault::Status {
            status: 503,
            code: Some("800003".into()),
        }),
        (OutcomeUnknown, 503, Some("800003")),
        false,
    )
    .await;
    check(
        "500/800005 after the order was created",
        Case::Fault(Fault::Respond {
            status: 500,
            body: "{\"code\":\"800005\",\"description\":\"Create order was not successful.\",\"source\":\"PartnerFD\"}".into(),
            repeat: 1,
            content_type: Some("application/json".into()),
            retry_after: None,
            processed: true,
        }),
        (OutcomeUnknown, 500, Some("800005")),
        true,
    )
    .await;
    check(
        "reply dropped after the order was created",
        Case::Fault(Fault::Drop),
        (OutcomeUnknown, 0, None),
        true,
    )
    .await;
}

/// The same `MS-RequestId` posted twice: `replay` answers the first order, `conflict` says
/// 409/800060, `ignore` creates a second order (what only proven absence may risk).
#[tokio::test]
async fn a_repeated_request_id_does_what_the_service_is_set_to() {
    for (replay, orders) in [
        (DirectOrderReplay::Replay, 1),
        (DirectOrderReplay::Conflict, 1),
        (DirectOrderReplay::Ignore, 2),
    ] {
        let sim = support::sim(SimConfig {
            direct_order_replay: replay,
            ..config()
        })
        .await;
        let client = support::client(&sim);
        let body = order_of(&client, PERPETUAL, "pcs-repeat").await;
        let id = RequestId::new();
        let first = client
            .create_order(cid(), id, CUSTOMER, &body)
            .await
            .expect("first")
            .value;
        let again = client.create_order(cid(), id, CUSTOMER, &body).await;
        match replay {
            DirectOrderReplay::Replay => {
                assert_eq!(again.expect("replayed").value.id, first.id)
            }
            DirectOrderReplay::Conflict => {
                let err = again.expect_err("conflict");
                assert_eq!(
                    (err.class(), err.code()),
                    (ErrorClass::InFlight, Some("800060"))
                );
            }
            DirectOrderReplay::Ignore => {
                assert_ne!(again.expect("a second order").value.id, first.id)
            }
        }
        let ledger = sim.ledger();
        assert_eq!(ledger.orders.len(), orders, "{replay:?}");
        assert_eq!(
            ledger.direct_orders.len(),
            1,
            "{replay:?}: one entry per request id"
        );
        assert_eq!(ledger.direct_orders[0].orders.len(), orders, "{replay:?}");
        let calls = if replay == DirectOrderReplay::Conflict {
            1
        } else {
            2
        };
        assert_eq!(ledger.direct_orders[0].calls, calls, "{replay:?}");
    }
}

/// A direct order behaves as a checkout's order afterwards: readable by id at once, in the
/// customer's order list only after the list lag (rule 9.16's reason to wait before concluding
/// absence), and its reservation in the entitlements with its order as `referenceOrder`.
#[tokio::test]
async fn a_direct_order_reaches_the_list_after_the_lag_and_the_entitlements() {
    let sim = support::sim(SimConfig {
        order_list_lag_s: 900,
        ..config()
    })
    .await;
    let client = support::client(&sim);
    let body = order_of(&client, RESERVATION, "pcs-lag").await;
    let order = client
        .create_order(cid(), RequestId::new(), CUSTOMER, &body)
        .await
        .expect("created")
        .value;
    client
        .get_order(cid(), CUSTOMER, &order.id)
        .await
        .expect("readable by id at once");
    let listed =
        |orders: Vec<pcsaga_partner_center::models::Order>| orders.iter().any(|o| o.id == order.id);
    let before = client
        .list_orders(cid(), CUSTOMER, None)
        .await
        .expect("E15")
        .value;
    assert!(!listed(before), "not in the list before the lag");
    sim.advance_clock(std::time::Duration::from_secs(901));
    let after = client
        .list_orders(cid(), CUSTOMER, Some("OneTime"))
        .await
        .expect("E16")
        .value;
    assert!(listed(after), "in the list after the lag");
    let entitlements = client
        .list_entitlements(cid(), CUSTOMER, None, false)
        .await
        .expect("E18")
        .value;
    assert!(
        entitlements
            .iter()
            .any(|e| e.reference_order.as_ref().is_some_and(|r| r.id == order.id)),
        "the reservation is among the entitlements: {entitlements:?}"
    );
}
