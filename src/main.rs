//! The `pcsaga` binary: CLI verbs, daemon wiring, configuration and the demo.

/// Writes a line to stderr. A closed stderr (a log pipe whose reader went away) is not an
/// error here and never a panic, unlike `eprintln!`: what cannot be said is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod app;
mod bench;
mod cli;
mod commands;
mod config;
mod exit;
mod logging;
mod output;
mod web;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{BillingCommand, Cli, Command, LogFormat, WorkflowCommand};
use crate::exit::{Exit, Failed};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Daemon(_) | Command::Sim(_) | Command::Console(_) => "info",
        _ => "warn",
    };
    let filter = cli
        .global
        .log
        .clone()
        .map_or_else(|| EnvFilter::new(default_filter), EnvFilter::new);
    // Colours only on a terminal: a log file or a pipe gets plain text. The writer drops what
    // cannot be written (counted) instead of failing: logging never stops the daemon.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(logging::Stderr);
    match cli.global.log_format {
        LogFormat::Json => subscriber.json().init(),
        LogFormat::Text => subscriber.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    match runtime.block_on(dispatch(&cli)) {
        Ok(exit) => exit.into(),
        Err(Failed { exit, error }) if wants_json(&cli.command) => {
            // With --json, errors are JSON too: one object on stderr.
            let text = format!("{error:#}");
            let hint = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("next: "))
                .map(|h| h.trim_matches('`').to_owned());
            let message = text
                .lines()
                .filter(|l| !l.trim().starts_with("next: "))
                .collect::<Vec<_>>()
                .join("\n");
            say!(
                "{}",
                serde_json::json!({"error": {"exitCode": exit as u8, "message": message, "hint": hint}})
            );
            exit.into()
        }
        Err(Failed { exit, error }) => {
            say!("error: {error:#}");
            exit.into()
        }
    }
}

async fn dispatch(cli: &Cli) -> Result<Exit, Failed> {
    let global = &cli.global;
    // The configuration file is read only by the verbs that use it.
    let file = || {
        crate::config::load_file(global.config.as_deref())
            .map_err(|e| Failed::new(Exit::InvalidInput, e))
    };
    if let Some((verb, world)) = self_contained(&cli.command) {
        // These verbs build their own world. Saying so beats silently ignoring the options: a
        // demo or a benchmark must never queue purchases in a real database.
        if let Some(db) = &global.db {
            say!(
                "note: `pcsaga {verb}` does not use --db/PCSAGA_DB ({}): {world}",
                db.display()
            );
        }
        if let Some(config) = &global.config {
            say!(
                "note: `pcsaga {verb}` does not read --config/PCSAGA_CONFIG ({}): {world}",
                config.display()
            );
        }
    }
    match &cli.command {
        Command::Daemon(args) => commands::daemon::run(global, args, &file()?).await,
        Command::Submit(args) => commands::submit::run(global, args, &file()?).await,
        Command::List(args) => commands::inspect::list(global, args, &file()?).await,
        Command::Show(args) => commands::inspect::show(global, args, &file()?).await,
        Command::Resume(args) => commands::operator::resume(global, args, &file()?).await,
        Command::Cancel(args) => commands::operator::cancel(global, args, &file()?).await,
        Command::Retry(args) => commands::operator::retry(global, args, &file()?).await,
        Command::AttachOrder(args) => {
            commands::operator::attach_order(global, args, &file()?).await
        }
        Command::Sim(args) => commands::sim::run(args).await,
        Command::Migrate {
            from: Some(from),
            to: Some(to),
            json,
        } => commands::transfer::run(from, to, *json).await,
        Command::Migrate { json, .. } => commands::migrate(global, *json, &file()?).await,
        Command::Check { json } => commands::check(global, *json, &file()?).await,
        Command::CheckUpgrade { json } => commands::check_upgrade(global, *json, &file()?).await,
        Command::Status { json } => commands::inspect::status(global, *json, &file()?).await,
        Command::Backup { to, json } => commands::backup(global, to, *json, &file()?).await,
        Command::Workflow(WorkflowCommand::Validate { file: path, json }) => {
            commands::workflow::validate(path, *json)
        }
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Bench(args) => commands::bench::run(args).await,
        Command::Billing(command) => commands::billing::billing(command, &file()?).await,
        Command::Reconcile(args) => match &args.report {
            Some(run) => commands::billing::report_only(global, args, run, &file()?).await,
            None => commands::billing::reconcile(global, args, &file()?).await,
        },
        Command::Console(args) => commands::console::run(global, args, &file()?).await,
        Command::Completions { shell } => commands::packaging::completions(*shell),
        Command::Man { out_dir } => commands::packaging::man(out_dir),
    }
}

/// The verbs that use neither the database nor the configuration file, and what they use.
/// Whether the verb was asked for JSON (`--json`): its errors are JSON as well.
fn wants_json(command: &Command) -> bool {
    match command {
        Command::Daemon(_) => false,
        Command::Submit(a) => a.json,
        Command::List(a) => a.json,
        Command::Show(a) => a.json,
        Command::Resume(a) => a.json,
        Command::Retry(a) => a.json,
        Command::AttachOrder(a) => a.json,
        Command::Cancel(a) => a.json,
        Command::Sim(a) => a.json,
        Command::Demo(a) => a.json,
        Command::Bench(a) => a.json,
        Command::Reconcile(a) => a.json,
        Command::Billing(
            BillingCommand::Balance { json }
            | BillingCommand::Summaries { json }
            | BillingCommand::Invoices { json }
            | BillingCommand::Invoice { json, .. },
        ) => *json,
        Command::Billing(BillingCommand::Statement { .. })
        | Command::Console(_)
        | Command::Completions { .. }
        | Command::Man { .. } => false,
        Command::Status { json }
        | Command::Check { json }
        | Command::CheckUpgrade { json }
        | Command::Backup { json, .. }
        | Command::Migrate { json, .. }
        | Command::Workflow(WorkflowCommand::Validate { json, .. }) => *json,
    }
}

fn self_contained(command: &Command) -> Option<(&'static str, &'static str)> {
    match command {
        Command::Demo(_) => Some((
            "demo",
            "it runs on a fresh database and built-in settings of its own",
        )),
        Command::Bench(_) => Some((
            "bench",
            "it measures on scratch databases and built-in settings of its own",
        )),
        Command::Sim(_) => Some((
            "sim",
            "the simulator keeps its state in memory and takes its settings as options",
        )),
        Command::Completions { .. } => Some((
            "completions",
            "it prints the command line's completion script, nothing more",
        )),
        Command::Man { .. } => Some((
            "man",
            "it writes the command line's man pages, nothing more",
        )),
        _ => None,
    }
}
