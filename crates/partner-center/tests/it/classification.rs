//! The classification table: every documented status/code pair, served by the simulator,
//! mapped to the class the engine acts on. One row per case; `check` does the rest.

use pcsaga_partner_center::{ErrorClass, RequestId};
use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig};

use crate::support::{self, cid, CUSTOMER};

/// Serves `status` with `code` on every checkout and asserts the class of the client's error.
async fn check(status: u16, code: &str, expected: ErrorClass) {
    let sim = support::sim(SimConfig::default()).await;
    sim.set_faults(FaultPlan {
        seed: 0,
        rules: vec![FaultRule {
            endpoint: "checkout".to_owned(),
            probability: 1.0,
            after: 0,
            limit: None,
            fault: Fault::Status {
                status,
                code: Some(code.to_owned()),
            },
        }],
    })
    .expect("plan");
    let client = support::client(&sim);
    let err = client
        .checkout(
            cid(),
            RequestId::new(),
            CUSTOMER,
            "3655b1a0-b1c9-4268-9824-577fdbc4d0be",
        )
        .await
        .expect_err("served an error");
    assert_eq!(err.class(), expected, "HTTP {status} code {code}: {err}");
    assert_eq!(err.status(), Some(status));
    if status != 429 {
        assert_eq!(err.code(), Some(code), "the code is kept");
    }
}

#[tokio::test]
async fn every_status_and_code_is_classified() {
    let table: &[(u16, &str, ErrorClass)] = &[
        (400, "800002", ErrorClass::Business),
        (400, "800009", ErrorClass::Business),
        (400, "800030", ErrorClass::Business),
        (400, "800065", ErrorClass::AlreadySubmitted),
        (401, "400", ErrorClass::AuthExpired),
        (401, "800001", ErrorClass::AuthExpired),
        (403, "800019", ErrorClass::Business),
        (403, "800069", ErrorClass::Business),
        (403, "900121", ErrorClass::Business),
        (404, "800008", ErrorClass::NotFound),
        (404, "20000", ErrorClass::NotFound),
        (408, "800003", ErrorClass::Transient),
        (409, "800064", ErrorClass::InFlight),
        (409, "800060", ErrorClass::InFlight),
        (409, "800014", ErrorClass::Business),
        (412, "800036", ErrorClass::Business),
        (417, "800036", ErrorClass::Business),
        (429, "429", ErrorClass::Throttled),
        (500, "800003", ErrorClass::Transient),
        (500, "900192", ErrorClass::Transient),
        (501, "800031", ErrorClass::Transient),
        (502, "800003", ErrorClass::Transient),
        (503, "800003", ErrorClass::Transient),
        (504, "800003", ErrorClass::Transient),
        // The documented oddity: HTTP 200 carrying an error code.
        (200, "400072", ErrorClass::Business),
        // Codes that say "processed or in flight" keep their meaning whatever the status
        // carrying them: read as a refusal, they would record a bought purchase as failed.
        (200, "800060", ErrorClass::InFlight),
        (201, "800064", ErrorClass::InFlight),
        (400, "800064", ErrorClass::InFlight),
        (400, "800060", ErrorClass::InFlight),
        (403, "800060", ErrorClass::InFlight),
        (500, "800060", ErrorClass::InFlight),
        (409, "800065", ErrorClass::AlreadySubmitted),
        (200, "800065", ErrorClass::AlreadySubmitted),
    ];
    for (status, code, expected) in table {
        check(*status, code, *expected).await;
    }
}

/// A 401 is answered by one token refresh and one retry with the same request id; only a
/// second 401 is an error.
#[tokio::test]
async fn one_401_means_one_refresh_and_one_retry() {
    let sim = support::sim(SimConfig::default()).await;
    sim.set_faults(FaultPlan {
        seed: 0,
        rules: vec![FaultRule {
            endpoint: "get_product".to_owned(),
            probability: 1.0,
            after: 0,
            limit: Some(1),
            fault: Fault::Status {
                status: 401,
                code: Some("400".to_owned()),
            },
        }],
    })
    .expect("plan");
    let client = support::client(&sim);
    let reply = client
        .get_product(cid(), "DG7GMGF0DWTL", "US")
        .await
        .expect("served after a refresh");
    assert_eq!(reply.meta.http_requests, 2);
    assert_eq!(
        support::requests_to(&sim, "token").len(),
        2,
        "one token, then one refresh"
    );
    let calls = support::requests_to(&sim, "get_product");
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[0].request_id, calls[1].request_id,
        "the retry reuses the request id"
    );
}

/// A 2xx error body is an error even where every field of the expected resource has a default
/// (a collection, a checkout result): read as the resource, it would be an empty list of
/// orders, and a purchase whose orders exist would look like one that bought nothing.
#[tokio::test]
async fn an_error_body_is_never_read_as_an_empty_resource() {
    let cases: &[(&str, &str, Option<ErrorClass>)] = &[
        (
            "{\"code\":\"800060\",\"description\":\"order in progress\"}",
            "800060",
            Some(ErrorClass::InFlight),
        ),
        (
            "{\"code\":400072,\"description\":\"not available\",\"source\":\"PartnerFD\"}",
            "400072",
            Some(ErrorClass::Business),
        ),
        // Only one of the two keys: a collection with an unknown field, read as the resource.
        ("{\"code\":\"1\",\"totalCount\":0,\"items\":[]}", "1", None),
    ];
    for (body, code, expected) in cases {
        let sim = support::sim(SimConfig::default()).await;
        sim.set_faults(FaultPlan {
            seed: 0,
            rules: vec![FaultRule {
                endpoint: "list_orders".to_owned(),
                probability: 1.0,
                after: 0,
                limit: None,
                fault: Fault::Respond {
                    status: 200,
                    body: (*body).to_owned(),
                    repeat: 1,
                    content_type: Some("application/json".to_owned()),
                    retry_after: None,
                    processed: false,
                },
            }],
        })
        .expect("plan");
        let client = support::client(&sim);
        let outcome = client.list_orders(cid(), CUSTOMER, None).await;
        match (expected, outcome) {
            (Some(class), Err(err)) => {
                assert_eq!(err.class(), *class, "{body}: {err}");
                assert_eq!(err.code(), Some(*code), "{body}: the code is kept");
            }
            (None, Ok(reply)) => assert!(reply.value.is_empty(), "{body}"),
            (expected, outcome) => panic!("{body}: expected {expected:?}, got {outcome:?}"),
        }
    }
}
