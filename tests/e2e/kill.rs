//! The daemon is killed with SIGKILL while purchases are in Checkout, restarted, and every
//! purchase still finishes with exactly one checkout in the simulator's ledger.

use std::time::{Duration, Instant};

use pcsaga_engine::{ListFilter, SagaStatus, SqliteConfig, SqliteStore, Store};
use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig, Simulator};

use crate::support::{self, Env};

const PURCHASES: usize = 12;

async fn in_checkout(store: &SqliteStore) -> usize {
    let filter = ListFilter {
        status: Some(SagaStatus::Active),
        state: Some("Checkout".into()),
        ..Default::default()
    };
    store.list(&filter).await.map(|l| l.len()).unwrap_or(0)
}

/// Goal: a crash mid-checkout loses nothing and buys nothing twice.
/// Method: slow checkouts (0.4-0.8 s) so purchases sit in Checkout; SIGKILL the daemon twice
/// while some are there; restart it with --exit-when-idle; then audit the database and the
/// simulator's ledger.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_checkout_loses_nothing_and_buys_nothing_twice() {
    let sim = Simulator::start(SimConfig {
        registration_polls: 1,
        order_completion_s: 1,
        faults: FaultPlan {
            seed: 11,
            rules: vec![FaultRule {
                endpoint: "checkout".into(),
                probability: 1.0,
                after: 0,
                limit: None,
                fault: Fault::Latency {
                    min_ms: 400,
                    max_ms: 800,
                },
            }],
        },
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let env = Env::new();
    let kinds = [
        ("DZH318Z0BQ3Q", "0001", Some("P1Y")),
        ("DG7GMGF0FKZV", "0003", Some("P1Y")),
        ("DG7GMGF0DWTL", "0001", None),
    ];
    let lines: Vec<String> = (0..PURCHASES)
        .map(|n| {
            let (product, sku, term) = kinds[n % kinds.len()];
            support::request(&format!("kill-{n}"), product, sku, term).to_string()
        })
        .collect();
    let file = env.write("batch.ndjson", &(lines.join("\n") + "\n"));
    let submitted = support::run(
        env.pcsaga(Some(&sim))
            .arg("submit")
            .arg(&file)
            .arg("--json"),
    );
    assert!(
        submitted.status.success(),
        "{}",
        support::stderr(&submitted)
    );
    assert_eq!(
        support::json(&submitted).as_array().map(Vec::len),
        Some(PURCHASES)
    );

    let store = SqliteStore::open(SqliteConfig::new(&env.db))
        .await
        .expect("store");
    let mut kills = 0;
    for round in 0..2 {
        let mut daemon = env
            .pcsaga(Some(&sim))
            .arg("daemon")
            .stdout(env.log(&format!("daemon-{round}.out")))
            .stderr(env.log(&format!("daemon-{round}.err")))
            .spawn()
            .expect("daemon starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while in_checkout(&store).await == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            in_checkout(&store).await > 0,
            "no purchase reached Checkout in time:\n{}",
            env.read(&format!("daemon-{round}.err"))
        );
        daemon.kill().expect("SIGKILL");
        daemon.wait().expect("reaped");
        kills += 1;
    }
    assert_eq!(kills, 2);

    let finished = support::run(env.pcsaga(Some(&sim)).arg("daemon").arg("--exit-when-idle"));
    assert!(
        finished.status.success(),
        "the restarted daemon failed:\n{}",
        support::stderr(&finished)
    );

    let sagas = store.list(&ListFilter::default()).await.expect("list");
    assert_eq!(sagas.len(), PURCHASES, "no purchase lost");
    let ledger = sim.ledger();
    for saga in &sagas {
        assert_eq!(
            saga.status,
            SagaStatus::Succeeded,
            "{} ended {} in {}: {:?}",
            saga.idempotency_key,
            saga.status,
            saga.state,
            saga.last_error
        );
        let ctx: serde_json::Value = serde_json::from_str(&saga.context).expect("context");
        let token = ctx["token"].as_str().expect("token");
        assert_eq!(
            ledger.checkouts_with_token(token).len(),
            1,
            "{}: exactly one cart checked out",
            saga.idempotency_key
        );
        assert_eq!(
            ledger.orders_with_token(token).len(),
            1,
            "{}: exactly one order",
            saga.idempotency_key
        );
    }
    assert_eq!(ledger.checkouts.len(), PURCHASES);
    let expect = pcsaga_testkit::Expect {
        purchases: PURCHASES,
        settled: true,
        wall_clock: true,
    };
    pcsaga_testkit::audit(
        &pcsaga_engine::AnyStore::Sqlite(store.clone()),
        &ledger,
        &sim.requests(),
        &expect,
    )
    .await
    .assert_clean("cargo test --test e2e sigkill_during_checkout");
}
