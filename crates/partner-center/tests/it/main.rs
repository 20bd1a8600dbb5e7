//! Integration tests of the Partner Center client: the spec's examples, and the client
//! against the simulator on loopback.

mod auth;
mod billing;
mod classification;
mod direct;
mod endpoint;
mod faults;
mod flow;
mod malformed;
mod spec_examples;
mod support;
