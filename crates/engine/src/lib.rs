//! A generic durable state-machine runtime on SQLite. It knows nothing of Partner Center.
//!
//! - [`workflow`]: what a workflow provides (plan, execute, decide) and what it returns
//!   (effects and decisions as data);
//! - [`policy`]: per-state retry and poll policies from TOML;
//! - [`schedule`]: a decision plus a policy gives the saga's next row (pure);
//! - [`store`]: sagas and history behind a narrow trait; [`store::sqlite`] is the SQLite store
//!   with group commit;
//! - [`runtime`]: the engine (submit, claim, daemon loop, operator actions); `drive.rs`
//!   drives one claimed saga, step by step (prepare, act, settle, commit);
//! - [`governor`]: the rate governor every call waits in (budgets per call class, pauses on
//!   429, fair across customers);
//! - [`clock`]: injected time.

pub mod clock;
mod drive;
mod fair;
pub mod governor;
pub mod metrics;
mod oplog;
pub mod policy;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod workflow;

pub use clock::{Clock, ManualClock, SystemClock};
pub use governor::{Admission, ClassBudget, ClassSnapshot, Feedback, Governor, GovernorConfig};
pub use policy::{OnExhausted, Policies, PolicyError, StatePolicy};
pub use runtime::{CrashAt, CrashPoint, Driven, Engine, EngineConfig, RunHealth, Submitted};
pub use store::any::{is_postgres_url, AnyStore};
pub use store::postgres::{PgConfig, PgStore};
pub use store::sqlite::{
    list_plan, DaemonRow, Durability, SqliteConfig, SqliteStore, StatusSnapshot,
};
pub use store::{HistoryRow, ListFilter, SagaRecord, SagaStatus, Store, StoreError};
pub use workflow::{AttemptRecord, Decision, Executed, Plan, SagaState, SagaView, Workflow};

/// Engine failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid workflow policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("no purchase with id {0}; `pcsaga list` shows the ids")]
    NotFound(String),
    /// An id prefix that more than one saga has.
    #[error("{prefix} is the start of {} purchase ids ({}{}); give more of the id", if *more { format!("more than {}", matches.len()) } else { matches.len().to_string() }, matches.join(", "), if *more { ", ..." } else { "" })]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
        more: bool,
    },
    /// An operator action that would be unsafe or makes no sense; the text says why.
    #[error("refused: {0}")]
    Refused(String),
    #[error("a saga context cannot be encoded or decoded: {0}")]
    Context(String),
    #[error("internal task failure: {0}")]
    Task(String),
}
