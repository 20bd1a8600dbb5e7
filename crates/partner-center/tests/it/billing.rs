//! The billing calls (E22-E29) through the client and the simulator: paging by continuation
//! token to the empty last page, the Graph export from start to file, a file cut short, the
//! statement PDF, and the audiences of the two kinds of token.

use std::collections::BTreeMap;

use pcsaga_partner_center::billing::graph::ManifestRef;
use pcsaga_partner_center::billing::{
    BillingLine, ExportOperation, ExportRequest, LineQuery, LineSource, Period,
};
use pcsaga_partner_center::models::{NewOrder, NewOrderLineItem};
use pcsaga_partner_center::{Client, ClientConfig, ErrorClass, RequestId};
use pcsaga_simulator::{SimConfig, Simulator};

use crate::support::{self, cid, CUSTOMER};

fn config() -> SimConfig {
    SimConfig {
        order_completion_s: 0,
        order_list_lag_s: 0,
        ..SimConfig::default()
    }
}

fn client(sim: &Simulator) -> Client {
    let mut config: ClientConfig = support::client_config(sim);
    config.graph_url = sim.graph_url();
    Client::new(config, support::credentials(sim, true)).expect("client")
}

/// Buys `n` perpetual-software orders of 1..=n units.
async fn buy(client: &Client, n: i64) {
    for quantity in 1..=n {
        let body = NewOrder {
            reference_customer_id: CUSTOMER.to_owned(),
            billing_cycle: "one_time".to_owned(),
            line_items: vec![NewOrderLineItem {
                line_item_number: 0,
                offer_id: "DG7GMGF0DWTL:0001:DG7GMGF0DSFM".to_owned(),
                quantity,
                friendly_name: Some(format!("pcs-billing-{quantity}")),
                provisioning_context: BTreeMap::new(),
                partner_id_on_record: None,
                term_duration: None,
                renews_to: None,
            }],
        };
        client
            .create_order(cid(), RequestId::new(), CUSTOMER, &body)
            .await
            .expect("E21");
    }
}

/// Reads every page of `query`; the lines and the number of requests.
async fn all_lines(client: &Client, query: &LineQuery, size: u32) -> (Vec<BillingLine>, u32) {
    let mut lines = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = client
            .one_time_lines(cid(), query, size, token.as_deref())
            .await
            .expect("a page")
            .value;
        pages += 1;
        for item in &page.items {
            lines.push(BillingLine::read(item, LineSource::V1).expect("a good line"));
        }
        match page.continuation {
            Some(next) => token = Some(next),
            None => return (lines, pages),
        }
        assert!(pages < 100, "paging never ends");
    }
}

/// E29.1 for one invoice: the operation's URL.
async fn start_export(client: &Client, invoice: &str) -> String {
    client
        .start_export(
            cid(),
            &ExportRequest::Billed {
                invoice_id: invoice.to_owned(),
            },
        )
        .await
        .expect("E29.1")
        .value
}

#[tokio::test]
async fn unbilled_then_invoiced_lines_page_to_their_end() {
    let sim = support::sim(config()).await;
    let client = client(&sim);
    buy(&client, 3).await;
    let unbilled = LineQuery::Unbilled {
        currency: "USD".into(),
        period: Period::Current,
    };
    // Three lines, two per page: a full page, then the last; a page boundary exactly at the end
    // costs one empty page more (addendum §14.5).
    let (lines, pages) = all_lines(&client, &unbilled, 2).await;
    assert_eq!((lines.len(), pages), (3, 2));
    let (_, pages) = all_lines(&client, &unbilled, 3).await;
    assert_eq!(pages, 2, "3 of 3, then an empty page");
    assert!(lines.iter().all(|l| l.invoice_number.is_none()));
    let quantities: Vec<String> = lines
        .iter()
        .map(|l| l.billable_quantity.to_string())
        .collect();
    assert_eq!(quantities, ["1", "2", "3"]);
    // Closed: the lines leave E27 and are on the invoice.
    let invoices = sim.close_billing_period();
    let (left, _) = all_lines(&client, &unbilled, 2).await;
    assert!(left.is_empty());
    let listed = client.list_invoices(cid()).await.expect("E24").value;
    assert_eq!(
        listed.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        invoices
    );
    let query = LineQuery::Invoice {
        invoice_id: invoices[0].clone(),
    };
    let (billed, _) = all_lines(&client, &query, 2000).await;
    assert_eq!(billed.len(), 3);
    assert!(billed
        .iter()
        .all(|l| l.invoice_number.as_deref() == Some(invoices[0].as_str())));
    let total: rust_decimal::Decimal = billed.iter().map(|l| l.total).sum();
    assert_eq!(
        Some(total),
        listed[0].total_charges,
        "the invoice total is its lines'"
    );
    // Every line satisfies the reconciliation file's formula.
    assert!(billed
        .iter()
        .all(|l| l.formula_subtotal() == Some(l.subtotal)));
    // The balance is the invoice's.
    let balance = client.account_balance(cid()).await.expect("E22").value;
    assert_eq!(balance.balance_amount, Some(total));
    let summaries = client.invoice_summaries(cid()).await.expect("E23").value;
    assert_eq!(summaries.len(), 1);
}

#[tokio::test]
async fn a_continuation_token_is_only_good_for_its_own_query() {
    let sim = support::sim(config()).await;
    let client = client(&sim);
    buy(&client, 3).await;
    let current = LineQuery::Unbilled {
        currency: "USD".into(),
        period: Period::Current,
    };
    let first = client
        .one_time_lines(cid(), &current, 1, None)
        .await
        .expect("page")
        .value;
    let token = first.continuation.expect("more pages");
    let previous = LineQuery::Unbilled {
        currency: "USD".into(),
        period: Period::Previous,
    };
    let err = client
        .one_time_lines(cid(), &previous, 1, Some(&token))
        .await
        .expect_err("a token of another query");
    assert_eq!(
        (err.status(), err.code()),
        (Some(400), Some("800002")),
        "{err}"
    );
    let err = client
        .one_time_lines(cid(), &current, 1, Some("garbage"))
        .await
        .expect_err("garbage");
    assert_eq!(err.status(), Some(400), "{err}");
}

#[tokio::test]
async fn the_graph_export_runs_then_serves_its_files() {
    let sim = support::sim(SimConfig {
        billing: pcsaga_simulator::billing::BillingConfig {
            graph_lines_per_blob: 2,
            ..Default::default()
        },
        ..config()
    })
    .await;
    let client = client(&sim);
    buy(&client, 5).await;
    let invoices = sim.close_billing_period();
    let operation = start_export(&client, &invoices[0]).await;
    let mut polls = 0;
    let manifest = loop {
        polls += 1;
        match client
            .export_operation(cid(), &operation)
            .await
            .expect("E29.2")
            .value
        {
            ExportOperation::Running { retry_after } => {
                assert_eq!(
                    retry_after,
                    Some(std::time::Duration::from_secs(1)),
                    "Retry-After is read"
                );
            }
            ExportOperation::Succeeded {
                manifest: ManifestRef::Link(link),
            } => break link,
            other => panic!("{other:?}"),
        }
        assert!(polls < 10);
    };
    assert_eq!(polls, 3, "two running answers, then done");
    let manifest = client
        .export_manifest(cid(), &manifest)
        .await
        .expect("E29.3")
        .value;
    assert_eq!(manifest.blobs.len(), 3, "five lines, two per file");
    let mut lines = Vec::new();
    for i in 0..manifest.blobs.len() {
        let read = client
            .read_export_file(&manifest, i, |line| {
                lines.push(
                    BillingLine::read(&line.expect("JSON"), LineSource::V2).expect("a good record"),
                );
            })
            .await
            .expect("E29.4")
            .value;
        assert_eq!(read.cut_short, None);
    }
    let (v1, _) = all_lines(
        &client,
        &LineQuery::Invoice {
            invoice_id: invoices[0].clone(),
        },
        2000,
    )
    .await;
    let strip = |mut l: BillingLine| {
        l.source = LineSource::V1;
        l
    };
    assert_eq!(
        lines.into_iter().map(strip).collect::<Vec<_>>(),
        v1,
        "v2 reads as v1"
    );
    // An unknown invoice: the export fails with the documented "no data".
    let failed = client
        .start_export(
            cid(),
            &ExportRequest::Billed {
                invoice_id: "G999999999".into(),
            },
        )
        .await
        .expect("started")
        .value;
    match client
        .export_operation(cid(), &failed)
        .await
        .expect("polled")
        .value
    {
        ExportOperation::Failed { code, .. } => assert_eq!(code, "5000"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_file_cut_short_says_so_and_keeps_what_came_before() {
    let sim = support::sim(SimConfig {
        billing: pcsaga_simulator::billing::BillingConfig {
            truncate_blobs: true,
            graph_polls_until_done: 0,
            ..Default::default()
        },
        ..config()
    })
    .await;
    let client = client(&sim);
    buy(&client, 40).await;
    let invoices = sim.close_billing_period();
    let operation = start_export(&client, &invoices[0]).await;
    let ExportOperation::Succeeded {
        manifest: ManifestRef::Link(link),
    } = client
        .export_operation(cid(), &operation)
        .await
        .expect("E29.2")
        .value
    else {
        panic!("done at once");
    };
    let manifest = client
        .export_manifest(cid(), &link)
        .await
        .expect("E29.3")
        .value;
    let mut good = 0;
    let read = client
        .read_export_file(&manifest, 0, |line| {
            if line.is_ok() {
                good += 1;
            }
        })
        .await
        .expect("E29.4")
        .value;
    assert!(read.cut_short.is_some(), "{read:?}");
    assert!(good < 40, "{good} lines of a file cut in half");
    // A signature that does not match is refused, not served.
    let mut forged = manifest.clone();
    forged.sas_token = forged.sas_token.replace("sig=", "sig=0");
    let err = client
        .read_export_file(&forged, 0, |_| {})
        .await
        .expect_err("forged");
    assert_eq!(err.class, ErrorClass::NotFound, "{err}");
}

#[tokio::test]
async fn the_statement_is_a_pdf_and_needs_a_user() {
    let sim = support::sim(config()).await;
    let client = client(&sim);
    buy(&client, 1).await;
    let invoices = sim.close_billing_period();
    let pdf = client
        .invoice_statement(cid(), &invoices[0])
        .await
        .expect("E28")
        .value;
    assert!(pdf.starts_with(b"%PDF-"));
    assert!(String::from_utf8_lossy(&pdf).trim_end().ends_with("%%EOF"));
    assert!(String::from_utf8_lossy(&pdf).contains(&invoices[0]));
    // The `OneTime-` prefix of the invoice's links works too (ambiguity 50).
    let invoice = client
        .get_invoice(cid(), &format!("OneTime-{}", invoices[0]))
        .await
        .expect("E25")
        .value;
    assert_eq!(invoice.id, invoices[0]);
    // App-only: E25 and E28 need app+user credentials; the client says so before sending.
    let mut config = support::client_config(&sim);
    config.graph_url = sim.graph_url();
    let app_only = Client::new(config, support::credentials(&sim, false)).expect("client");
    let err = app_only
        .invoice_statement(cid(), &invoices[0])
        .await
        .expect_err("app-only");
    assert_eq!(err.class, ErrorClass::Config, "{err}");
    assert!(err.to_string().contains("refresh token"), "{err}");
}
