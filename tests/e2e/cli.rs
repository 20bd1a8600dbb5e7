//! The CLI's contract: exit codes, messages that name the problem, nothing written on error,
//! and the operator verbs.

use pcsaga_simulator::{SimConfig, Simulator};

use crate::support::{self, Env};

#[test]
fn submit_refuses_bad_requests_by_field_and_writes_nothing() {
    let env = Env::new();
    let bad = env.write(
        "bad.json",
        r#"{"idempotencyKey": "x", "customerId": "nope", "country": "US", "items": []}"#,
    );
    let output = support::run(env.pcsaga(None).arg("submit").arg(&bad));
    assert_eq!(output.status.code(), Some(3), "invalid input");
    assert!(
        support::stderr(&output).contains("customerId"),
        "{}",
        support::stderr(&output)
    );
    assert!(!env.db.exists(), "nothing written, not even the database");
}

#[test]
fn ndjson_accepts_good_lines_and_reports_bad_ones() {
    let env = Env::new();
    let good = support::request("nd-1", "DG7GMGF0DWTL", "0001", None).to_string();
    let zero = support::request("nd-2", "DG7GMGF0DWTL", "0001", None)
        .to_string()
        .replace("\"quantity\":1", "\"quantity\":0");
    let file = env.write(
        "batch.ndjson",
        &format!("{good}\n{zero}\nnot json\n{good}\n"),
    );
    let output = support::run(env.pcsaga(None).arg("submit").arg(&file).arg("--json"));
    assert_eq!(
        output.status.code(),
        Some(7),
        "partial: {}",
        support::stderr(&output)
    );
    let results = support::json(&output);
    let results = results.as_array().expect("array");
    let kinds: Vec<&str> = results
        .iter()
        .map(|r| r["result"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, vec!["created", "rejected", "rejected", "existing"]);
    assert_eq!(results[1]["field"], "items[0].quantity");
    assert_eq!(
        results[0]["id"], results[3]["id"],
        "the same idempotency key is the same purchase"
    );
    let listed = support::run(env.pcsaga(None).args(["list", "--json"]));
    assert_eq!(support::json(&listed).as_array().map(Vec::len), Some(1));
}

#[test]
fn show_and_operator_verbs_have_documented_exit_codes() {
    let env = Env::new();
    let file = env.write(
        "one.json",
        &support::request("op-1", "DG7GMGF0DWTL", "0001", None).to_string(),
    );
    let submitted = support::run(env.pcsaga(None).arg("submit").arg(&file).arg("--json"));
    let id = support::json(&submitted)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let shown = support::run(env.pcsaga(None).args(["show", &id]));
    assert!(shown.status.success());
    assert!(
        support::stdout(&shown).contains("waiting for"),
        "{}",
        support::stdout(&shown)
    );
    let missing = support::run(
        env.pcsaga(None)
            .args(["show", "00000000-0000-0000-0000-000000000000"]),
    );
    assert_eq!(missing.status.code(), Some(4));
    // An active purchase cannot be resumed; it can be cancelled before checkout.
    let resumed = support::run(env.pcsaga(None).args(["resume", &id, "--reason", "test"]));
    assert_eq!(
        resumed.status.code(),
        Some(5),
        "{}",
        support::stderr(&resumed)
    );
    let cancelled = support::run(env.pcsaga(None).args([
        "cancel",
        &id,
        "--reason",
        "ordered by mistake",
        "--json",
    ]));
    assert!(
        cancelled.status.success(),
        "{}",
        support::stderr(&cancelled)
    );
    assert_eq!(support::json(&cancelled)["status"], "cancelled");
    let no_reason = support::run(env.pcsaga(None).args(["cancel", &id, "--reason", " "]));
    assert_eq!(no_reason.status.code(), Some(3));
}

#[test]
fn workflow_validate_names_the_bad_key() {
    let env = Env::new();
    let good = support::run(
        env.pcsaga(None)
            .args(["workflow", "validate"])
            .arg(&env.workflow),
    );
    assert!(good.status.success(), "{}", support::stderr(&good));
    let bad = env.write(
        "bad.toml",
        "workflow = \"one-time-purchase\"\n[states.Checkout.retry]\non_exhausted = \"fail\"\n",
    );
    let output = support::run(env.pcsaga(None).args(["workflow", "validate"]).arg(&bad));
    assert_eq!(output.status.code(), Some(3));
    assert!(
        support::stderr(&output).contains("states.Checkout: retry.on_exhausted must be \"park\""),
        "{}",
        support::stderr(&output)
    );
}

#[test]
fn the_daemon_refuses_incomplete_configuration() {
    let env = Env::new();
    let output = support::run(env.pcsaga(None).arg("daemon"));
    assert_eq!(output.status.code(), Some(3));
    assert!(
        support::stderr(&output).contains("PCSAGA_TENANT_ID"),
        "{}",
        support::stderr(&output)
    );
}

/// Goal: a whole purchase through the real binaries, and no secret in logs, database or output.
#[tokio::test(flavor = "multi_thread")]
async fn daemon_completes_a_purchase_and_leaks_no_secret() {
    let sim = Simulator::start(SimConfig {
        order_completion_s: 0,
        ..SimConfig::default()
    })
    .await
    .expect("simulator");
    let env = Env::new();
    let file = env.write(
        "one.json",
        &support::request("secret-1", "DZH318Z0BQ3Q", "0001", Some("P1Y")).to_string(),
    );
    assert!(
        support::run(env.pcsaga(Some(&sim)).arg("submit").arg(&file))
            .status
            .success()
    );
    let daemon =
        support::run(
            env.pcsaga(Some(&sim))
                .args(["daemon", "--exit-when-idle", "--log", "debug"]),
        );
    assert!(daemon.status.success(), "{}", support::stderr(&daemon));
    let listed = support::run(env.pcsaga(None).args(["list", "--json"]));
    let listed = support::json(&listed);
    assert_eq!(listed[0]["status"], "succeeded", "{listed}");
    let id = listed[0]["id"].as_str().expect("id");
    let shown = support::run(env.pcsaga(None).args(["show", id, "--json"]));
    let secret = sim.config().client_secret.clone();
    let refresh = sim.config().refresh_token.clone();
    let db_bytes = std::fs::read(&env.db).expect("db");
    let wal = std::fs::read(env.db.with_extension("db-wal")).unwrap_or_default();
    for (what, text) in [
        (
            "daemon log",
            String::from_utf8_lossy(&daemon.stderr).into_owned(),
        ),
        ("show", support::stdout(&shown)),
        ("database", String::from_utf8_lossy(&db_bytes).into_owned()),
        ("wal", String::from_utf8_lossy(&wal).into_owned()),
    ] {
        assert!(
            !text.contains(&secret),
            "the client secret leaked into the {what}"
        );
        assert!(
            !text.contains(&refresh),
            "the refresh token leaked into the {what}"
        );
        assert!(
            !text.contains("sim."),
            "an access token leaked into the {what}"
        );
    }
}
