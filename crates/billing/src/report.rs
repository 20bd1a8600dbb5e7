//! A run's report: per customer and currency, the purchases, how many matched, the exceptions
//! and the amounts; then every exception in operator language. Rendered as a table, JSON or
//! CSV. Deterministic for the same verdicts (sorted), so a resumed run's report equals an
//! uninterrupted one's.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::classify::{BillingStatus, Verdicts};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `current`, `previous` or the invoice id the run was asked for.
    pub period: String,
    /// The sources read by this run (`invoice:G…`, `unbilled:USD:2026-12`).
    pub sources: Vec<String>,
    pub rows: Vec<ReportRow>,
    pub exceptions: Vec<ReportException>,
    /// Lines that could not be read and sources not read to their end.
    pub unreadable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportRow {
    pub customer_id: String,
    pub currency: String,
    pub purchases: u64,
    pub matched: u64,
    pub pending: u64,
    pub exceptions: u64,
    /// Σ of the billing lines joined to these purchases.
    pub billed: Decimal,
    /// Σ of the lines no purchase explains.
    pub unexpected: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportException {
    /// A billing status (`missing`, `quantity_mismatch`, ...) or an unexpected line's kind
    /// (`duplicate_suspected`, `unknown_origin`).
    pub kind: String,
    pub purchase_id: Option<String>,
    pub customer_id: String,
    pub order_id: Option<String>,
    pub explanation: String,
}

impl Report {
    pub fn build(period: &str, sources: Vec<String>, verdicts: &Verdicts) -> Self {
        let mut rows: BTreeMap<(String, String), ReportRow> = BTreeMap::new();
        let mut exceptions = Vec::new();
        for p in &verdicts.purchases {
            let currency = p.currency.clone().unwrap_or_else(|| "?".to_owned());
            let row = rows
                .entry((p.customer_id.clone(), currency.clone()))
                .or_insert_with(|| ReportRow {
                    customer_id: p.customer_id.clone(),
                    currency,
                    ..ReportRow::default()
                });
            row.purchases += 1;
            row.billed += p.orders.iter().map(|o| o.billed_total).sum::<Decimal>();
            match p.status {
                BillingStatus::Matched | BillingStatus::Refunded => row.matched += 1,
                BillingStatus::Pending => row.pending += 1,
                _ => row.exceptions += 1,
            }
            if p.status.is_exception() {
                for o in p.orders.iter().filter(|o| o.status == p.status) {
                    exceptions.push(ReportException {
                        kind: p.status.as_str().to_owned(),
                        purchase_id: Some(p.purchase_id.clone()),
                        customer_id: p.customer_id.clone(),
                        order_id: Some(o.order_id.clone()),
                        explanation: o.explanation.clone(),
                    });
                }
            }
        }
        for u in &verdicts.unexpected {
            let row = rows
                .entry((u.customer_id.clone(), u.currency.clone()))
                .or_insert_with(|| ReportRow {
                    customer_id: u.customer_id.clone(),
                    currency: u.currency.clone(),
                    ..ReportRow::default()
                });
            row.exceptions += 1;
            row.unexpected += u.total;
            exceptions.push(ReportException {
                kind: u.kind.clone(),
                purchase_id: None,
                customer_id: u.customer_id.clone(),
                order_id: Some(u.order_id.clone()),
                explanation: u.explanation.clone(),
            });
        }
        exceptions.sort_by(|a, b| {
            (&a.kind, &a.customer_id, &a.purchase_id, &a.order_id).cmp(&(
                &b.kind,
                &b.customer_id,
                &b.purchase_id,
                &b.order_id,
            ))
        });
        let mut unreadable = verdicts.unreadable.clone();
        unreadable.sort();
        let mut sources = sources;
        sources.sort();
        sources.dedup();
        Self {
            period: period.to_owned(),
            sources,
            rows: rows.into_values().collect(),
            exceptions,
            unreadable,
        }
    }

    /// Exceptions plus unreadable lines: what an operator must look at.
    pub fn problems(&self) -> usize {
        self.exceptions.len() + self.unreadable.len()
    }

    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "customer_id,currency,purchases,matched,pending,exceptions,billed,unexpected\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                csv(&r.customer_id),
                csv(&r.currency),
                r.purchases,
                r.matched,
                r.pending,
                r.exceptions,
                r.billed,
                r.unexpected
            ));
        }
        out
    }

    pub fn to_table(&self) -> String {
        let mut out = format!(
            "Billing reconciliation, period {} ({} source(s) read: {})\n\n",
            self.period,
            self.sources.len(),
            if self.sources.is_empty() {
                "none".to_owned()
            } else {
                self.sources.join(", ")
            }
        );
        out.push_str(&format!(
            "{:<38} {:<8} {:>9} {:>8} {:>8} {:>10} {:>14} {:>12}\n",
            "CUSTOMER",
            "CURRENCY",
            "PURCHASES",
            "MATCHED",
            "PENDING",
            "EXCEPTIONS",
            "BILLED",
            "UNEXPECTED"
        ));
        for r in &self.rows {
            out.push_str(&format!(
                "{:<38} {:<8} {:>9} {:>8} {:>8} {:>10} {:>14} {:>12}\n",
                r.customer_id,
                r.currency,
                r.purchases,
                r.matched,
                r.pending,
                r.exceptions,
                r.billed,
                r.unexpected
            ));
        }
        if self.rows.is_empty() {
            out.push_str("(no purchase with an order to reconcile)\n");
        }
        if !self.exceptions.is_empty() {
            out.push_str(&format!("\n{} exception(s):\n", self.exceptions.len()));
            for e in &self.exceptions {
                out.push_str(&format!(
                    "- {} {}: {}\n",
                    e.kind,
                    e.purchase_id
                        .as_deref()
                        .map_or_else(|| format!("(customer {})", e.customer_id), str::to_owned),
                    e.explanation
                ));
            }
        }
        if !self.unreadable.is_empty() {
            out.push_str(&format!(
                "\n{} unreadable line(s) or source(s):\n",
                self.unreadable.len()
            ));
            for u in &self.unreadable {
                out.push_str(&format!("- {u}\n"));
            }
        }
        out
    }
}

fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}
