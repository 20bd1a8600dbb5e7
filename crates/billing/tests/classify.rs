//! The classification rules of addendum §13, one case per row through one `check` helper: a
//! purchase's orders and the billing lines read give exactly these verdicts.

use chrono::{DateTime, Duration, TimeZone, Utc};
use pcsaga_billing::classify::{
    classify, InvoiceFacts, OrderFacts, OrderLineFacts, PurchaseFacts, SourceFacts, StagedBad,
    StagedLine, Timing,
};
use pcsaga_billing::{BillingStatus, Month};
use pcsaga_partner_center::billing::{BillingLine, LineSource};
use serde_json::{json, Value};

const CUSTOMER: &str = "4c4d0c6e-38b9-4c5a-a0f4-3b2f1c1e7a10";

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 5, day, hour, 0, 0)
        .single()
        .expect("date")
}

fn purchase(id: &str, order: &str, alternate: &str, quantity: i64) -> PurchaseFacts {
    PurchaseFacts {
        id: id.into(),
        customer_id: CUSTOMER.into(),
        orders: vec![OrderFacts {
            id: order.into(),
            alternate_id: Some(alternate.into()),
            currency: Some("USD".into()),
            created_at: Some(at(14, 9)),
            lines: vec![OrderLineFacts {
                product_id: "DZH318Z0BQ3Q".into(),
                sku_id: "0001".into(),
                availability_id: Some("DZH318XZXVNF".into()),
                quantity,
                reservation: true,
            }],
        }],
    }
}

/// A documented E26 line (addendum E26 example), billed on G016907411, changed by `edit`.
fn line(order_id: &str, edit: impl Fn(&mut Value)) -> Value {
    let mut v = json!({
        "customerId": CUSTOMER, "invoiceNumber": "G016907411", "orderId": order_id,
        "alternateId": order_id, "orderDate": "2026-05-14T09:12:44.1234567Z",
        "productId": "DZH318Z0BQ3Q", "skuId": "0001", "availabilityId": "DZH318XZXVNF",
        "chargeType": "new", "unitPrice": 1023.12, "effectiveUnitPrice": 1023.12, "quantity": 2,
        "subtotal": 2046.24, "taxTotal": 0, "totalForCustomer": 2046.24, "currency": "USD",
        "pricingCurrency": "USD", "pcToBCExchangeRate": 1, "billableQuantity": 2,
    });
    edit(&mut v);
    v
}

fn invoice_source(issued: DateTime<Utc>, complete: bool) -> SourceFacts {
    SourceFacts {
        key: "invoice:G016907411".into(),
        complete,
        problem: (!complete).then(|| "file 1 of 2: the file ends early".into()),
        invoice: Some(InvoiceFacts {
            id: "G016907411".into(),
            currency: "USD".into(),
            month: Month {
                year: 2026,
                month: 5,
            },
            issued_at: issued,
        }),
        unbilled: None,
    }
}

/// Classifies one purchase (2 × RI, order `5b0e8c2d41a7`) against `lines` read from the
/// invoice, at `now`; asserts its status and that the explanation says `says`.
#[track_caller]
fn check(
    lines: &[Value],
    sources: &[SourceFacts],
    now: DateTime<Utc>,
    status: BillingStatus,
    says: &str,
) {
    let purchases = vec![purchase("p1", "kPz3LongOrderId", "5b0e8c2d41a7", 2)];
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (seq, value) in lines.iter().enumerate() {
        match BillingLine::read(value, LineSource::V1) {
            Ok(line) => good.push(StagedLine {
                source: "invoice:G016907411".into(),
                seq: seq as i64,
                line,
            }),
            Err(b) => bad.push(StagedBad {
                source: "invoice:G016907411".into(),
                seq: seq as i64,
                bad: b,
            }),
        }
    }
    let verdicts = classify(&purchases, &good, &bad, sources, now, Timing::default());
    let verdict = &verdicts.purchases[0];
    assert_eq!(verdict.status, status, "{verdict:#?}");
    let text = &verdict.orders[0].explanation;
    assert!(text.contains(says), "{text:?} does not say {says:?}");
}

#[test]
fn one_line_per_order_line_is_matched_whatever_id_form_it_carries() {
    let issued = at(31, 0) + Duration::days(8);
    let sources = [invoice_source(issued, true)];
    check(
        &[line("5b0e8c2d41a7", |_| {})],
        &sources,
        issued,
        BillingStatus::Matched,
        "billed once on invoice G016907411",
    );
    check(
        &[line("kPz3LongOrderId", |v| v["alternateId"] = json!(""))],
        &sources,
        issued,
        BillingStatus::Matched,
        "billed once",
    );
    // Strings for numbers, an org: prefix, PascalCase keys: all read.
    check(
        &[line("5b0e8c2d41a7", |v| {
            v["customerId"] = json!(format!("org:{CUSTOMER}"));
            v["quantity"] = json!("2");
            v["billableQuantity"] = json!("2");
            v["subtotal"] = json!("2046.24");
        })],
        &sources,
        issued,
        BillingStatus::Matched,
        "billed once",
    );
}

#[test]
fn quantities_amounts_and_currencies_that_disagree_are_named() {
    let issued = at(31, 0) + Duration::days(8);
    let sources = [invoice_source(issued, true)];
    let twice = [line("5b0e8c2d41a7", |_| {}), line("5b0e8c2d41a7", |_| {})];
    check(
        &twice,
        &sources,
        issued,
        BillingStatus::QuantityMismatch,
        "billed 4 where 2 were bought",
    );
    check(
        &[line("5b0e8c2d41a7", |v| {
            v["billableQuantity"] = json!(1);
            v["subtotal"] = json!(1023.12);
            v["totalForCustomer"] = json!(1023.12);
        })],
        &sources,
        issued,
        BillingStatus::QuantityMismatch,
        "billed 1 where 2 were bought",
    );
    check(
        &[line("5b0e8c2d41a7", |v| {
            v["subtotal"] = json!(2146.24);
            v["totalForCustomer"] = json!(2146.24);
        })],
        &sources,
        issued,
        BillingStatus::AmountMismatch,
        "where its unit price gives 2046.24",
    );
    check(
        &[line("5b0e8c2d41a7", |v| {
            v["totalForCustomer"] = json!(2050)
        })],
        &sources,
        issued,
        BillingStatus::AmountMismatch,
        "plus tax",
    );
    check(
        &[line("5b0e8c2d41a7", |v| {
            v["currency"] = json!("EUR");
            v["pricingCurrency"] = json!("EUR");
        })],
        &sources,
        issued,
        BillingStatus::CurrencyMismatch,
        "billed in EUR",
    );
    // Within a cent the formula holds (ROUNDDOWN to cents).
    check(
        &[line("5b0e8c2d41a7", |v| {
            v["effectiveUnitPrice"] = json!(1023.129);
        })],
        &sources,
        issued,
        BillingStatus::Matched,
        "billed once",
    );
}

#[test]
fn a_refund_nets_to_zero() {
    let issued = at(31, 0) + Duration::days(8);
    let sources = [invoice_source(issued, true)];
    let cancel = line("5b0e8c2d41a7", |v| {
        v["chargeType"] = json!("Cancel");
        v["subtotal"] = json!(-2046.24);
        v["totalForCustomer"] = json!(-2046.24);
    });
    check(
        &[line("5b0e8c2d41a7", |_| {}), cancel],
        &sources,
        issued,
        BillingStatus::Refunded,
        "credited back",
    );
}

#[test]
fn absence_is_pending_then_a_warning_then_missing() {
    // No line, no invoice yet: pending for 48 h, then missing from the unbilled lines.
    check(
        &[],
        &[],
        at(14, 20),
        BillingStatus::Pending,
        "not billed yet",
    );
    check(
        &[],
        &[],
        at(17, 9),
        BillingStatus::MissingUnbilled,
        "not on the unbilled lines 48 hours",
    );
    // The month's invoice was issued after the order without it: missing at once.
    let issued = at(31, 0) + Duration::days(8);
    check(
        &[],
        &[invoice_source(issued, true)],
        issued,
        BillingStatus::Missing,
        "although invoice G016907411",
    );
    // An invoice issued before the order proves nothing about it.
    check(
        &[],
        &[invoice_source(at(10, 0), true)],
        at(14, 10),
        BillingStatus::Pending,
        "not billed yet",
    );
    // Past the invoice deadline (8th of June + 3 days) with no invoice read: missing.
    check(
        &[],
        &[],
        at(31, 0) + Duration::days(12),
        BillingStatus::Missing,
        "its invoice was due by 2026-06-11",
    );
    // A source cut short proves no absence.
    check(
        &[],
        &[invoice_source(issued, false)],
        issued,
        BillingStatus::Pending,
        "could not be read to its end",
    );
}

#[test]
fn bad_data_never_matches() {
    let issued = at(31, 0) + Duration::days(8);
    let sources = [invoice_source(issued, true)];
    for (edit, says) in [
        (
            json!({"subtotal": "12,34.5x"}),
            "subtotal \"12,34.5x\" is not a number",
        ),
        (
            json!({"currency": "XQZ"}),
            "currency \"XQZ\" is not an ISO 4217 currency",
        ),
        (json!({"billableQuantity": {"n": 2}}), "billablequantity"),
    ] {
        let bad = line("5b0e8c2d41a7", |v| {
            for (k, val) in edit.as_object().expect("object") {
                v[k] = val.clone();
            }
        });
        // Even next to a good line: the unreadable one could be a second charge.
        check(
            &[line("5b0e8c2d41a7", |_| {}), bad],
            &sources,
            issued,
            BillingStatus::Unreadable,
            says,
        );
    }
}

#[test]
fn lines_no_purchase_explains_are_unexpected_with_the_likely_twin() {
    let issued = at(31, 0) + Duration::days(8);
    let purchases = vec![purchase("p1", "kPz3LongOrderId", "5b0e8c2d41a7", 2)];
    let lines: Vec<StagedLine> = [
        line("5b0e8c2d41a7", |_| {}),
        // The same purchase made again elsewhere 2 hours later.
        line("0aaaaaaaaaa1", |v| {
            v["orderDate"] = json!("2026-05-14T11:00:00Z")
        }),
        // Something else for the same customer.
        line("0aaaaaaaaaa2", |v| {
            v["productId"] = json!("DG7GMGF0DWTL");
        }),
        // Another partner customer's line: not ours to judge.
        line("0aaaaaaaaaa3", |v| {
            v["customerId"] = json!("11111111-2222-3333-4444-555555555555")
        }),
    ]
    .iter()
    .enumerate()
    .map(|(seq, v)| StagedLine {
        source: "invoice:G016907411".into(),
        seq: seq as i64,
        line: BillingLine::read(v, LineSource::V1).expect("a good line"),
    })
    .collect();
    let verdicts = classify(
        &purchases,
        &lines,
        &[],
        &[invoice_source(issued, true)],
        issued,
        Timing::default(),
    );
    assert_eq!(verdicts.purchases[0].status, BillingStatus::Matched);
    assert!(verdicts.purchases[0].final_);
    let kinds: Vec<(&str, &str)> = verdicts
        .unexpected
        .iter()
        .map(|u| (u.kind.as_str(), u.order_id.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("duplicate_suspected", "0aaaaaaaaaa1"),
            ("unknown_origin", "0aaaaaaaaaa2")
        ]
    );
    let twin = &verdicts.unexpected[0].explanation;
    assert!(
        twin.contains("kPz3LongOrderId") && twin.contains("cannot be cancelled through the API"),
        "{twin}"
    );
}

#[test]
fn a_billed_line_supersedes_the_same_charge_still_in_an_old_unbilled_snapshot() {
    let issued = at(31, 0) + Duration::days(8);
    let purchases = vec![purchase("p1", "kPz3LongOrderId", "5b0e8c2d41a7", 2)];
    let billed = BillingLine::read(&line("5b0e8c2d41a7", |_| {}), LineSource::V1).expect("line");
    let unbilled = BillingLine::read(
        &line("5b0e8c2d41a7", |v| v["invoiceNumber"] = json!("")),
        LineSource::V1,
    )
    .expect("line");
    let lines = vec![
        StagedLine {
            source: "invoice:G016907411".into(),
            seq: 0,
            line: billed,
        },
        StagedLine {
            source: "unbilled:USD:2026-05".into(),
            seq: 0,
            line: unbilled,
        },
    ];
    let verdicts = classify(
        &purchases,
        &lines,
        &[],
        &[invoice_source(issued, true)],
        issued,
        Timing::default(),
    );
    assert_eq!(
        verdicts.purchases[0].status,
        BillingStatus::Matched,
        "{verdicts:#?}"
    );
    assert!(verdicts.unexpected.is_empty());
}
