//! Billing reconciliation (addendum §13): every purchase found on the invoice, exactly once.
//!
//! - [`period`]: billing months and what a run reconciles;
//! - [`classify`]: the pure join and verdicts (§13.1-13.5);
//! - [`ledger`]: the billing tables (lines read, sources, statuses, reports);
//! - [`report`]: a run's report, as a table, JSON or CSV;
//! - [`workflow`]: the reconciliation run as a saga of its own (§13.6).
//!
//! Decisions on the addendum's ambiguities made here:
//! - 32: lines join an order by `orderId ∈ {id, alternateId}` or `alternateId`; the customer
//!   must match too.
//! - 38/40: `unbilled_grace` 48 h, invoice day 8, `invoice_grace` 3 days, UTC months.
//!   Besides the deadline, an order is `missing` as soon as a one-time invoice of its month
//!   and currency, issued after the order, was read completely without it.
//! - 39: pcsaga does not read order prices (`include_price`), so amounts are checked by the
//!   reconciliation file's formula (`ROUNDDOWN(effectiveUnitPrice × rate, 2) × quantity`) and
//!   `total = subtotal + tax`, each within 0.01.
//! - 41: a Graph export failing with `5000` for an invoice falls back to v1 (E26).
//! - 51: quantities net by `chargeType`, absolute values.
//! - Bad data (an amount that does not parse, a currency outside ISO 4217, a line without an
//!   order id, a truncated file) is recorded with its evidence and never matches: the purchase
//!   a bad line names is `unreadable`, and the purchases a truncated source should have shown
//!   stay `pending`.

pub mod classify;
pub mod drive;
pub mod ledger;
pub mod period;
pub mod report;
pub mod workflow;

pub use classify::{BillingStatus, Timing};
pub use drive::drive;
pub use ledger::{Ledger, StatusRow};
pub use period::{Month, PeriodSpec};
pub use report::Report;
pub use workflow::{BillingSettings, ReconcileWorkflow, RunContext, State, WORKFLOW_NAME};

/// Billing failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the billing tables: {0}")]
    Database(String),
}
