//! Engine tests with a small scripted workflow, a real SQLite file and a manual clock.

mod governor;
mod runtime;
mod store;
mod support;
