//! What the people who run pcsaga see: the daemon's log, and a log that cannot be written.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig};

use crate::support::{self, Battery};

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
    let mut daemon = b.daemon("log", &[], &["--exit-when-idle", "--log-format", "json"]);
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
    drop(pipe); // the reader goes away, as when `tee` is stopped
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
    let term = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(term.success());
    let status = support::wait_with_deadline(&mut daemon, Duration::from_secs(30))
        .await
        .expect("SIGTERM stops the daemon with its log pipe closed");
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
