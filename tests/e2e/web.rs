//! The operations surface: the daemon's `/metrics` checked against the simulator's request
//! log, `/readyz` following the database's writability, the listener's token rule, and the
//! console in a real browser (Debian's chromium, headless).

use std::collections::BTreeMap;
use std::time::Duration;

use pcsaga_simulator::SimConfig;

use crate::support::{self, on_both_stores, Backend, Battery};

/// Waits for the `url=http://…/` a daemon or console logs once it listens.
async fn listening_url(b: &Battery, log: &str) -> String {
    for _ in 0..300 {
        let text = b.env.read(log);
        if let Some(at) = text.find("url=http://") {
            let tail = &text[at + 4..];
            let end = tail.find(char::is_whitespace).unwrap_or(tail.len());
            return tail[..end].trim_end_matches('/').to_owned();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{log} never said where it listens:\n{}", b.env.read(log));
}

async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the listener answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// Every sample of a scrape, parsed by a Prometheus text parser: (name, labels) → value.
fn scrape(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("the Prometheus text format");
    parsed
        .samples
        .into_iter()
        .filter_map(|s| {
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let labels = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Some((s.metric, labels, value))
        })
        .collect()
}

/// The sum of `metric`'s samples whose labels include all of `with`.
fn sum(
    samples: &[(String, BTreeMap<String, String>, f64)],
    metric: &str,
    with: &[(&str, &str)],
) -> f64 {
    samples
        .iter()
        .filter(|(name, labels, _)| {
            name == metric
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn metrics_move_as_the_simulators_request_log_says(backend: Backend) {
    let mut b = Battery::on(SimConfig::default(), backend).await;
    let mut requests = support::mixed("metrics", 9);
    // Two that fail before any money moves: no such product.
    requests.push(support::request(
        "metrics-bad-1",
        "NOSUCHPRODUCT",
        "0001",
        None,
    ));
    requests.push(support::request(
        "metrics-bad-2",
        "NOSUCHPRODUCT",
        "0002",
        None,
    ));
    assert_eq!(b.submit(&requests).await, 11);
    let mut daemon = b.daemon("daemon", &[], &[]);
    let base = listening_url(&b, "daemon.err").await;

    // A scrape while purchases run parses, and carries the queue's gauges.
    let (status, first) = get(&format!("{base}/metrics"), None).await;
    assert_eq!(status, 200, "{first}");
    let first = scrape(&first);
    let purchases = |s: &[(String, BTreeMap<String, String>, f64)]| {
        [
            "active",
            "succeeded",
            "failed",
            "needs_attention",
            "cancelled",
        ]
        .iter()
        .map(|st| {
            sum(
                s,
                "pcsaga_sagas",
                &[("workflow", "one-time-purchase"), ("status", st)],
            )
        })
        .sum::<f64>()
    };
    assert_eq!(
        purchases(&first),
        11.0,
        "every purchase is counted once, by status"
    );

    // Until every purchase has ended.
    let mut last = Vec::new();
    for _ in 0..600 {
        let (_, text) = get(&format!("{base}/metrics"), None).await;
        last = scrape(&text);
        if sum(
            &last,
            "pcsaga_sagas",
            &[("workflow", "one-time-purchase"), ("status", "active")],
        ) == 0.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sum(
            &last,
            "pcsaga_sagas",
            &[("workflow", "one-time-purchase"), ("status", "active")]
        ),
        0.0,
        "purchases still active:\n{}",
        support::tail(&b.env.read("daemon.err"), 30)
    );
    // Scraped after the end: the counters can no longer move.
    let (_, text) = get(&format!("{base}/metrics"), None).await;
    let end = scrape(&text);

    let log = b.sim.requests();
    // Every HTTP request the daemon sent reached the simulator, and nothing else did: per
    // status, the daemon's count is the simulator's.
    let mut sim_by_status: BTreeMap<String, f64> = BTreeMap::new();
    let mut sim_tokens = 0.0;
    for r in &log {
        let status = r
            .status
            .map_or_else(|| "none".to_owned(), |s| s.to_string());
        if r.endpoint == "token" {
            sim_tokens += 1.0;
        } else {
            *sim_by_status.entry(status).or_default() += 1.0;
        }
    }
    let mut ours: BTreeMap<String, f64> = BTreeMap::new();
    for (name, labels, value) in &end {
        if name == "pcsaga_http_requests_total"
            && labels.get("host").map(String::as_str) != Some("token")
        {
            *ours.entry(labels["status"].clone()).or_default() += value;
        }
    }
    assert_eq!(
        ours, sim_by_status,
        "HTTP requests by status: ours against the simulator's log"
    );
    assert_eq!(
        sum(&end, "pcsaga_http_requests_total", &[("host", "token")]),
        sim_tokens,
        "token requests"
    );
    // Checkouts: sent as many as the simulator received, each confirmed by its reply.
    let sim_checkouts = log.iter().filter(|r| r.endpoint == "checkout").count() as f64;
    let sim_confirmed = log
        .iter()
        .filter(|r| {
            r.endpoint == "checkout"
                && r.processed
                && r.status.is_some_and(|s| (200..300).contains(&s))
        })
        .count() as f64;
    assert!(
        sim_checkouts >= 9.0,
        "nine purchases checked out: {sim_checkouts}"
    );
    assert_eq!(
        sum(&end, "pcsaga_checkouts_sent_total", &[("path", "cart")]),
        sim_checkouts
    );
    assert_eq!(
        sum(
            &end,
            "pcsaga_checkouts_confirmed_total",
            &[("path", "cart")]
        ),
        sim_confirmed
    );
    // The two bad purchases failed, the nine others succeeded: as the gauges and the finished
    // counters say.
    let ended = |status: &str| {
        sum(
            &end,
            "pcsaga_sagas_finished_total",
            &[("workflow", "one-time-purchase"), ("status", status)],
        )
    };
    assert_eq!(ended("failed"), 2.0);
    assert_eq!(ended("succeeded"), 9.0);
    assert_eq!(
        sum(
            &end,
            "pcsaga_sagas",
            &[("workflow", "one-time-purchase"), ("status", "succeeded")]
        ),
        9.0
    );
    assert_eq!(
        sum(
            &end,
            "pcsaga_sagas",
            &[("workflow", "one-time-purchase"), ("status", "failed")]
        ),
        2.0
    );
    // The calls by class agree with the requests: each call is at least one request.
    let calls = sum(&end, "pcsaga_partner_center_calls_total", &[]);
    let requests: f64 = sim_by_status.values().sum();
    assert!(
        calls > 0.0 && calls <= requests,
        "calls {calls}, requests {requests}"
    );
    // Counters never go back between scrapes.
    for (name, labels, value) in first.iter().filter(|(n, ..)| n.ends_with("_total")) {
        let later = end
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|(.., v)| *v);
        assert!(
            later.is_some_and(|v| v >= *value),
            "{name}{labels:?} went from {value} to {later:?}"
        );
    }
    // Bounded labels: no purchase id anywhere in the scrape.
    let ids = support::json(&support::run(b.env.pcsaga(None).args(["list", "--json"])));
    for p in ids.as_array().expect("a list") {
        let id = p["id"].as_str().expect("an id");
        assert!(!text.contains(id), "a purchase id is a label: {id}");
    }
    let status = support::sigterm(&mut daemon).await;
    assert!(status.success(), "{}", b.env.read("daemon.err"));
}

/// Asks `/readyz` until it answers `want` (a harness deadline of 20 s, not a timing claim).
async fn ready_until(b: &Battery, base: &str, want: u16) -> serde_json::Value {
    for _ in 0..200 {
        let (status, body) = get(&format!("{base}/readyz"), None).await;
        if status == want {
            return serde_json::from_str(&body).expect("JSON");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "/readyz never answered {want}:\n{}",
        b.env.read("daemon.err")
    );
}

/// Another process holding the database's write lock (SQLite's, or an exclusive lock on the
/// daemons table on PostgreSQL: a backup job, a stuck migration) until it is told to let go.
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    async fn take(b: &Battery) -> Self {
        use sqlx::Connection as _;
        match &b.pg {
            None => {
                let mut c =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", b.env.db.display()))
                        .await
                        .expect("open the database");
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut c)
                    .await
                    .expect("take the write lock");
                Self::Sqlite(c)
            }
            Some(db) => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.expect("connect");
                sqlx::query("BEGIN").execute(&mut c).await.expect("begin");
                sqlx::query("LOCK TABLE daemons IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut c)
                    .await
                    .expect("lock the daemons table");
                Self::Postgres(c)
            }
        }
    }

    async fn release(self) {
        use sqlx::Connection as _;
        match self {
            Self::Sqlite(mut c) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut c)
                    .await
                    .expect("release");
                c.close().await.expect("close");
            }
            Self::Postgres(mut c) => {
                sqlx::query("ROLLBACK")
                    .execute(&mut c)
                    .await
                    .expect("release");
                c.close().await.expect("close");
            }
        }
    }
}

async fn readyz_follows_whether_the_database_takes_a_write(backend: Backend) {
    let b = Battery::on(SimConfig::default(), backend).await;
    let mut daemon = b.daemon("daemon", &[], &[]);
    let base = listening_url(&b, "daemon.err").await;
    let body = ready_until(&b, &base, 200).await;
    assert_eq!(body["ready"], true);
    assert_eq!(body["checks"]["database"]["ok"], true);
    assert_eq!(body["checks"]["claims"]["ok"], true);
    let (status, health) = get(&format!("{base}/healthz"), None).await;
    assert_eq!((status, health.contains("\"ok\"")), (200, true));

    let lock = WriteLock::take(&b).await;
    let body = ready_until(&b, &base, 503).await;
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["database"]["ok"], false, "{body}");
    assert!(
        body["checks"]["database"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("did not take a write") || d.contains("locked")),
        "{body}"
    );
    // The process answers all along: alive, not ready.
    assert_eq!(get(&format!("{base}/healthz"), None).await.0, 200);

    lock.release().await;
    let body = ready_until(&b, &base, 200).await;
    assert_eq!(body["checks"]["database"]["ok"], true, "{body}");
    let status = support::sigterm(&mut daemon).await;
    assert!(status.success(), "{}", b.env.read("daemon.err"));
}

#[tokio::test]
async fn a_listener_off_loopback_needs_a_token_and_nothing_changes_through_it() {
    let b = Battery::new(SimConfig::default()).await;
    // Refused without a token, before anything starts.
    let output = support::run(b.env.pcsaga(Some(&b.sim)).args([
        "daemon",
        "--exit-when-idle",
        "--listen",
        "0.0.0.0:0",
    ]));
    assert_eq!(
        output.status.code(),
        Some(3),
        "{}",
        support::stderr(&output)
    );
    assert!(
        support::stderr(&output).contains("PCSAGA_LISTEN_TOKEN"),
        "{}",
        support::stderr(&output)
    );
    // With one, every path demands it.
    let token = "a-token-of-some-length-0123456789";
    let mut daemon = b.daemon(
        "daemon",
        &[
            ("PCSAGA_LISTEN", "0.0.0.0:0"),
            ("PCSAGA_LISTEN_TOKEN", token),
        ],
        &[],
    );
    let base = listening_url(&b, "daemon.err")
        .await
        .replace("0.0.0.0", "127.0.0.1");
    for path in ["/metrics", "/healthz", "/readyz", "/"] {
        assert_eq!(get(&format!("{base}{path}"), None).await.0, 401, "{path}");
        assert_eq!(
            get(&format!("{base}{path}"), Some("wrong-token-0123456789"))
                .await
                .0,
            401,
            "{path}"
        );
        assert_eq!(
            get(&format!("{base}{path}"), Some(token)).await.0,
            200,
            "{path}"
        );
    }
    // Read-only: a write is refused whatever the path.
    let response = reqwest::Client::new()
        .post(format!("{base}/purchases/x"))
        .bearer_auth(token)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status().as_u16(), 405);
    assert!(
        !b.env.read("daemon.err").contains(token),
        "the token was logged"
    );
    let status = support::sigterm(&mut daemon).await;
    assert!(status.success(), "{}", b.env.read("daemon.err"));
}

/// Debian's chromium, or `PCSAGA_CHROMIUM`. Missing, the test fails and says how to install it:
/// `.ci/run` installs it, and a browser test that skips proves nothing.
fn chromium() -> std::path::PathBuf {
    let candidates = [
        std::env::var_os("PCSAGA_CHROMIUM").map(std::path::PathBuf::from),
        Some("/usr/bin/chromium".into()),
        Some("/usr/bin/chromium-browser".into()),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no chromium: `apt-get install chromium` (Debian), or set PCSAGA_CHROMIUM to a Chromium binary"))
}

fn browser(args: &[&str], url: &str, profile: &std::path::Path) -> std::process::Output {
    std::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs")
}

async fn the_console_in_a_browser_shows_a_failed_purchases_timeline(backend: Backend) {
    let mut b = Battery::on(SimConfig::default(), backend).await;
    let mut requests = support::mixed("console", 2);
    requests.push(support::request(
        "console-bad",
        "NOSUCHPRODUCT",
        "0001",
        None,
    ));
    assert_eq!(b.submit(&requests).await, 3);
    b.finish("daemon", Duration::from_secs(60)).await;
    let failed = support::json(&support::run(
        b.env
            .pcsaga(None)
            .args(["list", "--status", "failed", "--json"]),
    ));
    let id = failed[0]["id"]
        .as_str()
        .expect("a failed purchase")
        .to_owned();

    // The console on its own, without a daemon, reading the database.
    let mut console = b.env.pcsaga(None);
    console
        .args(["console", "--listen", "127.0.0.1:0"])
        .stdout(b.env.log("console.out"))
        .stderr(b.env.log("console.err"));
    let mut console = console.spawn().expect("the console starts");
    let base = listening_url(&b, "console.err").await;
    let profile = b.env.dir.path().join("chromium");

    let list = browser(&["--dump-dom"], &format!("{base}/"), &profile);
    let dom = String::from_utf8_lossy(&list.stdout);
    assert!(
        dom.contains("data-console=\"ready\""),
        "the page's script ran:\n{dom}\n{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(
        dom.contains(&format!("href=\"/purchases/{id}\"")),
        "the list links the failed purchase:\n{dom}"
    );
    assert!(dom.contains("data-status=\"failed\""), "{dom}");
    assert!(
        dom.contains("data-local=\"1\""),
        "times shown in local time by the script"
    );

    let page_url = format!("{base}/purchases/{id}");
    let page = browser(&["--dump-dom"], &page_url, &profile);
    let dom = String::from_utf8_lossy(&page.stdout);
    assert!(dom.contains("<svg class=\"timeline\""), "{dom}");
    // Its states as lanes, its failing attempt as a mark, its end as a flag.
    assert!(
        dom.contains("class=\"lane\" data-state=\"Enablement\""),
        "{dom}"
    );
    assert!(
        dom.contains("class=\"attempt failed\" data-state=\"Enablement\" data-call=\"get_sku\""),
        "{dom}"
    );
    assert!(dom.contains("class=\"end failed\""), "{dom}");
    assert!(
        dom.contains("data-timeline-marks=\"1\""),
        "the browser found one attempt in the picture:\n{dom}"
    );
    assert!(
        dom.contains("resume"),
        "the page shows the CLI's next step:\n{dom}"
    );

    // A picture of it, for the eye (the closing note describes it).
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("console-purchase-{backend:?}.png"));
    let _ = std::fs::remove_file(&shot);
    let taken = browser(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1100",
        ],
        &page_url,
        &profile,
    );
    let png = std::fs::read(&shot)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&taken.stderr)));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real picture ({} bytes)",
        png.len()
    );

    // A purchase that went the whole way: every state a lane, its checkout marked.
    let succeeded = support::json(&support::run(b.env.pcsaga(None).args([
        "list",
        "--status",
        "succeeded",
        "--json",
    ])));
    let good = succeeded[0]["id"]
        .as_str()
        .expect("a succeeded purchase")
        .to_owned();
    let good_url = format!("{base}/purchases/{good}");
    let page = browser(&["--dump-dom"], &good_url, &profile);
    let dom = String::from_utf8_lossy(&page.stdout);
    for state in [
        "Enablement",
        "Discovery",
        "CartBuild",
        "Checkout",
        "OrderVisibilityPolling",
    ] {
        assert!(
            dom.contains(&format!("data-state=\"{state}\"")),
            "{state}:\n{dom}"
        );
    }
    assert!(
        dom.contains("class=\"checkout\""),
        "the checkout is marked:\n{dom}"
    );
    assert!(dom.contains("class=\"end succeeded\""), "{dom}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("console-succeeded-{backend:?}.png"));
    let _ = std::fs::remove_file(&shot);
    browser(
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1400",
        ],
        &good_url,
        &profile,
    );
    assert!(std::fs::read(&shot).is_ok_and(|png| png.starts_with(b"\x89PNG")));

    let status = support::sigterm(&mut console).await;
    assert!(status.success(), "{}", b.env.read("console.err"));
}

on_both_stores!(metrics_move_as_the_simulators_request_log_says);
on_both_stores!(the_console_in_a_browser_shows_a_failed_purchases_timeline);
on_both_stores!(readyz_follows_whether_the_database_takes_a_write);
