//! The operator's verbs: `resume`, `retry`, `attach-order` and `cancel`. Every action is
//! recorded in the purchase's history with its reason; every refusal says why and what to
//! run instead.

use pcsaga_engine::{AnyStore, Engine, SagaRecord, SagaStatus};
use pcsaga_purchase::{PurchaseContext, PurchaseWorkflow, State};
use serde_json::{json, Value};

use crate::cli::{AttachOrderArgs, CancelArgs, Global, ResumeArgs, RetryArgs, Select};
use crate::config::{ConfigError, FileConfig};
use crate::exit::{Exit, Failed};
use crate::output::{clip, db_flag, print, print_json, Table};

/// Above this many purchases, a bulk action needs `--yes`.
const BULK_CONFIRM: usize = 10;
/// Most purchases one bulk action touches.
const BULK_MAX: u32 = 10_000;

fn reason(text: &str) -> Result<&str, Failed> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Failed::new(
            Exit::InvalidInput,
            ConfigError("--reason must say why (it goes into the purchase's history)".into()),
        ));
    }
    Ok(text)
}

fn usage(message: String) -> Failed {
    Failed::new(Exit::Usage, ConfigError(message))
}

type Purchases = Engine<PurchaseWorkflow, AnyStore>;

async fn engine(global: &Global, file: &FileConfig) -> Result<(Purchases, AnyStore), Failed> {
    let (store, _) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::Existing).await?;
    Ok((crate::app::offline_engine(store.clone()), store))
}

/// Whether a daemon is running on this database, said so an operator knows whether what they
/// just changed will be picked up.
pub async fn daemon_note(global: &Global, store: &AnyStore) -> String {
    match alive_daemons(store).await {
        Ok(0) => format!(
            "no daemon is running on this database: start one with `pcsaga{} daemon`",
            db_flag(global)
        ),
        Ok(n) => format!("{n} daemon(s) running on this database will pick it up"),
        Err(_) => "whether a daemon runs on this database is unknown".to_owned(),
    }
}

/// Whether a daemon is alive at `now`: it did not say it stopped, and its last heartbeat is
/// less than three heartbeats old.
pub fn is_alive(daemon: &pcsaga_engine::DaemonRow, now: chrono::DateTime<chrono::Utc>) -> bool {
    let stale = chrono::Duration::from_std(crate::commands::daemon::HEARTBEAT * 3)
        .unwrap_or(chrono::Duration::seconds(30));
    daemon.stopped_at.is_none() && daemon.heartbeat_at.is_some_and(|at| now - at < stale)
}

/// How many daemons are alive on this database.
pub async fn alive_daemons(store: &AnyStore) -> Result<usize, pcsaga_engine::StoreError> {
    let now = chrono::Utc::now();
    Ok(store
        .daemons()
        .await?
        .iter()
        .filter(|d| is_alive(d, now))
        .count())
}

/// The purchases a bulk action selects: an id, or filters (never both).
async fn select(
    engine: &Purchases,
    id: Option<&str>,
    select: &Select,
) -> Result<Vec<SagaRecord>, Failed> {
    match (id, select.is_empty()) {
        (Some(_), false) => Err(usage(
            "give a purchase id or filters (--status, --state, --customer, --since), not both".into(),
        )),
        (None, true) => Err(usage(
            "give a purchase id, or filters (--status, --state, --customer, --since) to act on many".into(),
        )),
        (Some(id), true) => {
            let id = engine.resolve(id).await?;
            Ok(vec![engine.get(&id).await?])
        }
        (None, false) => {
            let filter = crate::commands::inspect::filter_of(
                select.status.as_deref(),
                select.state.as_deref(),
                select.customer.as_deref(),
                select.since.as_deref(),
                BULK_MAX,
            )?;
            Ok(engine.list(&filter).await?)
        }
    }
}

/// Prints what a bulk action would touch (`--dry-run`), or refuses a large one without
/// `--yes`. `Ok(true)` means: go ahead.
fn confirm(
    global: &Global,
    verb: &str,
    chosen: &[SagaRecord],
    dry_run: bool,
    yes: bool,
    json_out: bool,
) -> Result<bool, Failed> {
    if dry_run {
        if json_out {
            print_json(&Value::Array(
                chosen
                    .iter()
                    .map(|s| json!({"id": s.id, "status": s.status, "state": s.state, "result": "would be touched"}))
                    .collect(),
            ));
        } else {
            let mut table = Table::new(&["ID", "STATUS", "STATE", "LAST ERROR / WAITING FOR"]);
            for s in chosen {
                let note = s
                    .last_error
                    .clone()
                    .or_else(|| s.wait_reason.clone())
                    .unwrap_or_default();
                table.row(vec![
                    s.id.clone(),
                    s.status.to_string(),
                    s.state.clone(),
                    clip(&note, 80),
                ]);
            }
            print(&format!(
                "{verb} would touch {} purchase(s):\n{}",
                chosen.len(),
                table.render()
            ));
        }
        return Ok(false);
    }
    if chosen.len() > BULK_CONFIRM && !yes {
        return Err(usage(format!(
            "{} purchases match; add --yes to {verb} all of them (`pcsaga{} {verb} … --dry-run` lists them first)",
            chosen.len(),
            db_flag(global)
        )));
    }
    Ok(true)
}

/// Reports a bulk action's results; the exit code is 5 if any was refused.
fn report(
    global: &Global,
    verb: &str,
    results: Vec<(String, Result<SagaRecord, pcsaga_engine::Error>)>,
    note: &str,
    json_out: bool,
) -> Exit {
    let refused = results.iter().filter(|(_, r)| r.is_err()).count();
    if json_out {
        let out: Vec<Value> = results
            .iter()
            .map(|(id, r)| match r {
                Ok(s) => json!({"id": id, "result": "done", "status": s.status, "state": s.state}),
                Err(e) => json!({"id": id, "result": "refused", "error": e.to_string()}),
            })
            .collect();
        if out.len() == 1 {
            print_json(&out[0]);
        } else {
            print_json(&Value::Array(out));
        }
    } else {
        for (id, result) in &results {
            match result {
                Ok(s) => print(&format!(
                    "purchase {id}: {verb} done; now {} in {}\n",
                    s.status, s.state
                )),
                Err(e) => say!(
                    "purchase {id}: {e}\n  next: `pcsaga{} show {id}`",
                    db_flag(global)
                ),
            }
        }
        if results.len() > 1 {
            print(&format!(
                "{verb}: {} done, {refused} refused\n",
                results.len() - refused
            ));
        }
        if refused < results.len() {
            print(&format!("{note}\n"));
        }
    }
    if refused > 0 {
        Exit::Refused
    } else {
        Exit::Ok
    }
}

/// An engine error for one named purchase, with the command to look at it.
fn hinted(global: &Global, error: pcsaga_engine::Error, id: &Option<String>) -> Failed {
    let id = id.as_deref().unwrap_or("ID");
    let classified = Failed::from(anyhow::Error::new(error));
    Failed::new(
        classified.exit,
        anyhow::anyhow!(
            "{}\n  next: `pcsaga{} show {id}`",
            classified.error,
            db_flag(global)
        ),
    )
}

pub async fn resume(global: &Global, args: &ResumeArgs, file: &FileConfig) -> Result<Exit, Failed> {
    let why = reason(&args.reason)?;
    let from = match &args.from {
        Some(s) => Some(State::parse(s).ok_or_else(|| {
            Failed::new(
                Exit::InvalidInput,
                ConfigError(format!(
                    "--from {s:?}: use one of {}",
                    pcsaga_purchase::STATE_NAMES.join(", ")
                )),
            )
        })?),
        None => None,
    };
    let (engine, store) = engine(global, file).await?;
    let mut chosen = select(&engine, args.id.as_deref(), &args.select).await?;
    if args.id.is_none() {
        // In bulk, only what resume can act on.
        chosen.retain(|s| matches!(s.status, SagaStatus::Failed | SagaStatus::NeedsAttention));
    }
    if !confirm(global, "resume", &chosen, args.dry_run, args.yes, args.json)? {
        return Ok(Exit::Ok);
    }
    let mut results = Vec::new();
    for saga in chosen {
        let result = engine.resume(&saga.id, from.map(State::name), why).await;
        if args.id.is_some() {
            // One purchase named: its refusal is the command's error, with its exit code.
            results.push((
                saga.id,
                Ok(result.map_err(|e| hinted(global, e, &args.id))?),
            ));
        } else {
            results.push((saga.id, result));
        }
    }
    let note = daemon_note(global, &store).await;
    Ok(report(global, "resume", results, &note, args.json))
}

pub async fn retry(global: &Global, args: &RetryArgs, file: &FileConfig) -> Result<Exit, Failed> {
    let why = reason(&args.reason)?;
    let (engine, store) = engine(global, file).await?;
    let mut chosen = select(&engine, args.id.as_deref(), &args.select).await?;
    if args.id.is_none() {
        let now = chrono::Utc::now();
        chosen
            .retain(|s| s.status == SagaStatus::Active && s.next_run_at.is_some_and(|at| at > now));
    }
    if !confirm(global, "retry", &chosen, args.dry_run, args.yes, args.json)? {
        return Ok(Exit::Ok);
    }
    let mut results = Vec::new();
    for saga in chosen {
        let result = engine.retry_now(&saga.id, why).await;
        if args.id.is_some() {
            results.push((
                saga.id,
                Ok(result.map_err(|e| hinted(global, e, &args.id))?),
            ));
        } else {
            results.push((saga.id, result));
        }
    }
    let note = daemon_note(global, &store).await;
    Ok(report(global, "retry", results, &note, args.json))
}

pub async fn attach_order(
    global: &Global,
    args: &AttachOrderArgs,
    file: &FileConfig,
) -> Result<Exit, Failed> {
    let why = reason(&args.reason)?;
    let client = crate::app::client(file)?;
    let (engine, store) = engine(global, file).await?;
    let id = engine.resolve(&args.id).await?;
    let saga = engine.get(&id).await?;
    let refused = |why: String| {
        Failed::new(
            Exit::Refused,
            ConfigError(format!(
                "refused: {why}\n  next: `pcsaga{} show {id}`",
                db_flag(global)
            )),
        )
    };
    if !matches!(saga.status, SagaStatus::Failed | SagaStatus::NeedsAttention) {
        return Err(refused(format!(
            "purchase {id} is {}; orders are attached only to a purchase stopped while looking for them",
            saga.status
        )));
    }
    let context: PurchaseContext =
        pcsaga_purchase::context::decode(saga.context_schema, &saga.context, &saga.input)
            .map_err(|e| refused(format!("purchase {id}'s context cannot be read: {e}")))?;
    let orders: Vec<String> = args
        .orders
        .iter()
        .flat_map(|o| o.split(','))
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    let next = pcsaga_purchase::attach::attach_orders(&client, &context, &orders)
        .await
        .map_err(refused)?;
    let saga = engine
        .operator_continue(
            saga,
            State::OrderVisibilityPolling,
            &next,
            "attach-order",
            &format!("{why} (orders {})", orders.join(", ")),
        )
        .await?;
    let note = daemon_note(global, &store).await;
    if args.json {
        print_json(
            &json!({"id": saga.id, "status": saga.status, "state": saga.state, "orders": orders}),
        );
    } else {
        print(&format!(
            "purchase {} continues in {} with order(s) {}; {note}\n",
            saga.id,
            saga.state,
            orders.join(", ")
        ));
    }
    Ok(Exit::Ok)
}

pub async fn cancel(global: &Global, args: &CancelArgs, file: &FileConfig) -> Result<Exit, Failed> {
    let why = reason(&args.reason)?;
    let (engine, _) = engine(global, file).await?;
    let id = engine.resolve(&args.id).await?;
    let saga = engine.cancel(&id, why).await?;
    if args.json {
        print_json(&json!({"id": saga.id, "status": saga.status, "state": saga.state}));
    } else {
        print(&format!(
            "purchase {} cancelled in {}\n",
            saga.id, saga.state
        ));
    }
    Ok(Exit::Ok)
}
