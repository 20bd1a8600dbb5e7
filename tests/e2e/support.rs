//! Running the real binary against an in-process simulator.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use pcsaga_simulator::Simulator;

pub const CUSTOMER: &str = "4c4d0c6e-38b9-4c5a-a0f4-3b2f1c1e7a10";

/// Policies fast enough for tests, with the money rules the workflow enforces.
pub const FAST_POLICIES: &str = r#"
workflow = "one-time-purchase"
[defaults.retry]
initial_interval_ms = 50
max_interval_ms = 400
max_attempts = 60
jitter = 0.2
[defaults.poll]
interval_ms = 100
deadline_s = 300
[states.Checkout.retry]
on_exhausted = "park"
[states.Checkout.poll]
interval_ms = 1000
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

pub struct Env {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub workflow: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("pcsaga.db");
        let workflow = dir.path().join("fast.toml");
        std::fs::write(&workflow, FAST_POLICIES).expect("write policies");
        Self { dir, db, workflow }
    }

    /// A `pcsaga` command with the database, the fast policies and, if given, the simulator's
    /// connection settings in its environment (and nothing from the developer's).
    pub fn pcsaga(&self, sim: Option<&Simulator>) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_pcsaga"));
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        // No scheduled billing reconciliation in tests that do not ask for one: its calls and
        // its runs are not what they count.
        command
            .env("PCSAGA_DB", &self.db)
            .env("PCSAGA_WORKFLOW", &self.workflow)
            .env("PCSAGA_RECONCILE_EVERY_H", "0")
            // Every daemon of the tests serves its listener, each on a port of its own (they
            // run in parallel; the default 9464 would be taken by the first).
            .env("PCSAGA_LISTEN", "127.0.0.1:0");
        if let Some(sim) = sim {
            let c = sim.config();
            command
                .env("PCSAGA_BASE_URL", sim.base_url())
                .env("PCSAGA_GRAPH_URL", sim.graph_url())
                .env("PCSAGA_TOKEN_URL", sim.token_url())
                .env("PCSAGA_CLIENT_ID", &c.client_id)
                .env("PCSAGA_CLIENT_SECRET", &c.client_secret)
                .env("PCSAGA_REFRESH_TOKEN", &c.refresh_token)
                .env("PCSAGA_TIMEOUT_S", "1")
                .env("PCSAGA_LEASE_S", "3");
        }
        command.stdin(Stdio::null());
        command
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    pub fn log(&self, name: &str) -> std::fs::File {
        std::fs::File::create(self.dir.path().join(name)).expect("log file")
    }

    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}

/// Runs a command to completion.
pub fn run(command: &mut Command) -> Output {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("pcsaga runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            stdout(output),
            stderr(output)
        )
    })
}

/// A purchase request line.
pub fn request(key: &str, product: &str, sku: &str, term: Option<&str>) -> serde_json::Value {
    let mut item = serde_json::json!({"productId": product, "skuId": sku, "quantity": 1});
    if let Some(term) = term {
        item["termDuration"] = serde_json::json!(term);
    }
    if product == "DZH318Z0BQ3Q" {
        item["provisioningContext"] = serde_json::json!({"subscriptionId": "1c461a25-f729-4fa5-aadb-280947dd05e8", "scope": "shared"});
    }
    serde_json::json!({"idempotencyKey": key, "customerId": CUSTOMER, "country": "US", "items": [item]})
}

/// A battery run: a simulator, a database, the binary, and the auditor.
pub struct Battery {
    pub sim: pcsaga_simulator::Simulator,
    pub env: Env,
    pub store: pcsaga_engine::AnyStore,
    pub accepted: usize,
    /// The PostgreSQL database of a battery on PostgreSQL (dropped with it).
    pub pg: Option<pcsaga_testkit::pg::TestDatabase>,
}

/// The database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an end-to-end test once per store: `on_both_stores!(name)` makes `name::sqlite` and
/// `name::postgres` of `async fn name(backend: Backend)`, one definition for both.
macro_rules! on_both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }
        }
    };
}
pub(crate) use on_both_stores;

/// Waits for a child process without blocking the runtime (the simulator runs on it too); kills
/// it if it runs past `deadline` (a harness safeguard, not a timing assertion).
pub async fn wait_with_deadline(
    child: &mut std::process::Child,
    deadline: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let until = std::time::Instant::now() + deadline;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Runs a command to completion without blocking the runtime.
pub async fn run_async(command: Command) -> Output {
    let mut command = tokio::process::Command::from(command);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command.output().await.expect("pcsaga runs")
}

impl Battery {
    pub async fn new(config: pcsaga_simulator::SimConfig) -> Self {
        let sim = pcsaga_simulator::Simulator::start(config)
            .await
            .expect("simulator");
        let env = Env::new();
        // Create the database first so the auditor's store can open it alongside the daemons.
        let store = pcsaga_engine::AnyStore::Sqlite(
            pcsaga_engine::SqliteStore::open(pcsaga_engine::SqliteConfig::new(&env.db))
                .await
                .expect("store"),
        );
        Self {
            sim,
            env,
            store,
            accepted: 0,
            pg: None,
        }
    }

    /// A battery on `backend`: on PostgreSQL, a database of its own, which every command of
    /// the test uses (`PCSAGA_DB` is its URL) and the auditor reads.
    pub async fn on(config: pcsaga_simulator::SimConfig, backend: Backend) -> Self {
        let mut battery = Self::new(config).await;
        if backend == Backend::Postgres {
            let db = pcsaga_testkit::pg::TestDatabase::create().await;
            battery.env.db = PathBuf::from(&db.url);
            battery.store = pcsaga_engine::AnyStore::Postgres(db.store().await);
            battery.pg = Some(db);
        }
        battery
    }

    /// Submits requests through `pcsaga submit` (NDJSON); returns how many were accepted.
    pub async fn submit(&mut self, requests: &[serde_json::Value]) -> usize {
        let lines: Vec<String> = requests.iter().map(serde_json::Value::to_string).collect();
        let file = self.env.write(
            &format!("batch-{}.ndjson", self.accepted),
            &(lines.join("\n") + "\n"),
        );
        let mut command = self.env.pcsaga(Some(&self.sim));
        command.arg("submit").arg(&file).arg("--json");
        let output = run_async(command).await;
        let results = json(&output);
        let accepted = results.as_array().map_or_else(
            || usize::from(results["result"] == "created"),
            |a| a.iter().filter(|r| r["result"] == "created").count(),
        );
        self.accepted += accepted;
        accepted
    }

    /// Starts a daemon with extra environment, logging to `name`.err.
    ///
    /// The battery's simulator does not throttle unless a test turns it on, and what the
    /// battery tests is crash safety, not rate limits: its daemons get budgets far above Partner
    /// Center's (`governor.per_minute`), or the default budgets would pace a 10,000-purchase tier
    /// at 250 checkouts a minute. A test that tests the governor passes its own `PCSAGA_CONFIG`.
    pub fn daemon(&self, name: &str, extra: &[(&str, &str)], args: &[&str]) -> std::process::Child {
        let budgets: String = pcsaga_purchase::budgets::DEFAULT_BUDGETS
            .iter()
            .map(|(class, _)| format!("{class} = 1000000\n"))
            .collect();
        // Direct orders conclude absence 20 s after a send here: the simulator's order list
        // lags 5 s (Partner Center's up to 15 minutes, hence the default of 20 minutes). Three
        // sends after proven absence: the battery's random 5xx can refuse a send before it is
        // processed, and a purchase should not park for a fault that rolled twice.
        let config = self.env.write(
            "battery.toml",
            &format!("[governor.per_minute]\n{budgets}[direct_order]\nabsence_wait_s = 20\nmax_resends = 3\n"),
        );
        let mut command = self.env.pcsaga(Some(&self.sim));
        command.arg("daemon").args(args);
        command.env("PCSAGA_CONFIG", &config);
        for (k, v) in extra {
            command.env(k, v);
        }
        command
            .stdout(self.env.log(&format!("{name}.out")))
            .stderr(self.env.log(&format!("{name}.err")))
            .spawn()
            .expect("daemon starts")
    }

    /// Runs a daemon until no purchase is active (at most `deadline`); panics with its log if it fails.
    pub async fn finish(&self, name: &str, deadline: std::time::Duration) {
        let mut child = self.daemon(name, &[], &["--exit-when-idle"]);
        match wait_with_deadline(&mut child, deadline).await {
            Some(status) if status.success() => {}
            Some(status) => panic!(
                "daemon {name} ended {status}:\n{}",
                self.env.read(&format!("{name}.err"))
            ),
            None => panic!(
                "daemon {name} did not finish within {deadline:?}:\n{}",
                tail(&self.env.read(&format!("{name}.err")), 40)
            ),
        }
    }

    pub async fn audit(&self, settled: bool) -> pcsaga_testkit::Audit {
        let expect = pcsaga_testkit::Expect {
            purchases: self.accepted,
            settled,
            wall_clock: true,
        };
        pcsaga_testkit::audit(
            &self.store,
            &self.sim.ledger(),
            &self.sim.requests(),
            &expect,
        )
        .await
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A mix of purchases: reservations (registration, inventory), software subscriptions and
/// perpetual software, keyed `{prefix}-{n}`.
pub fn mixed(prefix: &str, n: usize) -> Vec<serde_json::Value> {
    let kinds = [
        ("DZH318Z0BQ3Q", "0001", Some("P1Y")),
        ("DG7GMGF0FKZV", "0003", Some("P1Y")),
        ("DG7GMGF0DWTL", "0001", None),
    ];
    (0..n)
        .map(|i| {
            let (product, sku, term) = kinds[i % kinds.len()];
            let mut r = request(&format!("{prefix}-{i}"), product, sku, term);
            // A customer per purchase, as in a partner's book: each customer's order and
            // entitlement lists stay short.
            r["customerId"] =
                serde_json::json!(format!("{:08x}-0000-4000-8000-{:012x}", i % 0xffff_ffff, i));
            r
        })
        .collect()
}

/// Sends SIGTERM to a daemon and waits (30 s at most) for it to exit; its exit status.
pub async fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("kill -TERM");
    assert!(term.success(), "kill -TERM {}", child.id());
    wait_with_deadline(child, std::time::Duration::from_secs(30))
        .await
        .expect("the daemon stops within 30 s of SIGTERM")
}

/// Submits `n` perpetual-software purchases keyed `{prefix}-{i}` as one NDJSON batch through
/// the binary, and asserts they were all accepted.
pub fn submit_batch(env: &Env, prefix: &str, n: usize) {
    let lines: Vec<String> = (0..n)
        .map(|i| request(&format!("{prefix}-{i}"), "DG7GMGF0DWTL", "0001", None).to_string())
        .collect();
    let file = env.write(&format!("{prefix}.ndjson"), &lines.join("\n"));
    let output = run(env.pcsaga(None).arg("submit").arg(&file));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// Calls that reached the simulator while a `Retry-After` it gave their class was running.
///
/// For every 429 (arrival `t`, `Retry-After` `r`, class `c`): a call of class `c` arriving in
/// `(t + in_flight, t + r)` was sent after the 429 was answered, i.e. the daemon did not hold
/// the class for the tenant. Calls arriving within `in_flight` of `t` were already on their way
/// when the 429 left (a daemon cannot recall them). Returns one line per such call.
pub fn calls_inside_retry_after(
    requests: &[pcsaga_simulator::world::RequestRecord],
    in_flight: std::time::Duration,
) -> Vec<String> {
    use pcsaga_simulator::throttle::class_of;
    let in_flight = chrono::Duration::from_std(in_flight).expect("small");
    let mut early = Vec::new();
    for throttled in requests.iter().filter(|r| r.status == Some(429)) {
        let (Some(class), Some(retry_after)) =
            (class_of(&throttled.endpoint), throttled.retry_after_s)
        else {
            continue;
        };
        let ends = throttled.at + chrono::Duration::seconds(retry_after as i64);
        for call in requests.iter().filter(|r| {
            class_of(&r.endpoint) == Some(class) && r.at > throttled.at + in_flight && r.at < ends
        }) {
            early.push(format!(
                "{} {} at {} while the 429 of {} at {} (Retry-After {retry_after}s, class {class}) ran",
                call.method, call.path, call.at, throttled.path, throttled.at
            ));
        }
    }
    early.sort();
    early.dedup();
    early
}
