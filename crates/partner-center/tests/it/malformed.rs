//! Malformed and odd responses, table-driven: each is served by the simulator and the client's
//! classification is snapshotted. None may panic; the ones that leave a side effect in doubt
//! must come out as `outcome_unknown`.

use pcsaga_partner_center::{Client, RequestId};
use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig};

use crate::support::{self, cid, CUSTOMER};

fn respond(
    status: u16,
    body: &str,
    content_type: Option<&str>,
    retry_after: Option<&str>,
) -> Fault {
    Fault::Respond {
        status,
        body: body.to_owned(),
        repeat: 1,
        content_type: content_type.map(str::to_owned),
        retry_after: retry_after.map(str::to_owned),
        processed: false,
    }
}

/// One case: a name, whether it hits a write (checkout) or a read (get order), and the fault.
fn cases() -> Vec<(&'static str, bool, Fault)> {
    let json = Some("application/json");
    let html = Some("text/html");
    vec![
        ("truncated JSON, 200", true, Fault::Malformed),
        ("truncated JSON on a read", false, Fault::Malformed),
        ("HTML with 200", true, respond(200, "<html><body>Service maintenance</body></html>", html, None)),
        ("HTML with 200 on a read", false, respond(200, "<html></html>", html, None)),
        ("empty body, 200", true, respond(200, "", json, None)),
        ("empty body, 204", true, respond(204, "", None, None)),
        ("null body", false, respond(200, "null", json, None)),
        ("an array instead of an object", false, respond(200, "[]", json, None)),
        ("a JSON string", true, respond(200, "\"success\"", json, None)),
        ("a byte-order mark before the JSON", false, respond(200, "\u{feff}{\"id\":\"o\"}", json, None)),
        ("wrong type for a list", true, respond(200, "{\"orders\": 5}", json, None)),
        ("null id", false, respond(200, "{\"id\": null, \"status\": \"completed\"}", json, None)),
        ("missing fields", false, respond(200, "{}", json, None)),
        ("unknown enum value", false, respond(200, "{\"id\":\"o\",\"status\":\"Exploded\",\"billingCycle\":\"lunar\"}", json, None)),
        ("unknown extra fields, 201", true, respond(201, "{\"orders\":[],\"orderErrors\":[],\"future\":{\"x\":1}}", json, None)),
        ("valid JSON sent as text/plain", false, respond(200, "{\"id\":\"o\",\"status\":\"pending\"}", Some("text/plain"), None)),
        ("huge body (17 MiB)", false, Fault::Respond { status: 200, body: "x".repeat(1024), repeat: 17 * 1024, content_type: json.map(str::to_owned), retry_after: None, processed: false }),
        ("connection dropped mid-body", true, Fault::BodyDrop),
        ("connection dropped mid-body on a read", false, Fault::BodyDrop),
        ("429, Retry-After in seconds", true, Fault::Throttle { retry_after_s: 9, http_date: false }),
        ("429, Retry-After as an HTTP date", false, Fault::Throttle { retry_after_s: 120, http_date: true }),
        ("429, negative Retry-After", false, respond(429, "{\"statusCode\":429,\"message\":\"Rate limit is exceeded.\"}", json, Some("-5"))),
        ("429, absurd Retry-After", false, respond(429, "{}", json, Some("99999999"))),
        ("429, garbage Retry-After, seconds in the message", false, respond(429, "{\"statusCode\":429,\"message\":\"Rate limit is exceeded. Try again in 7 seconds.\"}", json, Some("soon"))),
        ("429 with an HTML body and no Retry-After", true, respond(429, "<html>slow down</html>", html, None)),
        ("500 with an HTML body", true, respond(500, "<html>oops</html>", html, None)),
        ("503 with an empty body and a Retry-After", false, respond(503, "", None, Some("30"))),
        ("502 with an error code", true, respond(502, "{\"code\":\"800003\",\"description\":\"bad gateway\",\"source\":\"PartnerFD\"}", json, None)),
        ("401 with HTML, twice", false, respond(401, "<html>denied</html>", html, None)),
        ("404 with HTML", false, respond(404, "<html>not here</html>", html, None)),
        ("400 that is not JSON", true, respond(400, "Bad Request", Some("text/plain"), None)),
        ("409 with a numeric code 800064", true, respond(409, "{\"code\":800064,\"description\":\"busy\",\"source\":\"PartnerFD\"}", json, None)),
        ("400 with a numeric code 800065", true, respond(400, "{\"code\":800065,\"description\":\"submitted\",\"source\":\"PartnerFD\"}", json, None)),
        ("200 carrying an error code (400072)", false, respond(200, "{\"code\":\"400072\",\"description\":\"This item isn't available\",\"source\":\"PartnerFD\"}", json, None)),
        ("418, an unexpected status", true, respond(418, "{\"code\":\"1\",\"description\":\"teapot\",\"source\":\"x\"}", json, None)),
    ]
}

#[tokio::test]
async fn every_malformed_response_is_classified() {
    let sim = support::sim(SimConfig::default()).await;
    let client: Client = support::client(&sim);
    let mut rows = vec![
        "| case | call | class | status | code | retry after |".to_owned(),
        "|---|---|---|---|---|---|".to_owned(),
    ];
    for (name, write, fault) in cases() {
        let endpoint = if write { "checkout" } else { "get_order" };
        sim.set_faults(FaultPlan {
            seed: 0,
            rules: vec![FaultRule {
                endpoint: endpoint.into(),
                probability: 1.0,
                after: 0,
                limit: None,
                fault,
            }],
        })
        .expect("plan");
        let outcome = if write {
            client
                .checkout(
                    cid(),
                    RequestId::new(),
                    CUSTOMER,
                    "3655b1a0-b1c9-4268-9824-577fdbc4d0be",
                )
                .await
                .map(|_| ())
        } else {
            client.get_order(cid(), CUSTOMER, "o").await.map(|_| ())
        };
        let row = match outcome {
            Ok(()) => format!("| {name} | {endpoint} | ok | | | |"),
            Err(e) => format!(
                "| {name} | {endpoint} | {} | {} | {} | {} |",
                e.class(),
                e.status().map(|s| s.to_string()).unwrap_or_default(),
                e.code().unwrap_or(""),
                // An HTTP date is read against our clock: round it so the snapshot is stable.
                e.retry_after()
                    .map(|d| match d.as_secs() {
                        s @ 61..=3599 => format!("~{}s", (s + 5) / 10 * 10),
                        s => format!("{s}s"),
                    })
                    .unwrap_or_default()
            ),
        };
        rows.push(row);
    }
    assert!(rows.len() >= 32, "at least 30 cases");
    insta::assert_snapshot!(rows.join("\n"));
}
