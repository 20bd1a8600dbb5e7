//! pcsaga on PostgreSQL: the real binary, three daemons on one database, one of them SIGKILLed
//! while purchases are in Checkout; the others finish its purchases after its lease, each
//! bought exactly once. Needs the server of `PCSAGA_TEST_PG` (fails, never skips, without it).

use std::time::{Duration, Instant};

use pcsaga_engine::{AnyStore, ListFilter, SagaStatus, Store};
use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig};

use crate::support::{self, Battery};

const PURCHASES: usize = 45;

/// Submits `requests` through the binary to the PostgreSQL database; the battery counts them.
async fn submit_to(
    b: &mut Battery,
    db: &pcsaga_testkit::pg::TestDatabase,
    requests: &[serde_json::Value],
) {
    let lines: Vec<String> = requests.iter().map(serde_json::Value::to_string).collect();
    let file = b.env.write("requests.ndjson", &(lines.join("\n") + "\n"));
    let mut submit = b.env.pcsaga(Some(&b.sim));
    submit.env("PCSAGA_DB", &db.url).arg("submit").arg(&file);
    let submitted = support::run_async(submit).await;
    assert!(
        submitted.status.success(),
        "{}",
        support::stderr(&submitted)
    );
    b.accepted = requests.len();
}

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
    submit_to(&mut b, &db, &support::mixed("pg", PURCHASES)).await;
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

/// `migrate --from sqlite:PATH --to postgres://…`: every saga and its history moved, verified,
/// the file untouched; a second move into the now non-empty database is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_database_moves_to_postgres_whole_and_verified() {
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        ..SimConfig::default()
    })
    .await;
    assert_eq!(b.submit(&support::mixed("move", 12)).await, 12);
    b.finish("before-move", Duration::from_secs(60)).await;
    // Reconciled on the file first: its billing statuses move with the purchases.
    let policies = b
        .env
        .write("reconcile.toml", crate::billing::FAST_RECONCILE);
    let mut reconcile = b.env.pcsaga(Some(&b.sim));
    reconcile.env("PCSAGA_RECONCILE_WORKFLOW", &policies).args([
        "reconcile",
        "--period",
        "current",
        "--json",
    ]);
    let reconciled = support::run_async(reconcile).await;
    assert_eq!(
        reconciled.status.code(),
        Some(0),
        "{}",
        support::stderr(&reconciled)
    );
    // What the file holds, to compare after the move (its bytes may move as this test's own
    // open store checkpoints its WAL; its rows must not).
    let rows = |store: AnyStore| async move {
        let mut all = Vec::new();
        for saga in store.list(&ListFilter::default()).await.expect("list") {
            let history = store.history(&saga.id).await.expect("history");
            all.push((saga, history));
        }
        all
    };
    let file_before = rows(b.store.clone()).await;
    let db = pcsaga_testkit::pg::TestDatabase::create().await;
    let from = format!("sqlite:{}", b.env.db.display());
    let mut command = b.env.pcsaga(None);
    command.args(["migrate", "--from", &from, "--to", &db.url, "--json"]);
    let moved = support::run_async(command).await;
    assert!(moved.status.success(), "{}", support::stderr(&moved));
    let summary = support::json(&moved);
    // Twelve purchases and the reconciliation run.
    assert_eq!(summary["sagas"], 13, "{summary}");
    assert_eq!(summary["billing"]["billing_status"], 12, "{summary}");
    assert_eq!(summary["billing"]["billing_runs"], 1, "{summary}");
    assert!(
        summary["billing"]["billing_lines"]
            .as_u64()
            .is_some_and(|n| n >= 12),
        "{summary}"
    );
    assert!(
        summary["history"].as_u64().is_some_and(|n| n > 12 * 5),
        "{summary}"
    );
    assert!(
        rows(b.store.clone()).await == file_before,
        "the file's rows are untouched"
    );
    // The purchases read the same on PostgreSQL, histories included.
    let sqlite_store = b.store.clone();
    let pg = AnyStore::Postgres(db.store().await);
    let on_file = sqlite_store
        .list(&ListFilter::default())
        .await
        .expect("list");
    for saga in &on_file {
        let copied = pg.get(&saga.id).await.expect("get").expect("copied");
        assert_eq!(&copied, saga);
        assert_eq!(
            pg.history(&saga.id).await.expect("history"),
            sqlite_store.history(&saga.id).await.expect("history")
        );
    }
    let mut list = b.env.pcsaga(None);
    list.env("PCSAGA_DB", &db.url).args(["list", "--json"]);
    let listed = support::json(&support::run_async(list).await);
    assert_eq!(listed.as_array().map(Vec::len), Some(12));
    let mut matched = b.env.pcsaga(None);
    matched
        .env("PCSAGA_DB", &db.url)
        .args(["list", "--billing", "matched", "--json"]);
    let matched = support::json(&support::run_async(matched).await);
    assert_eq!(matched.as_array().map(Vec::len), Some(12), "{matched}");
    // The target now holds sagas: a second move is refused.
    let mut again = b.env.pcsaga(None);
    again.args(["migrate", "--from", &from, "--to", &db.url]);
    let refused = support::run_async(again).await;
    assert_eq!(
        refused.status.code(),
        Some(5),
        "{}",
        support::stderr(&refused)
    );
    assert!(support::stderr(&refused).contains("empty database"));
    // New work continues on PostgreSQL after the move: history sequence numbers go on.
    b.store = pg;
    let id = &on_file[0].id;
    let mut resume = b.env.pcsaga(None);
    resume
        .env("PCSAGA_DB", &db.url)
        .args(["show", id, "--json"]);
    let shown = support::json(&support::run_async(resume).await);
    assert_eq!(shown["id"], id.as_str());
}

/// Moving a file a daemon is working on is refused, naming the leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_a_live_lease_is_not_moved() {
    let mut b = Battery::new(SimConfig::default()).await;
    assert_eq!(b.submit(&support::mixed("leased", 1)).await, 1);
    let now = chrono::Utc::now();
    b.store
        .claim_due("someone", now, now + chrono::Duration::seconds(600), 10)
        .await
        .expect("claim");
    let db = pcsaga_testkit::pg::TestDatabase::create().await;
    let mut command = b.env.pcsaga(None);
    command.args([
        "migrate",
        "--from",
        &format!("sqlite:{}", b.env.db.display()),
        "--to",
        &db.url,
    ]);
    let refused = support::run_async(command).await;
    assert_eq!(
        refused.status.code(),
        Some(5),
        "{}",
        support::stderr(&refused)
    );
    assert!(support::stderr(&refused).contains("leased by a running daemon"));
    let pg = db.store().await;
    assert!(
        pg.list(&ListFilter::default())
            .await
            .expect("list")
            .is_empty(),
        "nothing copied"
    );
}

/// Goal: a daemon cut off past its lease (SIGSTOP, as a network partition or a long pause
/// looks) has its late writes refused. Method: three daemons on PostgreSQL, checkouts of 0.8 s;
/// the first is stopped while it holds purchases in Checkout, for longer than its 3 s lease; the
/// others take them over; then it is continued, finishes its calls, and every write it tries for
/// those purchases is fenced. Each purchase is still bought exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_stopped_past_its_lease_is_fenced_when_it_resumes() {
    let db = pcsaga_testkit::pg::TestDatabase::create().await;
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        faults: FaultPlan {
            seed: 5,
            rules: vec![FaultRule {
                endpoint: "checkout".into(),
                probability: 1.0,
                after: 0,
                limit: None,
                // Under the battery's 1 s call timeout, so the calls answer.
                fault: Fault::Latency {
                    min_ms: 800,
                    max_ms: 800,
                },
            }],
        },
        ..SimConfig::default()
    })
    .await;
    b.store = AnyStore::Postgres(db.store().await);
    submit_to(&mut b, &db, &support::mixed("stop", 24)).await;
    let on_pg = [("PCSAGA_DB", db.url.as_str())];
    let mut stopped = b.daemon("stopped", &on_pg, &["--concurrency", "8"]);
    // Wait until the first daemon holds purchases in Checkout, then start the others.
    let started = Instant::now();
    let held_by_first = loop {
        let held: Vec<String> = b
            .store
            .list(&ListFilter {
                status: Some(SagaStatus::Active),
                state: Some("Checkout".into()),
                ..ListFilter::default()
            })
            .await
            .expect("list")
            .into_iter()
            .filter(|s| {
                s.lease_owner
                    .as_deref()
                    .is_some_and(|o| o.contains(&format!(":{}:", stopped.id())))
            })
            .map(|s| s.id)
            .collect();
        if !held.is_empty() {
            break held;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing reached Checkout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let signal = |sig: &str, pid: u32| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP", stopped.id());
    let mut second = b.daemon("second", &on_pg, &["--concurrency", "8"]);
    let mut third = b.daemon("third", &on_pg, &["--concurrency", "8"]);
    // The others take the stopped daemon's purchases after its lease and finish everything.
    let started = Instant::now();
    loop {
        let counts = b.store.count_by_status().await.expect("counts");
        if counts.get(&SagaStatus::Active).copied().unwrap_or(0) == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "still active: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Resumed: it completes its calls and tries to record them; each write is refused.
    signal("-CONT", stopped.id());
    let started = Instant::now();
    while !b.env.read("stopped.err").contains("lost the lease") {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the resumed daemon wrote nothing refused:\n{}",
            support::tail(&b.env.read("stopped.err"), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for child in [&mut stopped, &mut second, &mut third] {
        assert!(support::sigterm(child).await.success());
    }
    let audit = b.audit(true).await;
    audit.assert_clean(
        "cargo test --test e2e a_daemon_stopped_past_its_lease_is_fenced_when_it_resumes",
    );
    assert_eq!(audit.by_status.get("succeeded"), Some(&24));
    // The purchases it held were finished by the others: their last transition is not its.
    for id in &held_by_first {
        let saga = b.store.get(id).await.expect("get").expect("saga");
        assert_eq!(saga.status, SagaStatus::Succeeded, "{id}");
    }
}

/// The battery's random SIGKILL loop on PostgreSQL with three daemons at once: 120 purchases,
/// 2-30 ms of latency and 5% 500/503 on every call, and every 50-700 ms one of the three
/// daemons SIGKILLed and started again (15 kills); a last daemon finishes; the auditor must be
/// clean and every purchase bought exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sigkill_loop_with_three_daemons_on_postgres() {
    let seed = pcsaga_testkit::seed();
    eprintln!("random_sigkill_loop_with_three_daemons_on_postgres: seed {seed} (rerun: PCSAGA_SEED={seed} cargo test --test e2e random_sigkill_loop_with_three_daemons_on_postgres)");
    let mut rng = pcsaga_testkit::Rng::new(seed);
    let db = pcsaga_testkit::pg::TestDatabase::create().await;
    let rule = |probability: f64, fault: Fault| FaultRule {
        endpoint: "*".into(),
        probability,
        after: 0,
        limit: None,
        fault,
    };
    let mut b = Battery::new(SimConfig {
        registration_polls: 2,
        order_completion_s: 1,
        faults: FaultPlan {
            seed,
            rules: vec![
                rule(
                    1.0,
                    Fault::Latency {
                        min_ms: 2,
                        max_ms: 30,
                    },
                ),
                rule(
                    0.03,
                    Fault::Status {
                        status: 503,
                        code: None,
                    },
                ),
                rule(
                    0.02,
                    Fault::Status {
                        status: 500,
                        code: None,
                    },
                ),
            ],
        },
        ..SimConfig::default()
    })
    .await;
    b.store = AnyStore::Postgres(db.store().await);
    // PCSAGA_BATTERY=big: the bigger tier (RELIABILITY.md).
    let big = std::env::var("PCSAGA_BATTERY").is_ok_and(|v| v == "big");
    let (purchases, kills) = if big { (2_000, 200) } else { (120, 15) };
    submit_to(
        &mut b,
        &db,
        &support::mixed(&format!("pgloop-{seed}"), purchases),
    )
    .await;
    let on_pg = [("PCSAGA_DB", db.url.as_str())];
    let mut daemons: Vec<std::process::Child> = (0..3)
        .map(|i| b.daemon(&format!("pgloop-{i}"), &on_pg, &["--concurrency", "16"]))
        .collect();
    let started = Instant::now();
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.between(50, 700))).await;
        let which = usize::try_from(rng.between(0, 2)).unwrap_or(0);
        daemons[which].kill().expect("SIGKILL");
        daemons[which].wait().expect("reaped");
        daemons[which] = b.daemon(
            &format!("pgloop-{which}-{kill}"),
            &on_pg,
            &["--concurrency", "16"],
        );
    }
    for mut daemon in daemons {
        daemon.kill().expect("SIGKILL");
        let _ = daemon.wait();
    }
    let mut last = b.daemon("pgloop-final", &on_pg, &["--exit-when-idle"]);
    let status =
        support::wait_with_deadline(&mut last, Duration::from_secs(if big { 1800 } else { 240 }))
            .await
            .expect("the last daemon finishes");
    assert!(
        status.success(),
        "{}",
        support::tail(&b.env.read("pgloop-final.err"), 30)
    );
    let audit = b.audit(true).await;
    eprintln!(
        "random_sigkill_loop_with_three_daemons_on_postgres: seed {seed}: {} purchases, {kills} kills, 3 daemons, {} checkouts, {} orders, duplicates {}, lost {}, statuses {:?}, {:.0}s",
        audit.purchases, audit.checkouts, audit.orders, audit.duplicates, audit.lost, audit.by_status, started.elapsed().as_secs_f64()
    );
    audit.assert_clean(&format!(
        "PCSAGA_SEED={seed} cargo test --test e2e random_sigkill_loop_with_three_daemons_on_postgres"
    ));
    assert_eq!(audit.by_status.get("succeeded"), Some(&purchases));
}

/// Goal: a 429 answered to one daemon holds the call class for every daemon of the database.
/// Method: two daemons on PostgreSQL, 150 purchases, 20-50 ms per call; one cart creation is
/// answered 429 with `Retry-After: 6`; no cart call of either daemon may reach the simulator
/// from 1.6 s after that 429 (calls already on their way, and the one-second exchange of pauses)
/// until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_to_one_daemon_holds_the_class_for_the_others() {
    let db = pcsaga_testkit::pg::TestDatabase::create().await;
    let rule = |endpoint: &str, after: u64, limit: Option<u64>, fault: Fault| FaultRule {
        endpoint: endpoint.into(),
        probability: 1.0,
        after,
        limit,
        fault,
    };
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        faults: FaultPlan {
            seed: 3,
            rules: vec![
                rule(
                    "*",
                    0,
                    None,
                    Fault::Latency {
                        min_ms: 20,
                        max_ms: 50,
                    },
                ),
                rule(
                    "create_cart",
                    20,
                    Some(1),
                    Fault::Throttle {
                        retry_after_s: 6,
                        http_date: false,
                    },
                ),
            ],
        },
        ..SimConfig::default()
    })
    .await;
    b.store = AnyStore::Postgres(db.store().await);
    let purchases = 150;
    submit_to(&mut b, &db, &support::mixed("share", purchases)).await;
    let on_pg = [("PCSAGA_DB", db.url.as_str())];
    let mut first = b.daemon("share-1", &on_pg, &["--concurrency", "16"]);
    let mut second = b.daemon("share-2", &on_pg, &["--concurrency", "16"]);
    let started = Instant::now();
    loop {
        let counts = b.store.count_by_status().await.expect("counts");
        if counts.get(&SagaStatus::Active).copied().unwrap_or(0) == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "still active: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for child in [&mut first, &mut second] {
        assert!(support::sigterm(child).await.success());
    }
    let requests = b.sim.requests();
    assert_eq!(
        requests.iter().filter(|r| r.status == Some(429)).count(),
        1,
        "one 429 was given"
    );
    let early = support::calls_inside_retry_after(&requests, Duration::from_millis(1600));
    assert!(
        early.is_empty(),
        "calls inside the Retry-After of another daemon's 429:\n{}",
        early.join("\n")
    );
    let audit = b.audit(true).await;
    audit.assert_clean("cargo test --test e2e a_429_to_one_daemon_holds_the_class_for_the_others");
    // The pause was shared: the daemon that did not get the 429 says it held the class.
    let logs = b.env.read("share-1.err") + &b.env.read("share-2.err");
    assert!(
        logs.contains("holding a call class another daemon was throttled on"),
        "{}",
        support::tail(&logs, 40)
    );
}
