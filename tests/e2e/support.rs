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
        command
            .env("PCSAGA_DB", &self.db)
            .env("PCSAGA_WORKFLOW", &self.workflow);
        if let Some(sim) = sim {
            let c = sim.config();
            command
                .env("PCSAGA_BASE_URL", sim.base_url())
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
