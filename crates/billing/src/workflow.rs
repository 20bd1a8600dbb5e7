//! A reconciliation run as a saga of its own (addendum §13.6): `Listing` finds the sources of
//! the period (one-time invoices from E24, unbilled lines per currency), `Reading` reads them
//! page by page (v1) or file by file (v2), staging every line, and `Matching` classifies every
//! purchase against the evidence and records the report.
//!
//! Every step is one call and one checkpoint: a crash or a throttled export resumes at the
//! page, operation or file it stopped at. Reading is idempotent (a page read twice replaces its
//! rows), and Matching is a pure function of the staged evidence, so a resumed run produces the
//! same report. Billing calls are read-only: nothing here can buy anything.
//!
//! Unlike a purchase's, this workflow's `execute` writes the billing tables (never the saga
//! tables): staging a page is part of reading it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pcsaga_engine::{
    AttemptRecord, Decision, Executed, Plan, SagaState, SagaView, StatePolicy, Workflow,
};
use pcsaga_partner_center::billing::graph::ManifestRef;
use pcsaga_partner_center::billing::{
    BillingLine, ExportOperation, ExportRequest, LineQuery, LineSource, Period,
};
use pcsaga_partner_center::models::Invoice;
use pcsaga_partner_center::{CallMeta, Client, CorrelationId, Error as ApiError, ErrorClass};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::classify::{classify, InvoiceFacts, SourceFacts, Timing};
use crate::ledger::Ledger;
use crate::period::{Month, PeriodSpec};
use crate::report::Report;

/// The workflow's name in saga rows.
pub const WORKFLOW_NAME: &str = "billing-reconciliation";

/// The rate governor's class of billing reads (addendum §5.6: 60 requests/min by default).
pub const BILLING_CLASS: &str = "billing";

/// Exports started for one source before the run gives up on it (a failed export, an expired
/// file signature): then the source is recorded as not read and the run goes on.
const MAX_EXPORTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Listing,
    Reading,
    Matching,
}

impl SagaState for State {
    const ALL: &'static [Self] = &[Self::Listing, Self::Reading, Self::Matching];

    fn name(self) -> &'static str {
        match self {
            Self::Listing => "Listing",
            Self::Reading => "Reading",
            Self::Matching => "Matching",
        }
    }
}

/// How a source is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Via {
    V1(LineQuery),
    V2(ExportRequest),
}

/// One source and how far it was read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceRead {
    pub facts: SourceFacts,
    pub via: Via,
    /// Lines staged so far (the next line's number).
    pub lines: u64,
    /// v1: the next page's token (`None` before the first page).
    pub continuation: Option<String>,
    pub pages: u32,
    /// v2: the export's operation URL, its manifest's URL, the next file, how many files.
    pub operation: Option<String>,
    pub manifest: Option<String>,
    pub file: usize,
    pub files: Option<usize>,
    pub exports: u32,
}

/// What a run is submitted with (its saga's `input`): the period, as JSON.
pub fn run_input(period: &PeriodSpec) -> Result<String, crate::Error> {
    serde_json::to_string(period)
        .map_err(|e| crate::Error::Database(format!("cannot encode the period {period:?}: {e}")))
}

/// A run's context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunContext {
    pub period: PeriodSpec,
    pub correlation_id: Uuid,
    /// The month reconciled (resolved from the clock at the first step; for an invoice, its
    /// billing month once listed).
    pub month: Option<Month>,
    pub sources: Vec<SourceRead>,
    /// The source being read.
    pub next: usize,
    /// The report's one-line summary, once matched.
    pub summary: Option<String>,
}

impl RunContext {
    pub fn new(period: PeriodSpec) -> Self {
        Self {
            period,
            correlation_id: Uuid::new_v4(),
            month: None,
            sources: Vec::new(),
            next: 0,
            summary: None,
        }
    }
}

/// A planned call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Effect {
    /// E24 (and the currencies the purchases were billed in).
    List,
    /// E26/E27: one page of `sources[source]`.
    ReadPage { source: usize },
    /// E29.1/E29.5.
    StartExport { source: usize },
    /// E29.2.
    PollExport { source: usize },
    /// E29.3 + E29.4: the manifest and one file.
    ReadFile { source: usize },
    /// Classify and record (local).
    Match,
}

impl Effect {
    pub fn name(&self) -> &'static str {
        match self {
            Self::List => "list_invoices",
            Self::ReadPage { .. } => "read_line_page",
            Self::StartExport { .. } => "start_export",
            Self::PollExport { .. } => "poll_export",
            Self::ReadFile { .. } => "read_export_file",
            Self::Match => "match",
        }
    }
}

/// What a call gave.
#[derive(Debug)]
pub enum Outcome {
    Listed {
        invoices: Vec<Invoice>,
        currencies: Vec<String>,
    },
    Page {
        staged: u64,
        continuation: Option<String>,
    },
    ExportStarted {
        operation: String,
    },
    Export(ExportOperation),
    File {
        staged: u64,
        files: usize,
        manifest: String,
        cut_short: Option<String>,
    },
    Matched {
        summary: String,
    },
    /// A Partner Center / Graph failure.
    Api(ApiError),
    /// The billing tables could not be written or read.
    Local(String),
}

/// Settings of reconciliation (`[billing]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingSettings {
    /// Invoices of this month and later are read through the Graph export (v2), older ones
    /// through E26 (v1) (addendum §6.M, default 2024-02).
    pub v2_from: Month,
    /// Unbilled lines through the Graph export instead of E27.
    pub unbilled_via_graph: bool,
    /// Lines per v1 page (at most 2000).
    pub page_size: u32,
    pub timing: Timing,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            v2_from: Month {
                year: 2024,
                month: 2,
            },
            unbilled_via_graph: false,
            page_size: 2000,
            timing: Timing::default(),
        }
    }
}

/// The workflow.
#[derive(Debug, Clone)]
pub struct ReconcileWorkflow {
    client: Client,
    ledger: Ledger,
    settings: BillingSettings,
    clock: Arc<dyn pcsaga_engine::Clock>,
}

type View = SagaView<State, RunContext>;
type D = Decision<State, RunContext>;

impl ReconcileWorkflow {
    pub fn new(
        client: Client,
        ledger: Ledger,
        settings: BillingSettings,
        clock: Arc<dyn pcsaga_engine::Clock>,
    ) -> Self {
        Self {
            client,
            ledger,
            settings,
            clock,
        }
    }

    /// The sources a run reads, from the invoice list (addendum §13.6 steps 2-3).
    fn sources(
        &self,
        ctx: &RunContext,
        invoices: &[Invoice],
        currencies: &[String],
        now_month: Month,
    ) -> Result<(Month, Vec<SourceRead>), String> {
        let invoice_source = |invoice: &Invoice| -> SourceRead {
            let month = invoice
                .billing_period_start_date
                .map_or(now_month, Month::of);
            let facts = SourceFacts {
                key: format!("invoice:{}", invoice.id),
                complete: false,
                problem: None,
                invoice: Some(InvoiceFacts {
                    id: invoice.id.clone(),
                    currency: invoice
                        .currency_code
                        .clone()
                        .unwrap_or_default()
                        .to_ascii_uppercase(),
                    month,
                    issued_at: invoice.invoice_date.unwrap_or_default(),
                }),
                unbilled: None,
            };
            let via = if month >= self.settings.v2_from {
                Via::V2(ExportRequest::Billed {
                    invoice_id: invoice.id.clone(),
                })
            } else {
                Via::V1(LineQuery::Invoice {
                    invoice_id: invoice.id.clone(),
                })
            };
            SourceRead::new(facts, via)
        };
        let month = match &ctx.period {
            PeriodSpec::Invoice(id) => {
                let Some(invoice) = invoices.iter().find(|i| i.id.eq_ignore_ascii_case(id)) else {
                    return Err(format!(
                        "there is no invoice {id} (the invoice list has {}); `pcsaga billing invoices` lists them",
                        invoices.len()
                    ));
                };
                if !invoice.is_one_time() {
                    return Err(format!(
                        "invoice {id} is a {} invoice; purchases are billed on one-time invoices (`pcsaga billing invoices` lists them)",
                        invoice.invoice_type.as_deref().unwrap_or("non-one-time")
                    ));
                }
                let source = invoice_source(invoice);
                let month = source.facts.invoice.as_ref().map_or(now_month, |i| i.month);
                return Ok((month, vec![source]));
            }
            PeriodSpec::Current => now_month,
            PeriodSpec::Previous => now_month.previous(),
        };
        let mut sources: Vec<SourceRead> = invoices
            .iter()
            .filter(|i| i.is_one_time() && i.covers(month.start()))
            .map(invoice_source)
            .collect();
        let period = if month == now_month {
            Some(Period::Current)
        } else if month == now_month.previous() {
            Some(Period::Previous)
        } else {
            None
        };
        if let Some(period) = period {
            for currency in currencies {
                let facts = SourceFacts {
                    key: format!("unbilled:{currency}:{month}"),
                    complete: false,
                    problem: None,
                    invoice: None,
                    unbilled: Some((currency.clone(), month)),
                };
                let via = if self.settings.unbilled_via_graph {
                    Via::V2(ExportRequest::Unbilled {
                        currency: currency.clone(),
                        period,
                    })
                } else {
                    Via::V1(LineQuery::Unbilled {
                        currency: currency.clone(),
                        period,
                    })
                };
                sources.push(SourceRead::new(facts, via));
            }
        }
        Ok((month, sources))
    }

    async fn run_match(&self, saga: &View) -> Outcome {
        let purchases = match self.ledger.purchases().await {
            Ok(p) => p,
            Err(e) => return Outcome::Local(e.to_string()),
        };
        let (lines, bad, sources) = match self.ledger.evidence().await {
            Ok(e) => e,
            Err(e) => return Outcome::Local(e.to_string()),
        };
        let now = self.clock.now();
        let verdicts = classify(
            &purchases,
            &lines,
            &bad,
            &sources,
            now,
            self.settings.timing,
        );
        let read: Vec<String> = saga
            .context
            .sources
            .iter()
            .map(|s| s.facts.key.clone())
            .collect();
        let report = Report::build(&saga.context.period.label(), read, &verdicts);
        let summary = format!(
            "{} purchase(s), {} matched, {} exception(s), {} unreadable",
            verdicts.purchases.len(),
            verdicts
                .purchases
                .iter()
                .filter(|p| p.status == crate::classify::BillingStatus::Matched)
                .count(),
            report.exceptions.len(),
            report.unreadable.len()
        );
        match self.ledger.record(&saga.id, &verdicts, &report, now).await {
            Ok(()) => Outcome::Matched { summary },
            Err(e) => Outcome::Local(e.to_string()),
        }
    }

    async fn read_page(
        &self,
        saga: &View,
        index: usize,
        source: &SourceRead,
    ) -> Result<Outcome, ApiError> {
        let Via::V1(query) = &source.via else {
            return Ok(Outcome::Local("a v2 source read as v1".to_owned()));
        };
        let correlation = CorrelationId::from_uuid(saga.context.correlation_id);
        let page = self
            .client
            .one_time_lines(
                correlation,
                query,
                self.settings.page_size,
                source.continuation.as_deref(),
            )
            .await?;
        let lines: Vec<_> = page
            .value
            .items
            .iter()
            .map(|v| BillingLine::read(v, LineSource::V1))
            .collect();
        let first = i64::try_from(source.lines).unwrap_or(i64::MAX);
        if let Err(e) = self
            .ledger
            .stage(&source.facts.key, &saga.id, first, &lines)
            .await
        {
            return Ok(Outcome::Local(e.to_string()));
        }
        let staged = lines.len() as u64;
        if page.value.continuation.is_none() {
            let mut facts = source.facts.clone();
            facts.complete = true;
            if let Err(e) = self
                .ledger
                .finish_source(&facts, &saga.id, source.lines + staged, self.clock.now())
                .await
            {
                return Ok(Outcome::Local(e.to_string()));
            }
        }
        let _ = index;
        Ok(Outcome::Page {
            staged,
            continuation: page.value.continuation,
        })
    }

    async fn read_file(&self, saga: &View, source: &SourceRead) -> Result<Outcome, ApiError> {
        let correlation = CorrelationId::from_uuid(saga.context.correlation_id);
        let Some(link) = source.manifest.as_deref() else {
            return Ok(Outcome::Local("no manifest to read".to_owned()));
        };
        // The manifest is asked for on every file: its SAS is a secret, never stored.
        let manifest = self.client.export_manifest(correlation, link).await?.value;
        let files = manifest.blobs.len();
        let mut lines = Vec::new();
        let read = if files == 0 {
            None
        } else {
            Some(
                self.client
                    .read_export_file(&manifest, source.file, |line| {
                        lines.push(match line {
                            Ok(value) => BillingLine::read(&value, LineSource::V2),
                            Err(reason) => Err(pcsaga_partner_center::billing::BadLine {
                                reason: reason.clone(),
                                order_id: None,
                                customer_id: None,
                                evidence: reason,
                            }),
                        });
                    })
                    .await?
                    .value,
            )
        };
        let cut_short = read.and_then(|r| r.cut_short);
        // Files are numbered apart so a file read again replaces its own rows only.
        let first = i64::try_from(source.file).unwrap_or(0) * 1_000_000_000;
        if let Err(e) = self
            .ledger
            .stage(&source.facts.key, &saga.id, first, &lines)
            .await
        {
            return Ok(Outcome::Local(e.to_string()));
        }
        let staged = lines.len() as u64;
        let last = source.file + 1 >= files;
        if last || cut_short.is_some() {
            let mut facts = source.facts.clone();
            facts.complete = cut_short.is_none();
            facts.problem = cut_short
                .as_ref()
                .map(|why| format!("file {} of {files}: {why}", source.file + 1));
            let total = source.lines + staged;
            if let Err(e) = self
                .ledger
                .finish_source(&facts, &saga.id, total, self.clock.now())
                .await
            {
                return Ok(Outcome::Local(e.to_string()));
            }
        }
        Ok(Outcome::File {
            staged,
            files,
            manifest: link.to_owned(),
            cut_short,
        })
    }
}

impl SourceRead {
    fn new(facts: SourceFacts, via: Via) -> Self {
        Self {
            facts,
            via,
            lines: 0,
            continuation: None,
            pages: 0,
            operation: None,
            manifest: None,
            file: 0,
            files: None,
            exports: 0,
        }
    }
}

fn attempt(
    effect: &Effect,
    started: Instant,
    meta: Option<&CallMeta>,
    error: Option<&ApiError>,
) -> AttemptRecord {
    AttemptRecord {
        call: effect.name().to_owned(),
        http_status: meta
            .map(|m| m.status)
            .or_else(|| error.and_then(ApiError::status)),
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        request_id: meta.map(|m| m.request_id.to_string()),
        error_class: error.map(|e| e.class.as_str().to_owned()),
        error: error.map(ToString::to_string),
        http_requests: meta.map_or(1, |m| m.http_requests),
    }
}

impl Workflow for ReconcileWorkflow {
    type Context = RunContext;
    type State = State;
    type Effect = Effect;
    type Outcome = Outcome;

    fn name(&self) -> &'static str {
        WORKFLOW_NAME
    }

    fn correlation_id(&self, context: &RunContext) -> String {
        context.correlation_id.to_string()
    }

    fn effect_name(&self, effect: &Effect) -> String {
        effect.name().to_owned()
    }

    fn effect_route(&self, effect: &Effect) -> &'static str {
        match effect {
            Effect::List => "GET /invoices",
            Effect::ReadPage { .. } => "GET /invoices/{id|unbilled}/lineitems",
            Effect::StartExport { .. } => {
                "POST graph /reports/partners/billing/reconciliation/{billed|unbilled}/export"
            }
            Effect::PollExport { .. } => "GET graph /reports/partners/billing/operations/{id}",
            Effect::ReadFile { .. } => "GET graph manifest + export file",
            Effect::Match => "",
        }
    }

    fn validate_policy(&self, _state: &str, _policy: &StatePolicy) -> Result<(), String> {
        // Nothing here moves money: any policy is safe.
        Ok(())
    }

    fn plan(&self, saga: &View, now: DateTime<Utc>) -> Plan<Effect, State, RunContext> {
        let ctx = &saga.context;
        match saga.state {
            State::Listing if ctx.month.is_none() => {
                // The clock enters here, once: the month is fixed for the whole run.
                let mut next = ctx.clone();
                next.month = Some(Month::of(now));
                Plan::Decide(Decision::Continue {
                    context: next,
                    note: format!(
                        "reconciling the period {} from {}",
                        ctx.period.label(),
                        Month::of(now)
                    ),
                })
            }
            State::Listing => Plan::Call {
                effect: Effect::List,
                side_effecting: false,
                context: ctx.clone(),
            },
            State::Reading => {
                let Some(source) = ctx.sources.get(ctx.next) else {
                    return Plan::Decide(Decision::Advance {
                        to: State::Matching,
                        context: ctx.clone(),
                        note: "every source read".to_owned(),
                    });
                };
                let index = ctx.next;
                let effect = match (&source.via, &source.operation, &source.manifest) {
                    (Via::V1(_), _, _) => Effect::ReadPage { source: index },
                    (Via::V2(_), None, _) => Effect::StartExport { source: index },
                    (Via::V2(_), Some(_), None) => Effect::PollExport { source: index },
                    (Via::V2(_), Some(_), Some(_)) => Effect::ReadFile { source: index },
                };
                Plan::Call {
                    effect,
                    side_effecting: false,
                    context: ctx.clone(),
                }
            }
            State::Matching => Plan::Call {
                effect: Effect::Match,
                side_effecting: false,
                context: ctx.clone(),
            },
        }
    }

    async fn execute(&self, saga: &View, effect: &Effect) -> Executed<Outcome> {
        let started = Instant::now();
        let correlation = CorrelationId::from_uuid(saga.context.correlation_id);
        let source = |i: &usize| saga.context.sources.get(*i);
        let result: Result<(Outcome, Option<CallMeta>), ApiError> = async {
            Ok(match effect {
                Effect::List => {
                    let reply = self.client.list_invoices(correlation).await?;
                    let currencies = match self.ledger.currencies().await {
                        Ok(c) => c,
                        Err(e) => return Ok((Outcome::Local(e.to_string()), None)),
                    };
                    (
                        Outcome::Listed {
                            invoices: reply.value,
                            currencies,
                        },
                        Some(reply.meta),
                    )
                }
                Effect::ReadPage { source: i } => match source(i) {
                    Some(s) => (self.read_page(saga, *i, s).await?, None),
                    None => (Outcome::Local(format!("no source {i}")), None),
                },
                Effect::StartExport { source: i } => match source(i).map(|s| &s.via) {
                    Some(Via::V2(request)) => {
                        let reply = self.client.start_export(correlation, request).await?;
                        (
                            Outcome::ExportStarted {
                                operation: reply.value,
                            },
                            Some(reply.meta),
                        )
                    }
                    _ => (Outcome::Local(format!("no export source {i}")), None),
                },
                Effect::PollExport { source: i } => {
                    match source(i).and_then(|s| s.operation.as_deref()) {
                        Some(url) => {
                            let reply = self.client.export_operation(correlation, url).await?;
                            (Outcome::Export(reply.value), Some(reply.meta))
                        }
                        None => (Outcome::Local(format!("no operation for source {i}")), None),
                    }
                }
                Effect::ReadFile { source: i } => match source(i) {
                    Some(s) => (self.read_file(saga, s).await?, None),
                    None => (Outcome::Local(format!("no source {i}")), None),
                },
                Effect::Match => (self.run_match(saga).await, None),
            })
        }
        .await;
        match result {
            Ok((outcome, meta)) => {
                let error = match &outcome {
                    Outcome::Local(e) => Some(e.clone()),
                    _ => None,
                };
                let mut record = attempt(effect, started, meta.as_ref(), None);
                if let Some(e) = error {
                    record.error_class = Some("local".to_owned());
                    record.error = Some(e);
                }
                Executed {
                    outcome,
                    attempt: record,
                }
            }
            Err(error) => Executed {
                attempt: attempt(effect, started, None, Some(&error)),
                outcome: Outcome::Api(error),
            },
        }
    }

    fn admission(&self, _saga: &View, effect: &Effect) -> pcsaga_engine::Admission {
        match effect {
            // Local work: nothing to admit.
            Effect::Match => pcsaga_engine::Admission::default(),
            _ => pcsaga_engine::Admission {
                class: BILLING_CLASS,
                ..pcsaga_engine::Admission::default()
            },
        }
    }

    fn feedback(&self, outcome: &Outcome) -> pcsaga_engine::Feedback {
        match outcome {
            Outcome::Api(e) if e.class == ErrorClass::Throttled => {
                pcsaga_engine::Feedback::Throttled {
                    retry_after: e.retry_after(),
                }
            }
            _ => pcsaga_engine::Feedback::Answered,
        }
    }

    fn decide(&self, saga: &View, effect: &Effect, outcome: Outcome) -> D {
        decide(&self.settings, self, saga, effect, outcome)
    }

    fn prepare_resume(&self, saga: &View, _from: State) -> Result<RunContext, String> {
        // Reading is idempotent: a resumed run re-reads from its checkpoint.
        Ok(saga.context.clone())
    }

    fn check_cancel(&self, _saga: &View) -> Result<(), String> {
        Ok(())
    }
}

fn decide(
    _settings: &BillingSettings,
    workflow: &ReconcileWorkflow,
    saga: &View,
    effect: &Effect,
    outcome: Outcome,
) -> D {
    let ctx = &saga.context;
    let mut next = ctx.clone();
    let failed = |next: RunContext, error: ApiError| -> D {
        match error.class {
            ErrorClass::Config | ErrorClass::AuthExpired => Decision::Park {
                context: next,
                reason: format!(
                    "{} failed: {error}; fix the configuration, then `pcsaga resume {}`",
                    effect.name(),
                    saga.id
                ),
            },
            _ => Decision::Retry {
                retry_after: error.retry_after(),
                context: next,
                error: error.to_string(),
            },
        }
    };
    let about_a_source = matches!(
        outcome,
        Outcome::Page { .. }
            | Outcome::ExportStarted { .. }
            | Outcome::Export(_)
            | Outcome::File { .. }
    );
    if about_a_source && ctx.next >= ctx.sources.len() {
        // Reading plans only a source in range; a context that says otherwise is matched as
        // far as it was read rather than trusted further.
        return Decision::Advance {
            to: State::Matching,
            context: next,
            note: format!(
                "internal: no source {} to read; matching what was read",
                ctx.next
            ),
        };
    }
    match outcome {
        Outcome::Api(error) => failed(next, error),
        Outcome::Local(error) => Decision::Retry {
            context: next,
            retry_after: None,
            error: format!("the billing tables: {error}"),
        },
        Outcome::Listed {
            invoices,
            currencies,
        } => {
            let now_month = ctx.month.unwrap_or(Month {
                year: 1970,
                month: 1,
            });
            match workflow.sources(ctx, &invoices, &currencies, now_month) {
                Err(reason) => Decision::Fail {
                    context: next,
                    reason,
                },
                Ok((month, sources)) => {
                    let note = format!(
                        "{} source(s) to read for {month}: {}",
                        sources.len(),
                        sources
                            .iter()
                            .map(|s| s.facts.key.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    next.month = Some(month);
                    next.sources = sources;
                    next.next = 0;
                    Decision::Advance {
                        to: State::Reading,
                        context: next,
                        note,
                    }
                }
            }
        }
        Outcome::Page {
            staged,
            continuation,
        } => {
            // In range: checked before the match.
            let source = &mut next.sources[ctx.next];
            source.lines += staged;
            source.pages += 1;
            let key = source.facts.key.clone();
            let done = continuation.is_none();
            source.continuation = continuation;
            if done {
                source.facts.complete = true;
                next.next += 1;
            }
            let note = format!(
                "{key}: page {} ({staged} line(s), {} so far){}",
                ctx.sources.get(ctx.next).map_or(0, |s| s.pages) + 1,
                ctx.sources.get(ctx.next).map_or(0, |s| s.lines) + staged,
                if done { ", read to its end" } else { "" }
            );
            Decision::Continue {
                context: next,
                note,
            }
        }
        Outcome::ExportStarted { operation } => {
            let source = &mut next.sources[ctx.next];
            source.operation = Some(operation);
            source.manifest = None;
            source.file = 0;
            source.exports += 1;
            Decision::Continue {
                context: next,
                note: "export started".to_owned(),
            }
        }
        Outcome::Export(ExportOperation::Running { retry_after }) => Decision::PollAfter {
            context: next,
            note: "the export is running".to_owned(),
            after: retry_after.unwrap_or(Duration::ZERO),
        },
        Outcome::Export(ExportOperation::Succeeded { manifest }) => {
            let link = match manifest {
                ManifestRef::Link(link) => link,
                // Microsoft's sample reads the manifest inline; its SAS must not be stored, so
                // it is asked for again by the operation's own URL (which returns it).
                ManifestRef::Embedded(_) => ctx
                    .sources
                    .get(ctx.next)
                    .and_then(|s| s.operation.clone())
                    .unwrap_or_default(),
            };
            next.sources[ctx.next].manifest = Some(link);
            Decision::Continue {
                context: next,
                note: "export ready".to_owned(),
            }
        }
        Outcome::Export(ExportOperation::Failed { code, message }) => {
            // In range: checked before the match.
            let source = &mut next.sources[ctx.next];
            // A v2 export with no data for an invoice: read it through v1 (ambiguity 41).
            if let (Via::V2(ExportRequest::Billed { invoice_id }), "5000") =
                (&source.via, code.as_str())
            {
                source.via = Via::V1(LineQuery::Invoice {
                    invoice_id: invoice_id.clone(),
                });
                source.operation = None;
                return Decision::Continue {
                    context: next,
                    note: format!(
                        "the export has no data ({code} {message}); reading the invoice through v1"
                    ),
                };
            }
            if let (Via::V2(ExportRequest::Unbilled { .. }), "5000") = (&source.via, code.as_str())
            {
                // Nothing unbilled: an empty, complete source.
                source.facts.complete = true;
                next.next += 1;
                return Decision::Continue {
                    context: next,
                    note: "no unbilled data".to_owned(),
                };
            }
            source.operation = None;
            if source.exports >= MAX_EXPORTS {
                source.facts.problem = Some(format!(
                    "the export failed {} times: {code} {message}",
                    source.exports
                ));
                next.next += 1;
                return Decision::Continue {
                    context: next,
                    note: format!("giving up on this source: {code} {message}"),
                };
            }
            Decision::Retry {
                context: next,
                retry_after: None,
                error: format!("the export failed: {code} {message}"),
            }
        }
        Outcome::File {
            staged,
            files,
            manifest: _,
            cut_short,
        } => {
            // In range: checked before the match.
            let source = &mut next.sources[ctx.next];
            source.lines += staged;
            source.files = Some(files);
            source.file += 1;
            let key = source.facts.key.clone();
            let done = cut_short.is_some() || source.file >= files;
            if done {
                source.facts.complete = cut_short.is_none();
                source.facts.problem = cut_short.clone();
                next.next += 1;
            }
            Decision::Continue {
                context: next,
                note: match cut_short {
                    Some(why) => format!("{key}: file ended early ({why}); recorded, going on"),
                    None => format!(
                        "{key}: file {} of {files} ({staged} line(s))",
                        ctx.sources.get(ctx.next).map_or(0, |s| s.file) + 1
                    ),
                },
            }
        }
        Outcome::Matched { summary } => {
            next.summary = Some(summary.clone());
            Decision::Succeed {
                context: next,
                note: summary,
            }
        }
    }
}
