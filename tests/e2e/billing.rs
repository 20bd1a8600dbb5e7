//! Billing reconciliation end to end: purchases of each kind through the daemon and the
//! simulator, the billing period closed, `pcsaga reconcile` through v1 (E24/E26/E27) and the
//! Graph export (E29), with and without injected billing faults; a run killed mid-export; the
//! statement PDF.

use std::collections::BTreeMap;
use std::time::Duration;

use pcsaga_simulator::billing::{BillingFaults, LineFault};
use pcsaga_simulator::SimConfig;
use serde_json::Value;

use crate::support::{self, Battery};

/// Reconciliation policies fast enough for tests (the built-in ones poll an export every 30 s).
pub(crate) const FAST_RECONCILE: &str = r#"
workflow = "billing-reconciliation"
[defaults.retry]
initial_interval_ms = 50
max_interval_ms = 400
max_attempts = 20
[defaults.poll]
interval_ms = 100
deadline_s = 120
"#;

/// A purchase of each kind and path: a reservation and perpetual software by cart, perpetual
/// software and a reservation by direct order, a software subscription by cart.
fn book(prefix: &str) -> Vec<Value> {
    let mut direct_pp =
        support::request(&format!("{prefix}-direct-pp"), "DG7GMGF0DWTL", "0001", None);
    direct_pp["orderPath"] = serde_json::json!("direct");
    let mut direct_ri = support::request(
        &format!("{prefix}-direct-ri"),
        "DZH318Z0BQ3Q",
        "0001",
        Some("P1Y"),
    );
    direct_ri["orderPath"] = serde_json::json!("direct");
    vec![
        support::request(
            &format!("{prefix}-cart-ri"),
            "DZH318Z0BQ3Q",
            "0001",
            Some("P1Y"),
        ),
        support::request(&format!("{prefix}-cart-pp"), "DG7GMGF0DWTL", "0001", None),
        support::request(
            &format!("{prefix}-cart-sub"),
            "DG7GMGF0FKZV",
            "0003",
            Some("P1Y"),
        ),
        direct_pp,
        direct_ri,
    ]
}

/// Bought and settled: a battery whose purchases all succeeded.
async fn bought(config: SimConfig, requests: &[Value]) -> Battery {
    let mut battery = Battery::new(config).await;
    assert_eq!(battery.submit(requests).await, requests.len());
    battery.finish("buy", Duration::from_secs(120)).await;
    let listed = support::json(&support::run(
        battery.env.pcsaga(None).args(["list", "--json"]),
    ));
    let statuses: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["status"].as_str().unwrap_or(""))
        .collect();
    assert!(statuses.iter().all(|s| *s == "succeeded"), "{listed}");
    battery
}

/// `pcsaga reconcile` with the given extra configuration; (exit code, report JSON).
async fn reconcile(battery: &Battery, config: &str, args: &[&str]) -> (Option<i32>, Value) {
    let mut command = billing_command(battery, config);
    command.arg("reconcile").args(args).arg("--json");
    let output = support::run_async(command).await;
    let stderr = support::stderr(&output);
    let report: Value = serde_json::from_str(&support::stdout(&output))
        .unwrap_or_else(|e| panic!("no report ({e}); stderr:\n{stderr}"));
    (output.status.code(), report)
}

/// A `pcsaga` command against the battery's simulator with the billing configuration `config`
/// and the fast reconciliation policies.
fn billing_command(battery: &Battery, config: &str) -> std::process::Command {
    let policies = battery.env.write("reconcile.toml", FAST_RECONCILE);
    let file = battery.env.write("billing.toml", config);
    let mut command = battery.env.pcsaga(Some(&battery.sim));
    command
        .env("PCSAGA_CONFIG", &file)
        .env("PCSAGA_RECONCILE_WORKFLOW", &policies);
    command
}

/// A daemon runs until nothing is active: it takes over a run left behind after its lease.
async fn daemon_finishes(battery: &Battery, config: &str) {
    let mut daemon = billing_command(battery, config);
    daemon.args(["daemon", "--exit-when-idle"]);
    let ran = support::run_async(daemon).await;
    assert!(ran.status.success(), "{}", support::stderr(&ran));
}

/// The reconciliation runs in the database, newest first.
async fn runs(battery: &Battery) -> Vec<pcsaga_engine::SagaRecord> {
    pcsaga_engine::Store::list(
        &battery.store,
        &pcsaga_engine::ListFilter {
            workflow: Some(pcsaga_billing::WORKFLOW_NAME.to_owned()),
            ..pcsaga_engine::ListFilter::default()
        },
    )
    .await
    .expect("list")
}

/// Purchase id → its first order id, by idempotency key.
fn orders(battery: &Battery) -> BTreeMap<String, (String, String)> {
    let listed = support::json(&support::run(
        battery.env.pcsaga(None).args(["list", "--json"]),
    ));
    let mut out = BTreeMap::new();
    for p in listed.as_array().expect("array") {
        let id = p["id"].as_str().expect("id").to_owned();
        let shown = support::json(&support::run(
            battery.env.pcsaga(None).args(["show", &id, "--json"]),
        ));
        let order = shown["context"]["orders"][0]["id"]
            .as_str()
            .expect("an order")
            .to_owned();
        out.insert(
            p["idempotencyKey"].as_str().expect("key").to_owned(),
            (id, order),
        );
    }
    out
}

const V1: &str = "[billing]\nv2_from_period = \"2100-01\"\n";
const V2: &str = "[billing]\nv2_from_period = \"2024-02\"\n";

fn exceptions(report: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = report["exceptions"]
        .as_array()
        .expect("exceptions")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or("").to_owned(),
                e["purchaseId"].as_str().unwrap_or("-").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

fn totals(report: &Value) -> (u64, u64, u64) {
    let rows = report["rows"].as_array().expect("rows");
    let sum = |k: &str| rows.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
    (sum("purchases"), sum("matched"), sum("exceptions"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_purchase_is_matched_once_through_v1_and_the_export() {
    let requests = book("ok");
    let battery = bought(SimConfig::default(), &requests).await;
    // Before the period closes the lines are unbilled: matched, not final; through E27 and
    // through the Graph's unbilled export (E29.5).
    let unbilled = format!("unbilled:USD:{}", chrono::Utc::now().format("%Y-%m"));
    for (label, config) in [
        ("E27", V1),
        ("E29.5", "[billing]\nunbilled_via_graph = true\n"),
    ] {
        let (code, report) = reconcile(&battery, config, &["--period", "current"]).await;
        assert_eq!(code, Some(0), "{label}: {report:#}");
        assert_eq!(totals(&report), (5, 5, 0), "{label}: {report:#}");
        assert_eq!(report["sources"], serde_json::json!([unbilled]), "{label}");
    }
    assert!(battery
        .sim
        .requests()
        .iter()
        .any(|r| r.endpoint == "unbilled_export"));
    let invoices = battery.sim.close_billing_period();
    assert_eq!(invoices.len(), 1, "one USD invoice: {invoices:?}");
    for (label, config) in [("v1", V1), ("v2", V2)] {
        let (code, report) = reconcile(&battery, config, &["--period", &invoices[0]]).await;
        assert_eq!(code, Some(0), "{label}: {report:#}");
        assert_eq!(totals(&report), (5, 5, 0), "{label}: {report:#}");
        assert!(
            report["unreadable"].as_array().is_some_and(Vec::is_empty),
            "{label}: {report:#}"
        );
        assert_eq!(
            report["sources"],
            serde_json::json!([format!("invoice:{}", invoices[0])])
        );
    }
    // The statuses are queryable, and final once matched on an invoice.
    let matched = support::json(&support::run(battery.env.pcsaga(None).args([
        "list",
        "--billing",
        "matched",
        "--json",
    ])));
    assert_eq!(matched.as_array().map(Vec::len), Some(5), "{matched}");
    let id = matched[0]["id"].as_str().expect("id");
    let shown = support::stdout(&support::run(battery.env.pcsaga(None).args(["show", id])));
    assert!(shown.contains("billing       matched, final"), "{shown}");
    assert!(
        shown.contains(&format!("billing line  invoice:{}#", invoices[0])),
        "{shown}"
    );
    // Graph was asked only with a Graph token, and the export files were downloaded.
    let requests = battery.sim.requests();
    assert!(requests.iter().any(|r| r.endpoint == "billed_export"));
    assert!(requests.iter().any(|r| r.endpoint == "invoice_lines"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_billing_fault_is_exactly_the_expected_exception() {
    let mut requests = Vec::new();
    for fault in [
        "control",
        "missing",
        "twice",
        "drift",
        "foreign",
        "swap",
        "badamount",
        "noorder",
        "badcurrency",
    ] {
        let mut r = support::request(&format!("fault-{fault}"), "DG7GMGF0DWTL", "0001", None);
        if fault == "twice" || fault == "foreign" {
            r["orderPath"] = serde_json::json!("direct");
        }
        requests.push(r);
    }
    let battery = bought(SimConfig::default(), &requests).await;
    let orders = orders(&battery);
    let purchase = |key: &str| orders[&format!("fault-{key}")].0.clone();
    let order = |key: &str| orders[&format!("fault-{key}")].1.clone();
    let mut faults = BillingFaults::default();
    for (key, fault) in [
        ("missing", LineFault::MissingLine),
        ("twice", LineFault::DuplicateLine),
        ("drift", LineFault::PriceDrift { percent: 7 }),
        ("foreign", LineFault::ForeignLine),
        ("swap", LineFault::CurrencySwap),
        ("badamount", LineFault::BadAmount),
        ("noorder", LineFault::NoOrderId),
        ("badcurrency", LineFault::UnknownCurrency),
    ] {
        faults.orders.insert(order(key), vec![fault]);
    }
    battery.sim.set_billing_faults(faults);

    let invoices = battery.sim.close_billing_period();
    assert_eq!(
        invoices.len(),
        2,
        "a USD and an EUR (the swapped line) invoice: {invoices:?}"
    );
    let mut expected = vec![
        ("amount_mismatch".to_owned(), purchase("drift")),
        ("currency_mismatch".to_owned(), purchase("swap")),
        ("duplicate_suspected".to_owned(), "-".to_owned()),
        ("missing".to_owned(), purchase("missing")),
        ("missing".to_owned(), purchase("noorder")),
        ("quantity_mismatch".to_owned(), purchase("twice")),
        ("unreadable".to_owned(), purchase("badamount")),
        ("unreadable".to_owned(), purchase("badcurrency")),
    ];
    expected.sort();
    for (label, config) in [("v1", V1), ("v2", V2)] {
        let (code, report) = reconcile(&battery, config, &["--period", "current"]).await;
        assert_eq!(code, Some(7), "{label}: exceptions exit 7: {report:#}");
        assert_eq!(exceptions(&report), expected, "{label}: {report:#}");
        // Three lines could not be read (an amount, an order id, a currency), each with evidence.
        let unreadable = report["unreadable"].as_array().expect("unreadable");
        assert_eq!(unreadable.len(), 3, "{label}: {report:#}");
        assert!(
            unreadable.iter().any(|u| u
                .as_str()
                .is_some_and(|u| u.contains("subtotal") && u.contains("12,34.5x"))),
            "{label}: {report:#}"
        );
        assert!(
            unreadable
                .iter()
                .any(|u| u.as_str().is_some_and(|u| u.contains("no order id"))),
            "{label}: {report:#}"
        );
        assert!(
            unreadable
                .iter()
                .any(|u| u.as_str().is_some_and(|u| u.contains("XQZ"))),
            "{label}: {report:#}"
        );
        // The control purchase and the one with a foreign twin are matched; nothing else is.
        let (purchases, matched, _) = totals(&report);
        assert_eq!((purchases, matched), (9, 2), "{label}: {report:#}");
        // The duplicate names both orders and what can still be done.
        let duplicate = report["exceptions"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["kind"] == "duplicate_suspected"))
            .expect("duplicate");
        let text = duplicate["explanation"].as_str().unwrap_or("");
        assert!(
            text.contains(&order("foreign")) && text.contains("cancel"),
            "{text}"
        );
    }
    let missing = support::json(&support::run(battery.env.pcsaga(None).args([
        "list",
        "--billing",
        "missing",
        "--json",
    ])));
    assert_eq!(missing.as_array().map(Vec::len), Some(2), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_export_file_proves_nothing_and_stops_nothing() {
    let mut config = SimConfig::default();
    config.billing.truncate_blobs = true;
    let battery = bought(config, &book("cut")).await;
    let invoices = battery.sim.close_billing_period();
    let (code, report) = reconcile(&battery, V2, &["--period", &invoices[0]]).await;
    assert_eq!(code, Some(7), "{report:#}");
    let (purchases, matched, _) = totals(&report);
    assert_eq!(
        (purchases, matched),
        (5, 0),
        "nothing matches from a cut file: {report:#}"
    );
    // A file cut short: what it held before the cut may be read, but nothing on that invoice
    // is final, no purchase is called missing, and the source is reported.
    assert!(
        report["exceptions"]
            .as_array()
            .is_some_and(|e| e.iter().all(|e| e["kind"] != "missing")),
        "{report:#}"
    );
    assert!(
        report["unreadable"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u
                .as_str()
                .is_some_and(|u| u.contains("was not read to its end")))),
        "{report:#}"
    );
    let finals = support::stdout(&support::run(battery.env.pcsaga(None).args([
        "list",
        "--billing",
        "matched",
    ])));
    let _ = (matched, finals);
    let shown_any = support::json(&support::run(
        battery.env.pcsaga(None).args(["list", "--json"]),
    ));
    for p in shown_any.as_array().expect("array") {
        let id = p["id"].as_str().expect("id");
        let shown = support::stdout(&support::run(battery.env.pcsaga(None).args(["show", id])));
        assert!(
            !shown.contains(", final"),
            "nothing is final from a cut file: {shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_export_resumes_and_reports_the_same() {
    let mut config = SimConfig::default();
    // One line per file: five files, so the crash falls between files.
    config.billing.graph_lines_per_blob = 1;
    let battery = bought(config, &book("crash")).await;
    let invoices = battery.sim.close_billing_period();
    // The process dies (abort, as SIGKILL: no cleanup) right after the first file is read
    // and staged, before the step is recorded.
    let mut crashing = billing_command(&battery, V2);
    crashing
        .env(
            "PCSAGA_TEST_RECONCILE_CRASH_AT",
            "before_record:read_export_file",
        )
        .args(["reconcile", "--period", &invoices[0], "--json"]);
    let crashed = support::run_async(crashing).await;
    assert!(
        !crashed.status.success(),
        "it crashed: {}",
        support::stderr(&crashed)
    );
    let listed = support::json(&support::run(
        battery.env.pcsaga(None).args(["list", "--json"]),
    ));
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(5),
        "runs are not purchases: {listed}"
    );
    // A daemon takes the run over after its lease and finishes it.
    daemon_finishes(&battery, V2).await;
    let runs = support::json(&support::run(battery.env.pcsaga(None).args([
        "list",
        "--json",
        "--billing",
        "matched",
    ])));
    assert_eq!(runs.as_array().map(Vec::len), Some(5), "{runs}");
    // The resumed run's report equals a fresh, uninterrupted run's.
    let resumed = resumed_report(&battery).await;
    let (code, fresh) = reconcile(&battery, V2, &["--period", &invoices[0]]).await;
    assert_eq!(code, Some(0), "{fresh:#}");
    let mut fresh = fresh;
    fresh.as_object_mut().map(|o| o.remove("run"));
    assert_eq!(resumed, fresh);
    // File 1 was read twice (before and after the crash), and counted once.
    assert_eq!(totals(&fresh), (5, 5, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_sigkilled_while_reading_files_is_finished_by_a_daemon_with_nothing_counted_twice() {
    let mut config = SimConfig::default();
    config.billing.graph_lines_per_blob = 1;
    let battery = bought(config, &book("kill")).await;
    // Each file's manifest read takes 300 ms: time to kill the run between files.
    battery
        .sim
        .set_faults(pcsaga_simulator::FaultPlan {
            seed: 1,
            rules: vec![pcsaga_simulator::FaultRule {
                endpoint: "export_manifest".into(),
                probability: 1.0,
                after: 0,
                limit: None,
                fault: pcsaga_simulator::Fault::Latency {
                    min_ms: 300,
                    max_ms: 300,
                },
            }],
        })
        .expect("faults");
    let invoices = battery.sim.close_billing_period();
    let mut command = billing_command(&battery, V2);
    command
        .args(["reconcile", "--period", &invoices[0]])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().expect("reconcile starts");
    // SIGKILL once a file was staged and more remain.
    let run = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let runs = runs(&battery).await;
        if let Some(run) = runs.first() {
            let context: Value = serde_json::from_str(&run.context).expect("context");
            let file = context["sources"][0]["file"].as_u64().unwrap_or(0);
            if run.state == "Reading" && (1..4).contains(&file) {
                break run.id.clone();
            }
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended before it was killed"
        );
    };
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let killed = pcsaga_engine::Store::get(&battery.store, &run)
        .await
        .expect("get")
        .expect("the run");
    assert_eq!(
        killed.status,
        pcsaga_engine::SagaStatus::Active,
        "left mid-export"
    );
    daemon_finishes(&battery, V2).await;
    let report = support::json(&support::run(battery.env.pcsaga(None).args([
        "reconcile",
        "--report",
        &run,
        "--json",
    ])));
    assert_eq!(totals(&report), (5, 5, 0), "{report:#}");
    // Every file was read, the ones before the kill possibly twice, and no line counts twice.
    let files = battery
        .sim
        .requests()
        .iter()
        .filter(|r| r.endpoint == "export_manifest")
        .count();
    assert!(files >= 5, "{files} manifest reads for 5 files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reconciles_on_its_schedule_once_per_interval() {
    let battery = bought(SimConfig::default(), &book("sched")[..1]).await;
    let policies = battery.env.write("reconcile.toml", FAST_RECONCILE);
    let start = |name: &str| {
        let mut command = battery.env.pcsaga(Some(&battery.sim));
        command
            .env("PCSAGA_RECONCILE_EVERY_H", "24")
            .env("PCSAGA_RECONCILE_WORKFLOW", &policies)
            .arg("daemon")
            .stdout(battery.env.log(&format!("{name}.out")))
            .stderr(battery.env.log(&format!("{name}.err")));
        command.spawn().expect("daemon")
    };
    // Two daemons on one database: each interval's runs are started once between them.
    let mut first = start("sched-1");
    let mut second = start("sched-2");
    let runs = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let runs = runs(&battery).await;
        if runs.len() == 2
            && runs
                .iter()
                .all(|r| r.status == pcsaga_engine::SagaStatus::Succeeded)
        {
            break runs;
        }
    };
    assert!(support::sigterm(&mut first).await.success());
    assert!(support::sigterm(&mut second).await.success());
    let mut keys: Vec<String> = runs
        .iter()
        .map(|r| {
            r.idempotency_key
                .rsplit(':')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    keys.sort();
    assert_eq!(keys, ["current", "previous"]);
    let status = support::stdout(&support::run(battery.env.pcsaga(None).arg("status")));
    assert!(
        status.contains("billing       last reconciliation run"),
        "{status}"
    );
    let matched = support::json(&support::run(battery.env.pcsaga(None).args([
        "list",
        "--billing",
        "matched",
        "--json",
    ])));
    assert_eq!(
        matched.as_array().map(Vec::len),
        Some(1),
        "the current month's run matched the purchase"
    );
}

/// The report of the one reconciliation run that succeeded before the fresh one.
async fn resumed_report(battery: &Battery) -> Value {
    let finished: Vec<_> = runs(battery)
        .await
        .into_iter()
        .filter(|r| r.status == pcsaga_engine::SagaStatus::Succeeded)
        .collect();
    assert_eq!(finished.len(), 1, "one finished run");
    let output = support::run(battery.env.pcsaga(None).args([
        "reconcile",
        "--report",
        &finished[0].id,
        "--json",
    ]));
    let mut report = support::json(&output);
    report.as_object_mut().map(|o| o.remove("run"));
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_is_a_pdf_and_the_invoices_are_listed() {
    let battery = bought(SimConfig::default(), &book("pdf")[..2]).await;
    let invoices = battery.sim.close_billing_period();
    let listed = support::run_async({
        let mut c = battery.env.pcsaga(Some(&battery.sim));
        c.args(["billing", "invoices", "--json"]);
        c
    })
    .await;
    let listed = support::json(&listed);
    assert_eq!(listed[0]["id"], invoices[0]);
    assert_eq!(listed[0]["invoiceType"], "OneTime");
    let pdf = battery.env.dir.path().join("statement.pdf");
    let saved = support::run_async({
        let mut c = battery.env.pcsaga(Some(&battery.sim));
        c.args(["billing", "statement", &invoices[0], "-o"])
            .arg(&pdf);
        c
    })
    .await;
    assert!(saved.status.success(), "{}", support::stderr(&saved));
    let bytes = std::fs::read(&pdf).expect("the PDF");
    assert!(bytes.starts_with(b"%PDF-"), "starts with %PDF-");
    assert!(
        String::from_utf8_lossy(&bytes)
            .trim_end()
            .ends_with("%%EOF"),
        "ends with %%EOF"
    );
    // Never over an existing file.
    let again = support::run_async({
        let mut c = battery.env.pcsaga(Some(&battery.sim));
        c.args(["billing", "statement", &invoices[0], "-o"])
            .arg(&pdf);
        c
    })
    .await;
    assert_eq!(again.status.code(), Some(3), "{}", support::stderr(&again));
    let balance = support::run_async({
        let mut c = battery.env.pcsaga(Some(&battery.sim));
        c.args(["billing", "balance", "--json"]);
        c
    })
    .await;
    let balance = support::json(&balance);
    assert_eq!(balance["currencyCode"], "USD");
    assert_eq!(balance["balanceAmount"], listed[0]["totalCharges"]);
}

/// A lease setting that is not a number, or out of range, is refused naming it (exit 3), not
/// replaced by a default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_lease_setting_is_refused_naming_it() {
    let battery = Battery::new(SimConfig::default()).await;
    for (value, says) in [
        ("soon", "a whole number of seconds"),
        ("1", "between 2 and"),
    ] {
        let mut command = billing_command(&battery, V1);
        command.env("PCSAGA_LEASE_S", value).arg("reconcile");
        let output = support::run_async(command).await;
        assert_eq!(
            output.status.code(),
            Some(3),
            "{}",
            support::stderr(&output)
        );
        let stderr = support::stderr(&output);
        assert!(
            stderr.contains("PCSAGA_LEASE_S") && stderr.contains(says),
            "{stderr}"
        );
    }
}

/// Reconciliation on PostgreSQL: the same book bought by a daemon on a PostgreSQL database,
/// reconciled through v1 and the export, every purchase matched once, its status queryable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_runs_on_postgres_as_on_sqlite() {
    let db = pcsaga_testkit::pg::TestDatabase::create().await;
    let battery = Battery::new(SimConfig::default()).await;
    let requests = book("pg");
    let lines: Vec<String> = requests.iter().map(Value::to_string).collect();
    let file = battery.env.write("book.ndjson", &(lines.join("\n") + "\n"));
    let on_pg = |mut command: std::process::Command| {
        command.env("PCSAGA_DB", &db.url);
        command
    };
    let mut submit = on_pg(battery.env.pcsaga(Some(&battery.sim)));
    submit.arg("submit").arg(&file);
    let submitted = support::run_async(submit).await;
    assert!(
        submitted.status.success(),
        "{}",
        support::stderr(&submitted)
    );
    let mut daemon = on_pg(billing_command(&battery, V1));
    daemon.args(["daemon", "--exit-when-idle"]);
    let ran = support::run_async(daemon).await;
    assert!(ran.status.success(), "{}", support::stderr(&ran));
    let invoices = battery.sim.close_billing_period();
    assert_eq!(invoices.len(), 1, "{invoices:?}");
    for (label, config) in [("v1", V1), ("v2", V2)] {
        let mut command = on_pg(billing_command(&battery, config));
        command.args(["reconcile", "--period", &invoices[0], "--json"]);
        let output = support::run_async(command).await;
        let report: Value = serde_json::from_str(&support::stdout(&output))
            .unwrap_or_else(|e| panic!("{label}: no report ({e}): {}", support::stderr(&output)));
        assert_eq!(output.status.code(), Some(0), "{label}: {report:#}");
        assert_eq!(totals(&report), (5, 5, 0), "{label}: {report:#}");
    }
    let mut list = on_pg(battery.env.pcsaga(None));
    list.args(["list", "--billing", "matched", "--json"]);
    let matched = support::json(&support::run(&mut list));
    assert_eq!(matched.as_array().map(Vec::len), Some(5), "{matched}");
    let id = matched[0]["id"].as_str().expect("id");
    let mut show = on_pg(battery.env.pcsaga(None));
    show.args(["show", id]);
    let shown = support::stdout(&support::run(&mut show));
    assert!(shown.contains("billing       matched, final"), "{shown}");
    assert!(
        shown.contains(&format!("billing line  invoice:{}#", invoices[0])),
        "{shown}"
    );
    // Nothing of it went to a SQLite file: the battery's file has no purchase.
    let local = pcsaga_engine::Store::count_by_status(&battery.store)
        .await
        .expect("count");
    assert!(local.values().all(|n| *n == 0), "{local:?}");
}
