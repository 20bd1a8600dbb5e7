//! Contexts as earlier releases wrote them still decode: every purchase in flight on the day
//! of an upgrade must be continued by the new binary, or listed by `pcsaga check-upgrade`.
//!
//! `tests/fixtures/contexts/definition-N/` holds contexts written at workflow definition N
//! (taken from a demo run of the release that introduced it: an RI with registration and
//! entitlements, a software subscription whose checkout reply was lost, perpetual software,
//! a two-item purchase, a failed one). A change that makes one of them fail to decode, or
//! decode into something that no longer encodes back to the same JSON (a field renamed or
//! dropped), fails here: bump `definition` and teach `continues` to read the old shape.

use std::path::Path;

use pcsaga_engine::Workflow;
use pcsaga_purchase::PurchaseWorkflow;
use serde_json::Value;

#[test]
fn contexts_of_every_definition_this_binary_knows_still_decode() {
    let workflow = PurchaseWorkflow::offline();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/contexts");
    let mut checked = 0;
    for definition in 1..=workflow.definition() {
        let dir = root.join(format!("definition-{definition}"));
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: keep the fixtures of every definition",
                dir.display()
            )
        });
        for entry in entries {
            let path = entry.expect("entry").path();
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
            let state = doc["state"].as_str().expect("state");
            let context = doc["context"].to_string();
            let (decoded_state, decoded) = workflow
                .continues(state, definition, &context)
                .unwrap_or_else(|why| panic!("{}: {why}", path.display()));
            assert_eq!(decoded_state.name(), state, "{}", path.display());
            if definition == workflow.definition() {
                assert_eq!(
                    serde_json::to_value(&decoded).expect("encodes"),
                    doc["context"],
                    "{}: decoding lost or renamed something",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "fixtures found: {checked}");
}

#[test]
fn a_definition_from_a_newer_release_is_not_continued() {
    let workflow = PurchaseWorkflow::offline();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/contexts/definition-1");
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("demo-perpetual-0003.json")).expect("fixture"),
    )
    .expect("JSON");
    let why = workflow
        .continues(
            "EntitlementFetch",
            workflow.definition() + 1,
            &doc["context"].to_string(),
        )
        .expect_err("refused");
    assert!(why.contains("newer release"), "{why}");
    let why = workflow
        .continues(
            "Reconciliation",
            workflow.definition(),
            &doc["context"].to_string(),
        )
        .expect_err("refused");
    assert!(
        why.contains("\"Reconciliation\" is not one this binary knows"),
        "{why}"
    );
}
