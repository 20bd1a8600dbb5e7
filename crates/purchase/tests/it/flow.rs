//! Whole purchases: the engine with a manual clock and a real SQLite file, the workflow, the
//! client, and the simulator on loopback.
