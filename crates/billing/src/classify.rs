//! Classification (addendum §13.1-13.5): the purchases' orders against the billing lines read,
//! as a pure function. No clock of its own, no I/O: the same facts give the same verdicts,
//! which is what makes a resumed run produce the same report.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use pcsaga_partner_center::billing::{BadLine, BillingLine, ChargeType};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::period::Month;

/// A purchase as reconciliation sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseFacts {
    pub id: String,
    pub customer_id: String,
    pub orders: Vec<OrderFacts>,
}

/// One order a purchase made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderFacts {
    pub id: String,
    pub alternate_id: Option<String>,
    pub currency: Option<String>,
    /// `Order.creationDate` (its billing month).
    pub created_at: Option<DateTime<Utc>>,
    pub lines: Vec<OrderLineFacts>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderLineFacts {
    pub product_id: String,
    pub sku_id: String,
    pub availability_id: Option<String>,
    pub quantity: i64,
    /// An Azure reservation (cannot be cancelled through the API in production).
    pub reservation: bool,
}

/// A line as staged, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedLine {
    pub source: String,
    pub seq: i64,
    pub line: BillingLine,
}

/// A line that could not be read, as staged.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedBad {
    pub source: String,
    pub seq: i64,
    pub bad: BadLine,
}

/// A source of lines as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFacts {
    pub key: String,
    /// Read to its end.
    pub complete: bool,
    pub problem: Option<String>,
    /// For an invoice: its currency, billing month and issue date.
    pub invoice: Option<InvoiceFacts>,
    /// For unbilled lines: their currency and month.
    pub unbilled: Option<(String, Month)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFacts {
    pub id: String,
    pub currency: String,
    pub month: Month,
    pub issued_at: DateTime<Utc>,
}

/// The timing rules of §13.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A completed order not yet on the unbilled lines after this is `missing_unbilled`.
    pub unbilled_grace: Duration,
    /// Day of the month after the billing month on which its invoice is issued.
    pub invoice_day: u32,
    /// After the invoice day plus this, an order on no invoice is `missing`.
    pub invoice_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            unbilled_grace: Duration::hours(48),
            invoice_day: 8,
            invoice_grace: Duration::days(3),
        }
    }
}

/// A purchase's billing status (§13.5), worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingStatus {
    /// A line that names the order could not be read: nothing proves it billed right.
    Unreadable,
    /// No line joins the order although its invoice was issued (or the invoice deadline passed).
    Missing,
    QuantityMismatch,
    CurrencyMismatch,
    AmountMismatch,
    /// Not on the unbilled lines `unbilled_grace` after the order (a warning).
    MissingUnbilled,
    /// Net billed quantity zero after cancel lines.
    Refunded,
    /// No line yet, and no deadline passed.
    Pending,
    Matched,
}

impl BillingStatus {
    pub const ALL: [Self; 9] = [
        Self::Unreadable,
        Self::Missing,
        Self::QuantityMismatch,
        Self::CurrencyMismatch,
        Self::AmountMismatch,
        Self::MissingUnbilled,
        Self::Refunded,
        Self::Pending,
        Self::Matched,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::Missing => "missing",
            Self::QuantityMismatch => "quantity_mismatch",
            Self::CurrencyMismatch => "currency_mismatch",
            Self::AmountMismatch => "amount_mismatch",
            Self::MissingUnbilled => "missing_unbilled",
            Self::Refunded => "refunded",
            Self::Pending => "pending",
            Self::Matched => "matched",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| {
            s.as_str()
                .eq_ignore_ascii_case(text.trim().replace('-', "_").as_str())
        })
    }

    /// Whether an operator must look (pending, matched and refunded need nobody).
    pub fn is_exception(self) -> bool {
        !matches!(self, Self::Pending | Self::Matched | Self::Refunded)
    }
}

/// One order's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderVerdict {
    pub order_id: String,
    pub status: BillingStatus,
    /// What was found, in operator language.
    pub explanation: String,
    /// The evidence: `source#seq` of each line joined.
    pub lines: Vec<String>,
    /// Σ total of the joined lines (billing currency).
    pub billed_total: Decimal,
    /// Joined lines are on an invoice (not unbilled).
    pub invoiced: bool,
}

/// A purchase's verdict: the worst of its orders'.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseVerdict {
    pub purchase_id: String,
    pub customer_id: String,
    pub currency: Option<String>,
    pub status: BillingStatus,
    /// Matched on an invoice read completely: no later run changes it unless an amendment.
    pub final_: bool,
    pub orders: Vec<OrderVerdict>,
}

/// A line no purchase explains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unexpected {
    pub source: String,
    pub seq: i64,
    /// `duplicate_suspected` or `unknown_origin`.
    pub kind: String,
    pub customer_id: String,
    pub order_id: String,
    pub currency: String,
    pub total: Decimal,
    pub explanation: String,
}

/// Everything a run found.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Verdicts {
    pub purchases: Vec<PurchaseVerdict>,
    pub unexpected: Vec<Unexpected>,
    /// Bad lines and sources not read to their end, in operator language.
    pub unreadable: Vec<String>,
}

/// Classifies every purchase against every staged line.
pub fn classify(
    purchases: &[PurchaseFacts],
    lines: &[StagedLine],
    bad: &[StagedBad],
    sources: &[SourceFacts],
    now: DateTime<Utc>,
    timing: Timing,
) -> Verdicts {
    let source_of: BTreeMap<&str, &SourceFacts> =
        sources.iter().map(|s| (s.key.as_str(), s)).collect();
    let billed = |l: &StagedLine| l.line.invoice_number.is_some();
    // Lines by the ids they carry, so each order looks at its own lines only: reconciliation
    // is O(lines + orders), not their product.
    let mut by_id: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        by_id.entry(l.line.order_id.as_str()).or_default().push(i);
        if let Some(alternate) = l.line.alternate_id.as_deref() {
            if alternate != l.line.order_id {
                by_id.entry(alternate).or_default().push(i);
            }
        }
    }
    let mut bad_by_id: HashMap<&str, Vec<&StagedBad>> = HashMap::new();
    for b in bad {
        if let Some(order) = b.bad.order_id.as_deref() {
            bad_by_id.entry(order).or_default().push(b);
        }
    }
    let mut joined_any = vec![false; lines.len()];
    let mut verdicts = Verdicts::default();
    for purchase in purchases {
        let mut orders = Vec::new();
        for order in &purchase.orders {
            let mut candidates: Vec<usize> = by_id
                .get(order.id.as_str())
                .into_iter()
                .chain(order.alternate_id.as_deref().and_then(|a| by_id.get(a)))
                .flatten()
                .copied()
                .collect();
            candidates.sort_unstable();
            candidates.dedup();
            candidates.retain(|i| {
                let l = &lines[*i].line;
                l.customer_id.eq_ignore_ascii_case(&purchase.customer_id)
                    && l.joins(&order.id, order.alternate_id.as_deref())
            });
            for i in &candidates {
                joined_any[*i] = true;
            }
            let all: Vec<&StagedLine> = candidates.into_iter().map(|i| &lines[i]).collect();
            // Billed lines supersede unbilled ones: an earlier run's unbilled snapshot may
            // still hold the lines the invoice now carries.
            let invoiced = all.iter().any(|l| billed(l));
            let chosen: Vec<&StagedLine> = all
                .iter()
                .copied()
                .filter(|l| billed(l) == invoiced)
                .collect();
            let unreadable: Vec<&StagedBad> = bad_by_id
                .get(order.id.as_str())
                .into_iter()
                .chain(order.alternate_id.as_deref().and_then(|a| bad_by_id.get(a)))
                .flatten()
                .copied()
                .collect();
            orders.push(order_verdict(
                order,
                &chosen,
                &unreadable,
                invoiced,
                sources,
                now,
                timing,
            ));
        }
        if orders.is_empty() {
            continue;
        }
        let status = orders
            .iter()
            .map(|o| o.status)
            .min()
            .unwrap_or(BillingStatus::Pending);
        let complete = orders.iter().all(|o| {
            o.lines.iter().all(|key| {
                key.split_once('#')
                    .and_then(|(s, _)| source_of.get(s))
                    .is_some_and(|s| s.complete)
            })
        });
        let final_ =
            status == BillingStatus::Matched && orders.iter().all(|o| o.invoiced) && complete;
        verdicts.purchases.push(PurchaseVerdict {
            purchase_id: purchase.id.clone(),
            customer_id: purchase.customer_id.clone(),
            currency: purchase.orders.iter().find_map(|o| o.currency.clone()),
            status,
            final_,
            orders,
        });
    }
    verdicts.unexpected = unexpected(purchases, lines, &joined_any);
    for b in bad {
        verdicts.unreadable.push(format!(
            "{}#{}: {} (order {}, customer {}); evidence: {}",
            b.source,
            b.seq,
            b.bad.reason,
            b.bad.order_id.as_deref().unwrap_or("not given"),
            b.bad.customer_id.as_deref().unwrap_or("not given"),
            b.bad.evidence
        ));
    }
    for s in sources.iter().filter(|s| !s.complete) {
        verdicts.unreadable.push(format!(
            "{} was not read to its end: {}; the next run reads it again",
            s.key,
            s.problem.as_deref().unwrap_or("no reason recorded")
        ));
    }
    verdicts
}

fn order_verdict(
    order: &OrderFacts,
    lines: &[&StagedLine],
    bad: &[&StagedBad],
    invoiced: bool,
    sources: &[SourceFacts],
    now: DateTime<Utc>,
    timing: Timing,
) -> OrderVerdict {
    let keys: Vec<String> = lines
        .iter()
        .map(|l| format!("{}#{}", l.source, l.seq))
        .collect();
    let billed_total: Decimal = lines
        .iter()
        .map(|l| match l.line.charge_type {
            ChargeType::Cancel => -l.line.total.abs(),
            _ => l.line.total,
        })
        .sum();
    let verdict = |status, explanation: String| OrderVerdict {
        order_id: order.id.clone(),
        status,
        explanation,
        lines: keys.clone(),
        billed_total,
        invoiced,
    };
    if let Some(b) = bad.first() {
        return verdict(
            BillingStatus::Unreadable,
            format!(
                "a billing line naming order {} could not be read ({}, {}#{}); nothing proves the order billed right. Ask Microsoft support about the line, then run `pcsaga reconcile` again",
                order.id, b.bad.reason, b.source, b.seq
            ),
        );
    }
    if lines.is_empty() {
        return absent(order, sources, now, timing, verdict);
    }
    // Lines from a source not read to its end prove nothing: the rest may hold more of them.
    if let Some(cut) = lines
        .iter()
        .find_map(|l| sources.iter().find(|s| s.key == l.source && !s.complete))
    {
        return verdict(
            BillingStatus::Pending,
            format!(
                "order {}: {} could not be read to its end ({}), so its lines there prove nothing yet; the next run reads it again",
                order.id,
                cut.key,
                cut.problem.as_deref().unwrap_or("no reason recorded")
            ),
        );
    }
    // Currency (§13.3).
    if let Some(expected) = order.currency.as_deref() {
        if let Some(other) = lines.iter().find(|l| {
            !l.line.currency.eq_ignore_ascii_case(expected)
                && !l
                    .line
                    .pricing_currency
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(expected) && l.line.currency == p)
        }) {
            return verdict(
                BillingStatus::CurrencyMismatch,
                format!(
                    "order {} was placed in {expected} but billed in {} ({}#{}); the invoice of the wrong currency carries it. Raise it with Microsoft billing support",
                    order.id, other.line.currency, other.source, other.seq
                ),
            );
        }
    }
    // Quantities per (product, SKU), net of cancel lines, absolute values by charge type (§13.2).
    let mut expected: BTreeMap<(String, String), i64> = BTreeMap::new();
    for l in &order.lines {
        *expected
            .entry((
                l.product_id.to_ascii_uppercase(),
                l.sku_id.to_ascii_uppercase(),
            ))
            .or_default() += l.quantity;
    }
    let mut billed: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    let mut cancelled = false;
    for l in lines {
        let key = (
            l.line.product_id.to_ascii_uppercase(),
            l.line.sku_id.to_ascii_uppercase(),
        );
        let quantity = l.line.billable_quantity.abs();
        let entry = billed.entry(key).or_default();
        match l.line.charge_type {
            ChargeType::Cancel => {
                cancelled = true;
                *entry -= quantity;
            }
            _ => *entry += quantity,
        }
    }
    let mut keys_all: BTreeSet<&(String, String)> = expected.keys().collect();
    keys_all.extend(billed.keys());
    let net_zero = billed.values().all(|q| q.is_zero());
    if cancelled && net_zero {
        return verdict(
            BillingStatus::Refunded,
            format!(
                "order {} was billed and credited back (cancel lines offset it)",
                order.id
            ),
        );
    }
    for key in keys_all {
        let want = Decimal::from(expected.get(key).copied().unwrap_or(0));
        let got = billed.get(key).copied().unwrap_or_default();
        if want != got {
            let more = if got > want {
                format!(
                    "billed {got} where {want} were bought: the order was billed more than once or for more units ({} lines: {}). Check the invoice with Microsoft billing support before paying it",
                    lines.len(),
                    keys.join(", ")
                )
            } else {
                format!("billed {got} where {want} were bought")
            };
            return verdict(
                BillingStatus::QuantityMismatch,
                format!("order {}, {}:{}: {more}", order.id, key.0, key.1),
            );
        }
    }
    // Amounts: the recon-file formula per line, and total = subtotal + tax (§13.3).
    let tolerance = Decimal::new(1, 2);
    for l in lines {
        if let Some(formula) = l.line.formula_subtotal() {
            let diff = (l.line.subtotal.abs() - formula).abs();
            if diff > tolerance {
                return verdict(
                    BillingStatus::AmountMismatch,
                    format!(
                        "order {}: line {}#{} has subtotal {} {} where its unit price gives {formula} (ROUNDDOWN(effectiveUnitPrice × rate, 2) × {} units); raise it with Microsoft billing support",
                        order.id, l.source, l.seq, l.line.subtotal, l.line.currency, l.line.billable_quantity
                    ),
                );
            }
        }
        if (l.line.subtotal + l.line.tax_total - l.line.total).abs() > tolerance {
            return verdict(
                BillingStatus::AmountMismatch,
                format!(
                    "order {}: line {}#{} has total {} but subtotal {} plus tax {}",
                    order.id, l.source, l.seq, l.line.total, l.line.subtotal, l.line.tax_total
                ),
            );
        }
    }
    let warning = order
        .lines
        .iter()
        .filter_map(|o| {
            let want = o.availability_id.as_deref()?;
            lines
                .iter()
                .find(|l| {
                    l.line.product_id.eq_ignore_ascii_case(&o.product_id)
                        && l.line
                            .availability_id
                            .as_deref()
                            .is_some_and(|a| !a.eq_ignore_ascii_case(want))
                })
                .map(|_| format!(" (availability id differs from {want}: a warning only)"))
        })
        .next()
        .unwrap_or_default();
    let place = if invoiced {
        let mut invoices: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.line.invoice_number.as_deref())
            .collect();
        invoices.dedup();
        format!("on invoice {}", invoices.join(", "))
    } else {
        "on the unbilled lines (not yet invoiced)".to_owned()
    };
    verdict(
        BillingStatus::Matched,
        format!(
            "order {} billed once {place}: {billed_total} {}{warning}",
            order.id,
            lines
                .first()
                .map_or(String::new(), |l| l.line.currency.clone())
        ),
    )
}

/// No line joins the order: pending, missing from the unbilled lines, or missing.
fn absent(
    order: &OrderFacts,
    sources: &[SourceFacts],
    now: DateTime<Utc>,
    timing: Timing,
    verdict: impl Fn(BillingStatus, String) -> OrderVerdict,
) -> OrderVerdict {
    let Some(created) = order.created_at else {
        return verdict(
            BillingStatus::Pending,
            format!(
                "order {} has no creation date on record, so its billing month is unknown",
                order.id
            ),
        );
    };
    let month = Month::of(created);
    let currency = order.currency.as_deref().unwrap_or("");
    let covering: Vec<&SourceFacts> = sources
        .iter()
        .filter(|s| {
            s.invoice.as_ref().is_some_and(|i| {
                i.month == month
                    && i.currency.eq_ignore_ascii_case(currency)
                    && i.issued_at >= created
            }) || s
                .unbilled
                .as_ref()
                .is_some_and(|(c, m)| *m == month && c.eq_ignore_ascii_case(currency))
        })
        .collect();
    if let Some(incomplete) = covering.iter().find(|s| !s.complete) {
        return verdict(
            BillingStatus::Pending,
            format!(
                "order {}: {} could not be read to its end, so its absence proves nothing yet",
                order.id, incomplete.key
            ),
        );
    }
    if let Some(invoice) = covering.iter().find_map(|s| s.invoice.as_ref()) {
        return verdict(
            BillingStatus::Missing,
            format!(
                "order {} ({month}, {currency}) is on no billing line, although invoice {} of that month was issued on {} after the order. The order may not have been billed, or its ids changed: look the order up in Partner Center and on the invoice, then raise it with Microsoft billing support",
                order.id,
                invoice.id,
                invoice.issued_at.format("%Y-%m-%d")
            ),
        );
    }
    let invoice_deadline = month.next().start()
        + Duration::days(i64::from(timing.invoice_day.clamp(1, 28)) - 1)
        + timing.invoice_grace;
    if now >= invoice_deadline {
        return verdict(
            BillingStatus::Missing,
            format!(
                "order {} ({month}, {currency}) is on no invoice read, and its invoice was due by {}. Run `pcsaga reconcile --period INVOICE_ID` with that month's one-time invoice (`pcsaga billing invoices` lists them); if it is not there, raise it with Microsoft billing support",
                order.id,
                invoice_deadline.format("%Y-%m-%d")
            ),
        );
    }
    if now >= created + timing.unbilled_grace {
        return verdict(
            BillingStatus::MissingUnbilled,
            format!(
                "order {} is not on the unbilled lines {} hours after it was placed (a warning: Microsoft documents no delay; the invoice is due by {})",
                order.id,
                timing.unbilled_grace.num_hours(),
                invoice_deadline.format("%Y-%m-%d")
            ),
        );
    }
    verdict(
        BillingStatus::Pending,
        format!(
            "order {} is not billed yet (placed {})",
            order.id,
            created.format("%Y-%m-%d %H:%M UTC")
        ),
    )
}

/// Lines of managed customers that join no purchase's order (§13.5 `unexpected`).
fn unexpected(
    purchases: &[PurchaseFacts],
    lines: &[StagedLine],
    joined: &[bool],
) -> Vec<Unexpected> {
    let managed: BTreeSet<String> = purchases
        .iter()
        .map(|p| p.customer_id.to_ascii_lowercase())
        .collect();
    // An unbilled snapshot may repeat a billed line: count each charge once.
    let billed_keys: BTreeSet<String> = lines
        .iter()
        .filter(|l| l.line.invoice_number.is_some())
        .map(|l| charge_key(&l.line))
        .collect();
    let mut by_customer: HashMap<String, Vec<&PurchaseFacts>> = HashMap::new();
    for p in purchases {
        by_customer
            .entry(p.customer_id.to_ascii_lowercase())
            .or_default()
            .push(p);
    }
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if joined[i]
            || !managed.contains(&l.line.customer_id.to_ascii_lowercase())
            || (l.line.invoice_number.is_none() && billed_keys.contains(&charge_key(&l.line)))
        {
            continue;
        }
        let same_customer = by_customer
            .get(&l.line.customer_id.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or_default();
        // The saga order nearest in time with the same product, SKU and quantity: the
        // purchase this line most likely repeats.
        let twin = same_customer
            .iter()
            .copied()
            .flat_map(|p| p.orders.iter().map(move |o| (p, o)))
            .filter_map(|(p, o)| {
                let same = o.lines.iter().find(|ol| {
                    ol.product_id.eq_ignore_ascii_case(&l.line.product_id)
                        && ol.sku_id.eq_ignore_ascii_case(&l.line.sku_id)
                        && Decimal::from(ol.quantity) == l.line.billable_quantity.abs()
                })?;
                let gap = (o.created_at? - l.line.order_date?).abs();
                (gap <= Duration::hours(24)).then_some((gap, p, o, same))
            })
            .min_by_key(|(gap, p, o, _)| (*gap, p.id.clone(), o.id.clone()))
            .map(|(_, p, o, same)| (p, o, same));
        let (kind, explanation) = match twin {
            Some((purchase, order, line)) => {
                let compensation = if line.reservation {
                    "a reservation cannot be cancelled through the API in production: open a Partner Center support request to cancel or exchange it".to_owned()
                } else {
                    format!(
                        "software can be cancelled within the cancellation window: cancel order {} (not pcsaga's order {}) in Partner Center while the window is open",
                        l.line.order_id, order.id
                    )
                };
                (
                    "duplicate_suspected",
                    format!(
                        "order {} bills {} × {}:{} to customer {} within 24 h of purchase {}'s order {}: likely the same purchase made twice (pcsaga made only {}). Confirm in Partner Center whether order {} was wanted; {compensation}",
                        l.line.order_id, l.line.billable_quantity, l.line.product_id, l.line.sku_id,
                        l.line.customer_id, purchase.id, order.id, order.id, l.line.order_id
                    ),
                )
            }
            None => (
                "unknown_origin",
                format!(
                    "order {} bills {} × {}:{} ({} {}) to customer {}, and no purchase of pcsaga made it (bought in the portal or by another tool?). Confirm it with whoever buys for this customer",
                    l.line.order_id, l.line.billable_quantity, l.line.product_id, l.line.sku_id,
                    l.line.total, l.line.currency, l.line.customer_id
                ),
            ),
        };
        out.push(Unexpected {
            source: l.source.clone(),
            seq: l.seq,
            kind: kind.to_owned(),
            customer_id: l.line.customer_id.clone(),
            order_id: l.line.order_id.clone(),
            currency: l.line.currency.clone(),
            total: l.line.total,
            explanation,
        });
    }
    out
}

fn charge_key(line: &BillingLine) -> String {
    format!(
        "{}|{}|{}|{}|{}|{}",
        line.order_id,
        line.product_id,
        line.sku_id,
        line.charge_type.as_str(),
        line.charge_start.map(|d| d.timestamp()).unwrap_or(0),
        line.subtotal
    )
}
