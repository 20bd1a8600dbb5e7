//! One module per verb.

pub mod bench;
pub mod billing;
pub mod console;
pub mod daemon;
pub mod demo;
pub mod inspect;
pub mod operator;
pub mod packaging;
pub mod sim;
pub mod submit;
pub mod transfer;
pub mod workflow;

use crate::cli::Global;
use crate::exit::{Exit, Failed};

/// `pcsaga migrate`: creates or upgrades the schema, then runs SQLite's quick check, so a
/// damaged file is reported here rather than "at the current schema".
pub async fn migrate(
    global: &Global,
    json: bool,
    file: &crate::config::FileConfig,
) -> Result<Exit, Failed> {
    let (store, path) = crate::app::open_store(global.db.as_deref(), file).await?;
    store.quick_check().await?;
    let counts = pcsaga_engine::Store::count_by_status(&store).await?;
    if json {
        crate::output::print_json(
            &serde_json::json!({"database": path, "purchases": counts.values().sum::<u64>(), "quickCheck": "ok"}),
        );
        return Ok(Exit::Ok);
    }
    crate::output::print(&format!(
        "database {} is at the current schema ({} purchases); quick check ok\n",
        path.display(),
        counts.values().sum::<u64>()
    ));
    Ok(Exit::Ok)
}

/// Most findings `check` lists.
const MAX_FINDINGS: u32 = 100;

/// `pcsaga check`.
pub async fn check(
    global: &Global,
    json: bool,
    file: &crate::config::FileConfig,
) -> Result<Exit, Failed> {
    let (store, path) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::ReadOnly).await?;
    let integrity = store.integrity_check().await?;
    let workflow = pcsaga_purchase::PurchaseWorkflow::offline();
    let findings = if integrity == "ok" {
        store
            .check_invariants(
                &[
                    (
                        pcsaga_engine::Workflow::name(&workflow),
                        pcsaga_engine::Workflow::states(&workflow),
                    ),
                    (
                        pcsaga_billing::WORKFLOW_NAME,
                        <pcsaga_billing::State as pcsaga_engine::SagaState>::names(),
                    ),
                ],
                MAX_FINDINGS,
            )
            .await?
    } else {
        Vec::new()
    };
    let sound = integrity == "ok" && findings.is_empty();
    if json {
        crate::output::print_json(&serde_json::json!({
            "database": path, "integrity": integrity, "invariants": findings, "sound": sound,
        }));
    } else {
        let mut text = format!(
            "database {}\nintegrity check: {integrity}\n",
            path.display()
        );
        if integrity == "ok" {
            if findings.is_empty() {
                text.push_str("engine invariants: ok\n");
            } else {
                text.push_str(&format!("engine invariants: {} broken\n", findings.len()));
                for f in &findings {
                    text.push_str(&format!("  {f}\n"));
                }
            }
        }
        crate::output::print(&text);
    }
    if sound {
        return Ok(Exit::Ok);
    }
    let db = crate::output::db_flag(global);
    say!(
        "the database is not sound: stop the daemons, keep this file for support, and restore the last good backup (`pcsaga{db} backup --to FILE` makes one while daemons run)"
    );
    Ok(Exit::Database)
}

/// `pcsaga check-upgrade`: the active purchases this binary cannot continue.
pub async fn check_upgrade(
    global: &Global,
    json: bool,
    file: &crate::config::FileConfig,
) -> Result<Exit, Failed> {
    let (store, path) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::ReadOnly).await?;
    let engine = crate::app::offline_engine(store);
    let incompatible = engine.incompatible().await?;
    if json {
        crate::output::print_json(&serde_json::json!({
            "database": path,
            "binary": env!("CARGO_PKG_VERSION"),
            "definition": pcsaga_engine::Workflow::definition(engine.workflow()),
            "incompatible": incompatible.iter().map(|(s, why)| serde_json::json!({
                "id": s.id, "state": s.state, "definition": s.definition, "reason": why,
            })).collect::<Vec<_>>(),
        }));
    } else if incompatible.is_empty() {
        crate::output::print(&format!(
            "database {}: this pcsaga ({}) can continue every active purchase\n",
            path.display(),
            env!("CARGO_PKG_VERSION")
        ));
    } else {
        let mut table = crate::output::Table::new(&["PURCHASE", "STATE", "DEFINITION", "WHY"]);
        for (saga, why) in &incompatible {
            table.row(vec![
                saga.id.clone(),
                saga.state.clone(),
                saga.definition.to_string(),
                why.clone(),
            ]);
        }
        crate::output::print(&table.render());
    }
    if incompatible.is_empty() {
        return Ok(Exit::Ok);
    }
    let db = crate::output::db_flag(global);
    say!(
        "{} active purchase(s) cannot be continued by this pcsaga ({}). Keep running the release that wrote them until they finish, or start this one with `pcsaga{db} daemon --park-incompatible` to park exactly these for an operator",
        incompatible.len(),
        env!("CARGO_PKG_VERSION")
    );
    Ok(Exit::Incompatible)
}

/// `pcsaga backup --to FILE`.
pub async fn backup(
    global: &Global,
    to: &std::path::Path,
    json: bool,
    file: &crate::config::FileConfig,
) -> Result<Exit, Failed> {
    let (store, path) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::ReadOnly).await?;
    let started = std::time::Instant::now();
    store.backup(to).await?;
    // The copy is checked before we say it is good.
    let mut copy = pcsaga_engine::SqliteConfig::new(to);
    copy.readers = 1;
    let copy = pcsaga_engine::SqliteStore::open(copy).await?;
    copy.quick_check().await?;
    let purchases: u64 = pcsaga_engine::Store::count_by_status(&copy)
        .await?
        .values()
        .sum();
    let bytes = std::fs::metadata(to).map(|m| m.len()).unwrap_or(0);
    if json {
        crate::output::print_json(&serde_json::json!({
            "database": path, "backup": to, "purchases": purchases, "bytes": bytes,
            "seconds": started.elapsed().as_secs_f64(),
        }));
    } else {
        crate::output::print(&format!(
            "backed up {} to {} ({purchases} purchases, {bytes} bytes, {:.1} s); quick check ok\n",
            path.display(),
            to.display(),
            started.elapsed().as_secs_f64()
        ));
    }
    Ok(Exit::Ok)
}
