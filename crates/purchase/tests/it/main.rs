//! Tests of the purchase saga: the transition table (pure), and whole purchases through the
//! engine against the simulator.

mod coverage;
mod decisions;
mod fixtures;
mod flow;
mod reply_table;
mod transition_table;
