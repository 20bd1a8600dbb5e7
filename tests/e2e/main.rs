//! End-to-end tests of the `pcsaga` binary: real processes, real HTTP, SIGKILL.

mod battery;
mod billing;
mod cli;
mod kill;
mod operators;
mod packaging;
mod postgres;
mod support;
mod throttling;
mod upgrade;
mod web;
