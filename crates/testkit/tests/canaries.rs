//! The auditor proves itself: a clean recorded run passes every check, and each canary (the
//! run with one promise broken) is caught by its own check, and by no other: with that check
//! left out, the canary goes unseen. So no check can be dropped or weakened unnoticed.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use pcsaga_engine::{
    Engine, EngineConfig, HistoryRow, Policies, SagaStatus, SqliteConfig, SqliteStore, SystemClock,
    Workflow,
};
use pcsaga_partner_center::{Client, ClientConfig, Credentials, Secret};
use pcsaga_purchase::{parse_value, PurchaseWorkflow};
use pcsaga_simulator::{SimConfig, Simulator};
use pcsaga_testkit::{gather, judge, Expect, Witnesses, CHECKS};
use serde_json::json;

const POLICIES: &str = include_str!("../../../workflows/one-time-purchase.toml");

/// Two purchases run to success on the wall clock, and the witnesses of that run.
async fn clean_run() -> Witnesses {
    let sim = Simulator::start(SimConfig {
        order_completion_s: 0,
        order_list_lag_s: 0,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let c = sim.config();
    let credentials = Credentials {
        token_url: sim.token_url(),
        resource: c.resource.clone(),
        client_id: c.client_id.clone(),
        client_secret: Secret::new(c.client_secret.clone()),
        refresh_token: Some(Secret::new(c.refresh_token.clone())),
    };
    let client = Client::new(ClientConfig::new(sim.base_url()), credentials).expect("client");
    let workflow = PurchaseWorkflow::new(client);
    let policies = Policies::parse(POLICIES, workflow.name(), &workflow.states(), |s, p| {
        workflow.validate_policy(s, p)
    })
    .expect("policies");
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("canary.db")))
        .await
        .expect("store");
    let engine = Engine::new(
        workflow,
        store.clone(),
        policies,
        Arc::new(SystemClock),
        EngineConfig::new("canary"),
    );
    for key in ["canary-1", "canary-2"] {
        let request = parse_value(&json!({"idempotencyKey": key, "customerId": "4c4d0c6e-38b9-4c5a-a0f4-3b2f1c1e7a10",
            "country": "US", "items": [{"productId": "DG7GMGF0DWTL", "skuId": "0001", "quantity": 1}]}))
        .expect("request");
        pcsaga_purchase::submit(&engine, &request)
            .await
            .expect("submit");
    }
    // Bounded: a purchase that needs more than this many rounds is a failure of the setup.
    for _ in 0..200 {
        engine.run_due().await.expect("run");
        let counts = pcsaga_engine::Store::count_by_status(&store)
            .await
            .expect("counts");
        if counts.get(&SagaStatus::Succeeded).copied() == Some(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let witnesses = gather(
        &pcsaga_engine::AnyStore::Sqlite(store.clone()),
        &sim.ledger(),
        &sim.requests(),
    )
    .await
    .expect("witnesses");
    assert!(
        witnesses
            .sagas
            .iter()
            .all(|s| s.status == SagaStatus::Succeeded),
        "the base run succeeds: {:?}",
        witnesses
            .sagas
            .iter()
            .map(|s| (&s.status, &s.last_error))
            .collect::<Vec<_>>()
    );
    witnesses
}

fn expect() -> Expect {
    Expect {
        purchases: 2,
        settled: true,
        wall_clock: true,
    }
}

/// The run with one promise broken, and the check that must catch it.
fn canaries(base: &Witnesses) -> Vec<(&'static str, &'static str, Witnesses, Expect)> {
    let first = base.sagas[0].id.clone();
    let mut out = Vec::new();

    let mut w = base.clone();
    let mut again = w.ledger.checkouts[0].clone();
    again.cart_id = "a-second-cart".into();
    w.ledger.checkouts.push(again);
    out.push((
        "a second checkout for one purchase",
        "bought twice",
        w,
        expect(),
    ));

    let mut w = base.clone();
    let mut extra = w.ledger.carts[0].clone();
    extra.cart_id = "an-extra-cart".into();
    w.ledger.carts.push(extra);
    out.push((
        "an extra cart from a lost create-cart reply",
        "extra cart",
        w,
        expect(),
    ));

    let mut w = base.clone();
    let history = w.histories.get_mut(&first).expect("history");
    let last = history.last().cloned().expect("rows");
    history.push(HistoryRow {
        seq: last.seq + 1,
        kind: "transition".into(),
        state: Some("Checkout".into()),
        to_state: Some("Discovery".into()),
        ..last
    });
    out.push(("a path back before Checkout", "path", w, expect()));

    let mut w = base.clone();
    for history in w.histories.values_mut() {
        history.retain(|r| r.kind != "intent");
    }
    out.push((
        "side-effecting calls without intents",
        "intent",
        w,
        expect(),
    ));

    // Three requests were accepted, two purchases exist.
    out.push((
        "an accepted purchase missing",
        "lost",
        base.clone(),
        Expect {
            purchases: 3,
            ..expect()
        },
    ));
    let mut w = base.clone();
    w.sagas[1].status = SagaStatus::Active;
    out.push((
        "a purchase left active after the faults stopped",
        "lost",
        w,
        expect(),
    ));

    let mut w = base.clone();
    w.integrity = "*** in database main ***\nPage 7: btreeInitPage() returns error code 11".into();
    out.push(("a damaged file", "integrity", w, expect()));

    let mut w = base.clone();
    let mut throttled = w
        .requests
        .iter()
        .find(|r| r.correlation_id.is_some())
        .cloned()
        .expect("a purchase's request");
    throttled.seq = 1_000_000;
    throttled.at = Utc::now() + chrono::Duration::hours(1);
    throttled.status = Some(429);
    throttled.retry_after_s = Some(30);
    let mut early = throttled.clone();
    early.seq += 1;
    early.at = throttled.at + chrono::Duration::seconds(1);
    early.status = Some(200);
    early.retry_after_s = None;
    w.requests.push(throttled);
    w.requests.push(early);
    out.push((
        "a retry 1 s into a 30 s Retry-After",
        "retry-after",
        w,
        expect(),
    ));
    out
}

#[tokio::test]
async fn each_canary_is_caught_by_its_own_check_and_only_by_it() {
    let base = clean_run().await;
    let clean = judge(&base, &expect(), CHECKS);
    assert!(
        clean.violations.is_empty(),
        "the base run is clean: {:?}",
        clean.violations
    );
    let canaries = canaries(&base);
    // Every check has a canary.
    for check in CHECKS {
        assert!(
            canaries.iter().any(|(_, name, _, _)| *name == check.name),
            "check {:?} has no canary",
            check.name
        );
    }
    for (what, name, witnesses, expect) in &canaries {
        let audit = judge(witnesses, expect, CHECKS);
        let tag = format!("[{name}] ");
        assert!(
            !audit.violations.is_empty() && audit.violations.iter().all(|v| v.starts_with(&tag)),
            "{what}: expected findings of [{name}] only, got {:?}",
            audit.violations
        );
        // Left out, the check's canary goes unseen: nothing else stands in for it.
        let others: Vec<_> = CHECKS.iter().copied().filter(|c| c.name != *name).collect();
        let blind = judge(witnesses, expect, &others);
        assert!(
            blind.violations.is_empty(),
            "{what}: seen without [{name}]: {:?}",
            blind.violations
        );
    }
}
