//! Integration tests of the simulator over real HTTP, with plain JSON (no client types: the
//! simulator and the client are independent implementations of the spec).

mod behaviour;
mod clients;
mod spec_shapes;
mod support;
mod third_party;
