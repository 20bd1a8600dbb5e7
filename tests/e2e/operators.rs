//! What the people who run pcsaga see: the daemon's log, and a log that cannot be written.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig};

use crate::support::{self, on_both_stores, Backend, Battery};

fn rule(endpoint: &str, after: u64, fault: Fault) -> FaultRule {
    FaultRule {
        endpoint: endpoint.into(),
        probability: 1.0,
        after,
        limit: Some(1),
        fault,
    }
}

/// The daemon's log (JSON lines), reduced to what does not change between runs: level,
/// message and the fields an operator acts on, ids and times redacted, each distinct line once.
fn redacted(log: &str) -> Vec<String> {
    let mut lines: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            let level = v["level"].as_str().unwrap_or("");
            let message = v["fields"]["message"].as_str().unwrap_or("");
            level == "WARN"
                || level == "ERROR"
                || (message == "partner center call" && v["fields"]["call"] == "checkout")
        })
        .map(|v| {
            let f = &v["fields"];
            let message = f["message"].as_str().unwrap_or("");
            let message = message.split(". Next:").next().unwrap_or(message);
            let mut out = format!("{} {message}", v["level"].as_str().unwrap_or(""));
            for key in ["call", "route", "status", "class", "state"] {
                if let Some(value) = f[key].as_str().or(f[key].as_u64().map(|_| "")) {
                    let value = if value.is_empty() {
                        f[key].to_string()
                    } else {
                        value.to_owned()
                    };
                    out.push_str(&format!(" {key}={value}"));
                }
            }
            for key in [
                "request_id",
                "purchase",
                "customer",
                "wait",
                "reason",
                "error",
            ] {
                if !f[key].is_null() {
                    out.push_str(&format!(" {key}=[..]"));
                }
            }
            out
        })
        .collect();
    lines.sort();
    lines.dedup();
    lines
}

/// The log names the call, the status, the class and the request id of every call, says
/// WARN for a 429, a 503 and a lost checkout reply and for every retry, and ERROR with the
/// reason for a failure and a park.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_log_says_what_an_operator_needs() {
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        checkout_restricted_regions: vec!["eastus".into()],
        faults: FaultPlan {
            seed: 1,
            rules: vec![
                rule(
                    "get_product",
                    0,
                    Fault::Throttle {
                        retry_after_s: 1,
                        http_date: false,
                    },
                ),
                rule(
                    "get_sku",
                    0,
                    Fault::Status {
                        status: 503,
                        code: None,
                    },
                ),
                rule("checkout", 0, Fault::Drop),
            ],
        },
        ..SimConfig::default()
    })
    .await;
    let software = support::request("log-software", "DG7GMGF0DWTL", "0001", None);
    let restricted = support::request("log-restricted", "DZH318Z0BQ3Q", "0003", Some("P1Y"));
    // An RI in eastus fails at checkout while the software subscription is bought: partly
    // bought, parked.
    let mut partial = support::request("log-partial", "DZH318Z0BQ3Q", "0001", Some("P1Y"));
    partial["items"].as_array_mut().expect("items").push(
        serde_json::json!({"productId": "DG7GMGF0FKZV", "skuId": "0003", "quantity": 1, "termDuration": "P1Y"}),
    );
    assert_eq!(b.submit(&[software]).await, 1);
    assert_eq!(b.submit(&[restricted, partial]).await, 2);
    // The governor's default budgets, as an operator runs it (the battery lifts them); the
    // direct-order wait fits the tests' fast Checkout policy.
    let defaults = b
        .env
        .write("defaults.toml", "[direct_order]\nabsence_wait_s = 20\n");
    let defaults = defaults.to_string_lossy().into_owned();
    let mut daemon = b.daemon(
        "log",
        &[("PCSAGA_CONFIG", defaults.as_str())],
        &["--exit-when-idle", "--log-format", "json"],
    );
    let status = support::wait_with_deadline(&mut daemon, Duration::from_secs(120))
        .await
        .expect("the daemon finishes");
    assert!(
        status.success(),
        "{}",
        support::tail(&b.env.read("log.err"), 20)
    );
    let log = b.env.read("log.err");
    let calls = log
        .lines()
        .filter(|l| l.contains("\"message\":\"partner center call\""))
        .count();
    let requests = b
        .sim
        .requests()
        .iter()
        .filter(|r| r.endpoint != "token")
        .count();
    assert_eq!(calls, requests, "one line per Partner Center call");
    assert!(
        log.contains("\"message\":\"summary\""),
        "a summary at the end"
    );
    // The next command runs as printed: it names the database the daemon uses.
    let next = format!("Next: `pcsaga --db {} show ", b.env.db.display());
    assert!(log.contains(&next), "{}", support::tail(&log, 5));
    insta::assert_snapshot!(redacted(&log).join("\n"));
}

/// Goal: a log pipe whose reader goes away never stops the daemon. Method: the daemon's
/// stderr is a pipe; the test reads a little, then closes its end while purchases are in
/// flight; SIGTERM must still stop the daemon cleanly (exit 0) and give every lease back, and
/// a second daemon finishes every purchase.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_log_pipe_never_stops_the_daemon() {
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 0,
        faults: FaultPlan {
            seed: 1,
            rules: vec![FaultRule {
                endpoint: "*".into(),
                probability: 1.0,
                after: 0,
                limit: None,
                fault: Fault::Latency {
                    min_ms: 20,
                    max_ms: 60,
                },
            }],
        },
        ..SimConfig::default()
    })
    .await;
    assert_eq!(b.submit(&support::mixed("pipe", 30)).await, 30);
    let mut command = b.env.pcsaga(Some(&b.sim));
    command
        .args(["daemon", "--log", "debug"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut daemon = command.spawn().expect("daemon starts");
    let mut pipe = daemon.stderr.take().expect("stderr pipe");
    let mut first = [0u8; 4096];
    let read = pipe.read(&mut first).expect("the daemon logs");
    assert!(read > 0);
    // The reader goes away, as when `tee` is stopped.
    drop(pipe);
    // Purchases are in flight: wait until some have made progress after the pipe closed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let witnesses = pcsaga_testkit::gather(&b.store, &b.sim.ledger(), &b.sim.requests())
            .await
            .expect("witnesses");
        if witnesses.ledger.checkouts.len() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no progress after the pipe closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = support::sigterm(&mut daemon).await;
    assert_eq!(
        status.code(),
        Some(0),
        "a clean stop, not a panic: {status}"
    );
    // Every lease was given back: nothing waits for a lease to run out.
    let now = chrono::Utc::now();
    let leased = pcsaga_engine::Store::list(&b.store, &pcsaga_engine::ListFilter::default())
        .await
        .expect("list")
        .into_iter()
        .filter(|s| s.lease_expires_at.is_some_and(|at| at > now))
        .count();
    assert_eq!(leased, 0, "leases released on SIGTERM");
    b.finish("after", Duration::from_secs(120)).await;
    let audit = b.audit(true).await;
    audit.assert_clean("cargo test --test e2e a_broken_log_pipe");
    assert_eq!(
        audit.by_status.get("succeeded"),
        Some(&30),
        "{:?}",
        audit.by_status
    );
}

/// Policies for the operator test: the reconciliation gives up after 2 s, and a retry in
/// Discovery waits an hour.
const OPERATOR_POLICIES: &str = r#"
workflow = "one-time-purchase"
[defaults.retry]
initial_interval_ms = 50
max_interval_ms = 400
max_attempts = 60
jitter = 0.2
[defaults.poll]
interval_ms = 100
deadline_s = 300
[states.Discovery.retry]
initial_interval_ms = 3600000
max_interval_ms = 3600000
[states.Checkout.retry]
on_exhausted = "park"
[states.Checkout.poll]
deadline_s = 2
on_deadline = "park"
[states.OrderVisibilityPolling.retry]
on_exhausted = "park"
[states.OrderVisibilityPolling.poll]
on_deadline = "park"
[states.EntitlementFetch.retry]
on_exhausted = "park"
[states.EntitlementFetch.poll]
on_deadline = "park"
"#;

/// Runs the daemon until nothing is active.
async fn drain(b: &Battery, name: &str, workflow: &std::path::Path) {
    let mut daemon = b.daemon(
        name,
        &[("PCSAGA_WORKFLOW", workflow.to_str().unwrap_or(""))],
        &["--exit-when-idle"],
    );
    let status = support::wait_with_deadline(&mut daemon, Duration::from_secs(120))
        .await
        .expect("the daemon finishes");
    assert!(
        status.success(),
        "{}",
        support::tail(&b.env.read(&format!("{name}.err")), 20)
    );
}

/// Runs `pcsaga ARGS` with the battery's database and simulator.
async fn pcsaga(b: &Battery, args: &[&str]) -> std::process::Output {
    let mut command = b.env.pcsaga(Some(&b.sim));
    command.args(args);
    support::run_async(command).await
}

async fn show(b: &Battery, id: &str) -> serde_json::Value {
    support::json(&pcsaga(b, &["show", id, "--json"]).await)
}

/// Runs a command exactly as `show` printed it (between backticks), with this test's binary.
async fn run_printed(b: &Battery, step: &str) -> std::process::Output {
    let printed = step
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in {step:?}"));
    let script = printed.replacen("pcsaga", env!("CARGO_BIN_EXE_pcsaga"), 1);
    // The same environment as every other command of the test; the command line is the
    // printed one, run by a shell as a person would paste it.
    let template = b.env.pcsaga(Some(&b.sim));
    let mut shell = std::process::Command::new("sh");
    shell.env_clear().arg("-c").arg(&script);
    for (key, value) in template.get_envs() {
        if let Some(value) = value {
            shell.env(key, value);
        }
    }
    support::run_async(shell).await
}

/// The operator's paths, through the real binary: a restricted-region failure fixed and
/// resumed with the printed command; a reconciliation parked with its order unseen, refused
/// past Checkout without orders, refused a wrong order and finished by `attach-order` with the
/// right one; a purchase in an hour-long backoff moved by `retry`.
async fn an_operator_fixes_resumes_attaches_and_retries(backend: Backend) {
    let mut b = Battery::on(
        SimConfig {
            registration_polls: 1,
            order_completion_s: 0,
            order_list_lag_s: 10 * 24 * 3600,
            checkout_replay: pcsaga_simulator::CheckoutReplay::AlreadySubmitted,
            faults: FaultPlan {
                seed: 1,
                rules: vec![rule("checkout", 0, Fault::Drop)],
            },
            ..SimConfig::default()
        },
        backend,
    )
    .await;
    let workflow = b.env.write("operator.toml", OPERATOR_POLICIES);
    // The first checkout's reply is lost, and its order never reaches the (lagging) list.
    let mut lost = support::request("op-lost", "DG7GMGF0DWTL", "0001", None);
    lost["customerId"] = serde_json::json!("0a0b0c0d-0000-4000-8000-000000000001");
    assert_eq!(b.submit(&[lost]).await, 1);
    drain(&b, "first", &workflow).await;
    let restricted = support::request("op-restricted", "DZH318Z0BQ3Q", "0003", Some("P1Y"));
    let other = support::request("op-other", "DG7GMGF0DWTL", "0001", None);
    assert_eq!(b.submit(&[restricted, other]).await, 2);
    drain(&b, "second", &workflow).await;
    let sagas = pcsaga_engine::Store::list(&b.store, &pcsaga_engine::ListFilter::default())
        .await
        .expect("list");
    let by_key = |key: &str| {
        sagas
            .iter()
            .find(|s| s.idempotency_key == key)
            .expect(key)
            .clone()
    };
    let (lost, restricted, other) = (
        by_key("op-lost"),
        by_key("op-restricted"),
        by_key("op-other"),
    );
    assert_eq!(restricted.status, pcsaga_engine::SagaStatus::Failed);
    assert_eq!(
        lost.status,
        pcsaga_engine::SagaStatus::NeedsAttention,
        "{:?}",
        lost.last_error
    );
    assert_eq!(other.status, pcsaga_engine::SagaStatus::Succeeded);

    // 1. Restricted region: lift the restriction, run the printed next command.
    let http = reqwest::Client::new();
    let lifted = http
        .put(format!("{}/_sim/restrictions", b.sim.base_url()))
        .json(&serde_json::json!({"restrictedRegions": [], "checkoutRestrictedRegions": []}))
        .send()
        .await
        .expect("admin API");
    assert!(lifted.status().is_success());
    let shown = show(&b, &restricted.id).await;
    let step = shown["next"][0].as_str().expect("a next step").to_owned();
    assert!(step.contains("resume"), "{step}");
    let resumed = run_printed(&b, &step).await;
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{}",
        support::stderr(&resumed)
    );
    assert!(
        support::stdout(&resumed).contains("no daemon is running"),
        "{}",
        support::stdout(&resumed)
    );

    // 2. The lost reply: no way past Checkout without orders.
    let refused = pcsaga(
        &b,
        &[
            "resume",
            &lost.id,
            "--from",
            "OrderVisibilityPolling",
            "--reason",
            "skip",
        ],
    )
    .await;
    assert_eq!(
        refused.status.code(),
        Some(5),
        "{}",
        support::stderr(&refused)
    );
    assert!(
        support::stderr(&refused).contains("its orders are not known"),
        "{}",
        support::stderr(&refused)
    );
    let shown = show(&b, &lost.id).await;
    assert!(
        shown["next"][0]
            .as_str()
            .is_some_and(|s| s.contains("attach-order")),
        "{shown}"
    );
    let ledger = b.sim.ledger();
    let lost_token = serde_json::from_str::<serde_json::Value>(&lost.context).expect("context")
        ["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let right = ledger.orders_with_token(&lost_token)[0].order_id.clone();
    let other_token = serde_json::from_str::<serde_json::Value>(&other.context).expect("context")
        ["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let wrong = ledger.orders_with_token(&other_token)[0].order_id.clone();
    let attach = |order: String| {
        let (b, id) = (&b, lost.id.clone());
        async move {
            let reason = "found it in Partner Center";
            pcsaga(
                b,
                &["attach-order", &id, "--order", &order, "--reason", reason],
            )
            .await
        }
    };
    let refused = attach(wrong).await;
    assert_eq!(
        refused.status.code(),
        Some(5),
        "{}",
        support::stderr(&refused)
    );
    let attached = attach(right).await;
    assert_eq!(
        attached.status.code(),
        Some(0),
        "{}",
        support::stderr(&attached)
    );

    // 3. A purchase in an hour-long backoff (a 503 in Discovery), moved by retry.
    b.sim
        .set_faults(FaultPlan {
            seed: 2,
            rules: vec![rule(
                "get_product",
                0,
                Fault::Status {
                    status: 503,
                    code: None,
                },
            )],
        })
        .expect("plan");
    let mut slow = support::request("op-slow", "DG7GMGF0DWTL", "0001", None);
    slow["customerId"] = serde_json::json!("0a0b0c0d-0000-4000-8000-000000000002");
    assert_eq!(b.submit(&[slow]).await, 1);
    let mut daemon = b.daemon(
        "third",
        &[("PCSAGA_WORKFLOW", workflow.to_str().unwrap_or(""))],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let slow = loop {
        let sagas = pcsaga_engine::Store::list(&b.store, &pcsaga_engine::ListFilter::default())
            .await
            .expect("list");
        let slow = sagas
            .into_iter()
            .find(|s| s.idempotency_key == "op-slow")
            .expect("slow");
        if slow
            .wait_reason
            .as_deref()
            .is_some_and(|w| w.starts_with("retry 1"))
        {
            break slow;
        }
        assert!(
            Instant::now() < deadline,
            "the purchase never waited on its backoff"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Waiting on an hour-long backoff after a retry: `list --stuck` shows it.
    let stuck = pcsaga(&b, &["list", "--stuck", "--json"]).await;
    let stuck = support::json(&stuck);
    assert!(
        stuck
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["id"] == slow.id.as_str())),
        "{stuck}"
    );
    let retried = pcsaga(
        &b,
        &["retry", &slow.id, "--reason", "Partner Center is back"],
    )
    .await;
    assert_eq!(
        retried.status.code(),
        Some(0),
        "{}",
        support::stderr(&retried)
    );
    assert!(
        support::stdout(&retried).contains("daemon(s) running"),
        "{}",
        support::stdout(&retried)
    );
    // Everything finishes: the resumed, the attached and the retried purchase succeed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let counts = pcsaga_engine::Store::count_by_status(&b.store)
            .await
            .expect("counts");
        if counts.get(&pcsaga_engine::SagaStatus::Succeeded).copied() == Some(4) {
            break;
        }
        assert!(Instant::now() < deadline, "not all finished: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = support::wait_with_deadline(&mut daemon, Duration::from_secs(30)).await;
    let audit = b.audit(true).await;
    audit.assert_clean("cargo test --test e2e an_operator_fixes");
    let history = pcsaga_engine::Store::history(&b.store, &lost.id)
        .await
        .expect("history");
    assert!(
        history.iter().any(|r| r.kind == "operator"
            && r.detail
                .as_deref()
                .is_some_and(|d| d.starts_with("attach-order: found it"))),
        "the action and its reason are in the history"
    );
}

/// Bulk actions: `resume` with filters lists what it would touch with `--dry-run`, refuses
/// more than 10 without `--yes`, and with it resumes each one, recorded in each history.
async fn bulk_resume_asks_before_it_touches_many(backend: Backend) {
    let mut b = Battery::on(SimConfig::default(), backend).await;
    let requests: Vec<serde_json::Value> = (0..12)
        .map(|i| support::request(&format!("bulk-{i}"), "DZH318Z0BQ3Q", "0003", Some("P1Y")))
        .collect();
    assert_eq!(b.submit(&requests).await, 12);
    let mut daemon = b.daemon("bulk", &[], &["--exit-when-idle"]);
    let status = support::wait_with_deadline(&mut daemon, Duration::from_secs(60))
        .await
        .expect("the daemon finishes");
    assert!(status.success());
    let run = |args: &'static [&'static str]| pcsaga(&b, args);
    let dry = run(&[
        "resume",
        "--status",
        "failed",
        "--reason",
        "region lifted",
        "--dry-run",
    ])
    .await;
    assert_eq!(dry.status.code(), Some(0), "{}", support::stderr(&dry));
    assert!(
        support::stdout(&dry).contains("resume would touch 12 purchase(s)"),
        "{}",
        support::stdout(&dry)
    );
    let refused = run(&["resume", "--status", "failed", "--reason", "region lifted"]).await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        support::stderr(&refused).contains("add --yes"),
        "{}",
        support::stderr(&refused)
    );
    let both = run(&["resume", "x", "--status", "failed", "--reason", "r"]).await;
    assert_eq!(
        both.status.code(),
        Some(2),
        "an id and filters together are refused"
    );
    let done = run(&[
        "resume",
        "--status",
        "failed",
        "--reason",
        "region lifted",
        "--yes",
        "--json",
    ])
    .await;
    assert_eq!(done.status.code(), Some(0), "{}", support::stderr(&done));
    let results = support::json(&done);
    assert_eq!(results.as_array().map(Vec::len), Some(12));
    let counts = pcsaga_engine::Store::count_by_status(&b.store)
        .await
        .expect("counts");
    assert_eq!(
        counts.get(&pcsaga_engine::SagaStatus::Active).copied(),
        Some(12)
    );
    let sagas = pcsaga_engine::Store::list(&b.store, &pcsaga_engine::ListFilter::default())
        .await
        .expect("list");
    for saga in sagas {
        let history = pcsaga_engine::Store::history(&b.store, &saga.id)
            .await
            .expect("history");
        assert!(history
            .iter()
            .any(|r| r.kind == "operator" && r.detail.as_deref() == Some("resume: region lifted")));
    }
}

on_both_stores!(an_operator_fixes_resumes_attaches_and_retries);
on_both_stores!(bulk_resume_asks_before_it_touches_many);
