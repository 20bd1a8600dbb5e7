//! Contexts as earlier releases wrote them still decode: every purchase in flight on the day
//! of an upgrade must be continued by the new binary, or listed by `pcsaga check-upgrade`.
//!
//! `tests/fixtures/contexts/schema-N/` holds saga rows (state, definition, context schema,
//! input, context) whose context is in schema N (taken from a demo run of the release that
//! introduced it: an RI with registration and entitlements, a software subscription whose
//! checkout reply was lost, perpetual software, a two-item purchase, a failed one). A change
//! that makes one of them fail to decode, or decode into something that no longer encodes back
//! to the same JSON (a field renamed or dropped), fails here: bump the context schema, teach
//! `decode` the old shape, and commit fixtures of the new one.

use std::path::{Path, PathBuf};

use chrono::Utc;
use pcsaga_engine::{SagaRecord, SagaStatus, Workflow};
use pcsaga_purchase::{PurchaseRequest, PurchaseWorkflow};
use serde_json::Value;

fn fixtures(schema: u32) -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/fixtures/contexts/schema-{schema}"));
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: keep the fixtures of every context schema",
            dir.display()
        )
    });
    let mut docs: Vec<(PathBuf, Value)> = entries
        .map(|entry| {
            let path = entry.expect("entry").path();
            let doc =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
            (path, doc)
        })
        .collect();
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    docs
}

/// The saga row a fixture describes.
fn row(doc: &Value) -> SagaRecord {
    let number = |key: &str| {
        doc[key]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .expect(key)
    };
    let now = Utc::now();
    SagaRecord {
        id: "fixture".into(),
        workflow: pcsaga_purchase::WORKFLOW_NAME.into(),
        idempotency_key: "fixture".into(),
        state: doc["state"].as_str().expect("state").into(),
        status: SagaStatus::Active,
        context: doc["context"].to_string(),
        input: doc["input"].as_str().expect("input").into(),
        customer_id: None,
        attempt: 0,
        total_attempts: 0,
        state_entered_at: now,
        next_run_at: Some(now),
        lease_owner: None,
        lease_expires_at: None,
        version: 1,
        created_at: now,
        updated_at: now,
        last_error: None,
        wait_reason: None,
        definition: number("definition"),
        context_schema: number("contextSchema"),
    }
}

#[test]
fn contexts_of_every_schema_this_binary_knows_still_decode() {
    let workflow = PurchaseWorkflow::offline();
    let mut checked = 0;
    for schema in 1..=workflow.context_schema() {
        for (path, doc) in fixtures(schema) {
            let saga = row(&doc);
            assert_eq!(saga.context_schema, schema, "{}", path.display());
            let (state, context) = workflow
                .continues(&saga)
                .unwrap_or_else(|why| panic!("{}: {why}", path.display()));
            assert_eq!(state.name(), saga.state, "{}", path.display());
            // Whatever the schema, the request is the one the saga was submitted with.
            let submitted: PurchaseRequest = serde_json::from_str(&saga.input).expect("input");
            assert_eq!(context.request, submitted, "{}", path.display());
            if schema == workflow.context_schema() {
                assert_eq!(
                    serde_json::to_value(&context).expect("encodes"),
                    doc["context"],
                    "{}: decoding lost or renamed something",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "fixtures found: {checked}");
}

#[test]
fn a_newer_release_is_not_continued() {
    let workflow = PurchaseWorkflow::offline();
    let (_, doc) = fixtures(workflow.context_schema())
        .into_iter()
        .next()
        .expect("a fixture");
    let mut saga = row(&doc);
    saga.definition = workflow.definition() + 1;
    let why = workflow.continues(&saga).expect_err("refused");
    assert!(why.contains("newer release (workflow definition"), "{why}");
    let mut saga = row(&doc);
    saga.context_schema = workflow.context_schema() + 1;
    let why = workflow.continues(&saga).expect_err("refused");
    assert!(why.contains("newer release (context schema"), "{why}");
    let mut saga = row(&doc);
    saga.state = "Reconciliation".into();
    let why = workflow.continues(&saga).expect_err("refused");
    assert!(
        why.contains("\"Reconciliation\" is not one this binary knows"),
        "{why}"
    );
}
