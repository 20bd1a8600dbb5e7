//! Billing: balances, invoices, one-time line items and the statement (E22-E28, v1), and the
//! asynchronous Microsoft Graph reconciliation export (E29, v2).
//!
//! Both sources of lines hand back raw JSON values page by page (v1) or file by file (v2);
//! [`line::BillingLine::read`] reads either into one shape (addendum §13.7). Nothing here holds
//! a whole invoice in memory: a caller reads one page or one file, stores it, and asks for the
//! next with the cursor it got back, so a crash resumes at the page or file it stopped at.

pub mod graph;
pub mod line;

use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::GrantKind;
use crate::client::{encode_query, seg, Call, Client, Reply};
use crate::error::{CallContext, Error, ErrorClass};
use crate::ids::CorrelationId;
use crate::models::{Invoice, InvoiceSummaries, InvoiceSummary};

pub use graph::{ExportOperation, ExportRequest, Manifest, ManifestBlob};
pub use line::{BadLine, BillingLine, ChargeType, LineSource};

/// A billing period as E27 names it (`current`/`previous`; Graph says `current`/`last`,
/// ambiguity 46).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Current,
    Previous,
}

impl Period {
    pub fn v1(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "previous",
        }
    }

    pub fn graph(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Previous => "last",
        }
    }
}

/// Which one-time lines to read through v1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LineQuery {
    /// E26: the lines of one invoice.
    Invoice { invoice_id: String },
    /// E27: lines not yet invoiced, for one billing currency and period.
    Unbilled { currency: String, period: Period },
}

/// One page of one-time lines (a seek-based collection, §7.18).
#[derive(Debug, Clone, Default)]
pub struct LinePage {
    /// The page's items, as sent (read them with [`BillingLine::read`]).
    pub items: Vec<Value>,
    /// Where the next page starts; `None` on the last page.
    pub continuation: Option<String>,
}

/// Largest page of one-time lines the service serves (E26: default and maximum 2000).
pub const MAX_LINE_PAGE: u32 = 2000;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SeekPage {
    items: Option<Vec<Value>>,
    continuation_token: Option<String>,
    links: Option<crate::models::Links>,
}

impl crate::models::Checked for SeekPage {
    fn missing(&self) -> Option<String> {
        self.items
            .is_none()
            .then(|| "the page has no items".to_owned())
    }
}

impl Client {
    /// E22: the partner's balance in its default currency.
    pub async fn account_balance(
        &self,
        correlation_id: CorrelationId,
    ) -> Result<Reply<InvoiceSummary>, Error> {
        let call = Call::read(
            "/invoices/summary".to_owned(),
            correlation_id,
            GrantKind::AppOnly,
        );
        self.json(call).await
    }

    /// E23: one summary per billing currency (app+user only).
    pub async fn invoice_summaries(
        &self,
        correlation_id: CorrelationId,
    ) -> Result<Reply<Vec<InvoiceSummary>>, Error> {
        let call = Call::read(
            "/invoices/summaries".to_owned(),
            correlation_id,
            GrantKind::AppUser,
        );
        let reply: Reply<InvoiceSummaries> = self.json(call).await?;
        let InvoiceSummaries {
            items,
            collection_of_summary,
        } = reply.value;
        let value = if items.is_empty() {
            collection_of_summary
        } else {
            items
        };
        Ok(Reply {
            value,
            meta: reply.meta,
        })
    }

    /// E24: every invoice, oldest first by `invoiceDate` (the service promises no order).
    /// Follows `links.next`; without one, a full page asks once more at the next offset
    /// (addendum E24, paging decision).
    pub async fn list_invoices(
        &self,
        correlation_id: CorrelationId,
    ) -> Result<Reply<Vec<Invoice>>, Error> {
        const PAGE: usize = 200;
        let started = Instant::now();
        let mut invoices: Vec<Invoice> = Vec::new();
        let mut target = format!("/invoices?size={PAGE}&offset=0");
        let mut http_requests = 0;
        for _ in 0..self.config().max_pages {
            let call = Call::read(target.clone(), correlation_id, GrantKind::AppOnly);
            let page: Reply<crate::models::Collection<Invoice>> = self.json(call).await?;
            http_requests += page.meta.http_requests;
            let count = page.value.items.len();
            let next = page.value.next_link().map(|l| l.uri.clone());
            invoices.extend(page.value.items);
            let next = match next {
                Some(next) => Some(next),
                None if count == PAGE => {
                    Some(format!("/invoices?size={PAGE}&offset={}", invoices.len()))
                }
                None => None,
            };
            match next {
                Some(next) if count > 0 => target = next,
                _ => {
                    invoices.sort_by_key(|i| i.invoice_date);
                    return Ok(Reply {
                        value: invoices,
                        meta: crate::client::CallMeta {
                            latency: started.elapsed(),
                            http_requests,
                            ..page.meta
                        },
                    });
                }
            }
        }
        Err(Error::config(format!(
            "the invoice list had more than {} pages; raise max_pages if that is expected",
            self.config().max_pages
        )))
    }

    /// E25: one invoice (app+user only). URLs are built from the id, never from `links.self`
    /// (which carries a type prefix, ambiguity 50).
    pub async fn get_invoice(
        &self,
        correlation_id: CorrelationId,
        invoice_id: &str,
    ) -> Result<Reply<Invoice>, Error> {
        let call = Call::read(
            format!("/invoices/{}", seg(invoice_id)),
            correlation_id,
            GrantKind::AppUser,
        );
        self.json(call).await
    }

    /// E28: the invoice's statement, a PDF (app+user only), at most `max_statement_bytes`.
    /// A body that does not start with `%PDF-` is refused (ambiguity 48).
    pub async fn invoice_statement(
        &self,
        correlation_id: CorrelationId,
        invoice_id: &str,
    ) -> Result<Reply<Bytes>, Error> {
        let started = Instant::now();
        let call = Call::read(
            format!("/invoices/{}/documents/statement", seg(invoice_id)),
            correlation_id,
            GrantKind::AppUser,
        )
        .accepting("application/pdf");
        let raw = self.execute(call).await?;
        if !raw.body.starts_with(b"%PDF-") {
            return Err(Error::new(
                ErrorClass::Transient,
                format!(
                    "HTTP {} with a statement that is not a PDF (it does not start with %PDF-)",
                    raw.status
                ),
                raw.context.clone(),
            ));
        }
        if raw.body.len() > self.config().max_statement_bytes {
            return Err(Error::new(
                ErrorClass::Transient,
                format!(
                    "the statement is larger than {} bytes",
                    self.config().max_statement_bytes
                ),
                raw.context.clone(),
            ));
        }
        let meta = crate::client::meta(&raw, started);
        Ok(Reply {
            value: raw.body,
            meta,
        })
    }

    /// E26/E27: one page of one-time lines. `continuation` is `None` for the first page, else
    /// the previous page's. The next page is asked for by rebuilding the first request with
    /// `seekOperation=Next` and the token in `MS-ContinuationToken`, never by following the
    /// documented (malformed) `links.next.uri` (ambiguity 36); `offset` is never sent.
    pub async fn one_time_lines(
        &self,
        correlation_id: CorrelationId,
        query: &LineQuery,
        size: u32,
        continuation: Option<&str>,
    ) -> Result<Reply<LinePage>, Error> {
        let size = size.clamp(1, MAX_LINE_PAGE).to_string();
        let mut pairs: Vec<(&str, &str)> = vec![
            ("provider", "onetime"),
            ("invoicelineitemtype", "billinglineitems"),
        ];
        let (path, currency) = match query {
            LineQuery::Invoice { invoice_id } => {
                (format!("/invoices/{}/lineitems", seg(invoice_id)), None)
            }
            LineQuery::Unbilled { currency, period } => {
                pairs.push(("period", period.v1()));
                ("/invoices/unbilled/lineitems".to_owned(), Some(currency))
            }
        };
        if let Some(currency) = currency {
            pairs.push(("currencycode", currency));
        }
        pairs.push(("size", &size));
        if continuation.is_some() {
            pairs.push(("seekOperation", "Next"));
        }
        let mut call = Call::read(
            format!("{path}?{}", encode_query(&pairs)),
            correlation_id,
            GrantKind::AppOnly,
        );
        if let Some(token) = continuation {
            call = call.with_header("MS-ContinuationToken", token.to_owned());
        }
        let reply: Reply<SeekPage> = self.json(call).await?;
        let SeekPage {
            items,
            continuation_token,
            links,
        } = reply.value;
        let items = items.unwrap_or_default();
        let from_links = links.and_then(|links| {
            links.get("next").and_then(|next| {
                next.headers
                    .iter()
                    .find(|h| h.key.eq_ignore_ascii_case("MS-ContinuationToken"))
                    .map(|h| h.value.clone())
            })
        });
        // The end: no token anywhere, or an empty page (E26 decision).
        let continuation = continuation_token
            .filter(|t| !t.is_empty())
            .or(from_links)
            .filter(|_| !items.is_empty());
        Ok(Reply {
            value: LinePage {
                items,
                continuation,
            },
            meta: reply.meta,
        })
    }
}

/// An error with a context but no HTTP exchange behind it (a download cut short).
pub(crate) fn local_error(class: ErrorClass, detail: String, path: &str) -> Error {
    Error::new(
        class,
        detail,
        CallContext {
            method: "GET".to_owned(),
            path: path.to_owned(),
            ..CallContext::default()
        },
    )
}
