//! Invoices and balances (addendum §7.14-7.16, E22-E25). Money is a decimal, read from the
//! number's text; `0001-01-01T00:00:00` (the documented "never") reads as `None`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::common::{Links, ResourceAttributes};
use super::lenient::de;
use super::Checked;

/// An invoice (E24, E25).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Invoice {
    pub id: String,
    #[serde(deserialize_with = "de::opt_date")]
    pub invoice_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "de::opt_date")]
    pub billing_period_start_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "de::opt_date")]
    pub billing_period_end_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "de::opt_decimal")]
    pub total_charges: Option<Decimal>,
    #[serde(deserialize_with = "de::opt_decimal")]
    pub paid_amount: Option<Decimal>,
    pub currency_code: Option<String>,
    pub currency_symbol: Option<String>,
    pub pdf_download_link: Option<String>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub invoice_details: Vec<InvoiceDetail>,
    pub document_type: Option<String>,
    pub amends_of: Option<String>,
    pub invoice_type: Option<String>,
    pub links: Links,
    pub attributes: ResourceAttributes,
}

impl Invoice {
    /// A one-time invoice (`OneTime`, `one_time`, any case).
    pub fn is_one_time(&self) -> bool {
        self.invoice_type
            .as_deref()
            .is_some_and(|t| t.replace('_', "").eq_ignore_ascii_case("onetime"))
    }

    /// Whether the invoice's billing period covers `at` (whole days, UTC).
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        match (self.billing_period_start_date, self.billing_period_end_date) {
            (Some(start), Some(end)) => start <= at && at < end + chrono::Duration::days(1),
            _ => false,
        }
    }
}

impl Checked for Invoice {
    fn missing(&self) -> Option<String> {
        self.id
            .trim()
            .is_empty()
            .then(|| "the invoice has no id".to_owned())
    }
}

/// One entry of `invoiceDetails` (§7.15).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InvoiceDetail {
    pub invoice_line_item_type: Option<String>,
    pub billing_provider: Option<String>,
    pub links: Links,
}

/// A balance (E22) or one currency's summary (E23), §7.16.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InvoiceSummary {
    #[serde(deserialize_with = "de::opt_decimal")]
    pub balance_amount: Option<Decimal>,
    pub currency_code: Option<String>,
    pub currency_symbol: Option<String>,
    #[serde(deserialize_with = "de::opt_date")]
    pub accounting_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "de::opt_date")]
    pub first_invoice_creation_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "de::opt_date")]
    pub last_payment_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "de::opt_decimal")]
    pub last_payment_amount: Option<Decimal>,
    #[serde(deserialize_with = "de::opt_date")]
    pub latest_invoice_date: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub details: Vec<InvoiceSummaryDetail>,
}

impl Checked for InvoiceSummary {
    fn missing(&self) -> Option<String> {
        self.currency_code
            .as_deref()
            .is_none_or(|c| c.trim().is_empty())
            .then(|| "the summary has no currencyCode".to_owned())
    }
}

/// `details[]` of a summary: the balance of one invoice type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InvoiceSummaryDetail {
    pub invoice_type: Option<String>,
    pub summary: Option<Box<InvoiceSummary>>,
}

/// E23's body: a collection (`items`), or the resource page's `collectionOfSummary` (ambiguity 34).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InvoiceSummaries {
    #[serde(deserialize_with = "de::null_as_empty")]
    pub items: Vec<InvoiceSummary>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub collection_of_summary: Vec<InvoiceSummary>,
}

impl Checked for InvoiceSummaries {}
