//! Fair claiming across customers: no customer holds more than its share of the sagas a
//! daemon drives while another customer's sagas are due.
//!
//! Claims take due sagas oldest first. Without this, a customer who submits 5,000 purchases
//! fills every slot of the daemon until they are done, and a customer who submits one
//! purchase a second later waits for all of them. So the engine first claims while skipping
//! the customers at or over their share (the daemon's concurrency divided by the customers in
//! flight plus one: room is always kept for a newcomer), and only fills what is left with
//! anyone's sagas. A customer alone still gets every slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Sagas in flight per customer.
#[derive(Debug, Default)]
pub(crate) struct Shares {
    in_flight: Mutex<HashMap<String, usize>>,
}

impl Shares {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The customers a claim should skip: those holding their share or more.
    pub(crate) fn over_share(&self, concurrency: usize) -> Vec<String> {
        over_share(&self.lock(), concurrency)
    }

    /// Counts a claimed saga until the returned seat is dropped (also when its task panics).
    pub(crate) fn enter(self: &Arc<Self>, customer: Option<String>) -> Seat {
        if let Some(c) = &customer {
            *self.lock().entry(c.clone()).or_default() += 1;
        }
        Seat {
            shares: self.clone(),
            customer,
        }
    }
}

/// The rule, pure: share = concurrency / (customers in flight + 1), at least 1.
pub(crate) fn over_share(in_flight: &HashMap<String, usize>, concurrency: usize) -> Vec<String> {
    let share = (concurrency / (in_flight.len() + 1)).max(1);
    let mut over: Vec<String> = in_flight
        .iter()
        .filter(|(_, n)| **n >= share)
        .map(|(c, _)| c.clone())
        .collect();
    over.sort();
    over
}

/// One claimed saga's place in [`Shares`].
#[derive(Debug)]
pub(crate) struct Seat {
    shares: Arc<Shares>,
    customer: Option<String>,
}

impl Drop for Seat {
    fn drop(&mut self) {
        if let Some(c) = &self.customer {
            let mut map = self.shares.lock();
            if let Some(n) = map.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    map.remove(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(in_flight: &[(&str, usize)], concurrency: usize, expected: &[&str]) {
        let map = in_flight
            .iter()
            .map(|(c, n)| ((*c).to_owned(), *n))
            .collect();
        assert_eq!(over_share(&map, concurrency), expected);
    }

    #[test]
    fn a_customer_at_its_share_is_skipped_so_newcomers_get_the_next_slot() {
        // Alone: share 64 / 2 = 32.
        check(&[("big", 31)], 64, &[]);
        check(&[("big", 32)], 64, &["big"]);
        check(&[("big", 63)], 64, &["big"]);
        // Two in flight: share 64 / 3 = 21.
        check(&[("big", 40), ("small", 1)], 64, &["big"]);
        check(&[("big", 21), ("small", 21)], 64, &["big", "small"]);
        // Many customers: the share never drops below one.
        let many: Vec<(String, usize)> = (0..100).map(|i| (format!("c{i:03}"), 1)).collect();
        let map = many.into_iter().collect();
        assert_eq!(over_share(&map, 64).len(), 100);
        check(&[], 64, &[]);
    }

    #[test]
    fn seats_count_until_dropped() {
        let shares = Arc::new(Shares::default());
        let a = shares.enter(Some("a".into()));
        let b = shares.enter(Some("a".into()));
        let _none = shares.enter(None);
        assert_eq!(shares.lock().get("a"), Some(&2));
        drop(a);
        assert_eq!(shares.lock().get("a"), Some(&1));
        drop(b);
        assert!(shares.lock().is_empty());
    }
}
