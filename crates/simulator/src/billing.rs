//! The billing model of addendum §14: every completed order line becomes a one-time billing
//! line, unbilled first (E27) and billed on an invoice when its month closes (E24-E26, E28),
//! readable through the Graph export too (E29). Balances (E22/E23) sum the invoices.
//!
//! Lines are made lazily and deterministically from the order ledger: each billing call first
//! brings the ledger up to the business clock (`catch_up`): completed orders get their lines,
//! cancelled lines their `cancel` lines, and months past their invoice day are invoiced. Faults
//! for reconciliation tests (`PUT /_sim/billing`) are keyed by order id, so a test sets them
//! once its purchases have their orders and before the lines are made.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::service::{Req, Resp, Shared};
use crate::world::{OrderRecord, World};

/// `sim.billing.*` (addendum §14), with the documented defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// Day of the next month on which a month's invoice closes (00:00Z).
    pub invoice_day: u32,
    /// `alternate`: lines carry the order's alternate id as `orderId`; `full`: its id.
    pub order_id_form: OrderIdForm,
    /// Graph operation polls answered `running` before the export succeeds.
    pub graph_polls_until_done: u32,
    /// `Retry-After` on a running export, seconds.
    pub graph_retry_after_s: u64,
    /// `status` of a succeeded export (`succeeded` in examples, `completed` on the resource page).
    pub graph_success_status: String,
    /// Lines per export file.
    pub graph_lines_per_blob: usize,
    /// Export files are cut in half (a truncated download).
    pub truncate_blobs: bool,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            invoice_day: 8,
            order_id_form: OrderIdForm::Alternate,
            graph_polls_until_done: 2,
            graph_retry_after_s: 1,
            graph_success_status: "succeeded".to_owned(),
            graph_lines_per_blob: 2000,
            truncate_blobs: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderIdForm {
    Alternate,
    Full,
}

/// A billing fault for one order's lines (§14.9).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LineFault {
    /// The order is never billed.
    MissingLine,
    /// Each line of the order is billed twice.
    DuplicateLine,
    /// The billed quantity is off by `by`.
    QuantityDrift { by: i64 },
    /// The subtotal is off by `percent` (the recon formula no longer holds).
    PriceDrift { percent: i64 },
    /// The line is billed in another currency.
    CurrencySwap,
    /// Besides the order's own line, a line for an order no purchase made (same customer,
    /// product and quantity: a second purchase made elsewhere).
    ForeignLine,
    /// Bad data: the subtotal does not parse.
    BadAmount,
    /// Bad data: a currency that is not ISO 4217.
    UnknownCurrency,
    /// Bad data: the line has no order id.
    NoOrderId,
}

/// `PUT /_sim/billing`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct BillingFaults {
    /// Faults by order id (the order's `id`).
    pub orders: BTreeMap<String, Vec<LineFault>>,
    pub truncate_blobs: Option<bool>,
    pub order_id_form: Option<OrderIdForm>,
}

#[derive(Debug, Clone)]
struct Line {
    /// The line as E26/E27 serve it (camelCase), `invoiceNumber` filled in at close.
    value: Value,
    month: (i32, u32),
    currency: String,
    invoice: Option<String>,
    total: Decimal,
}

#[derive(Debug, Clone)]
struct Invoice {
    id: String,
    currency: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    date: DateTime<Utc>,
    total: Decimal,
}

#[derive(Debug, Clone)]
struct Export {
    /// Indexes into `lines`, fixed when the export started.
    lines: Option<Vec<usize>>,
    polls: u32,
    created: DateTime<Utc>,
}

/// The partner's billing ledger.
#[derive(Debug, Default)]
pub struct Billing {
    billed_orders: HashSet<String>,
    cancel_billed: HashSet<(String, i64)>,
    lines: Vec<Line>,
    invoices: Vec<Invoice>,
    exports: HashMap<String, Export>,
    faults: BillingFaults,
}

/// The audience of Microsoft Graph tokens.
pub const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";

/// The partner default currency (E22).
const DEFAULT_CURRENCY: &str = "USD";
/// The price list's currency.
const PRICING_CURRENCY: &str = "USD";

/// The simulator's price list: a fixed unit price per product and SKU, in USD.
pub fn unit_price(product_id: &str, sku_id: &str) -> Decimal {
    // FNV-1a: stable across runs and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in product_id.bytes().chain([b':']).chain(sku_id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Decimal::new(10_000 + i64::try_from(hash % 290_000).unwrap_or(0), 2)
}

/// Pricing (USD) to billing currency.
fn exchange_rate(currency: &str) -> Decimal {
    match currency {
        "EUR" => Decimal::new(92, 2),
        "GBP" => Decimal::new(79, 2),
        _ => Decimal::ONE,
    }
}

fn month_of(at: DateTime<Utc>) -> (i32, u32) {
    (at.year(), at.month())
}

fn month_start((year, month): (i32, u32)) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

fn next_month((year, month): (i32, u32)) -> (i32, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

fn previous_month((year, month): (i32, u32)) -> (i32, u32) {
    if month == 1 {
        (year - 1, 12)
    } else {
        (year, month - 1)
    }
}

fn iso(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Billing {
    pub fn set_faults(&mut self, faults: BillingFaults) {
        self.faults = faults;
    }

    pub fn faults(&self) -> &BillingFaults {
        &self.faults
    }

    fn order_id_form(&self, config: &BillingConfig) -> OrderIdForm {
        self.faults.order_id_form.unwrap_or(config.order_id_form)
    }
}

/// Brings the ledger up to `now`: lines for completed orders and cancelled lines, invoices for
/// months past their invoice day.
pub fn catch_up(shared: &Shared, world: &mut World) {
    let now = shared.now();
    let completion = shared.completion();
    let config = &shared.config.billing;
    let mut orders: Vec<&OrderRecord> = world.orders.values().collect();
    orders.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    let mut new_lines = Vec::new();
    let billing = &world.billing;
    for order in orders {
        if now < order.created + completion {
            continue;
        }
        let faults = billing
            .faults
            .orders
            .get(&order.id)
            .cloned()
            .unwrap_or_default();
        let form = billing.order_id_form(config);
        if !billing.billed_orders.contains(&order.id) {
            new_lines.push((
                order.id.clone(),
                None,
                lines_of(order, &faults, form, order.created, false),
            ));
        }
        for line in order.lines.iter().filter(|l| l.cancelled) {
            let key = (order.id.clone(), line.number);
            if !billing.cancel_billed.contains(&key) && billing.billed_orders.contains(&order.id) {
                let mut one = order.clone();
                one.lines = vec![line.clone()];
                new_lines.push((
                    order.id.clone(),
                    Some(line.number),
                    lines_of(&one, &[], form, now, true),
                ));
            }
        }
    }
    let billing = &mut world.billing;
    for (order_id, cancelled, lines) in new_lines {
        match cancelled {
            None => {
                billing.billed_orders.insert(order_id);
            }
            Some(number) => {
                billing.cancel_billed.insert((order_id, number));
            }
        }
        billing.lines.extend(lines);
    }
    // Months whose invoice day has passed close on their own.
    let due: HashSet<(i32, u32)> = billing
        .lines
        .iter()
        .filter(|l| l.invoice.is_none())
        .map(|l| l.month)
        .filter(|m| {
            let close = month_start(next_month(*m))
                + Duration::days(i64::from(config.invoice_day.clamp(1, 28)) - 1);
            now >= close
        })
        .collect();
    if !due.is_empty() {
        close(billing, now, |m| due.contains(&m));
    }
}

/// Invoices the open lines of the months `which` accepts: one invoice per (currency, month).
fn close(
    billing: &mut Billing,
    now: DateTime<Utc>,
    which: impl Fn((i32, u32)) -> bool,
) -> Vec<String> {
    let mut groups: BTreeMap<(String, (i32, u32)), Vec<usize>> = BTreeMap::new();
    for (i, line) in billing.lines.iter().enumerate() {
        if line.invoice.is_none() && which(line.month) {
            groups
                .entry((line.currency.clone(), line.month))
                .or_default()
                .push(i);
        }
    }
    let mut made = Vec::new();
    for ((currency, month), indexes) in groups {
        let id = format!("G{:09}", billing.invoices.len() + 1);
        let mut total = Decimal::ZERO;
        for i in &indexes {
            let line = &mut billing.lines[*i];
            line.invoice = Some(id.clone());
            line.value["invoiceNumber"] = json!(id);
            total += line.total;
        }
        let start = month_start(month);
        let end = month_start(next_month(month)) - Duration::days(1);
        billing.invoices.push(Invoice {
            id: id.clone(),
            currency,
            start,
            end,
            date: now,
            total,
        });
        made.push(id);
    }
    made
}

fn lines_of(
    order: &OrderRecord,
    faults: &[LineFault],
    form: OrderIdForm,
    at: DateTime<Utc>,
    cancel: bool,
) -> Vec<Line> {
    if faults.contains(&LineFault::MissingLine) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for line in order.lines.iter().filter(|l| cancel || !l.cancelled) {
        let mut currency = order.currency.clone();
        if faults.contains(&LineFault::CurrencySwap) {
            currency = if currency == "EUR" { "USD" } else { "EUR" }.to_owned();
        }
        let rate = exchange_rate(&currency);
        let price = unit_price(&line.product_id, &line.sku_id);
        let mut quantity = line.quantity;
        for fault in faults {
            if let LineFault::QuantityDrift { by } = fault {
                quantity += by;
            }
        }
        let unit = (price * rate)
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToNegativeInfinity);
        let mut subtotal = unit * Decimal::from(quantity);
        for fault in faults {
            if let LineFault::PriceDrift { percent } = fault {
                subtotal = (subtotal * (Decimal::ONE_HUNDRED + Decimal::from(*percent))
                    / Decimal::ONE_HUNDRED)
                    .round_dp(2);
            }
        }
        let sign = if cancel { -Decimal::ONE } else { Decimal::ONE };
        let subtotal = subtotal * sign;
        let order_id = match form {
            OrderIdForm::Alternate => order.alternate_id.clone(),
            OrderIdForm::Full => order.id.clone(),
        };
        let start = at
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .unwrap_or_default()
            .and_utc();
        let end = match line.term.as_deref() {
            Some("P1Y") => start + Duration::days(365) - Duration::days(1),
            Some("P3Y") => start + Duration::days(3 * 365) - Duration::days(1),
            _ => start,
        };
        let mut value = json!({
            "partnerId": "", "customerId": order.customer_id, "customerName": "",
            "customerDomainName": "", "customerCountry": order.country,
            "invoiceNumber": "", "mpnId": "6034453", "resellerMpnId": "0",
            "orderId": order_id, "orderDate": crate::world::timestamp(order.created),
            "productId": line.product_id, "skuId": line.sku_id,
            "availabilityId": line.offer_id.split(':').nth(2).unwrap_or(""),
            "productName": line.friendly_name, "skuName": line.friendly_name,
            "productQualifiers": [], "chargeType": if cancel { "cancel" } else { "new" },
        });
        let more = json!({
            "unitPrice": price, "effectiveUnitPrice": price, "unitType": "",
            "quantity": quantity, "subtotal": subtotal, "taxTotal": Decimal::ZERO,
            "totalForCustomer": subtotal, "currency": currency,
            "publisherName": "Microsoft Corporation", "publisherId": "",
            "subscriptionDescription": "", "subscriptionId": "",
            "chargeStartDate": iso(start), "chargeEndDate": iso(end),
            "termAndBillingCycle": if line.term.is_some() { "1 Year Prepaid" } else { "Perpetual" },
            "alternateId": order.alternate_id, "referenceId": uuid::Uuid::new_v4().to_string(),
            "priceAdjustmentDescription": "", "discountDetails": "", "creditReasonCode": "",
            "pricingCurrency": PRICING_CURRENCY,
            "pcToBCExchangeRate": rate, "pcToBCExchangeRateDate": iso(month_start(month_of(at))),
            "billableQuantity": quantity, "meterDescription": "", "billingFrequency": "",
            "reservationOrderId": if line.term.is_some() { uuid::Uuid::new_v4().to_string() } else { String::new() },
            "promotionId": "", "invoiceLineItemType": "billing_line_items",
            "billingProvider": "one_time", "attributes": {"objectType": "OneTimeInvoiceLineItem"},
        });
        if let (Some(value), Value::Object(more)) = (value.as_object_mut(), more) {
            value.extend(more);
        }
        // Money goes out as JSON numbers, as in the documented examples.
        for key in [
            "unitPrice",
            "effectiveUnitPrice",
            "subtotal",
            "taxTotal",
            "totalForCustomer",
            "pcToBCExchangeRate",
        ] {
            if let Some(number) = value[key]
                .as_str()
                .and_then(|s| s.parse::<serde_json::Number>().ok())
            {
                value[key] = Value::Number(number);
            }
        }
        if faults.contains(&LineFault::BadAmount) {
            value["subtotal"] = json!("12,34.5x");
        }
        if faults.contains(&LineFault::UnknownCurrency) {
            value["currency"] = json!("XQZ");
        }
        if faults.contains(&LineFault::NoOrderId) {
            value["orderId"] = json!("");
            value["alternateId"] = json!("");
        }
        let month = month_of(at);
        let base = Line {
            value,
            month,
            currency: currency.clone(),
            invoice: None,
            total: subtotal,
        };
        if faults.contains(&LineFault::DuplicateLine) {
            out.push(base.clone());
        }
        if faults.contains(&LineFault::ForeignLine) {
            let mut foreign = base.clone();
            let foreign_id = format!("{:012x}", uuid::Uuid::new_v4().as_u128() & 0xffff_ffff_ffff);
            foreign.value["orderId"] = json!(foreign_id);
            foreign.value["alternateId"] = json!(foreign_id);
            out.push(foreign);
        }
        out.push(base);
    }
    out
}

// ---- endpoints -------------------------------------------------------------------------------

fn invoice_json(invoice: &Invoice, with_pdf: bool) -> Value {
    let mut value = json!({
        "id": invoice.id, "invoiceDate": iso(invoice.date),
        "billingPeriodStartDate": iso(invoice.start), "billingPeriodEndDate": iso(invoice.end),
        "totalCharges": money(invoice.total), "paidAmount": 0, "currencyCode": invoice.currency,
        "currencySymbol": symbol(&invoice.currency),
        "invoiceDetails": [{
            "invoiceLineItemType": "billing_line_items", "billingProvider": "one_time",
            "links": {"self": {"uri": format!("/invoices/OneTime-{}/lineitems/OneTime/BillingLineItems", invoice.id), "method": "GET", "headers": []}},
            "attributes": {"objectType": "InvoiceDetail"}
        }],
        "documentType": "invoice", "invoiceType": "OneTime",
        "links": {"self": {"uri": format!("/invoices/OneTime-{}", invoice.id), "method": "GET", "headers": []}},
        "attributes": {"objectType": "Invoice"},
    });
    if with_pdf {
        value["pdfDownloadLink"] = json!(format!("/invoices/{}/documents/statement", invoice.id));
        value["taxReceipts"] = json!([]);
    }
    value
}

/// Money as the documented examples write it: a JSON number (from the decimal's text, exact).
fn money(amount: Decimal) -> Value {
    amount
        .normalize()
        .to_string()
        .parse::<serde_json::Number>()
        .map_or(Value::Null, Value::Number)
}

fn symbol(currency: &str) -> &'static str {
    match currency {
        "EUR" => "€",
        "GBP" => "£",
        _ => "$",
    }
}

/// Strips the `OneTime-` prefix the `links.self` of invoices carry (ambiguity 50).
fn invoice_id(raw: &str) -> String {
    raw.split_once('-')
        .filter(|(prefix, _)| {
            prefix.eq_ignore_ascii_case("onetime") || prefix.eq_ignore_ascii_case("recurring")
        })
        .map_or(raw, |(_, id)| id)
        .to_owned()
}

fn summary_json(currency: &str, invoices: &[&Invoice]) -> Value {
    let balance: Decimal = invoices.iter().map(|i| i.total).sum();
    let first = invoices.iter().map(|i| i.date).min();
    let latest = invoices.iter().map(|i| i.date).max();
    let never = "0001-01-01T00:00:00";
    let date = |d: Option<DateTime<Utc>>| d.map_or(never.to_owned(), iso);
    let summary = json!({
        "balanceAmount": money(balance), "currencyCode": currency, "currencySymbol": symbol(currency),
        "accountingDate": iso(Utc::now()), "firstInvoiceCreationDate": date(first),
        "lastPaymentDate": never, "lastPaymentAmount": 0, "latestInvoiceDate": date(latest),
        "attributes": {"objectType": "InvoiceSummary"},
    });
    let mut value = summary.clone();
    value["details"] = json!([{"invoiceType": "OneTime", "summary": summary}]);
    value["links"] = json!({"self": {"uri": "/invoices/summary", "method": "GET", "headers": []}});
    value
}

/// E22.
pub fn balance(shared: &Shared) -> Resp {
    let mut world = shared.world();
    catch_up(shared, &mut world);
    let invoices: Vec<&Invoice> = world
        .billing
        .invoices
        .iter()
        .filter(|i| i.currency == DEFAULT_CURRENCY)
        .collect();
    Resp::json(200, summary_json(DEFAULT_CURRENCY, &invoices))
}

/// E23.
pub fn summaries(shared: &Shared) -> Resp {
    let mut world = shared.world();
    catch_up(shared, &mut world);
    let mut currencies: Vec<&str> = world
        .billing
        .invoices
        .iter()
        .map(|i| i.currency.as_str())
        .collect();
    currencies.sort_unstable();
    currencies.dedup();
    let items: Vec<Value> = currencies
        .iter()
        .map(|c| {
            let invoices: Vec<&Invoice> = world
                .billing
                .invoices
                .iter()
                .filter(|i| i.currency == *c)
                .collect();
            summary_json(c, &invoices)
        })
        .collect();
    Resp::json(
        200,
        json!({"totalCount": items.len(), "items": items, "links": {"self": {"uri": "/invoices/summaries", "method": "GET", "headers": []}}, "attributes": {"objectType": "Collection"}}),
    )
}

/// E24: paged by `size`/`offset`, `links.next` while more remain.
pub fn list_invoices(shared: &Shared, req: &Req) -> Resp {
    let mut world = shared.world();
    catch_up(shared, &mut world);
    let size = req
        .query
        .get("size")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let offset = req
        .query
        .get("offset")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(0);
    let all = &world.billing.invoices;
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(size)
        .map(|i| invoice_json(i, false))
        .collect();
    let mut links = json!({"self": {"uri": format!("/invoices?size={size}&offset={offset}"), "method": "GET", "headers": []}});
    if offset + size < all.len() {
        links["next"] = json!({"uri": format!("/invoices?size={size}&offset={}", offset + size), "method": "GET", "headers": []});
    }
    Resp::json(
        200,
        json!({"totalCount": all.len(), "items": page, "links": links, "attributes": {"objectType": "Collection"}}),
    )
}

/// E25.
pub fn get_invoice(shared: &Shared, raw_id: &str) -> Resp {
    let mut world = shared.world();
    catch_up(shared, &mut world);
    let id = invoice_id(raw_id);
    match world
        .billing
        .invoices
        .iter()
        .find(|i| i.id.eq_ignore_ascii_case(&id))
    {
        Some(invoice) => Resp::json(200, invoice_json(invoice, true)),
        None => Resp::error(404, "1000", &format!("Invoice {id} was not found.")),
    }
}

/// E28: a small, valid PDF naming the invoice, its period, currency and total.
pub fn statement(shared: &Shared, raw_id: &str) -> Resp {
    let mut world = shared.world();
    catch_up(shared, &mut world);
    let id = invoice_id(raw_id);
    let Some(invoice) = world
        .billing
        .invoices
        .iter()
        .find(|i| i.id.eq_ignore_ascii_case(&id))
    else {
        return Resp::error(404, "1000", &format!("Invoice {id} was not found."));
    };
    let text = format!(
        "Invoice {} - {} to {} - {} {}",
        invoice.id,
        invoice.start.date_naive(),
        invoice.end.date_naive(),
        invoice.total,
        invoice.currency
    );
    let mut resp = Resp::empty(200);
    resp.raw = Some(("application/pdf", bytes::Bytes::from(pdf(&text))));
    resp.headers.push((
        "Content-Disposition",
        format!("attachment; filename=Invoice_{}.pdf", invoice.id),
    ));
    resp
}

/// A one-page PDF 1.4 with one line of text and a correct cross-reference table.
fn pdf(text: &str) -> Vec<u8> {
    let safe: String = text
        .chars()
        .filter(|c| c.is_ascii() && !matches!(c, '(' | ')' | '\\'))
        .collect();
    let content = format!("BT /F1 12 Tf 72 720 Td ({safe}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    query: String,
    offset: usize,
}

/// E26 and E27: seek-based pages (§14.5).
pub fn line_items(shared: &Shared, req: &Req, invoice: Option<&str>) -> Resp {
    let bad = |what: &str| Resp::error(400, "800002", &format!("Invalid request input: {what}."));
    let provider = req.query.get("provider").map(|s| s.to_ascii_lowercase());
    if !matches!(provider.as_deref(), Some("onetime" | "all")) {
        return bad("provider must be onetime");
    }
    if !req
        .query
        .get("invoicelineitemtype")
        .is_some_and(|t| t.eq_ignore_ascii_case("billinglineitems"))
    {
        return bad("invoicelineitemtype must be billinglineitems");
    }
    let size = req
        .query
        .get("size")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(2000)
        .clamp(1, 2000);
    let mut world = shared.world();
    catch_up(shared, &mut world);
    let now_month = month_of(shared.now());
    let (fingerprint, selected): (String, Vec<&Line>) = match invoice {
        Some(raw) => {
            let id = invoice_id(raw);
            if !world
                .billing
                .invoices
                .iter()
                .any(|i| i.id.eq_ignore_ascii_case(&id))
            {
                return Resp::error(404, "1000", &format!("Invoice {id} was not found."));
            }
            (
                format!("invoice:{id}"),
                world
                    .billing
                    .lines
                    .iter()
                    .filter(|l| l.invoice.as_deref() == Some(id.as_str()))
                    .collect(),
            )
        }
        None => {
            let Some(currency) = req
                .query
                .get("currencycode")
                .map(|c| c.to_ascii_uppercase())
            else {
                return bad("currencycode is required");
            };
            let month = match req
                .query
                .get("period")
                .map(|p| p.to_ascii_lowercase())
                .as_deref()
            {
                Some("current") => now_month,
                Some("previous") => previous_month(now_month),
                _ => return bad("period must be current or previous"),
            };
            (
                format!("unbilled:{currency}:{}-{}", month.0, month.1),
                world
                    .billing
                    .lines
                    .iter()
                    .filter(|l| l.invoice.is_none() && l.month == month && l.currency == currency)
                    .collect(),
            )
        }
    };
    let offset = if req
        .query
        .get("seekoperation")
        .is_some_and(|s| s.eq_ignore_ascii_case("next"))
    {
        let Some(token) = req.header("ms-continuationtoken") else {
            return bad("seekOperation=Next needs the MS-ContinuationToken header");
        };
        match decode_cursor(&token) {
            Some(cursor) if cursor.query == fingerprint => cursor.offset,
            _ => return bad("the continuation token is not valid for this query"),
        }
    } else {
        0
    };
    let page: Vec<Value> = selected
        .iter()
        .skip(offset)
        .take(size)
        .map(|l| l.value.clone())
        .collect();
    let next = offset + page.len();
    let self_uri = format!(
        "/invoices/{}/lineitems?provider=onetime&invoicelineitemtype=billinglineitems&size={size}",
        invoice.unwrap_or("unbilled")
    );
    let mut body = json!({"totalCount": page.len(), "items": page, "links": {"self": {"uri": self_uri, "method": "GET", "headers": []}}, "attributes": {"objectType": "Collection"}});
    // A page that ends exactly at the end still has a token: the next (empty) page ends it.
    if page.len() == size || next < selected.len() {
        let token = encode_cursor(&Cursor {
            query: fingerprint,
            offset: next,
        });
        body["continuationToken"] = json!(token);
        body["links"]["next"] = json!({"uri": format!("{self_uri}&seekOperation=Next"), "method": "GET", "headers": [{"key": "MS-ContinuationToken", "value": token}]});
    }
    Resp::json(200, body)
}

fn encode_cursor(cursor: &Cursor) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(cursor).unwrap_or_default())
}

fn decode_cursor(token: &str) -> Option<Cursor> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

// ---- Graph (E29) -------------------------------------------------------------------------------

fn graph_error(status: u16, code: &str, message: &str) -> Resp {
    Resp::json(status, json!({"error": {"code": code, "message": message}}))
}

fn origin(req: &Req) -> String {
    format!(
        "http://{}",
        req.header("host").unwrap_or_else(|| "127.0.0.1".to_owned())
    )
}

/// E29.1 and E29.5.
pub fn start_export(shared: &Shared, req: &Req, billed: bool) -> Resp {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return graph_error(400, "BadRequest", "The body is not JSON.");
    };
    let field = |name: &str| {
        body.as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned)
    };
    let mut world = shared.world();
    catch_up(shared, &mut world);
    let lines = if billed {
        let Some(id) = field("invoiceId") else {
            return graph_error(400, "BadRequest", "invoiceId is required.");
        };
        let id = invoice_id(&id);
        world
            .billing
            .invoices
            .iter()
            .any(|i| i.id.eq_ignore_ascii_case(&id))
            .then(|| {
                world
                    .billing
                    .lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| l.invoice.as_deref() == Some(id.as_str()))
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>()
            })
            .filter(|l| !l.is_empty())
    } else {
        let (Some(currency), Some(period)) = (field("currencyCode"), field("billingPeriod")) else {
            return graph_error(
                400,
                "BadRequest",
                "currencyCode and billingPeriod are required.",
            );
        };
        let now_month = month_of(shared.now());
        let month = match period.to_ascii_lowercase().as_str() {
            "current" => now_month,
            "last" => previous_month(now_month),
            _ => return graph_error(400, "BadRequest", "billingPeriod must be current or last."),
        };
        let currency = currency.to_ascii_uppercase();
        Some(
            world
                .billing
                .lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.invoice.is_none() && l.month == month && l.currency == currency)
                .map(|(i, _)| i)
                .collect(),
        )
    };
    let id = uuid::Uuid::new_v4().to_string();
    world.billing.exports.insert(
        id.clone(),
        Export {
            lines,
            polls: 0,
            created: shared.now(),
        },
    );
    let mut resp = Resp::empty(202);
    resp.headers.push((
        "Location",
        format!(
            "{}/graph/v1.0/reports/partners/billing/operations/{id}",
            origin(req)
        ),
    ));
    resp
}

/// E29.2.
pub fn operation(shared: &Shared, req: &Req, id: &str) -> Resp {
    let config = &shared.config.billing;
    let mut world = shared.world();
    let Some(export) = world.billing.exports.get_mut(id) else {
        return graph_error(404, "NotFound", "No such operation.");
    };
    export.polls += 1;
    let common = json!({"id": id, "createdDateTime": iso(export.created), "lastActionDateTime": iso(shared.now())});
    let mut body = common;
    if export.lines.is_none() {
        body["@odata.type"] = json!("#microsoft.graph.partners.billing.failedOperation");
        body["status"] = json!("failed");
        body["error"] = json!({"code": "5000", "message": "No data available"});
        return Resp::json(200, body);
    }
    if export.polls <= config.graph_polls_until_done {
        body["@odata.type"] = json!("#microsoft.graph.partners.billing.runningOperation");
        body["status"] = json!("running");
        let mut resp = Resp::json(200, body);
        resp.headers
            .push(("Retry-After", config.graph_retry_after_s.to_string()));
        return resp;
    }
    body["@odata.type"] = json!("#microsoft.graph.partners.billing.exportSuccessOperation");
    body["status"] = json!(config.graph_success_status);
    body["resourceLocation@odata.navigationLink"] = json!(format!(
        "{}/graph/v1.0/reports/partners/billing/manifests/{id}",
        origin(req)
    ));
    Resp::json(200, body)
}

fn signature(shared: &Shared, path: &str, expiry: i64) -> String {
    use hmac::Mac;
    let Ok(mut mac) =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(shared.config.client_secret.as_bytes())
    else {
        return String::new();
    };
    mac.update(format!("{path}|{expiry}").as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// E29.3.
pub fn manifest(shared: &Shared, req: &Req, id: &str) -> Resp {
    let config = &shared.config.billing;
    let world = shared.world();
    let Some(Export {
        lines: Some(lines), ..
    }) = world.billing.exports.get(id)
    else {
        return graph_error(404, "NotFound", "No such manifest.");
    };
    let per = config.graph_lines_per_blob.max(1);
    let count = lines.len().div_ceil(per).max(1);
    let expiry = (shared.now() + Duration::hours(1)).timestamp();
    let directory = format!("/sim-blob/{id}");
    let blobs: Vec<Value> = (0..count)
        .map(|i| json!({"name": format!("part-{i:05}.json.gz"), "partitionValue": "default"}))
        .collect();
    Resp::json(
        200,
        json!({
            "id": id, "schemaVersion": "1", "dataFormat": "compressedJSONLines",
            "createdDateTime": iso(shared.now()), "eTag": format!("sim-{}", lines.len()),
            "partnerTenantId": shared.config.tenant_id,
            "rootDirectory": format!("{}{directory}", origin(req)),
            "sasToken": format!("sv=2021-08-06&sr=d&sp=rl&se={expiry}&sig={}", signature(shared, &directory, expiry)),
            "partitionType": "Default", "blobCount": count, "blobs": blobs,
        }),
    )
}

/// E29.4: one export file, gzip'd JSON Lines with PascalCase keys; the SAS must match.
pub fn blob(shared: &Shared, req: &Req, id: &str, name: &str) -> Resp {
    let config = &shared.config.billing;
    let directory = format!("/sim-blob/{id}");
    let expiry = req
        .query
        .get("se")
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    let signed = req
        .query
        .get("sig")
        .is_some_and(|s| *s == signature(shared, &directory, expiry));
    if !signed || expiry < shared.now().timestamp() {
        return Resp::error(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request.",
        );
    }
    let index: usize = name
        .trim_start_matches("part-")
        .split('.')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    let world = shared.world();
    let Some(Export {
        lines: Some(lines), ..
    }) = world.billing.exports.get(id)
    else {
        return Resp::error(404, "BlobNotFound", "The specified blob does not exist.");
    };
    let per = config.graph_lines_per_blob.max(1);
    let Some(chunk) = lines
        .chunks(per)
        .nth(index)
        .or((index == 0 && lines.is_empty()).then_some(&[][..]))
    else {
        return Resp::error(404, "BlobNotFound", "The specified blob does not exist.");
    };
    let mut text = String::new();
    for i in chunk {
        if let Some(line) = world.billing.lines.get(*i) {
            text.push_str(&pascal_keys(&line.value).to_string());
            text.push('\n');
        }
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = std::io::Write::write_all(&mut encoder, text.as_bytes());
    let mut bytes = encoder.finish().unwrap_or_default();
    if world
        .billing
        .faults
        .truncate_blobs
        .unwrap_or(config.truncate_blobs)
    {
        bytes.truncate(bytes.len() / 2);
    }
    let mut resp = Resp::empty(200);
    resp.raw = Some(("application/octet-stream", bytes::Bytes::from(bytes)));
    resp
}

fn pascal_keys(value: &Value) -> Value {
    match value.as_object() {
        Some(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| {
                    *k != "attributes" && *k != "invoiceLineItemType" && *k != "billingProvider"
                })
                .map(|(k, v)| {
                    let mut chars = k.chars();
                    let key = match chars.next() {
                        Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                        None => String::new(),
                    };
                    let key = if key == "PcToBCExchangeRate" {
                        "PCToBCExchangeRate".to_owned()
                    } else if key == "PcToBCExchangeRateDate" {
                        "PCToBCExchangeRateDate".to_owned()
                    } else {
                        key
                    };
                    (key, v.clone())
                })
                .collect(),
        ),
        None => value.clone(),
    }
}

// ---- admin -------------------------------------------------------------------------------------

/// `POST /_sim/billing/close`: invoices every open line now, whatever its month.
pub fn close_now(shared: &Shared) -> Resp {
    let mut world = shared.world();
    catch_up(shared, &mut world);
    let now = shared.now();
    let made = close(&mut world.billing, now, |_| true);
    Resp::json(200, json!({"invoices": made}))
}

/// `GET /_sim/billing`: the ledger as tests see it.
pub fn ledger(shared: &Shared) -> Resp {
    let mut world = shared.world();
    catch_up(shared, &mut world);
    let billing = &world.billing;
    Resp::json(
        200,
        json!({
            "lines": billing.lines.iter().map(|l| json!({"orderId": l.value["orderId"], "invoice": l.invoice, "currency": l.currency, "month": format!("{}-{:02}", l.month.0, l.month.1), "total": l.total})).collect::<Vec<_>>(),
            "invoices": billing.invoices.iter().map(|i| invoice_json(i, false)).collect::<Vec<_>>(),
            "faults": billing.faults,
        }),
    )
}

/// `PUT /_sim/billing`: the billing faults.
pub fn set_faults(shared: &Shared, req: &Req) -> Resp {
    match serde_json::from_slice::<BillingFaults>(&req.body) {
        Ok(faults) => {
            shared.world().billing.set_faults(faults.clone());
            Resp::json(200, serde_json::to_value(&faults).unwrap_or(Value::Null))
        }
        Err(e) => Resp::error(400, "800002", &format!("PUT /_sim/billing takes {{\"orders\": {{ORDER_ID: [{{\"kind\": \"missing_line\"}}, ...]}}, \"truncateBlobs\": true, \"orderIdForm\": \"full\"}}: {e}")),
    }
}
