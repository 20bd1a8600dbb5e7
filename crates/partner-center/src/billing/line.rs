//! One billing line, normalised (addendum §13.7): v1's camelCase `OneTimeInvoiceLineItem`
//! (E26/E27) and v2's PascalCase export records (E29.4) read into the same [`BillingLine`].
//!
//! Reading is lenient where the documents disagree (ambiguity 33, 43): keys in any case, numbers
//! as JSON numbers or numeric strings, `org:` before a customer id, `Total` or
//! `TotalForCustomer`, `BillableQuantity` falling back to `Quantity`. It is strict where a wrong
//! guess would prove something false: a line without an order id, a customer, a product, a
//! currency pcsaga knows or a readable amount is a [`BadLine`], kept with its evidence and never
//! matched to a purchase.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which API a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineSource {
    /// E26/E27.
    V1,
    /// E29 (Microsoft Graph export).
    V2,
}

/// `chargeType`: Purchase is reported as `New`, Refund as `Cancel` (E26); any case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeType {
    New,
    Cancel,
    Other(String),
}

impl ChargeType {
    pub fn parse(raw: &str) -> Self {
        match raw.trim().to_ascii_lowercase().as_str() {
            "new" | "purchase" => Self::New,
            "cancel" | "refund" => Self::Cancel,
            _ => Self::Other(raw.trim().to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::New => "new",
            Self::Cancel => "cancel",
            Self::Other(other) => other,
        }
    }
}

/// A one-time billing line as reconciliation needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillingLine {
    pub source: LineSource,
    /// `None` while unbilled (`""` on the wire).
    pub invoice_number: Option<String>,
    pub customer_id: String,
    pub order_id: String,
    pub alternate_id: Option<String>,
    pub order_date: Option<DateTime<Utc>>,
    pub product_id: String,
    pub sku_id: String,
    pub availability_id: Option<String>,
    pub charge_type: ChargeType,
    pub quantity: Decimal,
    /// The reconciliation quantity (docs: "use BillableQuantity for reconciliation").
    pub billable_quantity: Decimal,
    pub unit_price: Option<Decimal>,
    pub effective_unit_price: Option<Decimal>,
    pub subtotal: Decimal,
    pub tax_total: Decimal,
    pub total: Decimal,
    /// ISO 4217, upper case.
    pub currency: String,
    pub pricing_currency: Option<String>,
    pub pc_to_bc_rate: Option<Decimal>,
    pub charge_start: Option<DateTime<Utc>>,
    pub charge_end: Option<DateTime<Utc>>,
    pub reservation_order_id: Option<String>,
    pub subscription_id: Option<String>,
}

/// A line that cannot be read as a billing line: why, and what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BadLine {
    pub reason: String,
    /// The order and customer the line names, when it names them: the purchase it may belong
    /// to cannot be proven billed while this line is unexplained.
    pub order_id: Option<String>,
    pub customer_id: Option<String>,
    /// The line as received, cut at [`MAX_EVIDENCE_CHARS`].
    pub evidence: String,
}

/// Longest evidence kept from a bad line.
pub const MAX_EVIDENCE_CHARS: usize = 2000;

impl BillingLine {
    /// Reads one line (a JSON object from E26/E27 `items` or a JSON Lines record of E29).
    pub fn read(value: &Value, source: LineSource) -> Result<Self, BadLine> {
        let Some(object) = value.as_object() else {
            return Err(bad("the line is not a JSON object", value, None, None));
        };
        let fields: HashMap<String, &Value> = object
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let text = |name: &str| -> Option<String> {
            match fields.get(name) {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            }
        };
        let customer_id = text("customerid").map(|c| {
            c.strip_prefix("org:")
                .map(str::to_owned)
                .unwrap_or(c.clone())
        });
        let order_id = text("orderid");
        let fail = |reason: String| bad(&reason, value, order_id.clone(), customer_id.clone());
        let decimal = |name: &str| -> Result<Option<Decimal>, BadLine> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::Number(n)) => parse_decimal(&n.to_string())
                    .map(Some)
                    .ok_or_else(|| fail(format!("{name} {n} is not a number"))),
                Some(Value::String(s)) => parse_decimal(s)
                    .map(Some)
                    .ok_or_else(|| fail(format!("{name} {s:?} is not a number"))),
                Some(other) => Err(fail(format!("{name} {other} is not a number"))),
            }
        };
        let required = |name: &str, what: &str| -> Result<Decimal, BadLine> {
            decimal(name)?.ok_or_else(|| fail(format!("the line has no {what} ({name})")))
        };
        let Some(order) = order_id.clone() else {
            return Err(fail("the line has no order id (orderId)".to_owned()));
        };
        let Some(customer) = customer_id.clone() else {
            return Err(fail("the line has no customer id (customerId)".to_owned()));
        };
        let (Some(product_id), Some(sku_id)) = (text("productid"), text("skuid")) else {
            return Err(fail("the line has no productId or skuId".to_owned()));
        };
        let currency = text("currency").unwrap_or_default().to_ascii_uppercase();
        if !is_known_currency(&currency) {
            return Err(fail(format!(
                "currency {:?} is not an ISO 4217 currency pcsaga knows",
                text("currency").unwrap_or_default()
            )));
        }
        let quantity = decimal("quantity")?;
        let billable_quantity = match decimal("billablequantity")? {
            Some(q) => q,
            None => quantity.ok_or_else(|| {
                fail("the line has neither billableQuantity nor quantity".to_owned())
            })?,
        };
        let subtotal = required("subtotal", "subtotal")?;
        let tax_total = decimal("taxtotal")?.unwrap_or_default();
        let total = match decimal("totalforcustomer")? {
            Some(total) => total,
            None => required("total", "total (Total or TotalForCustomer)")?,
        };
        let date = |name: &str| text(name).and_then(|d| crate::models::datetime::parse(&d));
        Ok(Self {
            source,
            invoice_number: text("invoicenumber"),
            customer_id: customer,
            order_id: order,
            alternate_id: text("alternateid"),
            order_date: date("orderdate"),
            product_id,
            sku_id,
            availability_id: text("availabilityid"),
            charge_type: ChargeType::parse(&text("chargetype").unwrap_or_default()),
            quantity: quantity.unwrap_or(billable_quantity),
            billable_quantity,
            unit_price: decimal("unitprice")?,
            effective_unit_price: decimal("effectiveunitprice")?,
            subtotal,
            tax_total,
            total,
            pricing_currency: text("pricingcurrency").map(|c| c.to_ascii_uppercase()),
            pc_to_bc_rate: decimal("pctobcexchangerate")?,
            currency,
            charge_start: date("chargestartdate"),
            charge_end: date("chargeenddate"),
            reservation_order_id: text("reservationorderid"),
            subscription_id: text("subscriptionid"),
        })
    }

    /// Whether the line belongs to the order with this id and alternate id (§13.1).
    pub fn joins(&self, order_id: &str, alternate_id: Option<&str>) -> bool {
        let order_id = order_id.trim();
        let alternate = alternate_id.map(str::trim).filter(|a| !a.is_empty());
        self.order_id == order_id
            || alternate.is_some_and(|a| self.order_id == a)
            || alternate.is_some_and(|a| self.alternate_id.as_deref() == Some(a))
    }

    /// What the recon-file page says the subtotal of a seat-style line is:
    /// `ROUNDDOWN(effectiveUnitPrice × pcToBCExchangeRate, 2) × billableQuantity`.
    /// `None` when the line lacks the effective unit price.
    pub fn formula_subtotal(&self) -> Option<Decimal> {
        let price = self.effective_unit_price?;
        let rate = self.pc_to_bc_rate.unwrap_or(Decimal::ONE);
        let unit = (price * rate)
            .round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToNegativeInfinity);
        Some(unit * self.billable_quantity.abs())
    }
}

fn parse_decimal(raw: &str) -> Option<Decimal> {
    let raw = raw.trim();
    Decimal::from_str(raw)
        .or_else(|_| Decimal::from_scientific(raw))
        .ok()
}

fn bad(
    reason: &str,
    value: &Value,
    order_id: Option<String>,
    customer_id: Option<String>,
) -> BadLine {
    let mut evidence = value.to_string();
    if evidence.len() > MAX_EVIDENCE_CHARS {
        let mut cut = MAX_EVIDENCE_CHARS;
        while !evidence.is_char_boundary(cut) {
            cut -= 1;
        }
        evidence.truncate(cut);
        evidence.push('…');
    }
    BadLine {
        reason: reason.to_owned(),
        order_id,
        customer_id,
        evidence,
    }
}

/// Active ISO 4217 currency codes (2025). A code outside this list on a billing line is bad
/// data, not a currency to compare: a typo must never pass as a currency mismatch or a match.
const ISO_4217: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB \
BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD \
FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR \
KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR \
MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK \
SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES \
VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

/// Whether `code` (upper case) is an active ISO 4217 currency.
pub fn is_known_currency(code: &str) -> bool {
    code.len() == 3 && ISO_4217.split_ascii_whitespace().any(|c| c == code)
}
