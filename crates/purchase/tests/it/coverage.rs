//! Transition coverage, as in Temporal's sdk-core: the behavioural tests (the engine, the
//! workflow, the client and the simulator on loopback) record every transition they drive,
//! and this test fails when a row of the declared table (`crates/purchase/src/transitions.rs`)
//! that a Partner Center reply can reach is driven by none of them, when they drive a
//! transition the table does not declare, or when they drive a row declared unreachable.
//!
//! It runs the behavioural tests of `flow.rs` itself (they are plain functions) and a sweep
//! of faults, one purchase each, so the result does not depend on the order tests run in.

use std::collections::BTreeSet;

use pcsaga_purchase::transitions::{self, Driven, Reach};
use pcsaga_simulator::{CheckoutReplay, Fault, FaultPlan, FaultRule, SimConfig};
use serde_json::{json, Value};

use crate::flow::{self, direct, once, perpetual, ri, software, world_with, DRIVEN};

fn status(status: u16, code: &str) -> Fault {
    Fault::Status {
        status,
        code: Some(code.into()),
    }
}

fn respond(status: u16, body: Value) -> Fault {
    Fault::Respond {
        status,
        body: body.to_string(),
        repeat: 1,
        content_type: Some("application/json".into()),
        retry_after: None,
        processed: false,
    }
}

/// `fault` on the `n`-th request to `endpoint`, `times` times in a row.
fn rule(endpoint: &str, n: u64, times: u64, fault: Fault) -> FaultRule {
    FaultRule {
        endpoint: endpoint.into(),
        probability: 1.0,
        after: n,
        limit: Some(times),
        fault,
    }
}

struct Case {
    name: &'static str,
    request: Value,
    config: SimConfig,
    /// `{cart}` in a fault's body becomes the id of a real cart made before the purchase, so
    /// the saga's later PUT reaches a cart that exists.
    rules: Vec<FaultRule>,
    app_user: bool,
}

/// Makes a real cart for the customer (perpetual software) and returns its id.
async fn real_cart(sim: &pcsaga_simulator::Simulator) -> String {
    use pcsaga_partner_center::models::{Cart, CartLineItem};
    use pcsaga_partner_center::{
        Client, ClientConfig, CorrelationId, Credentials, RequestId, Secret,
    };
    let c = sim.config();
    let client = Client::new(
        ClientConfig::new(sim.base_url()),
        Credentials {
            token_url: sim.token_url(),
            resource: c.resource.clone(),
            client_id: c.client_id.clone(),
            client_secret: Secret::new(c.client_secret.clone()),
            refresh_token: None,
        },
    )
    .expect("client");
    let availabilities = client
        .list_availabilities(CorrelationId::new(), "DG7GMGF0DWTL", "0001", "US", None)
        .await
        .expect("availabilities");
    let cart = Cart {
        line_items: vec![CartLineItem {
            id: Some(0),
            catalog_item_id: availabilities.value[0].catalog_item_id.clone(),
            quantity: 1,
            ..CartLineItem::default()
        }],
        ..Cart::default()
    };
    let created = client
        .create_cart(
            CorrelationId::new(),
            RequestId::new(),
            "4c4d0c6e-38b9-4c5a-a0f4-3b2f1c1e7a10",
            &cart,
        )
        .await
        .expect("cart");
    created.value.id.expect("cart id")
}

fn case(name: &'static str, request: Value, rules: Vec<FaultRule>) -> Case {
    Case {
        name,
        request,
        config: SimConfig::default(),
        rules,
        app_user: true,
    }
}

fn cart_with_line_error(id: &str, code: &str) -> Value {
    json!({"id": id, "status": "Active", "lineItems": [{"id": 0, "catalogItemId": "DG7GMGF0DWTL:0001:DG7GMGF0DSJB", "quantity": 1,
        "error": {"errorCode": code, "errorDescription": "as served by the fault plan"}}]})
}

/// One purchase per case, each in a world of its own.
fn sweep() -> Vec<Case> {
    // Per state: a call the state makes, and which request of that endpoint it is.
    let per_state: [(&str, &str, u64, Value); 8] = [
        ("Enablement", "get_sku", 0, software("sweep")),
        ("RegistrationPolling", "registration_status", 1, ri("sweep")),
        ("Discovery", "get_product", 0, software("sweep")),
        ("InventoryCheck", "check_inventory", 0, ri("sweep")),
        ("CartBuild", "create_cart", 0, software("sweep")),
        ("Checkout", "checkout", 0, software("sweep")),
        ("OrderVisibilityPolling", "get_order", 0, software("sweep")),
        (
            "EntitlementFetch",
            "list_entitlements",
            0,
            software("sweep"),
        ),
    ];
    let mut cases = Vec::new();
    for (_state, endpoint, n, request) in per_state {
        cases.push(case(
            "503",
            request.clone(),
            vec![rule(endpoint, n, 1, status(503, "800003"))],
        ));
        cases.push(case(
            "401 twice",
            request.clone(),
            vec![rule(endpoint, n, 2, status(401, "400"))],
        ));
        cases.push(case(
            "400",
            request,
            vec![rule(endpoint, n, 1, status(400, "800002"))],
        ));
    }
    let two_subscriptions = {
        let mut r = ri("two-subscriptions");
        let mut second = r["items"][0].clone();
        second["provisioningContext"]["subscriptionId"] =
            json!("9a1f4c2e-5b3d-4e6f-8a7b-0c1d2e3f4a5b");
        if let Some(items) = r["items"].as_array_mut() {
            items.push(second);
        }
        r
    };
    let no_subscription = {
        let mut r = ri("no-subscription");
        r["items"][0]["provisioningContext"] = json!({"scope": "shared"});
        r
    };
    let restricted_at_checkout = Case {
        config: SimConfig {
            checkout_restricted_regions: vec!["eastus".into()],
            ..SimConfig::default()
        },
        ..case("every group fails", ri("all-groups-fail"), vec![])
    };
    let reconciling = |name, fault| Case {
        config: SimConfig {
            checkout_replay: CheckoutReplay::AlreadySubmitted,
            ..SimConfig::default()
        },
        ..case(
            name,
            perpetual("reconcile"),
            vec![
                once("checkout", 0, Fault::Drop),
                rule("list_orders", 0, 1, fault),
            ],
        )
    };
    let refused_then_cart = |name, fault| {
        case(
            name,
            perpetual("verify"),
            vec![
                rule("checkout", 0, 1, status(403, "800069")),
                rule("get_cart", 0, 1, fault),
            ],
        )
    };
    cases.extend([
        case("two subscriptions", two_subscriptions, vec![]),
        case("no subscription id", no_subscription, vec![]),
        restricted_at_checkout,
        case(
            "line error that may pass",
            software("may-pass"),
            vec![rule(
                "create_cart",
                0,
                1,
                respond(
                    201,
                    cart_with_line_error("fault-cart-1", "subscription_not_registered"),
                ),
            )],
        ),
        case(
            "stale catalog id",
            software("stale"),
            vec![rule(
                "create_cart",
                0,
                1,
                respond(
                    201,
                    cart_with_line_error("fault-cart-2", "catalog_item_id_is_not_valid"),
                ),
            )],
        ),
        case(
            "line error that fails",
            software("line-fails"),
            vec![rule(
                "create_cart",
                0,
                1,
                respond(
                    201,
                    cart_with_line_error("fault-cart-3", "inventory_not_available"),
                ),
            )],
        ),
        case(
            "stale catalog id, then a good PUT",
            perpetual("stale-put"),
            vec![rule(
                "create_cart",
                0,
                1,
                respond(
                    201,
                    cart_with_line_error("{cart}", "catalog_item_id_is_not_valid"),
                ),
            )],
        ),
        case(
            "a PUT answered with line errors",
            perpetual("put-fails"),
            vec![
                rule(
                    "create_cart",
                    0,
                    1,
                    respond(
                        201,
                        cart_with_line_error("{cart}", "unable_to_process_cart_line_item"),
                    ),
                ),
                rule(
                    "update_cart",
                    0,
                    1,
                    respond(
                        201,
                        cart_with_line_error("{cart}", "inventory_not_available"),
                    ),
                ),
            ],
        ),
        case(
            "checkout 409/800064",
            software("800064"),
            vec![rule("checkout", 0, 1, status(409, "800064"))],
        ),
        case(
            "checkout 404",
            perpetual("checkout-404"),
            vec![rule("checkout", 0, 1, status(404, "800008"))],
        ),
        refused_then_cart(
            "cart without status",
            respond(200, json!({"id": "x", "lineItems": []})),
        ),
        refused_then_cart("cart 404", status(404, "800008")),
        refused_then_cart("cart 409/800060", status(409, "800060")),
        refused_then_cart("cart 400/800065", status(400, "800065")),
        refused_then_cart("cart 400", status(400, "800002")),
        reconciling("order list 400", status(400, "800002")),
        case(
            "order cancelled",
            software("cancelled"),
            vec![rule(
                "get_order",
                0,
                1,
                respond(
                    200,
                    json!({"id": "x", "lineItems": [], "status": "cancelled"}),
                ),
            )],
        ),
        case(
            "order not visible",
            software("order-404"),
            vec![rule("get_order", 0, 1, status(404, "20000"))],
        ),
        case(
            "entitlements not listed",
            software("ent-later"),
            vec![rule(
                "list_entitlements",
                0,
                1,
                respond(200, json!({"totalCount": 0, "items": []})),
            )],
        ),
        case(
            "artifact not visible",
            ri("artifact-404"),
            vec![rule("artifact_details", 0, 1, status(404, "1000"))],
        ),
        Case {
            app_user: false,
            ..case("no app+user credentials", software("app-only"), vec![])
        },
        // Direct orders (E21).
        case(
            "direct order throttled",
            direct(perpetual("d-429")),
            vec![rule(
                "create_order",
                0,
                1,
                Fault::Throttle {
                    retry_after_s: 5,
                    http_date: false,
                },
            )],
        ),
        case(
            "direct order 409/800060",
            direct(perpetual("d-800060")),
            vec![rule("create_order", 0, 1, status(409, "800060"))],
        ),
        case(
            "direct order 503, then 404",
            direct(perpetual("d-503-404")),
            vec![
                rule("create_order", 0, 1, status(503, "800003")),
                rule("create_order", 1, 1, status(404, "1000")),
            ],
        ),
    ]);
    cases
}

#[test]
fn every_row_of_the_table_is_driven_by_a_behavioural_test() {
    // The behavioural tests of flow.rs, run here so that coverage does not depend on order.
    flow::each_kind_of_purchase_succeeds_with_one_order();
    flow::a_multi_item_cart_becomes_two_orders();
    flow::an_inventory_restriction_fails_before_any_cart();
    flow::a_lost_checkout_reply_is_recalled_on_the_same_cart();
    flow::already_submitted_is_reconciled_through_the_lagging_order_list();
    flow::a_partial_checkout_parks_and_money_rules_hold();
    flow::ambiguous_checkout_replies_never_buy_twice();
    flow::catalog_rules_fail_before_any_cart();
    flow::a_processed_checkout_answered_with_an_error_is_not_recorded_as_failed();
    flow::an_unprocessed_checkout_refusal_fails_only_once_the_cart_proves_it();
    flow::refused_credentials_hold_purchases_instead_of_failing_them();
    flow::orders_without_the_token_are_matched_by_customer_time_and_items();
    flow::each_kind_of_direct_purchase_succeeds_with_one_order_and_no_cart();
    flow::a_lost_direct_order_reply_never_buys_twice();
    flow::a_direct_order_proven_absent_is_sent_again_with_the_same_id();
    flow::direct_order_refusals_fail_only_when_they_prove_nothing_was_bought();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for case in sweep() {
            let w = world_with(case.config, None, case.app_user).await;
            let mut rules = case.rules;
            if rules
                .iter()
                .any(|r| matches!(&r.fault, Fault::Respond { body, .. } if body.contains("{cart}")))
            {
                let id = real_cart(&w.sim).await;
                for r in &mut rules {
                    if let Fault::Respond { body, .. } = &mut r.fault {
                        *body = body.replace("{cart}", &id);
                    }
                }
            }
            w.sim
                .set_faults(FaultPlan { seed: 1, rules })
                .expect("plan");
            let id = w.submit(case.request).await;
            w.settle().await;
            let (saga, _) = w.saga(&id).await;
            assert_ne!(
                saga.status,
                pcsaga_engine::SagaStatus::Active,
                "{}",
                case.name
            );
        }
    });
    let driven: BTreeSet<Driven> = DRIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let undeclared: Vec<String> = driven
        .iter()
        .filter(|d| transitions::row_of(d).is_none())
        .map(ToString::to_string)
        .collect();
    assert!(
        undeclared.is_empty(),
        "the behavioural tests drove transitions the table does not declare:\n  {}",
        undeclared.join("\n  ")
    );
    let hit: Vec<&transitions::Transition> =
        driven.iter().filter_map(transitions::row_of).collect();
    let missing: Vec<String> = transitions::table()
        .iter()
        .filter(|row| row.reach == Reach::Wire && !hit.contains(row))
        .map(|r| {
            format!(
                "{} | {} | {} | {} | {} ({})",
                r.state, r.call, r.outcome, r.decision, r.next, r.when
            )
        })
        .collect();
    let defensive: Vec<String> = hit
        .iter()
        .filter(|r| r.reach == Reach::Defensive)
        .map(|r| {
            format!(
                "{} | {} | {} | {} ({})",
                r.state, r.call, r.outcome, r.decision, r.when
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} row(s) of the table are driven by no behavioural test:\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
    assert!(
        defensive.is_empty(),
        "rows declared unreachable were driven; declare them Reach::Wire:\n  {}",
        defensive.join("\n  ")
    );
}
