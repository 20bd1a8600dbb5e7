//! Good manners toward a Partner Center that throttles: one governor per tenant in the daemon.

use std::time::Duration;

use pcsaga_simulator::throttle::ThrottleConfig;
use pcsaga_simulator::SimConfig;

use crate::support::{self, Battery};

/// Goal: after a 429 on a call class, no purchase of the tenant sends a call of that class
/// before its `Retry-After` ends, and every purchase still succeeds (a wait for the governor
/// is not a failed attempt). Method: 64 purchases against a simulator that throttles every
/// class at 600 calls/min (a 1 s bucket) and answers early retries with 429 again; the daemon
/// is told budgets ten times higher, so the simulator, not the daemon's budget, is the limit
/// and 429s happen. From the simulator's request log: every call of a class that arrived
/// while one of its 429s ran was already on its way when the 429 left (it arrived within
/// 400 ms of it).
#[tokio::test(flavor = "multi_thread")]
async fn a_429_holds_its_class_for_every_purchase_of_the_tenant() {
    let mut throttle = ThrottleConfig {
        enabled: true,
        burst_s: 1,
        penalize_early_retries: true,
        ..ThrottleConfig::default()
    };
    for per_minute in throttle.per_minute.values_mut() {
        *per_minute = 600;
    }
    let mut b = Battery::new(SimConfig {
        registration_polls: 1,
        order_completion_s: 1,
        throttle,
        ..SimConfig::default()
    })
    .await;
    assert_eq!(b.submit(&support::mixed("throttled", 64)).await, 64);
    let budgets: String = pcsaga_purchase::budgets::DEFAULT_BUDGETS
        .iter()
        .map(|(class, _)| format!("{class} = 6000\n"))
        .collect();
    let config = b
        .env
        .write("pcsaga.toml", &format!("[governor.per_minute]\n{budgets}"));
    let config = config.to_string_lossy().into_owned();
    let mut daemon = b.daemon(
        "throttled",
        &[("PCSAGA_CONFIG", config.as_str())],
        &["--exit-when-idle", "--concurrency", "64"],
    );
    let status = support::wait_with_deadline(&mut daemon, Duration::from_secs(180)).await;
    let log = b.env.read("throttled.err");
    assert!(
        status.is_some_and(|s| s.success()),
        "the daemon finishes: {}",
        support::tail(&log, 30)
    );
    let audit = b.audit(true).await;
    audit.assert_clean("cargo test --test e2e a_429_holds_its_class");
    assert_eq!(
        audit.by_status.get("succeeded"),
        Some(&64),
        "{:?}",
        audit.by_status
    );

    let requests = b.sim.requests();
    let throttled = requests.iter().filter(|r| r.status == Some(429)).count();
    assert!(throttled > 0, "the simulator throttled the daemon");
    assert!(
        log.contains("every purchase of this tenant holds them"),
        "the pause is logged: {}",
        support::tail(&log, 20)
    );
    // The daemon's last heartbeat recorded its governor: status shows the 429s per class.
    let output = support::run(b.env.pcsaga(None).args(["status", "--json"]));
    let status = support::json(&output);
    let classes = status["daemons"][0]["governor"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let seen_429: u64 = classes.iter().filter_map(|c| c["throttled"].as_u64()).sum();
    assert!(
        seen_429 > 0
            && classes
                .iter()
                .any(|c| c["class"] == "checkout" && c["budgetPerMinute"] == 6000),
        "status shows the governor: {}",
        status["daemons"]
    );
    let early = support::calls_inside_retry_after(&requests, Duration::from_millis(400));
    assert!(
        early.is_empty(),
        "{} of {} calls reached the simulator inside a Retry-After:\n{}",
        early.len(),
        requests.len(),
        early.join("\n")
    );
}
