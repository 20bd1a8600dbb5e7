//! A Partner Center client pcsaga did not write, against the simulator.
//!
//! `partnercenterservices` 0.1.2 (an AutoRest-generated Python SDK on msrest, MIT) is installed
//! from PyPI at test time, pinned (`tests/third_party/requirements.txt`), into the target
//! directory, never into the repository. `tests/third_party/flow.py` drives a purchase through
//! its methods and prints what each returned, as the client deserialized it. Methods covered:
//!
//! - `getvversioncustomerscustomer.id` — `GET /v1/customers/{c}`
//! - `getvversioncustomerscustomer.id6` — `GET /v1/customers/{c}/subscriptions/{s}` (the Azure
//!   subscription before registration, and the subscription the purchase created)
//! - `postvversioncustomerscustomer.idregistrations` — `POST …/subscriptions/{s}/registrations`
//! - `getvversioncustomerscustomer.idregistrationstatus` — `GET …/registrationstatus`
//! - `postvversioncustomerscustomer.idcheckout` — `POST …/carts/{cart}/checkout`
//! - `getvversioncustomerscustomer.id5` — `GET /v1/customers/{c}/orders/{o}`
//! - `getvversioncustomerscustomer.value7` — `GET /v1/customers/{c}/orders`
//! - `getvversioncustomerscustomer.value9` — `GET /v1/customers/{c}/subscriptions`
//!
//! plus, with plain requests as the client's users write them (it has no such methods): the
//! token from `/{domain}/oauth2/token` with the tenant's domain name, the customer-scoped
//! availabilities and the cart. Needs `python3` with `pip` and PyPI: without them the test
//! fails, saying so (`.ci/run` checks them first).

use std::path::{Path, PathBuf};
use std::process::Command;

use pcsaga_simulator::SimConfig;
use serde_json::{json, Value};

use crate::support::{Harness, SUBSCRIPTION};

const GB_CUSTOMER: &str = "b0d70a69-4c42-4b27-b17b-91a835d8686a";

fn third_party_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/third_party")
}

/// Installs the pinned client once per target directory (a marker holds the requirements it
/// was installed from); returns the directory to put on `PYTHONPATH`.
fn installed_client() -> PathBuf {
    let requirements = third_party_dir().join("requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("requirements.txt");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("third-party-python");
    let marker = target.join(".installed-from");
    if std::fs::read_to_string(&marker).is_ok_and(|had| had == wanted) {
        return target;
    }
    let _ = std::fs::remove_dir_all(&target);
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg("--target")
        .arg(&target)
        .arg("-r")
        .arg(&requirements)
        .output()
        .expect("python3 runs: this test needs python3 with pip (see .ci/run)");
    assert!(
        output.status.success(),
        "pip could not install the third-party client from PyPI:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&marker, wanted).expect("marker");
    target
}

#[tokio::test]
async fn a_third_party_python_client_buys_through_the_simulator() {
    let lib = installed_client();
    let h = Harness::start(SimConfig {
        order_list_lag_s: 0,
        ..SimConfig::default()
    })
    .await;
    let c = h.sim.config().clone();
    let base = h.sim.base_url();
    let token_url = format!("{base}/{}/oauth2/token", c.tenant_domains[0]);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(third_party_dir().join("flow.py"))
            .args([
                &base,
                &token_url,
                &c.client_id,
                &c.client_secret,
                &c.resource,
                GB_CUSTOMER,
                SUBSCRIPTION,
            ])
            .env("PYTHONPATH", &lib)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python3 runs")
    })
    .await
    .expect("task");
    assert!(
        output.status.success(),
        "the client's flow failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("the flow prints JSON");

    assert_eq!(
        out["customer"],
        json!({"id": GB_CUSTOMER, "tenantId": GB_CUSTOMER, "companyName": "Northwind Traders", "country": "GB", "relationship": "reseller"})
    );
    assert_eq!(
        out["azureSubscription"],
        json!({"id": SUBSCRIPTION, "status": "active", "offerName": "Azure plan"})
    );
    assert_eq!(out["registration"]["status"], 202);
    assert!(
        out["registration"]["location"].as_str().is_some_and(
            |l| l.ends_with(&format!("/subscriptions/{SUBSCRIPTION}/registrationstatus"))
        )
    );
    assert_eq!(out["registrationStatus"], "Registering");
    let checkout = &out["checkout"];
    assert_eq!(
        (
            checkout["orders"].clone(),
            checkout["currencyCode"].clone(),
            checkout["currencySymbol"].clone()
        ),
        (json!(1), json!("GBP"), json!("£"))
    );
    assert!(
        checkout["creationDate"].as_str().is_some(),
        "the client parsed the date"
    );
    let order_id = checkout["orderId"].as_str().expect("order id");
    assert_eq!(out["order"]["id"], json!(order_id));
    assert_eq!(out["orders"]["ids"], json!([order_id]));
    let line = &checkout["lines"][0];
    assert_eq!(line["quantity"], 3);
    assert_eq!(
        out["boughtSubscription"],
        json!({"id": line["subscriptionId"], "offerId": line["offerId"], "quantity": 3, "status": "active", "orderId": order_id})
    );
    let subscriptions = out["subscriptions"].as_array().expect("subscriptions");
    assert!(
        subscriptions.contains(&json!(SUBSCRIPTION))
            && subscriptions.contains(&line["subscriptionId"]),
        "{subscriptions:?}"
    );

    // Bought once, and every call came through the client's connection as the spec's routes.
    let ledger = h.sim.ledger();
    assert_eq!(ledger.orders.len(), 1);
    let endpoints: std::collections::BTreeSet<String> =
        h.sim.requests().into_iter().map(|r| r.endpoint).collect();
    for endpoint in [
        "token",
        "get_customer",
        "get_subscription",
        "register",
        "registration_status",
        "customer_list_availabilities",
        "create_cart",
        "checkout",
        "get_order",
        "list_orders",
        "list_subscriptions",
    ] {
        assert!(
            endpoints.contains(endpoint),
            "{endpoint} not called: {endpoints:?}"
        );
    }
    assert!(
        h.sim
            .requests()
            .iter()
            .all(|r| r.status.is_some_and(|s| s < 400)),
        "no call was refused: {:?}",
        h.sim
            .requests()
            .iter()
            .filter(|r| r.status.is_some_and(|s| s >= 400))
            .map(|r| (r.method.clone(), r.path.clone(), r.status))
            .collect::<Vec<_>>()
    );
}
