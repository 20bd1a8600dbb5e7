//! The simulator's business clock.
//!
//! Order completion, list lag, cart and token expiry are measured on this clock, not the wall
//! clock, so tests can jump minutes ahead (`POST /_sim/clock/advance`) without sleeping.
//! Injected latency and hangs use real time: they exist to make clients wait for real.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Wall clock plus an offset that only grows.
#[derive(Debug, Default)]
pub struct SimClock {
    offset: Mutex<Duration>,
}

impl SimClock {
    /// Now, as the simulated service sees it.
    pub fn now(&self) -> DateTime<Utc> {
        let offset = *self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Utc::now() + chrono::Duration::from_std(offset).unwrap_or_default()
    }

    /// Moves simulated time forward.
    pub fn advance(&self, by: Duration) {
        let mut offset = self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *offset += by;
    }

    /// How far simulated time is ahead of the wall clock.
    pub fn offset(&self) -> Duration {
        *self
            .offset
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
