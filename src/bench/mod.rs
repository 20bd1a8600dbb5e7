//! `pcsaga bench`: the benchmark harness (BENCHMARKS.md). It prints its figures and the
//! machine's own reference (the raw SQLite ceiling) in the same run, so results compare across
//! machines as ratios.

pub mod noop;
pub mod postgres;
pub mod reconcile;
pub mod run;
pub mod throttled;
