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

/// A reservation by direct order is refused up front outside the public cloud, naming the
/// field and the way out; in the public cloud, and as a cart purchase anywhere, it is taken.
#[test]
fn a_reservation_by_direct_order_is_refused_outside_the_public_cloud() {
    let env = Env::new();
    let mut reservation = support::request("gov-ri", "DZH318Z0BQ3Q", "0001", Some("P1Y"));
    reservation["orderPath"] = serde_json::json!("direct");
    let mut perpetual = support::request("gov-pp", "DG7GMGF0DWTL", "0001", None);
    perpetual["orderPath"] = serde_json::json!("direct");
    let cart = support::request("gov-cart", "DZH318Z0BQ3Q", "0001", Some("P1Y"));
    let file = env.write(
        "gov.ndjson",
        &format!("{reservation}\n{perpetual}\n{cart}\n"),
    );
    let output = support::run(
        env.pcsaga(None)
            .env("PCSAGA_CLOUD", "usgov")
            .arg("submit")
            .arg(&file)
            .arg("--json"),
    );
    assert_eq!(
        output.status.code(),
        Some(7),
        "partial: {}",
        support::stderr(&output)
    );
    let results = support::json(&output);
    let kinds: Vec<&str> = results
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["result"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, vec!["rejected", "created", "created"]);
    assert_eq!(results[0]["field"], "items[0].provisioningContext");
    assert!(
        results[0]["error"]
            .as_str()
            .is_some_and(|m| m.contains("\"orderPath\": \"cart\"")),
        "{}",
        results[0]
    );
}

/// With the partner's own Partner ID configured, a request naming it as `partnerIdOnRecord`
/// (an indirect reseller's field) is refused, naming the item; another id is taken; a
/// malformed setting is refused by name.
#[test]
fn the_partners_own_id_is_not_a_partner_on_record() {
    let env = Env::new();
    let mut own = support::request("mpn-own", "DG7GMGF0DWTL", "0001", None);
    own["items"][0]["partnerIdOnRecord"] = serde_json::json!("1234567");
    let mut reseller = support::request("mpn-reseller", "DG7GMGF0DWTL", "0001", None);
    reseller["items"][0]["partnerIdOnRecord"] = serde_json::json!("7654321");
    let file = env.write("mpn.ndjson", &format!("{own}\n{reseller}\n"));
    let output = support::run(
        env.pcsaga(None)
            .env("PCSAGA_PARTNER_ID", "1234567")
            .arg("submit")
            .arg(&file)
            .arg("--json"),
    );
    let results = support::json(&output);
    assert_eq!(results[0]["result"], "rejected", "{results}");
    assert_eq!(results[0]["field"], "items[0].partnerIdOnRecord");
    assert_eq!(results[1]["result"], "created", "{results}");
    let bad = support::run(
        env.pcsaga(None)
            .env("PCSAGA_PARTNER_ID", "not-digits")
            .arg("submit")
            .arg(&file),
    );
    assert_eq!(bad.status.code(), Some(3), "{}", support::stderr(&bad));
    assert!(support::stderr(&bad).contains("partner_center.partner_id (PCSAGA_PARTNER_ID)"));
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
    // A unique prefix of the id names the purchase, as in git.
    let by_prefix = support::run(env.pcsaga(None).args(["show", &id[..8], "--json"]));
    assert!(
        by_prefix.status.success(),
        "{}",
        support::stderr(&by_prefix)
    );
    assert_eq!(support::json(&by_prefix)["id"], id.as_str());
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

/// A large batch is written concurrently and in line order; when the disk fills midway, the
/// report lists exactly what was written, and the same file submitted again completes the rest
/// without writing anything twice.
#[test]
fn a_batch_that_fills_the_disk_reports_exactly_what_was_written() {
    let env = Env::new();
    let total = 3_000;
    let ndjson: String = (0..total)
        .map(|i| {
            format!(
                "{}\n",
                support::request(&format!("q4-{i}"), "DG7GMGF0DWTL", "0001", None)
            )
        })
        .collect();
    let file = env.write("batch.ndjson", &ndjson);
    let capped = support::run(
        env.pcsaga(None)
            .env("PCSAGA_DB_MAX_SIZE_MB", "1")
            .arg("submit")
            .arg(&file)
            .arg("--json"),
    );
    let stderr = support::stderr(&capped);
    assert_eq!(capped.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("submit stopped after writing"), "{stderr}");
    assert!(stderr.contains("cannot be written"), "{stderr}");
    let reported: Vec<serde_json::Value> =
        support::json(&capped).as_array().expect("a list").clone();
    let lines: Vec<u64> = reported
        .iter()
        .map(|r| r["line"].as_u64().expect("line"))
        .collect();
    assert!(
        !lines.is_empty() && lines.len() < total,
        "{} written",
        lines.len()
    );
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "in line order");
    let listed = support::run(env.pcsaga(None).args(["list", "--json", "--limit", "0"]));
    let listed = support::json(&listed);
    assert_eq!(
        listed.as_array().expect("a list").len(),
        lines.len(),
        "the report is exactly what the database holds"
    );

    let again = support::run(env.pcsaga(None).arg("submit").arg(&file).arg("--json"));
    assert!(again.status.success(), "{}", support::stderr(&again));
    assert!(
        support::stderr(&again).contains("submit: 3000 of 3000 written"),
        "a large batch reports progress: {}",
        support::stderr(&again)
    );
    let again = support::json(&again);
    let results: Vec<&str> = again
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["result"].as_str().expect("result"))
        .collect();
    assert_eq!(results.len(), total);
    assert_eq!(
        results.iter().filter(|r| **r == "existing").count(),
        lines.len()
    );
    let listed = support::run(env.pcsaga(None).args(["list", "--json", "--limit", "0"]));
    assert_eq!(
        support::json(&listed).as_array().expect("a list").len(),
        total
    );
}

/// `demo` and `bench` build their own databases: an operator's PCSAGA_DB is named, not used,
/// and nothing is written to it.
#[test]
fn self_contained_verbs_say_they_do_not_use_the_database() {
    let env = Env::new();
    let output = support::run(env.pcsaga(None).args(["bench", "--only", "nothing"]));
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        support::stderr(&output)
    );
    let stderr = support::stderr(&output);
    assert!(
        stderr.contains("`pcsaga bench` does not use --db/PCSAGA_DB"),
        "{stderr}"
    );
    assert!(
        stderr.contains("choose from raw, orchestration"),
        "{stderr}"
    );
    assert!(
        !env.db.exists(),
        "nothing was written to the named database"
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
                .args(["daemon", "--exit-when-idle", "--log", "trace"]),
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
            !text.contains(pcsaga_simulator::jwt::TOKEN_PREFIX),
            "an access token leaked into the {what}"
        );
    }
}

/// Goal: every kind of bad request is refused with the field named and nothing written.
/// Method: one `submit` per case against a fresh database; the database must stay empty.
#[test]
fn bad_input_battery() {
    let env = Env::new();
    let good = support::request("bad-0", "DZH318Z0BQ3Q", "0001", Some("P1Y"));
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed JSON", "{\"idempotencyKey\": ".into(), "$"),
        ("not an object", "[1, 2]".into(), "$"),
        (
            "missing customerId",
            edit(&|v| {
                v.as_object_mut().map(|o| o.remove("customerId"));
            }),
            "customerId",
        ),
        (
            "mistyped country",
            edit(&|v| v["country"] = serde_json::json!(840)),
            "country",
        ),
        (
            "unknown field",
            edit(&|v| v["priority"] = serde_json::json!("high")),
            "priority",
        ),
        (
            "unknown item field",
            edit(&|v| v["items"][0]["colour"] = serde_json::json!("red")),
            "items[0].colour",
        ),
        (
            "invalid customer GUID",
            edit(&|v| v["customerId"] = serde_json::json!("4c4d0c6e-zzzz")),
            "customerId",
        ),
        (
            "invalid subscription GUID",
            edit(&|v| {
                v["items"][0]["provisioningContext"]["subscriptionId"] = serde_json::json!("nope")
            }),
            "items[0].provisioningContext.subscriptionId",
        ),
        (
            "quantity 0",
            edit(&|v| v["items"][0]["quantity"] = serde_json::json!(0)),
            "items[0].quantity",
        ),
        (
            "negative quantity",
            edit(&|v| v["items"][0]["quantity"] = serde_json::json!(-2)),
            "items[0].quantity",
        ),
        (
            "absurd quantity",
            edit(&|v| v["items"][0]["quantity"] = serde_json::json!(10_000_000_000_i64)),
            "items[0].quantity",
        ),
        (
            "empty item list",
            edit(&|v| v["items"] = serde_json::json!([])),
            "items",
        ),
        (
            "monthly billing",
            edit(&|v| v["items"][0]["billingCycle"] = serde_json::json!("monthly")),
            "items[0].billingCycle",
        ),
        (
            "bad segment",
            edit(&|v| v["segment"] = serde_json::json!("consumer")),
            "segment",
        ),
        (
            "a key given twice (the last would win)",
            edit(&|v| v["items"][0]["quantity"] = serde_json::json!(2)).replacen(
                "\"quantity\":2",
                "\"quantity\":2,\"quantity\":2000",
                1,
            ),
            "items[0].quantity",
        ),
        (
            "an ANSI escape in a friendly name",
            edit(&|v| v["items"][0]["friendlyName"] = serde_json::json!("\u{1b}[31mRI")),
            "items[0].friendlyName",
        ),
        (
            "a NUL in a friendly name",
            edit(&|v| v["items"][0]["friendlyName"] = serde_json::json!("RI\u{0}")),
            "items[0].friendlyName",
        ),
        (
            "a bidi override in a friendly name",
            edit(&|v| v["items"][0]["friendlyName"] = serde_json::json!("\u{202E}IR")),
            "items[0].friendlyName",
        ),
        (
            "oversized body",
            edit(&|v| v["items"][0]["friendlyName"] = serde_json::json!("x".repeat(300 * 1024))),
            "$",
        ),
    ];
    for (name, text, field) in &cases {
        let file = env.write("case.json", text);
        let output = support::run(env.pcsaga(None).arg("submit").arg(&file).arg("--json"));
        assert_eq!(
            output.status.code(),
            Some(3),
            "{name}: {}",
            support::stderr(&output)
        );
        let answer = support::json(&output);
        assert_eq!(answer["field"], *field, "{name}: {answer}");
        assert!(!env.db.exists(), "{name}: nothing may be written");
    }
}

#[test]
fn a_bad_configuration_file_names_the_key() {
    let env = Env::new();
    let config = env.write("pcsaga.toml", "[partner_center]\ntenant = \"x\"\n");
    let output = support::run(env.pcsaga(None).arg("--config").arg(&config).arg("list"));
    assert_eq!(output.status.code(), Some(3));
    assert!(
        support::stderr(&output).contains("unknown field `tenant`"),
        "{}",
        support::stderr(&output)
    );
}

/// No snapshot in the repository holds a secret or a token of the simulator.
#[test]
fn snapshots_hold_no_secret() {
    let defaults = pcsaga_simulator::SimConfig::default();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stack = vec![root.join("crates"), root.join("tests")];
    let mut snapshots = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "snap") {
                snapshots += 1;
                let text = std::fs::read_to_string(&path).expect("snapshot");
                for secret in [&defaults.client_secret, &defaults.refresh_token] {
                    assert!(
                        !text.contains(secret.as_str()),
                        "{} holds a secret",
                        path.display()
                    );
                }
                assert!(
                    !text.contains(pcsaga_simulator::jwt::TOKEN_PREFIX),
                    "{} holds an access token",
                    path.display()
                );
            }
        }
    }
    assert!(snapshots >= 5, "the scan found the snapshots ({snapshots})");
}

/// A known `idempotencyKey` with a different request is refused with its own exit code,
/// naming the fields that differ; the first purchase stands, and the same request again still
/// returns it.
#[test]
fn a_known_key_with_another_request_is_refused_naming_the_fields() {
    let env = Env::new();
    let first = support::request("po-77", "DG7GMGF0DWTL", "0001", None);
    let file = env.write("first.json", &first.to_string());
    let output = support::run(env.pcsaga(None).arg("submit").arg(&file).arg("--json"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::stderr(&output)
    );
    let id = support::json(&output)["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let mut changed = first.clone();
    changed["items"][0]["quantity"] = serde_json::json!(2);
    changed["customerId"] = serde_json::json!("d6bf25b7-e0a8-4f2d-a31b-97b55cfc774d");
    let file = env.write("changed.json", &changed.to_string());
    let output = support::run(env.pcsaga(None).arg("submit").arg(&file).arg("--json"));
    assert_eq!(
        output.status.code(),
        Some(9),
        "{}",
        support::stderr(&output)
    );
    let answer = support::json(&output);
    assert_eq!(answer["result"], "conflict");
    assert_eq!(answer["id"], id.as_str());
    assert_eq!(
        answer["fields"],
        serde_json::json!(["customerId", "items[0].quantity"])
    );
    let stderr = support::stderr(&output);
    assert!(
        stderr.contains("cannot be changed") && stderr.contains(&format!("pcsaga cancel {id}")),
        "{stderr}"
    );

    // The same key twice in one batch with different requests: the second line conflicts.
    let batch = env.write(
        "batch.ndjson",
        &format!(
            "{}\n{}\n",
            support::request("po-78", "DG7GMGF0DWTL", "0001", None),
            {
                let mut v = support::request("po-78", "DG7GMGF0DWTL", "0001", None);
                v["items"][0]["quantity"] = serde_json::json!(3);
                v
            }
        ),
    );
    let output = support::run(env.pcsaga(None).arg("submit").arg(&batch).arg("--json"));
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        support::stderr(&output)
    );
    let kinds: Vec<String> = support::json(&output)
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["result"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(kinds, vec!["created", "conflict"]);

    // The first request, unchanged, is still answered with the first purchase.
    let file = env.write("again.json", &first.to_string());
    let output = support::run(env.pcsaga(None).arg("submit").arg(&file).arg("--json"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::stderr(&output)
    );
    assert_eq!(support::json(&output)["result"], "existing");
    let shown = support::run(env.pcsaga(None).args(["show", &id, "--json"]));
    assert!(
        support::stdout(&shown).contains("\"quantity\": 1")
            || support::stdout(&shown).contains("\"quantity\":1"),
        "{}",
        support::stdout(&shown)
    );
}

/// The configuration refuses URLs that would send credentials in clear text to another host
/// (exit 3, naming the setting), before anything is sent.
#[test]
fn urls_that_would_leak_credentials_are_refused() {
    let env = Env::new();
    let cases = [
        (
            "PCSAGA_TOKEN_URL",
            "http://10.1.2.3:18099/oauth2/token",
            "only to loopback",
        ),
        (
            "PCSAGA_TOKEN_URL",
            "http://localhost.evil.example/t",
            "only to loopback",
        ),
        (
            "PCSAGA_BASE_URL",
            "http://127.0.0.1:18084@127.0.0.2:18099",
            "user name",
        ),
        (
            "PCSAGA_BASE_URL",
            "http://127.0.0.1.evil.example",
            "only to loopback",
        ),
    ];
    for (key, value, says) in cases {
        let output = support::run(
            env.pcsaga(None)
                .env("PCSAGA_TENANT_ID", "contoso")
                .env("PCSAGA_CLIENT_ID", "app")
                .env("PCSAGA_CLIENT_SECRET", "s3cret")
                .env("PCSAGA_BASE_URL", "https://api.partnercenter.microsoft.com")
                .env(key, value)
                .args(["daemon", "--exit-when-idle"]),
        );
        let stderr = support::stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{key}={value}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(says),
            "{key}={value}: {stderr}"
        );
        assert!(!stderr.contains("s3cret"));
    }
}

/// Every verb with extreme numbers and odd text: each is refused with a documented code (2 or
/// 3) or handled; none panics (exit 101) and none hangs.
#[test]
fn extreme_values_never_panic() {
    let env = Env::new();
    let submitted = env.write(
        "one.json",
        &support::request("extreme-1", "DG7GMGF0DWTL", "0001", None).to_string(),
    );
    let output = support::run(env.pcsaga(None).arg("submit").arg(&submitted));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::stderr(&output)
    );
    let huge_policy = env.write(
        "huge.toml",
        "workflow = \"one-time-purchase\"\n[defaults.retry]\ninitial_interval_ms = 18446744073709551615\nmax_interval_ms = 18446744073709551615\n[defaults.poll]\ninterval_ms = 18446744073709551615\ndeadline_s = 18446744073709551615\n",
    );
    let huge_policy = huge_policy.to_string_lossy().into_owned();
    let long_id = "a".repeat(10_000);
    /// Arguments, extra environment, the exit codes allowed.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a [i32]);
    let cases: Vec<Case<'_>> = vec![
        (vec!["daemon", "--lease-s", "99999999999999"], vec![], &[2]),
        (vec!["daemon", "--lease-s", "86401"], vec![], &[2]),
        (vec!["daemon", "--lease-s", "0"], vec![], &[2]),
        (
            vec!["daemon"],
            vec![("PCSAGA_LEASE_S", "10000000000")],
            &[2],
        ),
        (vec!["daemon", "--concurrency", "0"], vec![], &[2]),
        (
            vec!["daemon", "--concurrency", "18446744073709551616"],
            vec![],
            &[2],
        ),
        (vec!["daemon", "--max-calls", "-1"], vec![], &[2]),
        (
            vec!["daemon"],
            vec![("PCSAGA_TIMEOUT_S", "99999999999999999999")],
            &[3],
        ),
        (
            vec!["daemon"],
            vec![("PCSAGA_DB_MAX_SIZE_MB", "18446744073709551615")],
            &[3],
        ),
        (vec!["list", "--since", "99999999999d"], vec![], &[3]),
        (
            vec!["list", "--since", "9223372036854775807s"],
            vec![],
            &[3],
        ),
        (vec!["list", "--since=-5d"], vec![], &[3]),
        (vec!["list", "--since", "36500d"], vec![], &[0]),
        (vec!["list", "--limit", "0"], vec![], &[0]),
        (vec!["list", "--limit", "99999999999"], vec![], &[2]),
        (vec!["list", "--state", "\u{1b}[31m"], vec![], &[3]),
        (vec!["show", long_id.as_str()], vec![], &[4]),
        (
            vec!["resume", long_id.as_str(), "--reason", "x"],
            vec![],
            &[4],
        ),
        (vec!["cancel", "", "--reason", "x"], vec![], &[2, 4]),
        (vec!["bench", "--n", "0"], vec![], &[2]),
        (vec!["bench", "--n", "99999999999"], vec![], &[2]),
        (vec!["bench", "--concurrency", "0"], vec![], &[2]),
        (vec!["demo", "--speedup", "0"], vec![], &[2]),
        (vec!["demo", "--speedup", "NaN"], vec![], &[2]),
        (vec!["demo", "--speedup", "inf"], vec![], &[2]),
        (vec!["demo", "--speedup", "-1"], vec![], &[2]),
        (vec!["sim", "--port", "99999"], vec![], &[2]),
        (
            vec!["workflow", "validate", huge_policy.as_str()],
            vec![],
            &[0, 3],
        ),
    ];
    for (args, envs, expected) in &cases {
        let mut command = env.pcsaga(None);
        command
            .env("PCSAGA_TENANT_ID", "t")
            .env("PCSAGA_CLIENT_ID", "c")
            .env("PCSAGA_CLIENT_SECRET", "s")
            .args(args);
        for (k, v) in envs {
            command.env(k, v);
        }
        let output = support::run(&mut command);
        let code = output.status.code();
        assert_ne!(
            code,
            Some(101),
            "{args:?} {envs:?} panicked: {}",
            support::stderr(&output)
        );
        assert!(
            code.is_some_and(|c| expected.contains(&c)),
            "{args:?} {envs:?}: exit {code:?}, expected one of {expected:?}: {}",
            support::stderr(&output)
        );
    }
}

/// Fills a database with `n` purchases, then overwrites every page but the first (the header
/// and the schema) with garbage, as a failing disk would.
fn damaged_database(env: &Env, n: usize) {
    support::submit_batch(env, "dmg", n);
    // A backup is one self-contained file (no WAL beside it): damage that, and put it in place.
    let packed = env.dir.path().join("packed.db");
    let output = support::run(env.pcsaga(None).args(["backup", "--to"]).arg(&packed));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::stderr(&output)
    );
    let _ = std::fs::remove_file(env.db.with_extension("db-wal"));
    let _ = std::fs::remove_file(env.db.with_extension("db-shm"));
    std::fs::rename(&packed, &env.db).expect("put the copy in place");
    let mut bytes = std::fs::read(&env.db).expect("read db");
    assert!(bytes.len() > 8 * 4096, "a file of several pages");
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&env.db, bytes).expect("write db");
}

/// A damaged file is named as such by every verb, with what to do; the daemon exits 6
/// instead of retrying for ever; `check` lists what is wrong.
#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_database_is_reported_as_such_everywhere() {
    let env = Env::new();
    damaged_database(&env, 300);
    for args in [
        vec!["list"],
        vec!["migrate"],
        vec!["check"],
        vec!["show", "0190"],
    ] {
        let output = support::run(env.pcsaga(None).args(&args));
        let stderr = support::stderr(&output);
        assert_eq!(output.status.code(), Some(6), "{args:?}: {stderr}");
        assert!(
            stderr.contains("damaged") || stderr.contains("not sound"),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("pcsaga check") || args == ["check"],
            "{args:?}: {stderr}"
        );
    }
    let mut daemon = env.pcsaga(None);
    daemon
        .env("PCSAGA_TENANT_ID", "t")
        .env("PCSAGA_CLIENT_ID", "c")
        .env("PCSAGA_CLIENT_SECRET", "s")
        .env("PCSAGA_BASE_URL", "http://127.0.0.1:9")
        .env("PCSAGA_TIMEOUT_S", "1")
        .args(["daemon"]);
    let log = env.dir.path().join("daemon.log");
    daemon.stderr(std::fs::File::create(&log).expect("log"));
    let mut child = daemon.spawn().expect("daemon starts");
    let status = support::wait_with_deadline(&mut child, std::time::Duration::from_secs(30)).await;
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(6),
        "the daemon exits 6 instead of looping: {stderr}"
    );
    assert!(stderr.contains("damaged"), "{stderr}");
}

/// A database whose schema is newer than the binary is refused by name, not with sqlx's
/// "previously applied but is missing".
#[tokio::test]
async fn a_database_from_a_newer_release_is_refused_by_name() {
    let env = Env::new();
    let file = env.write(
        "one.json",
        &support::request("newer-1", "DG7GMGF0DWTL", "0001", None).to_string(),
    );
    assert_eq!(
        support::run(env.pcsaga(None).arg("submit").arg(&file))
            .status
            .code(),
        Some(0)
    );
    {
        use sqlx::Connection as _;
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", env.db.display()))
            .await
            .expect("open");
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) VALUES (29991231000000, 'future', '2999-12-31', 1, x'00', 0)")
            .execute(&mut db)
            .await
            .expect("insert");
        db.close().await.expect("close");
    }
    for args in [
        vec!["list"],
        vec!["migrate"],
        vec!["submit", file.to_str().unwrap_or("")],
    ] {
        let output = support::run(env.pcsaga(None).args(&args));
        let stderr = support::stderr(&output);
        assert_eq!(output.status.code(), Some(6), "{args:?}: {stderr}");
        assert!(
            stderr.contains("written by a newer pcsaga (schema 29991231000000); this binary knows up to 20261205000001"),
            "{args:?}: {stderr}"
        );
    }
}

/// `check` passes a sound database; `backup` copies it while it is open, refuses to overwrite,
/// and the copy holds every purchase.
#[test]
fn check_and_backup_a_sound_database() {
    let env = Env::new();
    support::submit_batch(&env, "bk", 25);
    let output = support::run(env.pcsaga(None).args(["check", "--json"]));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::stderr(&output)
    );
    let answer = support::json(&output);
    assert_eq!(
        (answer["integrity"].as_str(), answer["sound"].as_bool()),
        (Some("ok"), Some(true))
    );
    let copy = env.dir.path().join("copy.db");
    let output = support::run(
        env.pcsaga(None)
            .args(["backup", "--to"])
            .arg(&copy)
            .arg("--json"),
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        support::stderr(&output)
    );
    assert_eq!(support::json(&output)["purchases"], 25);
    let listed = support::run(
        env.pcsaga(None)
            .arg("--db")
            .arg(&copy)
            .args(["list", "--json"]),
    );
    assert_eq!(support::json(&listed).as_array().map(Vec::len), Some(25));
    let again = support::run(env.pcsaga(None).args(["backup", "--to"]).arg(&copy));
    assert_eq!(again.status.code(), Some(6));
    assert!(
        support::stderr(&again).contains("never overwrites"),
        "{}",
        support::stderr(&again)
    );
    let missing = support::run(
        env.pcsaga(None)
            .arg("--db")
            .arg(env.dir.path().join("typo.db"))
            .arg("check"),
    );
    assert_eq!(missing.status.code(), Some(6));
    assert!(
        support::stderr(&missing).contains("no pcsaga database at"),
        "{}",
        support::stderr(&missing)
    );
}

/// Replaces what changes between runs (ids, times, durations, and each of `known` inside
/// text) so a JSON shape can be pinned.
fn redact_all(value: &serde_json::Value, known: &[(String, &str)]) -> serde_json::Value {
    match value {
        serde_json::Value::String(text) => serde_json::Value::String(
            known
                .iter()
                .fold(text.clone(), |t, (from, to)| t.replace(from.as_str(), to)),
        ),
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_all(v, known)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(|v| redact_all(v, known)).collect())
        }
        other => other.clone(),
    }
}

/// Replaces what changes between runs (ids, times, durations) so a JSON shape can be pinned.
fn redact(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let volatile = matches!(
                        k.as_str(),
                        "id" | "database"
                            | "createdAt"
                            | "updatedAt"
                            | "nextRunAt"
                            | "at"
                            | "seq"
                            | "correlationId"
                            | "token"
                            | "requestId"
                            | "startedAt"
                            | "heartbeatAt"
                            | "dueSince"
                            | "ageSeconds"
                            | "seconds"
                            | "bytes"
                            | "stateEnteredAt"
                            | "leaseExpiresAt"
                            | "leaseOwner"
                            | "latencyMs"
                            | "waitingFor"
                            | "detail"
                            | "sagaId"
                    );
                    (
                        k.clone(),
                        if volatile && !v.is_null() {
                            Value::String("[..]".into())
                        } else {
                            redact(v)
                        },
                    )
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact).collect()),
        other => other.clone(),
    }
}

/// Every key of every `--json` output is camelCase (the request's own `provisioningContext`
/// keys aside, which are the SKU's).
fn camel_keys(value: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if path.ends_with("provisioningContext") {
                    continue;
                }
                if k.contains('_') || k.starts_with(|c: char| c.is_ascii_uppercase()) {
                    out.push(format!("{path}.{k}"));
                }
                camel_keys(v, &format!("{path}.{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                camel_keys(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// One JSON convention: camelCase keys in every `--json` output; `submit --json` an object for
/// one request and an array for NDJSON; errors, with `--json`, one object on stderr. Each
/// shape pinned.
#[test]
fn json_outputs_share_one_convention() {
    let env = Env::new();
    let one = env.write(
        "one.json",
        &support::request("json-1", "DG7GMGF0DWTL", "0001", None).to_string(),
    );
    let batch = env.write(
        "batch.ndjson",
        &format!(
            "{}\n{}\n",
            support::request("json-2", "DG7GMGF0DWTL", "0001", None),
            support::request("json-3", "DG7GMGF0DWTL", "0001", None)
        ),
    );
    let run = |args: &[&str]| support::run(env.pcsaga(None).args(args));
    let submit = run(&["submit", one.to_str().unwrap_or(""), "--json"]);
    let submit_batch = run(&["submit", batch.to_str().unwrap_or(""), "--json"]);
    let id = support::json(&submit)["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let list = run(&["list", "--json"]);
    let show = run(&["show", &id, "--json"]);
    let status = run(&["status", "--json"]);
    let check = run(&["check", "--json"]);
    let refused = run(&["resume", &id, "--reason", "try", "--json"]);
    assert_eq!(refused.status.code(), Some(5));
    let error: serde_json::Value =
        serde_json::from_str(support::stderr(&refused).trim()).expect("the error is JSON");
    let shapes = serde_json::json!({
        "submit": support::json(&submit),
        "submitBatch": support::json(&submit_batch),
        "list": support::json(&list)[0],
        "show": support::json(&show),
        "status": support::json(&status),
        "check": support::json(&check),
        "error": error,
    });
    assert!(shapes["submit"].is_object() && shapes["submitBatch"].is_array());
    let mut snake = Vec::new();
    camel_keys(&shapes, "$", &mut snake);
    assert!(snake.is_empty(), "keys not in camelCase: {snake:?}");
    let known = [(id.clone(), "[id]"), (env.db.display().to_string(), "[db]")];
    insta::assert_json_snapshot!(redact_all(&redact(&shapes), &known));
}

/// `list` shows the newest first and says when its limit cut the result; `--stuck` selects
/// active purchases that retried or overstayed; `show --tail` keeps the last rows.
#[test]
fn list_is_newest_first_and_says_when_it_is_cut() {
    let env = Env::new();
    support::submit_batch(&env, "cut", 5);
    let listed = support::run(env.pcsaga(None).args(["list", "--limit", "2"]));
    let out = support::stdout(&listed);
    assert!(out.contains("showing the newest 2 of 5"), "{out}");
    let keys: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|k| k.starts_with("cut-"))
        .collect();
    assert_eq!(keys, vec!["cut-4", "cut-3"], "newest first: {out}");
    let all = support::run(env.pcsaga(None).args(["list"]));
    assert!(
        !support::stdout(&all).contains("showing"),
        "nothing cut, nothing said"
    );
    let stuck = support::run(env.pcsaga(None).args(["list", "--stuck"]));
    assert_eq!(stuck.status.code(), Some(0), "{}", support::stderr(&stuck));
    assert!(
        support::stdout(&stuck).contains("no purchases match"),
        "fresh purchases are not stuck"
    );
    let json = support::run(env.pcsaga(None).args(["list", "--json", "--limit", "1"]));
    assert!(support::stderr(&json).contains("showing the newest 1 of 5"));
    let id = support::json(&json)[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let shown = support::run(env.pcsaga(None).args(["show", &id, "--tail", "1"]));
    assert!(
        support::stdout(&shown).contains("timeline"),
        "{}",
        support::stdout(&shown)
    );
}

/// `check` finds what breaks the engine's own invariants, each named with its purchase: a
/// stopped purchase still due, an active one due never, a purchase without its history, a
/// state this release does not know.
#[tokio::test]
async fn check_names_each_broken_invariant() {
    use sqlx::Connection as _;
    let env = Env::new();
    support::submit_batch(&env, "inv", 4);
    let listed = support::run(env.pcsaga(None).args(["list", "--json"]));
    let ids: Vec<String> = support::json(&listed)
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(ids.len(), 4);
    {
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", env.db.display()))
            .await
            .expect("open");
        for (sql, id) in [
            ("UPDATE sagas SET status = 'failed' WHERE id = ?", &ids[0]),
            ("UPDATE sagas SET next_run_at = NULL WHERE id = ?", &ids[1]),
            ("DELETE FROM history WHERE saga_id = ?", &ids[2]),
            (
                "UPDATE sagas SET state = 'CheckoutV2' WHERE id = ?",
                &ids[3],
            ),
        ] {
            sqlx::query(sql)
                .bind(id)
                .execute(&mut db)
                .await
                .expect("break an invariant");
        }
        db.close().await.expect("close");
    }
    let output = support::run(env.pcsaga(None).args(["check", "--json"]));
    assert_eq!(
        output.status.code(),
        Some(6),
        "{}",
        support::stderr(&output)
    );
    let answer = support::json(&output);
    assert_eq!(answer["integrity"], "ok");
    assert_eq!(answer["sound"], false);
    let findings: Vec<String> = answer["invariants"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f.as_str().unwrap_or("").to_owned())
        .collect();
    for (id, says) in [
        (&ids[0], "is stopped but still holds a lease or a due time"),
        (&ids[1], "is active but has no due time"),
        (&ids[2], "has no history"),
        (&ids[3], "is in a state its workflow does not have"),
    ] {
        assert!(
            findings
                .iter()
                .any(|f| f.contains(id.as_str()) && f.contains(says)),
            "{says}: {findings:?}"
        );
    }
    assert_eq!(findings.len(), 4, "nothing else: {findings:?}");
    assert!(support::stderr(&output).contains("backup --to FILE"));
}

/// A batch of more than 1,000 lines reports to a file, one JSON object per line in line order
/// (the terminal gets the counts and the path), and never overwrites an existing report.
#[test]
fn a_large_batch_reports_to_a_file() {
    let env = Env::new();
    let mut ndjson: String = (0..1_200)
        .map(|i| {
            format!(
                "{}\n",
                support::request(&format!("big-{i}"), "DG7GMGF0DWTL", "0001", None)
            )
        })
        .collect();
    ndjson.push_str("{\"idempotencyKey\": 7}\n");
    let file = env.write("big.ndjson", &ndjson);
    let report = env.dir.path().join("big.report.ndjson");
    let output = support::run(
        env.pcsaga(None)
            .arg("submit")
            .arg(&file)
            .arg("--report")
            .arg(&report),
    );
    assert_eq!(
        output.status.code(),
        Some(7),
        "partial: {}",
        support::stderr(&output)
    );
    let stdout = support::stdout(&output);
    assert!(
        stdout.contains("1200 created, 0 existing, 1 rejected, 0 conflicts")
            && stdout.contains("big.report.ndjson"),
        "{stdout}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&report)
        .expect("report")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 1_201);
    assert!(lines
        .windows(2)
        .all(|w| w[0]["line"].as_u64() < w[1]["line"].as_u64()));
    assert_eq!(lines[1_200]["result"], "rejected");
    let again = support::run(
        env.pcsaga(None)
            .arg("submit")
            .arg(&file)
            .arg("--report")
            .arg(&report),
    );
    assert_eq!(
        again.status.code(),
        Some(1),
        "an existing report is never overwritten"
    );
    // The error prints the command that submits again with a fresh report; it runs as printed.
    let stderr = support::stderr(&again);
    assert!(stderr.contains("cannot create the report file"), "{stderr}");
    let command = stderr
        .rsplit_once('`')
        .and_then(|(head, _)| head.rsplit_once('`'))
        .map(|(_, command)| command.to_owned())
        .unwrap_or_else(|| panic!("a command in backticks: {stderr}"));
    let args: Vec<&str> = command.split_whitespace().collect();
    assert!(args[0] == "pcsaga" && args.contains(&"submit"), "{command}");
    let rerun = support::run(env.pcsaga(None).args(&args[1..]));
    assert_eq!(rerun.status.code(), Some(7), "{}", support::stderr(&rerun));
    let fresh = args.last().expect("the report path");
    let lines = std::fs::read_to_string(fresh)
        .expect("report")
        .lines()
        .count();
    assert_eq!(lines, 1_201, "the whole batch reported again");
    let _ = std::fs::remove_file(fresh);
}
