//! The command line.

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// pcsaga buys Azure reserved VM instances, software subscriptions and perpetual software
/// through the Microsoft Partner Center API, as durable sagas that survive crashes and outages
/// and never buy twice.
///
/// Quick start: `pcsaga demo` runs everything on a built-in Partner Center simulator.
/// Against the real service: set PCSAGA_TENANT_ID, PCSAGA_CLIENT_ID, PCSAGA_CLIENT_SECRET
/// (and PCSAGA_REFRESH_TOKEN for entitlements), `pcsaga submit request.json`, then
/// `pcsaga daemon`. `pcsaga list` and `pcsaga show ID` tell you where each purchase stands.
#[derive(Debug, Parser)]
#[command(
    name = "pcsaga",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_help = "Exit codes: 0 done; 1 unexpected failure; 2 bad usage or an ambiguous id prefix; 3 invalid input (request, \
                  workflow file or configuration; nothing written); 4 no such purchase; 5 refused as \
                  unsafe; 6 database unavailable; 7 submit accepted some requests and rejected others; \
                  8 the demo ended otherwise than expected; 9 submit: the idempotency key names another \
                  request; 10 check-upgrade or daemon: active purchases this binary cannot continue."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The database: a SQLite file (created if missing, readable by its owner only), or a
    /// PostgreSQL server, `postgres://USER@HOST:PORT/DATABASE`, for several daemons.
    #[arg(long, global = true, env = "PCSAGA_DB", value_name = "PATH|URL")]
    pub db: Option<PathBuf>,
    /// A TOML configuration file (see README: Configuration).
    #[arg(long, global = true, env = "PCSAGA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `pcsaga=debug` (default: info for daemon and sim, warn otherwise).
    #[arg(long, global = true, env = "PCSAGA_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run workers that drain the purchase queue until SIGINT or SIGTERM.
    ///
    /// On a signal the daemon stops claiming, lets each purchase finish its current step,
    /// gives the rest back to the queue and exits 0. Killed harder, nothing is lost: another
    /// daemon (or this one, restarted) picks the purchases up when their leases run out.
    Daemon(DaemonArgs),
    /// Submit one purchase request (JSON) or many (NDJSON, one per line) from FILE or `-`.
    ///
    /// Every request is checked in full before anything is written; a refusal names the
    /// field. In NDJSON the good lines are accepted and the bad ones reported. Submitting an
    /// idempotency key again returns the first purchase.
    Submit(SubmitArgs),
    /// List purchases, newest last.
    List(ListArgs),
    /// The daemons, the queue and what holds it up: purchases by status and state, the
    /// oldest due purchase, purchases waiting on throttling or refused credentials, and the
    /// error classes of the latest steps.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Show one purchase: state, what it waits for, its context and every attempt.
    Show(ShowArgs),
    /// Resume a failed or parked purchase (or every one a filter selects), optionally from
    /// another state, which is then done again.
    ///
    /// Refused when it could buy twice: once a checkout was sent, a purchase can only be
    /// resumed from Checkout or later (Checkout re-uses the same cart); and from any state
    /// whose inputs the purchase lacks (no cart for Checkout, no known order for
    /// OrderVisibilityPolling). `--from Enablement` reads every SKU and registration again.
    Resume(ResumeArgs),
    /// Make an active purchase that waits (a backoff, a poll, a hold) due now, or every one a
    /// filter selects. Its attempt counts are unchanged.
    Retry(RetryArgs),
    /// Attach the orders an operator found in Partner Center to a purchase parked while
    /// looking for them (a lost checkout reply).
    ///
    /// Each order is read from Partner Center and must belong to the purchase's customer and
    /// match its lines (its token, or its offer and quantity); only then does the purchase
    /// continue to OrderVisibilityPolling. Anything else is refused (exit 5) with why.
    AttachOrder(AttachOrderArgs),
    /// Cancel a purchase before its checkout.
    Cancel(CancelArgs),
    /// Run the Partner Center simulator on its own (prints the URL and credentials to use).
    Sim(SimArgs),
    /// Create or upgrade the database schema; or, with --from and --to, move a SQLite
    /// database to PostgreSQL.
    ///
    /// `pcsaga migrate --from sqlite:PATH --to postgres://USER@HOST/DB` copies every saga and
    /// its whole history into an empty PostgreSQL database, verifies counts and checksums, and
    /// leaves the file untouched. Refused while a daemon holds a lease on the file (stop the
    /// daemons first) or when the target already holds sagas.
    Migrate {
        /// The SQLite database to move, as sqlite:PATH.
        #[arg(long, value_name = "sqlite:PATH", requires = "to")]
        from: Option<String>,
        /// The PostgreSQL database to move it to, postgres://USER@HOST:PORT/DATABASE.
        #[arg(long, value_name = "URL", requires = "from")]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check the database: SQLite's integrity check, then the engine's own invariants.
    ///
    /// Exits 0 when sound, 6 when the file is damaged or an invariant is broken (each finding
    /// is listed). Safe while a daemon runs: it only reads.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// List the active purchases this binary could not continue; run it with a new release
    /// before switching the daemons to it.
    ///
    /// A purchase cannot be continued when it was written by a newer release (a workflow
    /// definition this binary does not know), is in a state this binary does not know, or its
    /// context no longer decodes. Exits 0 when there is none, 10 when there are (each listed).
    /// The daemon refuses to start on such a database unless told `--park-incompatible`.
    CheckUpgrade {
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent copy of the database to FILE while daemons keep running.
    ///
    /// The copy is one snapshot (SQLite's VACUUM INTO), checked before this exits; an existing
    /// FILE is never overwritten. Restore by stopping the daemons and putting the copy in
    /// place of the database file.
    Backup {
        /// Where to write the copy (must not exist).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Work with workflow policy files.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// The partner's billing in Partner Center: balance, invoice summaries, invoices, one
    /// invoice, and an invoice's statement as a PDF.
    #[command(subcommand)]
    Billing(BillingCommand),
    /// Reconcile the purchases against billing: every purchase found on the invoice, once.
    ///
    /// Starts a reconciliation run (a saga of its own: a crash resumes it where it stopped),
    /// drives it here until it ends, then prints the report: per customer and currency the
    /// purchases, matched, exceptions and amounts, then every exception with what to do. Each
    /// purchase gets a billing status (`pcsaga list --billing STATUS`, `pcsaga show ID`).
    /// Exits 0 when every purchase is matched or pending, 7 when the report lists exceptions
    /// or unreadable billing lines. The daemon starts runs on its own (`billing.reconcile_every_h`).
    Reconcile(ReconcileArgs),
    /// Run the benchmark harness and print its figures (see BENCHMARKS.md).
    ///
    /// Build with --release. Every figure is printed next to the raw SQLite ceiling measured
    /// in the same run, so results compare across machines.
    Bench(BenchArgs),
    /// Run the whole product on built-in defaults: simulator, fresh database, example
    /// purchases, the daemon, and a summary.
    Demo(DemoArgs),
    /// Serve the read-only web console for a database, without a daemon.
    ///
    /// The purchase list (the filters of `list`, counts by status, the stuck view, the
    /// throttling state) and each purchase's page (its timeline, history and billing status,
    /// and the CLI commands that act on it) at http://ADDR/. It reads only: operators act
    /// through the CLI, which records a reason. A running daemon serves the same pages on its
    /// own listener (`daemon --listen`). Stops on SIGINT or SIGTERM.
    Console(ConsoleArgs),
    /// Print a shell completion script: `pcsaga completions bash > /etc/bash_completion.d/pcsaga`,
    /// `pcsaga completions zsh > ~/.zfunc/_pcsaga`, `pcsaga completions fish > ~/.config/fish/completions/pcsaga.fish`.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages (pcsaga.1 and one per command, pcsaga-daemon.1, ...) into DIR.
    ///
    /// The repository carries them in man/, kept current by a test; `man -l man/pcsaga.1`
    /// reads one without installing.
    Man {
        /// The directory to write into (created if missing; existing pages are replaced).
        #[arg(long, value_name = "DIR", default_value = "man")]
        out_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// The partner's balance in its default currency (E22).
    Balance {
        #[arg(long)]
        json: bool,
    },
    /// One balance per billing currency (E23; needs app+user credentials).
    Summaries {
        #[arg(long)]
        json: bool,
    },
    /// Every invoice, oldest first (E24).
    Invoices {
        #[arg(long)]
        json: bool,
    },
    /// One invoice (E25; needs app+user credentials).
    Invoice {
        /// The invoice id, e.g. G000000001.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Save an invoice's statement PDF (E28; needs app+user credentials). Never overwrites.
    Statement {
        /// The invoice id, e.g. G000000001.
        id: String,
        /// Where to write the PDF (must not exist).
        #[arg(short = 'o', long, value_name = "FILE.pdf")]
        output: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// `current` (this month: its unbilled lines and any invoice already covering it),
    /// `previous` (last month: its invoice, or its unbilled lines until it is issued), or a
    /// one-time invoice id (`pcsaga billing invoices` lists them).
    #[arg(
        long,
        default_value = "current",
        value_name = "current|previous|INVOICE_ID"
    )]
    pub period: String,
    /// Submit the run for a daemon and print its id, without waiting.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the report of a finished run instead of starting one.
    #[arg(long, value_name = "RUN", conflicts_with_all = ["no_wait"])]
    pub report: Option<String>,
    /// The report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The report's per-customer table as CSV.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Purchases driven at once, 1 to 10000 (default 64).
    #[arg(long, env = "PCSAGA_CONCURRENCY", value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub concurrency: Option<usize>,
    /// Partner Center calls in flight at once, across all purchases, 1 to 1000 (default 16).
    #[arg(long, env = "PCSAGA_MAX_CALLS", value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000))]
    pub max_calls: Option<usize>,
    /// Seconds a claimed purchase stays leased without progress: more than the call timeout
    /// plus a second, at most 86400 (a day; a crashed daemon's purchases wait this long).
    #[arg(long, env = "PCSAGA_LEASE_S", value_parser = RangedU64ValueParser::<u64>::new().range(2..=MAX_LEASE_S))]
    pub lease_s: Option<u64>,
    /// When the token service refuses our credentials, purchases wait and the daemon claims
    /// nothing; this often (seconds, 1 to 3600, default 60) it asks for a token again.
    #[arg(long, env = "PCSAGA_CREDENTIALS_RETRY_S", value_parser = RangedU64ValueParser::<u64>::new().range(1..=3600))]
    pub credentials_retry_s: Option<u64>,
    /// The workflow policy file (default: the built-in workflows/one-time-purchase.toml).
    #[arg(long, env = "PCSAGA_WORKFLOW", value_name = "FILE")]
    pub workflow: Option<PathBuf>,
    /// Exit once no purchase is active (for batch runs and tests).
    #[arg(long)]
    pub exit_when_idle: bool,
    /// Park the active purchases this binary cannot continue (see `check-upgrade`) instead of
    /// refusing to start; each keeps its state and context for the release that can.
    #[arg(long)]
    pub park_incompatible: bool,
    /// Where to serve /metrics, /healthz, /readyz and the read-only web console: ADDR:PORT,
    /// or `off` (default 127.0.0.1:9464). An address other than loopback needs a bearer token
    /// (PCSAGA_LISTEN_TOKEN, or daemon.listen_token_file) and is refused without one.
    #[arg(long, env = "PCSAGA_LISTEN", value_name = "ADDR:PORT|off")]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Where to serve the console: ADDR:PORT (default 127.0.0.1:9465, beside a daemon's
    /// 9464). An address other than loopback needs a bearer token, as for the daemon.
    #[arg(
        long,
        env = "PCSAGA_CONSOLE_LISTEN",
        value_name = "ADDR:PORT",
        default_value = "127.0.0.1:9465"
    )]
    pub listen: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A JSON file, an NDJSON file, or `-` for standard input.
    pub file: String,
    /// Print JSON instead of a table (an array, streamed in line order).
    #[arg(long)]
    pub json: bool,
    /// Where the report of a batch of more than 1,000 lines goes (one JSON object per line);
    /// default: beside FILE, `FILE.<time>.report.ndjson` (for `-`, in this directory). Never
    /// overwritten.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// active, succeeded, failed, needs_attention or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// A state name, e.g. Checkout.
    #[arg(long)]
    pub state: Option<String>,
    /// A customer id.
    #[arg(long)]
    pub customer: Option<String>,
    /// Only purchases with this billing status from the last reconciliation: matched,
    /// pending, missing, missing_unbilled, quantity_mismatch, amount_mismatch,
    /// currency_mismatch, refunded or unreadable.
    #[arg(long, value_name = "STATUS")]
    pub billing: Option<String>,
    /// Only purchases created within this long, e.g. `30m`, `24h`, `7d` (at most 36500d).
    #[arg(long, value_name = "AGE")]
    pub since: Option<String>,
    /// At most this many rows, newest first, up to 1000000; 0 for all.
    #[arg(long, default_value_t = 1000, value_parser = RangedU64ValueParser::<u32>::new().range(0..=1_000_000))]
    pub limit: u32,
    /// Only active purchases that are stuck: they have retried, or stayed in their state
    /// longer than its policy expects (its poll deadline); each with what it waits for and its
    /// last error.
    #[arg(long)]
    pub stuck: bool,
    /// The policy file whose deadlines `--stuck` uses (default: the built-in one, or
    /// PCSAGA_WORKFLOW).
    #[arg(long, env = "PCSAGA_WORKFLOW", value_name = "FILE")]
    pub workflow: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The purchase id (from `submit` or `list`), or a prefix of it that no other id has.
    pub id: String,
    /// Only the last N rows of the timeline (1 to 100000).
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub tail: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

/// Selects purchases for a bulk action, as `list` does.
#[derive(Debug, Args, Default)]
pub struct Select {
    /// Only purchases with this status.
    #[arg(long)]
    pub status: Option<String>,
    /// Only purchases in this state.
    #[arg(long)]
    pub state: Option<String>,
    /// Only this customer's purchases.
    #[arg(long)]
    pub customer: Option<String>,
    /// Only purchases created within this long (`30m`, `24h`, `7d`; at most 36500d).
    #[arg(long, value_name = "AGE")]
    pub since: Option<String>,
}

impl Select {
    pub fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.state.is_none()
            && self.customer.is_none()
            && self.since.is_none()
    }
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The purchase id, or a prefix of it that no other id has; or none, with filters.
    pub id: Option<String>,
    /// The state to resume in (default: where it stopped).
    #[arg(long)]
    pub from: Option<String>,
    /// Why, for the purchase's history.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub select: Select,
    /// List what would be resumed, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Act on more than 10 purchases at once.
    #[arg(long)]
    pub yes: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The purchase id, or a prefix of it that no other id has; or none, with filters.
    pub id: Option<String>,
    /// Why, for the purchase's history.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub select: Select,
    /// List what would be retried, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Act on more than 10 purchases at once.
    #[arg(long)]
    pub yes: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AttachOrderArgs {
    /// The purchase id, or a prefix of it that no other id has.
    pub id: String,
    /// An order id found in Partner Center (repeat for each order of the purchase).
    #[arg(long = "order", value_name = "ORDER_ID", required = true, num_args = 1..)]
    pub orders: Vec<String>,
    /// Why, for the purchase's history (say where the order was found).
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The purchase id, or a prefix of it that no other id has.
    pub id: String,
    /// Why, for the purchase's history.
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Address to listen on. Loopback by default; anything else exposes fake credentials.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: String,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// A TOML file of simulator settings (SimConfig; see README).
    #[arg(long, value_name = "FILE")]
    pub sim_config: Option<PathBuf>,
    /// Print the connection details as JSON on one line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Check a policy file and print the policy of every state.
    Validate {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Policy intervals are divided by this so the demo runs in seconds, not hours (1 to 1000).
    #[arg(long, default_value_t = 30.0, value_parser = speedup)]
    pub speedup: f64,
    /// Seed of the simulator's injected faults.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Purchases for the throughput rows, 1 to 1000000 (concurrency 1 uses at most 1000).
    #[arg(long, default_value_t = 10_000, value_parser = RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub n: usize,
    /// Only these measurements (comma-separated): raw, orchestration, e2e, backlog, recovery,
    /// inspect, throttled, reconcile, postgres (the last needs a server: PCSAGA_BENCH_PG, default
    /// postgres://root@127.0.0.1:5432/postgres).
    #[arg(long)]
    pub only: Option<String>,
    /// Concurrency of the second orchestration row, 1 to 10000 (the daemon's default is 64).
    #[arg(long, default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub concurrency: usize,
    #[arg(long)]
    pub json: bool,
}

/// Longest lease a daemon may take: a crashed daemon's purchases wait this long for another.
pub const MAX_LEASE_S: u64 = 86_400;

fn speedup(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if (1.0..=1000.0).contains(&v) => Ok(v),
        _ => Err(format!("{text:?}: a number from 1 to 1000")),
    }
}
