//! `pcsaga resume` and `pcsaga cancel`.

use pcsaga_purchase::State;
use serde_json::json;

use crate::cli::{CancelArgs, Global, ResumeArgs};
use crate::config::{ConfigError, FileConfig};
use crate::exit::{Exit, Failed};
use crate::output::{print, print_json};

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
    let (store, _) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::Existing).await?;
    let engine = crate::app::offline_engine(store);
    let id = engine.resolve(&args.id).await?;
    let saga = engine.resume(&id, from.map(State::name), why).await?;
    if args.json {
        print_json(&json!({"id": saga.id, "status": saga.status, "state": saga.state}));
    } else {
        print(&format!(
            "purchase {} resumed in {}; a running daemon picks it up now\n",
            saga.id, saga.state
        ));
    }
    Ok(Exit::Ok)
}

pub async fn cancel(global: &Global, args: &CancelArgs, file: &FileConfig) -> Result<Exit, Failed> {
    let why = reason(&args.reason)?;
    let (store, _) =
        crate::app::open(global.db.as_deref(), file, crate::app::Open::Existing).await?;
    let engine = crate::app::offline_engine(store);
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
