//! `pcsaga billing ...` (the partner's balance, invoices and statements, E22-E28) and
//! `pcsaga reconcile` (a reconciliation run, then its report).

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use pcsaga_billing::{PeriodSpec, Report, RunContext};
use pcsaga_engine::SagaStatus;
use pcsaga_partner_center::CorrelationId;
use serde_json::json;

use crate::cli::{BillingCommand, Global, ReconcileArgs};
use crate::config::{ConfigError, FileConfig};
use crate::exit::{Exit, Failed};
use crate::output::{print, print_json, to_json, Table};

/// How long `reconcile` drives a run before leaving it to a daemon (a Graph export may take
/// hours, addendum E29.2).
const RUN_DEADLINE: Duration = Duration::from_secs(6 * 3600);

/// Exit code of `reconcile` when the report lists exceptions or unreadable lines.
const EXCEPTIONS: Exit = Exit::Partial;

pub async fn billing(command: &BillingCommand, file: &FileConfig) -> Result<Exit, Failed> {
    let client = crate::app::client(file)?;
    let correlation = CorrelationId::new();
    match command {
        BillingCommand::Balance { json } => {
            let balance = client.account_balance(correlation).await?.value;
            if *json {
                print_json(&to_json(&balance, "the balance")?);
            } else {
                print(&summary_text(&balance));
            }
        }
        BillingCommand::Summaries { json } => {
            let summaries = client.invoice_summaries(correlation).await?.value;
            if *json {
                print_json(&to_json(&summaries, "the invoice summaries")?);
            } else if summaries.is_empty() {
                print("no invoice summary: nothing has been invoiced yet\n");
            } else {
                for s in &summaries {
                    print(&summary_text(s));
                }
            }
        }
        BillingCommand::Invoices { json } => {
            let invoices = client.list_invoices(correlation).await?.value;
            if *json {
                print_json(&to_json(&invoices, "the invoices")?);
                return Ok(Exit::Ok);
            }
            let mut table = Table::new(&[
                "ID", "TYPE", "DATE", "PERIOD", "CURRENCY", "TOTAL", "DOCUMENT",
            ]);
            for i in &invoices {
                table.row(vec![
                    i.id.clone(),
                    i.invoice_type.clone().unwrap_or_default(),
                    i.invoice_date
                        .map(|d| d.format("%Y-%m-%d").to_string())
                        .unwrap_or_default(),
                    match (i.billing_period_start_date, i.billing_period_end_date) {
                        (Some(a), Some(b)) => {
                            format!("{} .. {}", a.format("%Y-%m-%d"), b.format("%Y-%m-%d"))
                        }
                        _ => String::new(),
                    },
                    i.currency_code.clone().unwrap_or_default(),
                    i.total_charges.map(|t| t.to_string()).unwrap_or_default(),
                    i.document_type.clone().unwrap_or_default(),
                ]);
            }
            if table.is_empty() {
                print("no invoice yet\n");
            } else {
                print(&table.render());
                print("\nreconcile one with `pcsaga reconcile --period INVOICE_ID`; save its statement with `pcsaga billing statement INVOICE_ID -o FILE.pdf`\n");
            }
        }
        BillingCommand::Invoice { id, json } => {
            let invoice = client.get_invoice(correlation, id).await?.value;
            if *json {
                print_json(&to_json(&invoice, "the invoice")?);
            } else {
                print(&format!(
                    "invoice   {}\ntype      {} ({})\ndate      {}\nperiod    {} .. {}\ntotal     {} {}\npaid      {}\nstatement `pcsaga billing statement {} -o Invoice_{}.pdf`\n",
                    invoice.id,
                    invoice.invoice_type.as_deref().unwrap_or("?"),
                    invoice.document_type.as_deref().unwrap_or("?"),
                    invoice.invoice_date.map(|d| d.to_rfc3339()).unwrap_or_default(),
                    invoice.billing_period_start_date.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default(),
                    invoice.billing_period_end_date.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default(),
                    invoice.total_charges.map(|t| t.to_string()).unwrap_or_default(),
                    invoice.currency_code.as_deref().unwrap_or(""),
                    invoice.paid_amount.map(|t| t.to_string()).unwrap_or_default(),
                    invoice.id,
                    invoice.id,
                ));
            }
        }
        BillingCommand::Statement { id, output } => {
            let pdf = client.invoice_statement(correlation, id).await?.value;
            write_new(output, &pdf)?;
            say!(
                "wrote {} ({} bytes), the statement of invoice {id}",
                output.display(),
                pdf.len()
            );
        }
    }
    Ok(Exit::Ok)
}

fn summary_text(s: &pcsaga_partner_center::models::InvoiceSummary) -> String {
    let date = |d: Option<chrono::DateTime<chrono::Utc>>| {
        d.map_or_else(|| "never".to_owned(), |d| d.format("%Y-%m-%d").to_string())
    };
    let mut out = format!(
        "{} balance {} (as of {}; latest invoice {}; last payment {} on {})\n",
        s.currency_code.as_deref().unwrap_or("?"),
        s.balance_amount
            .map(|b| b.to_string())
            .unwrap_or_else(|| "?".to_owned()),
        date(s.accounting_date),
        date(s.latest_invoice_date),
        s.last_payment_amount
            .map(|b| b.to_string())
            .unwrap_or_else(|| "0".to_owned()),
        date(s.last_payment_date),
    );
    for d in &s.details {
        if let Some(summary) = &d.summary {
            out.push_str(&format!(
                "  {}: {}\n",
                d.invoice_type.as_deref().unwrap_or("?"),
                summary
                    .balance_amount
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "?".to_owned())
            ));
        }
    }
    out
}

/// Writes a new file, never over an existing one; a partial file is removed.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), Failed> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| {
            Failed::new(
                Exit::InvalidInput,
                ConfigError(format!(
                    "cannot create {}: {e} (an existing file is never overwritten; choose another name with -o)",
                    path.display()
                )),
            )
        })?;
    if let Err(e) = f.write_all(bytes).and_then(|()| f.sync_all()) {
        let _ = std::fs::remove_file(path);
        return Err(Failed::new(
            Exit::Failure,
            anyhow::anyhow!("writing {}: {e}; nothing was kept", path.display()),
        ));
    }
    Ok(())
}

/// `pcsaga reconcile`.
pub async fn reconcile(
    global: &Global,
    args: &ReconcileArgs,
    file: &FileConfig,
) -> Result<Exit, Failed> {
    let period = PeriodSpec::parse(&args.period)
        .map_err(|e| Failed::new(Exit::InvalidInput, ConfigError(e)))?;
    if args.json && args.csv {
        return Err(Failed::new(
            Exit::Usage,
            ConfigError("give --json or --csv, not both".into()),
        ));
    }
    let client = crate::app::client(file)?;
    let (store, path) = crate::app::open_store(global.db.as_deref(), file).await?;
    let engine = crate::app::reconcile_engine(
        store.clone(),
        &path,
        client,
        file,
        crate::app::owner_name("reconcile"),
    )
    .await?;
    // A run by hand always runs: its key is unique.
    let key = format!("manual:{}:{}", period.label(), uuid::Uuid::now_v7());
    let submitted = engine
        .submit(
            &key,
            pcsaga_billing::workflow::run_input(&period)?,
            &RunContext::new(period),
            None,
        )
        .await?;
    let run = submitted.saga.id.clone();
    let db = crate::output::db_flag(global);
    if args.no_wait {
        if args.json {
            print_json(&json!({"run": run}));
        } else {
            print(&format!("{run}\n"));
            say!("reconciliation run {run} submitted; a daemon runs it. Its report: `pcsaga{db} reconcile --report {run}`");
        }
        return Ok(Exit::Ok);
    }
    say!("reconciliation run {run}: period {}", args.period);
    let mut last = String::new();
    let saga = pcsaga_billing::drive(&engine, &run, RUN_DEADLINE, |saga| {
        let now = format!(
            "{} {}",
            saga.state,
            saga.wait_reason.as_deref().unwrap_or("")
        );
        if now != last {
            say!(
                "  {}: {}",
                saga.state,
                saga.wait_reason
                    .as_deref()
                    .or(saga.last_error.as_deref())
                    .unwrap_or("working")
            );
            last = now;
        }
    })
    .await?;
    if saga.status == SagaStatus::Active {
        return Err(Failed::new(Exit::Failure, anyhow::anyhow!("reconciliation run {run} is still running ({}, {}); a daemon finishes it: `pcsaga{db} reconcile --report {run}` then", saga.state, saga.wait_reason.as_deref().unwrap_or("working"))));
    }
    if saga.status != SagaStatus::Succeeded {
        return Err(Failed::new(
            Exit::Failure,
            anyhow::anyhow!(
                "reconciliation run {run} ended {} in {}: {}. `pcsaga{db} resume {run}` runs it again from where it stopped",
                saga.status,
                saga.state,
                saga.last_error.as_deref().unwrap_or("no reason recorded")
            ),
        ));
    }
    print_report(&store, &path, &run, args).await
}

/// Prints a finished run's report (also `reconcile --report RUN`).
pub async fn print_report(
    store: &pcsaga_engine::AnyStore,
    path: &Path,
    run: &str,
    args: &ReconcileArgs,
) -> Result<Exit, Failed> {
    let ledger = crate::app::ledger(store, path, false)
        .await
        .map_err(|e| Failed::new(Exit::Database, e))?;
    let Some(report) = ledger
        .report(run)
        .await
        .map_err(|e| Failed::new(Exit::Database, e))?
    else {
        return Err(Failed::new(
            Exit::NotFound,
            anyhow::anyhow!(
                "run {run} has no report (it has not finished, or there is no such run)"
            ),
        ));
    };
    emit(&report, run, args)?;
    Ok(if report.problems() > 0 {
        EXCEPTIONS
    } else {
        Exit::Ok
    })
}

fn emit(report: &Report, run: &str, args: &ReconcileArgs) -> Result<(), Failed> {
    if args.json {
        let mut value = to_json(report, "the report")?;
        value["run"] = json!(run);
        print_json(&value);
    } else if args.csv {
        print(&report.to_csv());
    } else {
        print(&report.to_table());
        print(&format!("\nrun {run}\n"));
    }
    Ok(())
}

/// `reconcile --report RUN`.
pub async fn report_only(
    global: &Global,
    args: &ReconcileArgs,
    run: &str,
    file: &FileConfig,
) -> Result<Exit, Failed> {
    let (store, path) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::Existing).await?;
    print_report(&store, &path, run, args).await
}
