//! The CLI's exit codes, in one place (documented in README.md).

use std::process::ExitCode;

/// Why the process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// An unexpected failure (see the message).
    Failure = 1,
    /// Bad command-line usage (clap's own code).
    Usage = 2,
    /// Invalid input: a purchase request, a workflow file or the configuration. Nothing written.
    InvalidInput = 3,
    /// No purchase with that id.
    NotFound = 4,
    /// An operator action was refused because it could be unsafe (for example buy twice).
    Refused = 5,
    /// The database cannot be opened or written (disk full, read-only, locked for too long).
    Database = 6,
    /// `submit` accepted some requests and rejected others (see the per-line report).
    Partial = 7,
    /// `demo` finished, but a purchase ended otherwise than the demo expects.
    DemoMismatch = 8,
    /// `submit`: an `idempotencyKey` already names a different request. Nothing was written
    /// for it; the first request stands.
    Conflict = 9,
    /// `check-upgrade`: active purchases this binary cannot continue (each listed); `daemon`
    /// refused to start on them (see `--park-incompatible`).
    Incompatible = 10,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct Failed {
    pub exit: Exit,
    pub error: anyhow::Error,
}

impl Failed {
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Self {
            exit,
            error: error.into(),
        }
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failed {
    fn from(error: E) -> Self {
        let error: anyhow::Error = error.into();
        let exit = classify(&error);
        Self { exit, error }
    }
}

fn classify(error: &anyhow::Error) -> Exit {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<pcsaga_engine::Error>() {
            return match e {
                pcsaga_engine::Error::NotFound(_) => Exit::NotFound,
                pcsaga_engine::Error::Ambiguous { .. } => Exit::Usage,
                pcsaga_engine::Error::Refused(_) => Exit::Refused,
                pcsaga_engine::Error::Policy(_) => Exit::InvalidInput,
                pcsaga_engine::Error::Store(_) => Exit::Database,
                _ => Exit::Failure,
            };
        }
        if cause.downcast_ref::<pcsaga_engine::StoreError>().is_some() {
            return Exit::Database;
        }
        if cause.downcast_ref::<crate::config::ConfigError>().is_some() {
            return Exit::InvalidInput;
        }
    }
    Exit::Failure
}
