//! The reliability battery: crashes at every named point, a random SIGKILL loop, a throttling
//! and outage storm, two daemons on one file, the database under stress, and the canary. Every
//! test ends with the auditor (`pcsaga-testkit`). Randomized tests take `PCSAGA_SEED`, print
//! it, and derive every schedule from it. `PCSAGA_BATTERY=big` runs the bigger tier.

use std::time::{Duration, Instant};

use pcsaga_simulator::{DirectOrderReplay, Fault, FaultPlan, FaultRule, SimConfig};
use pcsaga_testkit::Rng;

use crate::support::{self, Battery};

fn big() -> bool {
    std::env::var("PCSAGA_BATTERY").is_ok_and(|v| v == "big")
}

fn rule(endpoint: &str, probability: f64, limit: Option<u64>, fault: Fault) -> FaultRule {
    FaultRule {
        endpoint: endpoint.into(),
        probability,
        after: 0,
        limit,
        fault,
    }
}

/// Goal: the daemon aborting at each named point of each side-effecting step loses nothing and
/// buys nothing twice. Method: one reservation purchase per case (it registers a subscription,
/// creates a cart and checks out); the daemon aborts at the point; a fresh daemon finishes the
/// work; the auditor checks. The "request reached the simulator, no reply yet" point is a
/// processed request that hangs, with the daemon killed while it hangs.
#[tokio::test(flavor = "multi_thread")]
async fn crash_points_lose_nothing_and_buy_nothing_twice() {
    let mut cases = Vec::new();
    // `create_order` is a direct order's send (E21): the same points, on the direct path.
    for call in ["register", "create_cart", "checkout", "create_order"] {
        for point in [
            "after_claim",
            "after_intent",
            "in_flight",
            "before_record",
            "after_record",
        ] {
            cases.push((call, point));
        }
    }
    let mut handles = Vec::new();
    for (call, point) in cases {
        handles.push(async move {
            let hang = point == "in_flight";
            let faults = if hang {
                FaultPlan {
                    seed: 1,
                    rules: vec![rule(call, 1.0, Some(1), Fault::Hang { processed: true })],
                }
            } else {
                FaultPlan::default()
            };
            let mut b = Battery::new(SimConfig {
                registration_polls: 1,
                order_completion_s: 0,
                hang_s: 30,
                faults,
                ..SimConfig::default()
            })
            .await;
            let mut request = support::request(
                &format!("crash-{call}-{point}"),
                "DZH318Z0BQ3Q",
                "0001",
                Some("P1Y"),
            );
            let direct = call == "create_order";
            if direct {
                request["orderPath"] = serde_json::json!("direct");
            }
            assert_eq!(b.submit(&[request]).await, 1);
            let name = format!("crash-{call}-{point}");
            if hang {
                let mut daemon = b.daemon(&name, &[], &[]);
                let deadline = Instant::now() + Duration::from_secs(30);
                while !b.sim.requests().iter().any(|r| {
                    r.endpoint == call && r.fault.as_deref() == Some("hang_after_processing")
                }) {
                    assert!(
                        Instant::now() < deadline,
                        "{name}: the call never reached the simulator"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                daemon.kill().expect("SIGKILL");
                daemon.wait().expect("reaped");
            } else {
                let crash = format!("{point}:{call}");
                let mut daemon = b.daemon(&name, &[("PCSAGA_TEST_CRASH_AT", crash.as_str())], &[]);
                let status = support::wait_with_deadline(&mut daemon, Duration::from_secs(60))
                    .await
                    .expect("the daemon reached the crash point");
                assert!(
                    !status.success(),
                    "{name}: the daemon should have aborted:\n{}",
                    b.env.read(&format!("{name}.err"))
                );
                let log = b.env.read(&format!("{name}.err"));
                assert!(
                    log.contains("test crash point reached")
                        && log.contains(&format!("call=\"{call}\"")),
                    "{name}: crashed elsewhere:\n{}",
                    support::tail(&log, 10)
                );
            }
            b.finish(&format!("{name}-restart"), Duration::from_secs(90))
                .await;
            let audit = b.audit(true).await;
            audit.assert_clean(&format!("cargo test --test e2e crash_points ({name})"));
            assert_eq!(
                audit.by_status.get("succeeded"),
                Some(&1),
                "{name}: {:?}",
                audit.by_status
            );
            if direct {
                assert_eq!((audit.checkouts, audit.orders), (0, 1), "{name}");
            } else {
                assert_eq!(audit.checkouts, 1, "{name}");
            }
        });
    }
    futures_util::future::join_all(handles).await;
}

/// Goal: random SIGKILLs while purchases run lose nothing and buy nothing twice.
/// Method: N purchases, K kills at random moments (seeded), simulator latency and 5% transient
/// errors; then a daemon runs until idle and the auditor checks.
#[tokio::test(flavor = "multi_thread")]
async fn random_sigkill_loop() {
    let seed = pcsaga_testkit::seed();
    let (purchases, kills) = if big() { (10_000, 1_000) } else { (200, 25) };
    eprintln!("random_sigkill_loop: seed {seed}, {purchases} purchases, {kills} kills (rerun: PCSAGA_SEED={seed} cargo test --test e2e random_sigkill_loop)");
    let mut rng = Rng::new(seed);
    let mut b = Battery::new(SimConfig {
        registration_polls: 2,
        order_completion_s: 1,
        faults: FaultPlan {
            seed,
            rules: vec![
                rule(
                    "*",
                    1.0,
                    None,
                    Fault::Latency {
                        min_ms: 2,
                        max_ms: 30,
                    },
                ),
                rule(
                    "*",
                    0.03,
                    None,
                    Fault::Status {
                        status: 503,
                        code: None,
                    },
                ),
                rule(
                    "*",
                    0.02,
                    None,
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
    // A quarter of the purchases are direct orders (E21): kills while they are in flight, and
    // the random 5xx on their sends, must not buy them twice either.
    let mut requests = support::mixed(&format!("loop-{seed}"), purchases);
    for request in requests.iter_mut().skip(3).step_by(4) {
        request["orderPath"] = serde_json::json!("direct");
    }
    for chunk in requests.chunks(500) {
        b.submit(chunk).await;
    }
    assert_eq!(b.accepted, purchases);
    let started = Instant::now();
    for kill in 0..kills {
        let mut daemon = b.daemon("loop", &[], &["--concurrency", "64"]);
        tokio::time::sleep(Duration::from_millis(rng.between(50, 700))).await;
        daemon.kill().expect("SIGKILL");
        daemon.wait().expect("reaped");
        if kill % 100 == 99 {
            eprintln!(
                "  {} kills after {:.0}s",
                kill + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    b.finish(
        "loop-final",
        Duration::from_secs(if big() { 3600 } else { 240 }),
    )
    .await;
    let audit = b.audit(true).await;
    eprintln!(
        "random_sigkill_loop: seed {seed}: {} purchases, {kills} kills, {} checkouts, {} orders, duplicates {}, lost {}, statuses {:?}, {:.0}s",
        audit.purchases, audit.checkouts, audit.orders, audit.duplicates, audit.lost, audit.by_status, started.elapsed().as_secs_f64()
    );
    audit.assert_clean(&format!(
        "PCSAGA_SEED={seed} cargo test --test e2e random_sigkill_loop"
    ));
    // Every purchase succeeded, except a direct order that stopped for an operator after its
    // absence was proven on every send allowed (the kills and the random 5xx can keep each send
    // from reaching the simulator): the promise holds for it too, if it says so and bought
    // nothing.
    let witnesses = pcsaga_testkit::gather(&b.store, &b.sim.ledger(), &b.sim.requests())
        .await
        .expect("witnesses");
    let token_of = |s: &pcsaga_engine::SagaRecord| {
        serde_json::from_str::<serde_json::Value>(&s.context).unwrap_or_default()["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (proven_absent, stopped): (Vec<_>, Vec<_>) = witnesses
        .sagas
        .iter()
        .filter(|s| s.status != pcsaga_engine::SagaStatus::Succeeded)
        .partition(|s| {
            s.status == pcsaga_engine::SagaStatus::NeedsAttention
                && s.last_error
                    .as_deref()
                    .is_some_and(|e| e.starts_with("direct order: the order list showed nothing"))
                && witnesses.ledger.orders_with_token(&token_of(s)).is_empty()
        });
    // Rare by construction (every send of one purchase kept from the simulator): a handful at
    // most, or the direct path is failing for a reason of its own.
    assert!(
        proven_absent.len() <= (purchases / 400).max(1),
        "{} direct orders parked as absent; rerun: PCSAGA_SEED={seed} cargo test --test e2e random_sigkill_loop",
        proven_absent.len()
    );
    if !proven_absent.is_empty() {
        eprintln!(
            "random_sigkill_loop: {} direct order(s) parked after every send allowed was proven absent, nothing bought",
            proven_absent.len()
        );
    }
    if !stopped.is_empty() {
        let stopped: Vec<String> = stopped
            .iter()
            .take(5)
            .map(|s| {
                format!(
                    "{} {} in {}: {:?}",
                    s.idempotency_key, s.status, s.state, s.last_error
                )
            })
            .collect();
        panic!(
            "{:?}; rerun: PCSAGA_SEED={seed} cargo test --test e2e random_sigkill_loop\n  {}",
            audit.by_status,
            stopped.join("\n  ")
        );
    }
}

/// Goal: a storm of 429s, then an outage, then hanging requests, then calm: every purchase
/// finishes, no request goes out before its Retry-After, retries are spread, and Partner
/// Center calls in flight never exceed the cap. The daemon then stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn throttling_and_outage_storm() {
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 1,
        hang_s: 5,
        ..SimConfig::default()
    })
    .await;
    b.submit(&support::mixed("storm", 40)).await;
    let phase = |rules: Vec<FaultRule>| FaultPlan { seed: 5, rules };
    b.sim
        .set_faults(phase(vec![
            rule(
                "*",
                0.8,
                None,
                Fault::Throttle {
                    retry_after_s: 1,
                    http_date: false,
                },
            ),
            rule("token", 0.0, None, Fault::Drop),
        ]))
        .expect("plan");
    let mut daemon = b.daemon("storm", &[], &["--max-calls", "4", "--concurrency", "16"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.sim
        .set_faults(phase(vec![rule(
            "*",
            1.0,
            None,
            Fault::Throttle {
                retry_after_s: 2,
                http_date: true,
            },
        )]))
        .expect("plan");
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.sim
        .set_faults(phase(vec![rule(
            "*",
            1.0,
            None,
            Fault::Status {
                status: 503,
                code: None,
            },
        )]))
        .expect("plan");
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.sim
        .set_faults(phase(vec![rule(
            "*",
            1.0,
            None,
            Fault::Hang { processed: false },
        )]))
        .expect("plan");
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.sim.set_faults(FaultPlan::default()).expect("calm");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts = pcsaga_engine::Store::count_by_status(&b.store)
            .await
            .expect("counts");
        if counts
            .get(&pcsaga_engine::SagaStatus::Active)
            .copied()
            .unwrap_or(0)
            == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the storm did not settle:\n{}",
            support::tail(&b.env.read("storm.err"), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SIGTERM: a clean stop.
    let status = support::sigterm(&mut daemon).await;
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    assert!(b.env.read("storm.err").contains("daemon stopped cleanly"));

    let audit = b.audit(true).await;
    audit.assert_clean("cargo test --test e2e throttling_and_outage_storm");
    assert_eq!(
        audit.by_status.get("succeeded"),
        Some(&40),
        "{:?}",
        audit.by_status
    );
    let requests = b.sim.requests();
    let throttled = requests.iter().filter(|r| r.status == Some(429)).count();
    let unavailable = requests.iter().filter(|r| r.status == Some(503)).count();
    // Few 429s: the first of a class pauses it for every purchase (the governor), so the
    // daemon does not keep calling into the storm.
    assert!(
        throttled >= 2 && unavailable > 0,
        "the storm happened: {throttled} 429s, {unavailable} 503s"
    );
    let early = support::calls_inside_retry_after(&requests, Duration::from_millis(400));
    assert!(
        early.is_empty(),
        "calls sent inside a Retry-After:\n{}",
        early.join("\n")
    );
    assert!(
        b.sim.max_in_flight() <= 4,
        "at most 4 calls in flight, saw {}",
        b.sim.max_in_flight()
    );
    // Jitter (retries after the outage spread, not in lockstep) is a property of the policy,
    // checked deterministically in crates/engine/src/policy.rs rather than in wall-clock slots.
}

/// Goal: two daemons on one database file never run a purchase at once, nor do anything twice.
/// Method: 60 purchases, two daemon processes at once, no faults: each purchase must show
/// exactly one cart creation and one checkout at the simulator.
#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_on_one_file() {
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        ..SimConfig::default()
    })
    .await;
    b.submit(&support::mixed("pair", 60)).await;
    let mut first = b.daemon("first", &[], &["--exit-when-idle", "--concurrency", "8"]);
    let mut second = b.daemon("second", &[], &["--exit-when-idle", "--concurrency", "8"]);
    let (first_pid, second_pid) = (first.id(), second.id());
    for (name, child) in [("first", &mut first), ("second", &mut second)] {
        let status = support::wait_with_deadline(child, Duration::from_secs(120))
            .await
            .expect("finishes");
        assert!(
            status.success(),
            "{name}: {}",
            b.env.read(&format!("{name}.err"))
        );
    }
    let audit = b.audit(true).await;
    audit.assert_clean("cargo test --test e2e two_daemons_on_one_file");
    assert_eq!(audit.by_status.get("succeeded"), Some(&60));
    let requests = b.sim.requests();
    let mut per_purchase: std::collections::HashMap<(String, String), usize> =
        std::collections::HashMap::new();
    for r in requests
        .iter()
        .filter(|r| r.endpoint == "create_cart" || r.endpoint == "checkout")
    {
        *per_purchase
            .entry((
                r.correlation_id.clone().unwrap_or_default(),
                r.endpoint.clone(),
            ))
            .or_default() += 1;
    }
    assert_eq!(
        per_purchase.len(),
        120,
        "every purchase created a cart and checked out"
    );
    assert!(
        per_purchase.values().all(|n| *n == 1),
        "nothing was done twice: {per_purchase:?}"
    );
    // Both daemons did work: the claims in the history name each one's process id.
    let witnesses = pcsaga_testkit::gather(&b.store, &b.sim.ledger(), &b.sim.requests())
        .await
        .expect("witnesses");
    let claims_by = |pid: u32| {
        let tag = format!(":{pid}:");
        witnesses
            .histories
            .values()
            .flatten()
            .filter(|r| {
                r.kind == "claimed" && r.detail.as_deref().is_some_and(|d| d.contains(&tag))
            })
            .count()
    };
    let (a, b_claims) = (claims_by(first_pid), claims_by(second_pid));
    assert!(
        a > 0 && b_claims > 0,
        "both daemons claimed purchases: {a} and {b_claims} claims"
    );
}

/// Goal: the CLI writing while the daemon runs never sees "database is locked"; a database
/// that cannot be written stops the daemon from claiming with a clear error and loses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_database_under_stress() {
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        ..SimConfig::default()
    })
    .await;
    b.submit(&support::mixed("stress-a", 30)).await;
    let mut daemon = b.daemon("stress", &[], &["--concurrency", "32"]);
    let mut outputs = Vec::new();
    for round in 0..12 {
        let file = b.env.write(
            &format!("s{round}.ndjson"),
            &support::mixed(&format!("stress-b{round}"), 5)
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        );
        let mut submit = b.env.pcsaga(Some(&b.sim));
        submit.arg("submit").arg(file);
        outputs.push(support::run_async(submit).await);
        let mut list = b.env.pcsaga(None);
        list.args(["list", "--json"]);
        outputs.push(support::run_async(list).await);
        b.accepted += 5;
    }
    for output in &outputs {
        assert!(
            output.status.success(),
            "a CLI command failed while the daemon ran: {}",
            support::stderr(output)
        );
        assert!(
            !support::stderr(output).contains("locked"),
            "{}",
            support::stderr(output)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while pcsaga_engine::Store::count_by_status(&b.store)
        .await
        .expect("counts")
        .get(&pcsaga_engine::SagaStatus::Active)
        .copied()
        .unwrap_or(0)
        > 0
    {
        assert!(Instant::now() < deadline, "did not settle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.kill().expect("stop");
    daemon.wait().expect("reaped");
    assert!(!b.env.read("stress.err").contains("locked"));

    // A full disk: the writer is capped below the file's size. The daemon cannot claim, says
    // so, and nothing is lost; with room again, everything finishes.
    b.submit(&support::mixed("stress-c", 10)).await;
    let mut full = b.daemon("full", &[("PCSAGA_DB_MAX_SIZE_MB", "0")], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.env.read("full.err").contains("cannot claim work") {
        assert!(
            Instant::now() < deadline,
            "no clear error:\n{}",
            b.env.read("full.err")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    full.kill().expect("stop");
    full.wait().expect("reaped");
    assert!(
        b.env.read("full.err").contains("cannot be written"),
        "{}",
        b.env.read("full.err")
    );
    // Writes that still fit in free pages may have gone through; none may have stopped a
    // purchase (a failed write is never taken for a decision).
    let counts = pcsaga_engine::Store::count_by_status(&b.store)
        .await
        .expect("counts");
    assert!(
        !counts.contains_key(&pcsaga_engine::SagaStatus::Failed)
            && !counts.contains_key(&pcsaga_engine::SagaStatus::NeedsAttention),
        "a full disk stopped a purchase: {counts:?}"
    );
    b.finish("roomy", Duration::from_secs(120)).await;
    let audit = b.audit(true).await;
    audit.assert_clean("cargo test --test e2e the_database_under_stress");
    assert_eq!(
        audit.by_status.get("succeeded"),
        Some(&b.accepted),
        "{:?}",
        audit.by_status
    );
}

/// The canary: the same checks against a daemon that skips the intent commit (a deliberately
/// broken build behind a test-only switch) must fail. If this test fails, the battery is blind.
#[tokio::test(flavor = "multi_thread")]
async fn the_canary_is_seen() {
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        ..SimConfig::default()
    })
    .await;
    b.submit(&support::mixed("canary", 6)).await;
    let mut daemon = b.daemon(
        "canary",
        &[("PCSAGA_TEST_UNSAFE_SKIP_INTENT", "1")],
        &["--exit-when-idle"],
    );
    let status = support::wait_with_deadline(&mut daemon, Duration::from_secs(60))
        .await
        .expect("finishes");
    assert!(status.success(), "{}", b.env.read("canary.err"));
    let audit = b.audit(true).await;
    assert!(
        audit
            .violations
            .iter()
            .any(|v| v.contains("without a committed intent")),
        "the auditor did not notice the missing intents: {:?}",
        audit.violations
    );
}

/// Direct orders (E21) whose replies are lost after the order was created (the simulator drops
/// the first reply of each), under each thing the service may do with a repeated request id:
/// `replay`, `conflict` (409/800060) and `ignore` (a second order). The daemon sends nothing
/// again before the order list answers, so each purchase has exactly one order, and the
/// auditor's direct-order checks (one order, no cart) pass.
#[tokio::test(flavor = "multi_thread")]
async fn lost_direct_order_replies_never_buy_twice_whatever_the_service_does() {
    let runs = [
        DirectOrderReplay::Replay,
        DirectOrderReplay::Conflict,
        DirectOrderReplay::Ignore,
    ]
    .map(|replay| async move {
        let (b, audit) = lost_direct_replies(replay, &[]).await;
        audit.assert_clean(&format!(
            "cargo test --test e2e lost_direct_order_replies ({replay:?})"
        ));
        assert_eq!(
            audit.by_status.get("succeeded"),
            Some(&6),
            "{replay:?}: {:?}",
            audit.by_status
        );
        assert_eq!((audit.checkouts, audit.orders), (0, 6), "{replay:?}");
        let sends = b
            .sim
            .requests()
            .iter()
            .filter(|r| r.endpoint == "create_order")
            .count();
        assert_eq!(sends, 6, "{replay:?}: each order sent once");
        // `show` says what was sent, under which request id, and how it was found again.
        let sagas = pcsaga_engine::Store::list(&b.store, &pcsaga_engine::ListFilter::default())
            .await
            .expect("list");
        let shown = support::run(b.env.pcsaga(None).args(["show", &sagas[0].id]));
        let text = support::stdout(&shown);
        assert!(
            text.contains("direct order  MS-RequestId")
                && text.contains("line 0")
                && text.contains("reconciled because direct order"),
            "{replay:?}: {text}"
        );
    });
    futures_util::future::join_all(runs).await;
}

/// The canary of the direct path: a daemon told to send again at once after a lost reply
/// (`PCSAGA_TEST_UNSAFE_DIRECT_RESEND`), against a service that does not deduplicate, buys
/// twice, and the auditor says so.
#[tokio::test(flavor = "multi_thread")]
async fn the_direct_order_canary_is_seen() {
    let (_b, audit) = lost_direct_replies(
        DirectOrderReplay::Ignore,
        &[("PCSAGA_TEST_UNSAFE_DIRECT_RESEND", "1")],
    )
    .await;
    assert!(
        audit
            .violations
            .iter()
            .any(|v| v.contains("direct orders for one purchase")),
        "the auditor did not notice the second orders: {:?}",
        audit.violations
    );
}

/// Six direct purchases (two of each kind), the first reply of each dropped after its order
/// was created, run by one daemon with `extra` environment until idle; the audit.
async fn lost_direct_replies(
    replay: DirectOrderReplay,
    extra: &[(&str, &str)],
) -> (Battery, pcsaga_testkit::Audit) {
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        order_list_lag_s: 1,
        direct_order_replay: replay,
        faults: FaultPlan {
            seed: 1,
            rules: vec![rule("create_order", 1.0, Some(6), Fault::Drop)],
        },
        ..SimConfig::default()
    })
    .await;
    let mut requests = support::mixed(&format!("direct-{replay:?}"), 6);
    for request in &mut requests {
        request["orderPath"] = serde_json::json!("direct");
    }
    assert_eq!(b.submit(&requests).await, 6);
    let name = format!("direct-{replay:?}");
    let mut daemon = b.daemon(&name, extra, &["--exit-when-idle"]);
    let status = support::wait_with_deadline(&mut daemon, Duration::from_secs(120))
        .await
        .expect("the daemon finishes");
    assert!(
        status.success(),
        "{}",
        support::tail(&b.env.read(&format!("{name}.err")), 20)
    );
    let audit = b.audit(true).await;
    (b, audit)
}

/// A rotated client secret: the daemon says so at ERROR, claims nothing new and fails no
/// purchase; it stops cleanly on SIGTERM; with the right secret the same queue finishes.
#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_stop_claiming_and_fail_nothing() {
    let mut b = Battery::new(SimConfig::default()).await;
    let accepted = b.submit(&support::mixed("creds", 6)).await;
    assert_eq!(accepted, 6);
    let started = Instant::now();
    let mut daemon = b.daemon(
        "wrong",
        &[
            ("PCSAGA_CLIENT_SECRET", "rotated-and-wrong"),
            ("PCSAGA_CREDENTIALS_RETRY_S", "1"),
        ],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b
        .env
        .read("wrong.err")
        .contains("claiming no work until this is fixed")
    {
        assert!(
            Instant::now() < deadline,
            "the daemon never said why it claims nothing:\n{}",
            support::tail(&b.env.read("wrong.err"), 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = support::sigterm(&mut daemon).await;
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    let log = b.env.read("wrong.err");
    assert!(
        log.contains("ERROR") && log.contains("refused our credentials"),
        "{}",
        support::tail(&log, 20)
    );
    assert!(
        !log.contains("rotated-and-wrong"),
        "the secret is never logged"
    );
    let counts = pcsaga_engine::Store::count_by_status(&b.store)
        .await
        .expect("counts");
    assert_eq!(
        counts.get(&pcsaga_engine::SagaStatus::Active).copied(),
        Some(6),
        "every purchase is still active: {counts:?}"
    );
    // One refused token per purchase claimed before the hold at most, then one probe per
    // second (the retry setting): no storm.
    let probes = started.elapsed().as_secs() as usize + 1;
    let tokens = b
        .sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "token")
        .count();
    assert!(
        tokens <= 6 + probes,
        "{tokens} token requests in {probes} s"
    );
    assert!(b.sim.ledger().carts.is_empty());
    // `status` says why the queue does not move.
    let mut command = b.env.pcsaga(Some(&b.sim));
    command.arg("status");
    let status = support::run_async(command).await;
    let text = support::stdout(&status);
    assert!(
        text.contains("HELD") && text.contains("refuses the credentials"),
        "{text}"
    );
    let mut command = b.env.pcsaga(Some(&b.sim));
    command.args(["status", "--json"]);
    let held = support::json(&support::run_async(command).await)["heldForCredentials"]
        .as_u64()
        .unwrap_or(0);
    assert!(held >= 1, "held purchases are counted: {held}");

    b.finish("right", Duration::from_secs(120)).await;
    let audit = b.audit(true).await;
    audit.assert_clean("cargo test --test e2e refused_credentials");
    let counts = pcsaga_engine::Store::count_by_status(&b.store)
        .await
        .expect("counts");
    assert_eq!(
        counts
            .get(&pcsaga_engine::SagaStatus::Active)
            .copied()
            .unwrap_or(0),
        0
    );
}
