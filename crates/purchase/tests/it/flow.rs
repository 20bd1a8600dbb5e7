//! Whole purchases: the engine with a manual clock and a real SQLite file, the workflow, the
//! client, and the simulator on loopback. Time moves by hand, on both sides.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pcsaga_engine::{
    Engine, EngineConfig, ManualClock, Policies, SagaRecord, SagaStatus, SqliteConfig, SqliteStore,
    Workflow,
};
use pcsaga_partner_center::{Client, ClientConfig, Credentials, Secret};
use pcsaga_purchase::transitions::Driven;
use pcsaga_purchase::workflow::Recorder;
use pcsaga_purchase::{parse_value, PurchaseContext, PurchaseWorkflow};
use pcsaga_simulator::{
    CheckoutReplay, DirectOrderReplay, Fault, FaultPlan, FaultRule, SimConfig, Simulator,
};
use serde_json::{json, Value};

const CUSTOMER: &str = "4c4d0c6e-38b9-4c5a-a0f4-3b2f1c1e7a10";
const SUBSCRIPTION: &str = "1c461a25-f729-4fa5-aadb-280947dd05e8";
const POLICIES: &str = include_str!("../../../../workflows/one-time-purchase.toml");

pub(crate) struct World {
    pub(crate) sim: Simulator,
    pub(crate) engine: Engine<PurchaseWorkflow, SqliteStore>,
    clock: Arc<ManualClock>,
    _dir: tempfile::TempDir,
}

/// Every transition the behavioural tests of this binary drove: the table's coverage
/// (`coverage.rs`) reads it.
pub(crate) static DRIVEN: std::sync::Mutex<std::collections::BTreeSet<Driven>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

pub(crate) async fn world(config: SimConfig) -> World {
    world_with(config, None, true).await
}

async fn world_with_secret(config: SimConfig, secret: Option<&str>) -> World {
    world_with(config, secret, true).await
}

/// A world whose client sends `secret` (default: the simulator's own) as its client secret,
/// with app+user credentials or without.
pub(crate) async fn world_with(config: SimConfig, secret: Option<&str>, app_user: bool) -> World {
    let sim = Simulator::start(config).await.expect("simulator");
    let c = sim.config();
    let credentials = Credentials {
        token_url: sim.token_url(),
        resource: c.resource.clone(),
        client_id: c.client_id.clone(),
        client_secret: Secret::new(secret.unwrap_or(&c.client_secret).to_owned()),
        refresh_token: app_user.then(|| Secret::new(c.refresh_token.clone())),
    };
    let mut client_config = ClientConfig::new(sim.base_url());
    client_config.timeout = Duration::from_secs(2);
    let client = Client::new(client_config, credentials).expect("client");
    let workflow = PurchaseWorkflow::new(client).with_recorder(Recorder(Arc::new(|driven| {
        DRIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(driven);
    })));
    let policies = Policies::parse(POLICIES, workflow.name(), &workflow.states(), |s, p| {
        workflow.validate_policy(s, p)
    })
    .expect("policies");
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("pcsaga.db")))
        .await
        .expect("store");
    let clock = Arc::new(ManualClock::at(Utc::now()));
    let engine = Engine::new(
        workflow,
        store,
        policies,
        clock.clone(),
        EngineConfig::new("test-worker"),
    );
    World {
        sim,
        engine,
        clock,
        _dir: dir,
    }
}

impl World {
    pub(crate) async fn submit(&self, request: Value) -> String {
        let request = parse_value(&request).expect("valid request");
        pcsaga_purchase::submit(&self.engine, &request)
            .await
            .expect("submit")
            .saga
            .id
    }

    /// Runs due work and moves both clocks a minute at a time until nothing is active.
    pub(crate) async fn settle(&self) {
        for _ in 0..2000 {
            // Bounded: a saga that never stops being due (a planning loop) fails the test
            // instead of hanging the run.
            tokio::time::timeout(Duration::from_secs(60), self.engine.run_due())
                .await
                .expect("run_due returns: nothing is due for ever")
                .expect("run");
            let active = self
                .engine
                .list(&pcsaga_engine::ListFilter {
                    status: Some(SagaStatus::Active),
                    ..Default::default()
                })
                .await
                .expect("list");
            if active.is_empty() {
                return;
            }
            self.clock.advance(Duration::from_secs(60));
            self.sim.advance_clock(Duration::from_secs(60));
        }
        panic!("purchases did not settle");
    }

    pub(crate) async fn saga(&self, id: &str) -> (SagaRecord, PurchaseContext) {
        let saga = self.engine.get(id).await.expect("saga");
        let ctx = pcsaga_purchase::context::decode(saga.context_schema, &saga.context, &saga.input)
            .expect("context");
        (saga, ctx)
    }

    /// Orders the simulator created for a purchase (by its token).
    async fn orders_of(&self, id: &str) -> usize {
        let (_, ctx) = self.saga(id).await;
        self.sim.ledger().orders_with_token(&ctx.token).len()
    }
}

pub(crate) fn ri(key: &str) -> Value {
    json!({"idempotencyKey": key, "customerId": CUSTOMER, "country": "US", "segment": "commercial", "items": [
        {"productId": "DZH318Z0BQ3Q", "skuId": "0001", "quantity": 2, "termDuration": "P1Y", "billingCycle": "one_time",
         "provisioningContext": {"subscriptionId": SUBSCRIPTION, "scope": "shared"}}]})
}

pub(crate) fn software(key: &str) -> Value {
    json!({"idempotencyKey": key, "customerId": CUSTOMER, "country": "US", "items": [
        {"productId": "DG7GMGF0FKZV", "skuId": "0003", "quantity": 5, "termDuration": "P1Y", "friendlyName": "Datacenter cores"}]})
}

pub(crate) fn perpetual(key: &str) -> Value {
    json!({"idempotencyKey": key, "customerId": CUSTOMER, "country": "US", "items": [{"productId": "DG7GMGF0DWTL", "skuId": "0001", "quantity": 1}]})
}

#[tokio::test]
pub(crate) async fn each_kind_of_purchase_succeeds_with_one_order() {
    let w = world(SimConfig::default()).await;
    let ids = [
        w.submit(ri("ri-1")).await,
        w.submit(software("sw-1")).await,
        w.submit(perpetual("pp-1")).await,
    ];
    w.settle().await;
    for id in &ids {
        let (saga, ctx) = w.saga(id).await;
        assert_eq!(
            saga.status,
            SagaStatus::Succeeded,
            "{id}: {:?}",
            saga.last_error
        );
        assert_eq!(w.orders_of(id).await, 1);
        assert_eq!(ctx.entitlements.len(), 1);
        assert!(ctx.orders.iter().all(|o| o.completed));
    }
    // The RI needed registration and an inventory check, and got its reservation ids.
    let (_, ri_ctx) = w.saga(&ids[0]).await;
    assert!(ri_ctx.registrations.iter().all(|r| r.register_sent));
    assert!(ri_ctx.items[0].inventory_checked);
    assert_eq!(
        ri_ctx.items[0]
            .provisioning_context
            .get("duration")
            .map(String::as_str),
        Some("1Year"),
        "filled from the SKU"
    );
    assert_eq!(
        ri_ctx.entitlements[0].artifacts[0]
            .reservation_ids
            .as_ref()
            .map(Vec::len),
        Some(1)
    );
    // Every side-effecting call had its intent recorded first.
    let history = w.engine.history(&ids[0]).await.expect("history");
    let checkout_intent = history
        .iter()
        .position(|r| {
            r.kind == "intent"
                && r.detail
                    .as_deref()
                    .is_some_and(|d| d.contains("\"checkout\""))
        })
        .expect("intent");
    let checkout_attempt = history
        .iter()
        .position(|r| r.kind == "transition" && r.call.as_deref() == Some("checkout"))
        .expect("attempt");
    assert!(checkout_intent < checkout_attempt);
    assert_eq!(w.sim.ledger().checkouts.len(), 3);
}

#[tokio::test]
pub(crate) async fn a_multi_item_cart_becomes_two_orders() {
    let w = world(SimConfig::default()).await;
    let mut request = ri("multi");
    request["items"].as_array_mut().expect("items").push(
        json!({"productId": "DG7GMGF0FKZV", "skuId": "0003", "quantity": 2, "termDuration": "P3Y"}),
    );
    request["items"]
        .as_array_mut()
        .expect("items")
        .push(json!({"productId": "DG7GMGF0DWM3", "skuId": "0002", "quantity": 1}));
    let id = w.submit(request).await;
    w.settle().await;
    let (saga, ctx) = w.saga(&id).await;
    assert_eq!(saga.status, SagaStatus::Succeeded, "{:?}", saga.last_error);
    assert_eq!(
        ctx.orders.len(),
        2,
        "reservations and perpetual share a group; the subscription has its own"
    );
    assert_eq!(ctx.entitlements.len(), 3);
    assert_eq!(w.sim.ledger().checkouts.len(), 1);
}

#[tokio::test]
pub(crate) async fn an_inventory_restriction_fails_before_any_cart() {
    let w = world(SimConfig::default()).await;
    let mut request = ri("restricted");
    request["items"][0]["skuId"] = json!("0003"); // japanwest, restricted by default
    let id = w.submit(request).await;
    w.settle().await;
    let (saga, _) = w.saga(&id).await;
    assert_eq!(
        (saga.status, saga.state.as_str()),
        (SagaStatus::Failed, "InventoryCheck")
    );
    assert!(
        saga.last_error
            .as_deref()
            .is_some_and(|e| e.contains("NotAvailableForSubscription")),
        "{:?}",
        saga.last_error
    );
    assert!(w.sim.ledger().carts.is_empty());
}

#[tokio::test]
pub(crate) async fn a_lost_checkout_reply_is_recalled_on_the_same_cart() {
    let w = world(SimConfig::default()).await;
    w.sim
        .set_faults(FaultPlan {
            seed: 1,
            rules: vec![FaultRule {
                endpoint: "checkout".into(),
                probability: 1.0,
                after: 0,
                limit: Some(1),
                fault: Fault::Drop,
            }],
        })
        .expect("plan");
    let id = w.submit(perpetual("dropped")).await;
    w.settle().await;
    let (saga, _) = w.saga(&id).await;
    assert_eq!(saga.status, SagaStatus::Succeeded, "{:?}", saga.last_error);
    assert_eq!(w.orders_of(&id).await, 1, "bought once");
    let ledger = w.sim.ledger();
    assert_eq!(ledger.carts.len(), 1, "never a second cart");
    assert_eq!(ledger.checkouts[0].calls, 2);
    assert_eq!(
        ledger.checkouts[0].request_ids[0], ledger.checkouts[0].request_ids[1],
        "the same MS-RequestId after a lost reply"
    );
}

#[tokio::test]
pub(crate) async fn already_submitted_is_reconciled_through_the_lagging_order_list() {
    let w = world(SimConfig {
        checkout_replay: CheckoutReplay::AlreadySubmitted,
        order_list_lag_s: 900,
        ..SimConfig::default()
    })
    .await;
    w.sim
        .set_faults(FaultPlan {
            seed: 1,
            rules: vec![FaultRule {
                endpoint: "checkout".into(),
                probability: 1.0,
                after: 0,
                limit: Some(1),
                fault: Fault::Drop,
            }],
        })
        .expect("plan");
    let id = w.submit(software("reconcile")).await;
    w.settle().await;
    let (saga, ctx) = w.saga(&id).await;
    assert_eq!(saga.status, SagaStatus::Succeeded, "{:?}", saga.last_error);
    assert!(ctx
        .checkout
        .reconcile_reason
        .as_deref()
        .is_some_and(|r| r.contains("800065")));
    assert_eq!(w.orders_of(&id).await, 1);
    let history = w.engine.history(&id).await.expect("history");
    assert!(
        history
            .iter()
            .filter(|r| r.call.as_deref() == Some("list_orders"))
            .count()
            >= 2,
        "it polled the list until the order appeared"
    );
}

#[tokio::test]
pub(crate) async fn a_partial_checkout_parks_and_money_rules_hold() {
    let w = world(SimConfig {
        checkout_restricted_regions: vec!["eastus".into()],
        ..SimConfig::default()
    })
    .await;
    let mut request = ri("partial");
    request["items"].as_array_mut().expect("items").push(
        json!({"productId": "DG7GMGF0FKZV", "skuId": "0003", "quantity": 1, "termDuration": "P1Y"}),
    );
    let id = w.submit(request).await;
    w.settle().await;
    let (saga, ctx) = w.saga(&id).await;
    assert_eq!(saga.status, SagaStatus::NeedsAttention);
    assert!(
        saga.last_error
            .as_deref()
            .is_some_and(|e| e.contains("partly bought") && e.contains("800010")),
        "{:?}",
        saga.last_error
    );
    assert_eq!(ctx.orders.len(), 1);
    // Going back before Checkout could buy twice: refused. Cancelling is refused too.
    let refused = w
        .engine
        .resume(&id, Some("CartBuild"), "try again")
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("could buy twice"), "{refused}");
    let refused = w.engine.cancel(&id, "stop").await.expect_err("refused");
    assert!(
        refused.to_string().contains("money may have moved"),
        "{refused}"
    );
    // Resuming from Checkout re-attempts the failed group on the same cart: the engine runs
    // it, the simulator sees a second checkout of the one cart, the order already made is
    // not made again, and (the region still restricted) the purchase parks again.
    w.engine
        .resume(&id, Some("Checkout"), "inventory is back")
        .await
        .expect("resume");
    w.settle().await;
    let ledger = w.sim.ledger();
    assert_eq!(ledger.carts.len(), 1, "no second cart");
    assert_eq!(ledger.checkouts.len(), 1, "the same cart");
    assert_eq!(ledger.checkouts[0].calls, 2, "checked out again");
    assert_eq!(
        w.orders_of(&id).await,
        1,
        "the completed group is not bought twice"
    );
    let (saga, _) = w.saga(&id).await;
    assert_eq!(
        saga.status,
        SagaStatus::NeedsAttention,
        "{:?}",
        saga.last_error
    );
}

#[tokio::test]
pub(crate) async fn the_same_idempotency_key_is_one_purchase() {
    let w = world(SimConfig::default()).await;
    let first = w.submit(perpetual("same")).await;
    let second = w.submit(perpetual("same")).await;
    assert_eq!(first, second);
    w.settle().await;
    assert_eq!(w.sim.ledger().checkouts.len(), 1);
}

/// Goal: every checkout reply that leaves the outcome in doubt (the checkout took effect, the
/// reply was lost, cut or garbled) ends with one order, never two. Method: one purchase per
/// case with the fault on its first checkout; the auditor checks the ledger and history.
#[tokio::test]
pub(crate) async fn ambiguous_checkout_replies_never_buy_twice() {
    let garbled = |status: u16, body: &str| Fault::Respond {
        status,
        body: body.into(),
        repeat: 1,
        content_type: None,
        retry_after: None,
        processed: true,
    };
    let cases = vec![
        ("lost reply", Fault::Drop),
        ("truncated JSON", Fault::Malformed),
        ("dropped mid-body", Fault::BodyDrop),
        ("hung after processing", Fault::Hang { processed: true }),
        ("HTML with 200", garbled(200, "<html>ok</html>")),
        ("500 after processing", garbled(500, "<html>error</html>")),
        ("503 after processing", garbled(503, "")),
        ("empty 201", garbled(201, "")),
        (
            "orders without ids",
            garbled(201, "{\"orders\":[{}],\"orderErrors\":[]}"),
        ),
    ];
    for (name, fault) in cases {
        let w = world(SimConfig {
            hang_s: 3,
            ..SimConfig::default()
        })
        .await;
        w.sim
            .set_faults(FaultPlan {
                seed: 1,
                rules: vec![FaultRule {
                    endpoint: "checkout".into(),
                    probability: 1.0,
                    after: 0,
                    limit: Some(1),
                    fault,
                }],
            })
            .expect("plan");
        let id = w
            .submit(perpetual(&format!("ambiguous-{}", name.replace(' ', "-"))))
            .await;
        w.settle().await;
        let (saga, _) = w.saga(&id).await;
        assert_eq!(
            saga.status,
            SagaStatus::Succeeded,
            "{name}: {:?}",
            saga.last_error
        );
        let expect = pcsaga_testkit::Expect {
            purchases: 1,
            settled: true,
            wall_clock: false,
        };
        let audit = pcsaga_testkit::audit(
            &pcsaga_engine::AnyStore::Sqlite(w.engine.store().clone()),
            &w.sim.ledger(),
            &w.sim.requests(),
            &expect,
        )
        .await;
        audit.assert_clean(&format!(
            "cargo test -p pcsaga-purchase ambiguous_checkout_replies ({name})"
        ));
        assert_eq!((audit.checkouts, audit.orders), (1, 1), "{name}");
    }
}

/// What submission cannot know without the catalog is refused at discovery, before any cart,
/// with the field named: a quantity above the SKU's maximum, a software subscription in a
/// market where it is not sold.
#[tokio::test]
pub(crate) async fn catalog_rules_fail_before_any_cart() {
    let w = world(SimConfig::default()).await;
    let mut too_many = perpetual("too-many");
    too_many["items"][0]["quantity"] = json!(101);
    let too_many = w.submit(too_many).await;
    let brazil = w
        .submit(json!({"idempotencyKey": "brazil", "customerId": "d6bf25b7-e0a8-4f2d-a31b-97b55cfc774d", "country": "BR",
                       "items": [{"productId": "DG7GMGF0FKZV", "skuId": "0003", "quantity": 1, "termDuration": "P1Y"}]}))
        .await;
    w.settle().await;
    let (saga, _) = w.saga(&too_many).await;
    assert_eq!(
        (saga.status, saga.state.as_str()),
        (SagaStatus::Failed, "Discovery")
    );
    assert!(saga.last_error.as_deref().is_some_and(|e| e.contains("items[0]") && e.contains("above the SKU's maximum of 100")), "{:?}", saga.last_error);
    let (saga, _) = w.saga(&brazil).await;
    assert_eq!(saga.status, SagaStatus::Failed);
    assert!(
        saga.last_error
            .as_deref()
            .is_some_and(|e| e.contains("items[0]") && e.contains("in BR")),
        "{:?}",
        saga.last_error
    );
    assert!(w.sim.ledger().carts.is_empty());
}

/// One fault on the `n`-th (from 0) request to `endpoint`.
pub(crate) fn once(endpoint: &str, n: u64, fault: Fault) -> FaultRule {
    FaultRule {
        endpoint: endpoint.into(),
        probability: 1.0,
        after: n,
        limit: Some(1),
        fault,
    }
}

/// A reply of `status` with a Partner Center error body, sent after the request took effect.
fn processed_error(status: u16, code: &str) -> Fault {
    Fault::Respond {
        status,
        body: json!({"code": code, "description": "as served by the fault plan", "source": "PartnerFD"}).to_string(),
        repeat: 1,
        content_type: Some("application/json".into()),
        retry_after: None,
        processed: true,
    }
}

/// A checkout that went through but was answered with an error is never recorded as "nothing
/// was bought": the cart is read (Ordered), the orders are found by the token, and the purchase
/// succeeds with its one order. The in-flight codes keep their meaning under any status.
#[tokio::test]
pub(crate) async fn a_processed_checkout_answered_with_an_error_is_not_recorded_as_failed() {
    let cases = [
        ("200/800060", processed_error(200, "800060")),
        ("400/800064", processed_error(400, "800064")),
        ("409/800002", processed_error(409, "800002")),
        ("403/800069", processed_error(403, "800069")),
        ("400/800009", processed_error(400, "800009")),
    ];
    for (name, fault) in cases {
        let w = world(SimConfig::default()).await;
        w.sim
            .set_faults(FaultPlan {
                seed: 1,
                rules: vec![once("checkout", 0, fault)],
            })
            .expect("plan");
        let id = w
            .submit(perpetual(&format!("refused-{}", name.replace('/', "-"))))
            .await;
        w.settle().await;
        let (saga, ctx) = w.saga(&id).await;
        assert_eq!(
            saga.status,
            SagaStatus::Succeeded,
            "{name}: {:?}",
            saga.last_error
        );
        assert_eq!(ctx.orders.len(), 1, "{name}: the order is recorded");
        assert_eq!(w.orders_of(&id).await, 1, "{name}: bought once");
        let ledger = w.sim.ledger();
        assert_eq!(ledger.carts.len(), 1, "{name}: one cart");
        assert_eq!(ledger.checkouts.len(), 1, "{name}: one checkout");
    }
}

/// A refusal of a checkout that did not go through fails the purchase only after the cart
/// proves it (it still reads Active), and the reason says so.
#[tokio::test]
pub(crate) async fn an_unprocessed_checkout_refusal_fails_only_once_the_cart_proves_it() {
    let w = world(SimConfig::default()).await;
    w.sim
        .set_faults(FaultPlan {
            seed: 1,
            rules: vec![once(
                "checkout",
                0,
                Fault::Status {
                    status: 403,
                    code: Some("800069".into()),
                },
            )],
        })
        .expect("plan");
    let id = w.submit(perpetual("refused-for-real")).await;
    w.settle().await;
    let (saga, ctx) = w.saga(&id).await;
    assert_eq!(saga.status, SagaStatus::Failed, "{:?}", saga.last_error);
    let reason = saga.last_error.unwrap_or_default();
    assert!(reason.contains("still reads Active"), "{reason}");
    assert!(ctx.orders.is_empty());
    assert_eq!(w.orders_of(&id).await, 0, "nothing was bought");
    let history = w.engine.history(&id).await.expect("history");
    assert!(
        history
            .iter()
            .any(|r| r.call.as_deref() == Some("get_cart")),
        "the cart was read before failing"
    );
}

/// The request-id rule for every side-effecting call the simulator lets us reach: after a
/// lost reply and then a 5xx (or a 429), the same `MS-RequestId` is sent again, so a create
/// processed unseen is de-duplicated instead of leaving a second cart.
#[tokio::test]
pub(crate) async fn side_effecting_calls_keep_their_request_id_until_a_reply_settles_them() {
    let unanswered = [
        Fault::Status {
            status: 503,
            code: None,
        },
        Fault::Throttle {
            retry_after_s: 1,
            http_date: false,
        },
    ];
    for (endpoint, request) in [
        ("create_cart", perpetual("rid-cart")),
        ("checkout", perpetual("rid-checkout")),
        ("register", ri("rid-register")),
    ] {
        for second in &unanswered {
            let w = world(SimConfig::default()).await;
            w.sim
                .set_faults(FaultPlan {
                    seed: 1,
                    rules: vec![
                        once(endpoint, 0, Fault::Drop),
                        once(endpoint, 1, second.clone()),
                    ],
                })
                .expect("plan");
            let id = w.submit(request.clone()).await;
            w.settle().await;
            let (saga, _) = w.saga(&id).await;
            assert_eq!(
                saga.status,
                SagaStatus::Succeeded,
                "{endpoint}: {:?}",
                saga.last_error
            );
            let ids: Vec<Option<String>> = w
                .sim
                .requests()
                .iter()
                .filter(|r| r.endpoint == endpoint)
                .map(|r| r.request_id.clone())
                .collect();
            assert!(
                ids.len() >= 3,
                "{endpoint}: lost, {second:?}, then answered: {ids:?}"
            );
            assert!(
                ids.iter().all(|id| id == &ids[0]),
                "{endpoint} after a lost reply and {second:?}: one MS-RequestId, got {ids:?}"
            );
            let ledger = w.sim.ledger();
            assert_eq!(ledger.carts.len(), 1, "{endpoint}: one cart");
            assert_eq!(w.orders_of(&id).await, 1, "{endpoint}: bought once");
        }
    }
}

/// Asserts that resuming `id` from `from` is refused with a reason containing `says`, and that
/// the purchase is left as it was.
async fn refused_resume(w: &World, id: &str, from: &str, says: &str) {
    let before = w.engine.get(id).await.expect("saga");
    let error = w
        .engine
        .resume(id, Some(from), "operator test")
        .await
        .expect_err(&format!("--from {from} must be refused"));
    assert!(
        matches!(error, pcsaga_engine::Error::Refused(_)) && error.to_string().contains(says),
        "--from {from}: {error}"
    );
    let after = w.engine.get(id).await.expect("saga");
    assert_eq!(
        (before.status, before.version),
        (after.status, after.version)
    );
}

/// No operator action moves a purchase past Checkout unless its orders are known: a purchase
/// that bought nothing, one whose checkout reply was lost, and one whose checkouts only got
/// 503s are each refused `--from OrderVisibilityPolling` and `--from EntitlementFetch`, naming
/// what is missing; `--from Checkout` without a cart is refused too.
#[tokio::test]
pub(crate) async fn resume_never_moves_past_checkout_without_known_orders() {
    // Nothing bought: failed at the inventory check, no cart.
    let w = world(SimConfig::default()).await;
    let mut request = ri("resume-restricted");
    request["items"][0]["skuId"] = json!("0003");
    let id = w.submit(request).await;
    w.settle().await;
    for from in ["OrderVisibilityPolling", "EntitlementFetch"] {
        refused_resume(&w, &id, from, "no checkout was ever sent").await;
    }
    refused_resume(&w, &id, "Checkout", "it has no cart").await;

    // A lost checkout reply whose orders never reached the list: parked while reconciling.
    let w = world(SimConfig {
        checkout_replay: CheckoutReplay::AlreadySubmitted,
        order_list_lag_s: 10 * 24 * 3600,
        ..SimConfig::default()
    })
    .await;
    w.sim
        .set_faults(FaultPlan {
            seed: 1,
            rules: vec![once("checkout", 0, Fault::Drop)],
        })
        .expect("plan");
    let id = w.submit(perpetual("resume-lost-reply")).await;
    w.settle().await;
    let (saga, _) = w.saga(&id).await;
    assert_eq!(
        saga.status,
        SagaStatus::NeedsAttention,
        "{:?}",
        saga.last_error
    );
    assert_eq!(
        w.orders_of(&id).await,
        1,
        "the order exists in Partner Center"
    );
    for from in ["OrderVisibilityPolling", "EntitlementFetch"] {
        refused_resume(&w, &id, from, "its orders are not known").await;
    }

    // Checkouts that only ever got 503s: parked after the retries.
    let w = world(SimConfig::default()).await;
    w.sim
        .set_faults(FaultPlan {
            seed: 1,
            rules: vec![FaultRule {
                endpoint: "checkout".into(),
                probability: 1.0,
                after: 0,
                limit: None,
                fault: Fault::Status {
                    status: 503,
                    code: None,
                },
            }],
        })
        .expect("plan");
    let id = w.submit(perpetual("resume-503s")).await;
    w.settle().await;
    let (saga, _) = w.saga(&id).await;
    assert_eq!(
        saga.status,
        SagaStatus::NeedsAttention,
        "{:?}",
        saga.last_error
    );
    for from in ["OrderVisibilityPolling", "EntitlementFetch"] {
        refused_resume(&w, &id, from, "no order of it is known").await;
    }
    // Resuming from Checkout is the safe way on: same cart, and it succeeds once Partner
    // Center answers.
    w.sim.set_faults(FaultPlan::default()).expect("plan");
    w.engine
        .resume(&id, Some("Checkout"), "Partner Center is back")
        .await
        .expect("resume from Checkout");
    w.settle().await;
    let (saga, ctx) = w.saga(&id).await;
    assert_eq!(saga.status, SagaStatus::Succeeded, "{:?}", saga.last_error);
    assert_eq!((ctx.orders.len(), w.orders_of(&id).await), (1, 1));
}

/// A refused client secret is not a verdict on the purchases: they keep their state and wait,
/// without using up their attempts, and the workflow tells the daemon to claim nothing new
/// until the credentials work. Before, one rotated secret failed the whole queue.
#[tokio::test]
pub(crate) async fn refused_credentials_hold_purchases_instead_of_failing_them() {
    let w = world_with_secret(SimConfig::default(), Some("rotated-and-wrong")).await;
    let id = w.submit(perpetual("held")).await;
    // Two hours of a daemon's life: every hold runs out and is tried again.
    for _ in 0..120 {
        w.engine.run_due().await.expect("run");
        w.clock.advance(Duration::from_secs(60));
    }
    let (saga, _) = w.saga(&id).await;
    assert_eq!(
        (saga.status, saga.state.as_str()),
        (SagaStatus::Active, "Enablement")
    );
    assert_eq!(saga.attempt, 0, "a hold counts no attempt");
    assert!(
        saga.wait_reason
            .as_deref()
            .is_some_and(|r| r.contains("held until") && r.contains("credentials")),
        "{:?}",
        saga.wait_reason
    );
    let reason = w.engine.workflow().hold().await;
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("refused our credentials")),
        "the daemon is told to claim nothing: {reason:?}"
    );
    assert!(w.sim.ledger().carts.is_empty());
}

/// Partner Center need not echo a cart line's friendly name into the order (ambiguity 4):
/// a purchase whose checkout reply was lost then finds no line with its token. Exactly one
/// order of the customer since the checkout with exactly its items is adopted, with the
/// evidence; two such orders park the purchase naming both.
#[tokio::test]
pub(crate) async fn orders_without_the_token_are_matched_by_customer_time_and_items() {
    let config = || SimConfig {
        checkout_replay: CheckoutReplay::AlreadySubmitted,
        echo_friendly_names: false,
        order_list_lag_s: 0,
        ..SimConfig::default()
    };
    let lost_reply = FaultPlan {
        seed: 1,
        rules: vec![once("checkout", 0, Fault::Drop)],
    };

    // One candidate: matched, one order, the evidence kept.
    let w = world(config()).await;
    w.sim.set_faults(lost_reply.clone()).expect("plan");
    let id = w.submit(software("fallback-one")).await;
    w.settle().await;
    let (saga, ctx) = w.saga(&id).await;
    assert_eq!(saga.status, SagaStatus::Succeeded, "{:?}", saga.last_error);
    assert_eq!(w.orders_of(&id).await, 1, "bought once");
    assert_eq!(ctx.orders.len(), 1);
    let evidence = ctx
        .checkout
        .matched_by_fallback
        .clone()
        .expect("recorded as matched by fallback");
    assert!(
        evidence.contains(&ctx.orders[0].id) && evidence.contains("friendly names not echoed"),
        "{evidence}"
    );

    // Two candidates: an earlier purchase of the same items for the same customer, then one
    // whose reply is lost. Parked, naming both orders.
    let w = world(config()).await;
    let first = w.submit(software("fallback-first")).await;
    w.settle().await;
    assert_eq!(w.saga(&first).await.0.status, SagaStatus::Succeeded);
    w.sim.set_faults(lost_reply).expect("plan");
    let second = w.submit(software("fallback-second")).await;
    w.settle().await;
    let (saga, _) = w.saga(&second).await;
    assert_eq!(saga.status, SagaStatus::NeedsAttention);
    let reason = saga.last_error.unwrap_or_default();
    let first_order = w.saga(&first).await.1.orders[0].id.clone();
    let ledger = w.sim.ledger();
    let (_, second_ctx) = w.saga(&second).await;
    let second_orders = ledger.orders_with_token(&second_ctx.token);
    assert_eq!(second_orders.len(), 1, "the second purchase bought once");
    assert!(
        reason.contains("2 orders match")
            && reason.contains(&first_order)
            && reason.contains(&second_orders[0].order_id),
        "{reason}"
    );
}

/// A request bought by a direct order (E21) instead of a cart.
pub(crate) fn direct(mut request: Value) -> Value {
    request["orderPath"] = json!("direct");
    request
}

/// `fault` on create-order, the `n`-th request on, `times` times.
fn on_create_order(n: u64, times: u64, fault: Fault) -> FaultRule {
    FaultRule {
        endpoint: "create_order".into(),
        probability: 1.0,
        after: n,
        limit: Some(times),
        fault,
    }
}

/// The `MS-RequestId`s of the create-order requests the simulator received, in order.
fn create_order_ids(sim: &Simulator) -> Vec<String> {
    sim.requests()
        .into_iter()
        .filter(|r| r.endpoint == "create_order")
        .filter_map(|r| r.request_id)
        .collect()
}

/// Direct orders: each kind succeeds with one order and one send, and no cart is ever made.
#[tokio::test]
pub(crate) async fn each_kind_of_direct_purchase_succeeds_with_one_order_and_no_cart() {
    let w = world(SimConfig::default()).await;
    // The last names its catalog item by `offerId`, as a direct order's line does.
    let by_offer = json!({"idempotencyKey": "d-offer", "customerId": CUSTOMER, "country": "US",
        "orderPath": "direct", "items": [{"offerId": "DG7GMGF0DWTL:0001:DG7GMGF0DSFM", "quantity": 1}]});
    let ids = [
        w.submit(direct(ri("d-ri"))).await,
        w.submit(direct(software("d-sw"))).await,
        w.submit(direct(perpetual("d-pp"))).await,
        w.submit(by_offer).await,
    ];
    w.settle().await;
    let ledger = w.sim.ledger();
    assert!(ledger.carts.is_empty(), "no cart: {:?}", ledger.carts);
    for id in &ids {
        let (saga, ctx) = w.saga(id).await;
        assert_eq!(
            saga.status,
            SagaStatus::Succeeded,
            "{id}: {:?}",
            saga.last_error
        );
        assert_eq!(w.orders_of(id).await, 1, "{id}");
        assert_eq!(ctx.entitlements.len(), 1, "{id}");
        let sent = ledger
            .direct_orders
            .iter()
            .filter(|d| d.friendly_names.iter().any(|n| n.contains(&ctx.token)))
            .collect::<Vec<_>>();
        assert_eq!(sent.len(), 1, "{id}: one request id");
        assert_eq!(sent[0].calls, 1, "{id}: sent once");
    }
    assert_eq!(create_order_ids(&w.sim).len(), 4);
}

/// A reply lost after the order was created, whatever the service does with a repeated
/// request id (replay, 409/800060, or a second order): pcsaga sends nothing again, finds the
/// order in the list by its token, and the purchase has exactly one.
#[tokio::test]
pub(crate) async fn a_lost_direct_order_reply_never_buys_twice() {
    for replay in [
        DirectOrderReplay::Replay,
        DirectOrderReplay::Conflict,
        DirectOrderReplay::Ignore,
    ] {
        let w = world(SimConfig {
            direct_order_replay: replay,
            ..SimConfig::default()
        })
        .await;
        w.sim
            .set_faults(FaultPlan {
                seed: 0,
                rules: vec![on_create_order(0, 1, Fault::Drop)],
            })
            .expect("plan");
        let id = w.submit(direct(perpetual("d-lost"))).await;
        w.settle().await;
        let (saga, ctx) = w.saga(&id).await;
        assert_eq!(
            saga.status,
            SagaStatus::Succeeded,
            "{replay:?}: {:?}",
            saga.last_error
        );
        assert_eq!(w.orders_of(&id).await, 1, "{replay:?}");
        assert_eq!(create_order_ids(&w.sim).len(), 1, "{replay:?}: sent once");
        assert!(ctx.checkout.confirmed);
    }
}

/// An order that was never created (the service answered 503 before processing it): it is
/// sent again only once the order list shows nothing 20 minutes after the send, with the same
/// body and request id; the second send goes through.
#[tokio::test]
pub(crate) async fn a_direct_order_proven_absent_is_sent_again_with_the_same_id() {
    let w = world(SimConfig::default()).await;
    w.sim
        .set_faults(FaultPlan {
            seed: 0,
            rules: vec![on_create_order(
                0,
                1,
                Fault::Status {
                    status: 503,
                    code: Some("800003".into()),
                },
            )],
        })
        .expect("plan");
    let id = w.submit(direct(software("d-absent"))).await;
    w.settle().await;
    let (saga, ctx) = w.saga(&id).await;
    assert_eq!(saga.status, SagaStatus::Succeeded, "{:?}", saga.last_error);
    assert_eq!(w.orders_of(&id).await, 1);
    let sends = create_order_ids(&w.sim);
    assert_eq!(
        sends.len(),
        2,
        "the first send, and one after proven absence"
    );
    assert_eq!(sends[0], sends[1], "the same MS-RequestId");
    let direct = ctx.direct.expect("direct order");
    assert_eq!(direct.resends, 1);
    let last = direct.last_sent_at.expect("sent");
    let first = ctx.checkout.first_attempt_at.expect("sent");
    assert!(
        last - first >= pcsaga_purchase::direct::ABSENCE_WAIT,
        "absence waited for"
    );
}

/// Refusals: a refusal of the only send fails the purchase (nothing was bought); an order
/// absent after every send allowed parks with the evidence; a refusal after a send whose
/// outcome is unknown proves nothing about it.
#[tokio::test]
pub(crate) async fn direct_order_refusals_fail_only_when_they_prove_nothing_was_bought() {
    let refused = |status: u16, code: &str| Fault::Status {
        status,
        code: Some(code.into()),
    };
    let cases: [(&str, Vec<FaultRule>, SagaStatus, &str); 4] = [
        (
            "400 on the only send",
            vec![on_create_order(0, 1, refused(400, "800002"))],
            SagaStatus::Failed,
            "no order was created",
        ),
        (
            "404 on the only send",
            vec![on_create_order(0, 1, refused(404, "1000"))],
            SagaStatus::Failed,
            "no order was created",
        ),
        (
            "503 twice",
            vec![on_create_order(0, 2, refused(503, "800003"))],
            SagaStatus::NeedsAttention,
            "showed nothing",
        ),
        (
            "503, then 400",
            vec![
                on_create_order(0, 1, refused(503, "800003")),
                on_create_order(1, 1, refused(400, "800002")),
            ],
            SagaStatus::NeedsAttention,
            "showed nothing",
        ),
    ];
    for (name, rules, expected, says) in cases {
        let w = world(SimConfig::default()).await;
        w.sim
            .set_faults(FaultPlan { seed: 0, rules })
            .expect("plan");
        let id = w.submit(direct(perpetual("d-refused"))).await;
        w.settle().await;
        let (saga, _) = w.saga(&id).await;
        assert_eq!(saga.status, expected, "{name}: {:?}", saga.last_error);
        assert!(
            saga.last_error.as_deref().is_some_and(|e| e.contains(says)),
            "{name}: {:?}",
            saga.last_error
        );
        assert_eq!(w.orders_of(&id).await, 0, "{name}: nothing bought");
    }
}

/// A direct order parked after every send allowed was proven absent: an operator's resume from
/// Checkout reads the order list once more and sends nothing (sends are used up); resuming it
/// from before Checkout is refused, since the order was sent.
#[tokio::test]
pub(crate) async fn resuming_a_parked_direct_order_looks_again_and_sends_nothing() {
    let w = world(SimConfig::default()).await;
    w.sim
        .set_faults(FaultPlan {
            seed: 0,
            rules: vec![on_create_order(
                0,
                2,
                Fault::Status {
                    status: 503,
                    code: Some("800003".into()),
                },
            )],
        })
        .expect("plan");
    let id = w.submit(direct(perpetual("d-resume"))).await;
    w.settle().await;
    let (saga, _) = w.saga(&id).await;
    assert_eq!(
        saga.status,
        SagaStatus::NeedsAttention,
        "{:?}",
        saga.last_error
    );
    let refused = w
        .engine
        .resume(&id, Some("CartBuild"), "try again")
        .await
        .expect_err("refused");
    assert!(
        refused
            .to_string()
            .contains("a direct order was already sent"),
        "{refused}"
    );
    let lists_before = w
        .sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "list_orders")
        .count();
    w.engine
        .resume(&id, Some("Checkout"), "look again")
        .await
        .expect("resumed");
    w.settle().await;
    let (saga, _) = w.saga(&id).await;
    assert_eq!(
        saga.status,
        SagaStatus::NeedsAttention,
        "{:?}",
        saga.last_error
    );
    let lists_after = w
        .sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "list_orders")
        .count();
    assert!(lists_after > lists_before, "the order list was read again");
    assert_eq!(create_order_ids(&w.sim).len(), 2, "nothing sent again");
    assert_eq!(w.orders_of(&id).await, 0);
}
