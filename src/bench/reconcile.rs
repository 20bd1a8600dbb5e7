//! The `reconcile` measurement: a reconciliation run over one invoice of `purchases × lines`
//! billing lines (100,000 against 10,000 purchases by default), through the simulator, the
//! reconciliation workflow and its engine, read by v1 pages (E26) or the Graph export (E29).
//!
//! The simulator runs as a child process (`pcsaga sim`), so the peak RSS measured is pcsaga's
//! alone: the simulator holds every line of the book in memory to serve it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use pcsaga_billing::{BillingSettings, Ledger, Month, PeriodSpec, ReconcileWorkflow, RunContext};
use pcsaga_engine::{Engine, EngineConfig, Policies, SagaStatus, SystemClock, Workflow};
use pcsaga_partner_center::models::{NewOrder, NewOrderLineItem};
use pcsaga_partner_center::{CorrelationId, RequestId};
use pcsaga_purchase::context::OrderState;
use pcsaga_purchase::{PurchaseContext, PurchaseWorkflow};
use pcsaga_simulator::SimConfig;

use super::run::{open, Scratch};

type Failure = anyhow::Error;

const OFFER: &str = "DG7GMGF0DWTL:0001:DG7GMGF0DSFM";

/// Reconciliation policies without waits (the export answers at once here).
const POLICIES: &str = r#"
workflow = "billing-reconciliation"
[defaults.retry]
initial_interval_ms = 50
max_interval_ms = 1000
max_attempts = 20
[defaults.poll]
interval_ms = 10
deadline_s = 3600
"#;

#[derive(Debug)]
pub struct Reconciled {
    pub purchases: usize,
    pub lines: u64,
    pub matched: u64,
    /// The run, from submission to its report.
    pub seconds: f64,
    /// Peak RSS during the run (this process; the simulator runs in another).
    pub peak_rss_mb: f64,
    /// RSS when the run started.
    pub start_rss_mb: f64,
    /// Building the book (orders in the simulator, purchases in the database): not measured.
    pub setup_seconds: f64,
}

/// Sets the process's peak RSS to its current RSS (Linux: `clear_refs` 5), so the peak read
/// after a phase is that phase's.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub async fn reconcile(
    purchases: usize,
    lines_per: usize,
    via_graph: bool,
) -> Result<Reconciled, Failure> {
    let setup = Instant::now();
    let scratch = Scratch::new("reconcile")?;
    let sim = ChildSim::start(&scratch).await?;
    let client = sim.client()?;
    let store = open(&scratch.db()).await?;
    let buyer = Engine::new(
        PurchaseWorkflow::new(client.clone()),
        store.clone(),
        super::run::policies()?,
        Arc::new(SystemClock),
        EngineConfig::new("bench"),
    );
    // The book: one order of `lines_per` lines per purchase, placed in the simulator (E21),
    // and the purchase that bought it, as a saga that knows its order.
    let maker = client.clone();
    let mut placed = futures_util::stream::iter(0..purchases)
        .map(|i| {
            let client = maker.clone();
            async move {
                let customer = format!("{:08x}-0000-4000-8000-{:012x}", i / 10, i / 10);
                let body = NewOrder {
                    reference_customer_id: customer.clone(),
                    billing_cycle: "one_time".into(),
                    line_items: (0..lines_per)
                        .map(|n| NewOrderLineItem {
                            line_item_number: n as i64,
                            offer_id: OFFER.into(),
                            quantity: 1,
                            friendly_name: Some(format!("pcs-bench-{i}")),
                            provisioning_context: BTreeMap::new(),
                            partner_id_on_record: None,
                            term_duration: None,
                            renews_to: None,
                        })
                        .collect(),
                };
                let order = client
                    .create_order(CorrelationId::new(), RequestId::new(), &customer, &body)
                    .await
                    .map(|r| r.value);
                (i, customer, order)
            }
        })
        .buffer_unordered(16);
    // Each purchase is written as its order arrives: the book is never held in memory.
    while let Some((i, customer, order)) = placed.next().await {
        let order = order?;
        let request = pcsaga_purchase::parse_value(&serde_json::json!({
            "idempotencyKey": format!("bench-{i}"), "customerId": customer, "country": "US",
            "orderPath": "direct",
            "items": [{"productId": "DG7GMGF0DWTL", "skuId": "0001", "quantity": lines_per}],
        }))
        .map_err(|e| anyhow::anyhow!("bench request: {e}"))?;
        let mut context = PurchaseContext::new(request.clone());
        context.orders = vec![OrderState {
            id: order.id.clone(),
            status: "completed".into(),
            lines: order
                .line_items
                .iter()
                .map(|l| (l.line_item_number, l.offer_id.clone(), l.quantity))
                .collect(),
            completed: true,
            alternate_id: order.alternate_id.clone(),
            currency: order.currency_code.clone(),
            created_at: order.creation_date,
        }];
        let input = serde_json::to_string(&request)?;
        buyer
            .submit(&request.idempotency_key, input, &context, Some(customer))
            .await?;
    }
    drop(placed);
    let invoice = sim.close_billing_period().await?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    let ledger = Ledger::open(&scratch.db()).await?;
    let settings = BillingSettings {
        v2_from: if via_graph {
            Month {
                year: 2024,
                month: 2,
            }
        } else {
            Month {
                year: 2100,
                month: 1,
            }
        },
        ..BillingSettings::default()
    };
    let workflow = ReconcileWorkflow::new(client, ledger.clone(), settings, Arc::new(SystemClock));
    let policies = Policies::parse(POLICIES, workflow.name(), &workflow.states(), |s, p| {
        workflow.validate_policy(s, p)
    })?;
    let mut config = EngineConfig::new("bench-reconcile");
    config.concurrency = 1;
    config.budgets = vec![pcsaga_engine::ClassBudget {
        name: pcsaga_billing::workflow::BILLING_CLASS.into(),
        per_minute: 1_000_000,
    }];
    let engine = Engine::new(
        workflow,
        store.clone(),
        policies,
        Arc::new(SystemClock),
        config,
    );
    let (start_rss_mb, _) = super::run::rss_mb();
    reset_peak();
    let started = Instant::now();
    let run = engine
        .submit(
            "bench",
            String::new(),
            &RunContext::new(PeriodSpec::Invoice(invoice)),
            None,
        )
        .await?
        .saga
        .id;
    let saga = pcsaga_billing::drive(&engine, &run, Duration::from_secs(3600), |_| {}).await?;
    let seconds = started.elapsed().as_secs_f64();
    let (_, peak_rss_mb) = super::run::rss_mb();
    if saga.status != SagaStatus::Succeeded {
        anyhow::bail!(
            "the reconciliation run ended {}: {:?}",
            saga.status,
            saga.last_error
        );
    }
    let report = ledger
        .report(&run)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no report"))?;
    let matched = report.rows.iter().map(|r| r.matched).sum::<u64>();
    let lines = (purchases * lines_per) as u64;
    if matched != purchases as u64 || report.problems() > 0 {
        anyhow::bail!(
            "the bench book did not reconcile cleanly: {matched} of {purchases} matched, {} problem(s)",
            report.problems()
        );
    }
    drop(sim);
    Ok(Reconciled {
        purchases,
        lines,
        matched,
        seconds,
        peak_rss_mb,
        start_rss_mb,
        setup_seconds,
    })
}

/// `pcsaga sim` in a child process, killed when dropped.
struct ChildSim {
    child: tokio::process::Child,
    base_url: String,
    token_url: String,
}

impl ChildSim {
    async fn start(scratch: &Scratch) -> Result<Self, Failure> {
        use tokio::io::AsyncBufReadExt;
        let config = scratch.db().with_extension("sim.toml");
        std::fs::write(
            &config,
            "order_completion_s = 0\norder_list_lag_s = 0\n[billing]\ngraph_polls_until_done = 0\n",
        )?;
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["sim", "--json", "--sim-config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("the simulator's stdout"))?;
        let mut first = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut first)
            .await?;
        let started: serde_json::Value = serde_json::from_str(&first)
            .map_err(|e| anyhow::anyhow!("the simulator printed {first:?}: {e}"))?;
        let text = |k: &str| {
            started[k]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("the simulator printed no {k}"))
        };
        Ok(Self {
            base_url: text("baseUrl")?,
            token_url: text("tokenUrl")?,
            child,
        })
    }

    fn client(&self) -> Result<pcsaga_partner_center::Client, Failure> {
        // The simulator's default (public) credentials.
        let c = SimConfig::default();
        let credentials = pcsaga_partner_center::Credentials {
            token_url: self.token_url.clone(),
            resource: c.resource.clone(),
            client_id: c.client_id.clone(),
            client_secret: pcsaga_partner_center::Secret::new(c.client_secret.clone()),
            refresh_token: Some(pcsaga_partner_center::Secret::new(c.refresh_token.clone())),
        };
        let mut config = pcsaga_partner_center::ClientConfig::new(self.base_url.clone());
        config.graph_url = format!("{}/graph/v1.0", self.base_url);
        config.timeout = Duration::from_secs(120);
        Ok(pcsaga_partner_center::Client::new(config, credentials)?)
    }

    /// `POST /_sim/billing/close`; the first invoice made.
    async fn close_billing_period(&self) -> Result<String, Failure> {
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/_sim/billing/close", self.base_url))
            .send()
            .await?
            .json()
            .await?;
        answer["invoices"][0]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("the simulator made no invoice: {answer}"))
    }
}

impl Drop for ChildSim {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
