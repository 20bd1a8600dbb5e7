//! pcsaga on PostgreSQL: the real binary, three daemons on one database, one of them SIGKILLed
//! while purchases are in Checkout; the others finish its purchases after its lease, each
//! bought exactly once. Needs the server of `PCSAGA_TEST_PG` (fails, never skips, without it).

use std::time::{Duration, Instant};

use pcsaga_engine::{AnyStore, ListFilter, SagaStatus, Store};
use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig};

use crate::support::{self, Battery};

const PURCHASES: usize = 45;

async fn in_checkout(store: &AnyStore) -> usize {
    store
        .list(&ListFilter {
            status: Some(SagaStatus::Active),
            state: Some("Checkout".into()),
            ..ListFilter::default()
        })
        .await
        .map(|l| l.len())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_on_postgres_share_the_queue_and_a_killed_ones_purchases_are_finished_once() {
    let db = pcsaga_testkit::pg::TestDatabase::create().await;
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        // Slow checkouts keep purchases in Checkout long enough to be caught there.
        faults: FaultPlan {
            seed: 11,
            rules: vec![FaultRule {
                endpoint: "checkout".into(),
                probability: 1.0,
                after: 0,
                limit: None,
                fault: Fault::Latency {
                    min_ms: 300,
                    max_ms: 600,
                },
            }],
        },
        ..SimConfig::default()
    })
    .await;
    b.store = AnyStore::Postgres(db.store().await);
    // Submitted to PostgreSQL through the binary.
    let requests: Vec<String> = support::mixed("pg", PURCHASES)
        .iter()
        .map(serde_json::Value::to_string)
        .collect();
    let file = b.env.write("pg.ndjson", &(requests.join("\n") + "\n"));
    let mut submit = b.env.pcsaga(Some(&b.sim));
    submit.env("PCSAGA_DB", &db.url).arg("submit").arg(&file);
    let submitted = support::run_async(submit).await;
    assert!(
        submitted.status.success(),
        "{}",
        support::stderr(&submitted)
    );
    b.accepted = PURCHASES;
    let on_pg = [("PCSAGA_DB", db.url.as_str())];
    let mut victim = b.daemon("pg-1", &on_pg, &["--concurrency", "8"]);
    let mut second = b.daemon("pg-2", &on_pg, &["--concurrency", "8"]);
    let mut third = b.daemon("pg-3", &on_pg, &["--concurrency", "8"]);
    // SIGKILL the first daemon once some purchases are in Checkout.
    let started = Instant::now();
    while in_checkout(&b.store).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no purchase reached Checkout:\n{}",
            support::tail(&b.env.read("pg-1.err"), 20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    victim.kill().expect("SIGKILL");
    let _ = victim.wait();
    // The other two finish everything, the victim's purchases after their leases (3 s).
    let started = Instant::now();
    loop {
        let counts = b.store.count_by_status().await.expect("counts");
        if counts.get(&SagaStatus::Active).copied().unwrap_or(0) == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "purchases still active: {counts:?}\n{}",
            support::tail(&b.env.read("pg-2.err"), 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // `status` on PostgreSQL lists the daemons of the database.
    let mut status = b.env.pcsaga(None);
    status.env("PCSAGA_DB", &db.url).arg("status");
    let status = support::run_async(status).await;
    let text = support::stdout(&status);
    assert!(
        text.matches("daemon        ").count() >= 2,
        "the two live daemons: {text}"
    );
    assert!(support::sigterm(&mut second).await.success());
    assert!(support::sigterm(&mut third).await.success());
    let audit = b.audit(true).await;
    audit.assert_clean(
        "cargo test --test e2e three_daemons_on_postgres_share_the_queue_and_a_killed_ones_purchases_are_finished_once",
    );
    assert_eq!(audit.by_status.get("succeeded"), Some(&PURCHASES));
    // Exactly one checkout of each purchase's cart reached the simulator's ledger.
    let ledger = b.sim.ledger();
    assert!(
        ledger.checkouts.iter().all(|c| c.orders.len() == 1),
        "{:?}",
        ledger.checkouts
    );
    // All three daemons claimed work.
    let witnesses = pcsaga_testkit::gather(&b.store, &ledger, &b.sim.requests())
        .await
        .expect("witnesses");
    for child in [&second, &third] {
        let tag = format!(":{}:", child.id());
        assert!(
            witnesses
                .histories
                .values()
                .flatten()
                .any(|r| r.kind == "claimed"
                    && r.detail.as_deref().is_some_and(|d| d.contains(&tag))),
            "daemon {} claimed nothing",
            child.id()
        );
    }
}
