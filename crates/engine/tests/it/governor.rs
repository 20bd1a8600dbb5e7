//! The rate governor's decisions, over explicit instants (no clock, no sleeps).

use std::time::{Duration, Instant};

use pcsaga_engine::governor::{Admission, ClassBudget, Core, Feedback, GovernorConfig};

fn config(classes: &[(&str, u32)], slots: usize) -> GovernorConfig {
    GovernorConfig {
        tenant: "tenant".into(),
        classes: classes
            .iter()
            .map(|(name, per_minute)| ClassBudget {
                name: (*name).into(),
                per_minute: *per_minute,
            })
            .collect(),
        call_slots: slots,
        burst: Duration::from_secs(1),
    }
}

fn call(class: &'static str, customer: &str, urgent: bool) -> Admission {
    Admission {
        class,
        customer: customer.into(),
        urgent,
    }
}

/// Grants at `now`, returned as the waiters' ids (their slots stay taken).
fn grant(core: &mut Core, now: Instant) -> Vec<u64> {
    core.dispatch(now).into_iter().map(|g| g.id).collect()
}

/// With one slot: grants the one call that goes next at `at`, finishes it as answered (its
/// slot is free again) and returns its id.
fn serve(core: &mut Core, at: Instant) -> u64 {
    let granted = core.dispatch(at);
    assert_eq!(granted.len(), 1, "one slot, one grant");
    core.finish(
        granted[0].class,
        at,
        Feedback::Answered,
        at,
        chrono::Utc::now(),
    );
    granted[0].id
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_class_sends_at_its_budget_and_no_faster() {
    let t0 = Instant::now();
    let mut core = Core::new(&config(&[("catalog", 60)], 16), t0);
    let ids: Vec<u64> = (0..4)
        .map(|i| core.enqueue(&call("catalog", &format!("c{i}"), false), t0, None))
        .collect();
    // One token banked (1 s of 60/min), then one per second.
    assert_eq!(grant(&mut core, t0), vec![ids[0]]);
    assert_eq!(core.next_ready(t0), Some(t0 + Duration::from_secs(1)));
    assert!(grant(&mut core, t0 + ms(999)).is_empty());
    assert_eq!(grant(&mut core, t0 + ms(1000)), vec![ids[1]]);
    assert_eq!(
        grant(&mut core, t0 + ms(3000)),
        vec![ids[2]],
        "the bucket holds one second"
    );
    assert_eq!(grant(&mut core, t0 + ms(4000)), vec![ids[3]]);
}

#[test]
fn a_429_pauses_the_class_for_every_caller_until_retry_after_and_halves_its_rate() {
    let t0 = Instant::now();
    let mut core = Core::new(&config(&[("cart", 600), ("catalog", 600)], 16), t0);
    let first = core.enqueue(&call("cart", "a", false), t0, None);
    let granted = core.dispatch(t0);
    assert_eq!(granted[0].id, first);
    let event = core
        .finish(
            granted[0].class,
            t0,
            Feedback::Throttled {
                retry_after: Some(Duration::from_secs(2)),
            },
            t0 + ms(10),
            chrono::Utc::now(),
        )
        .expect("the first 429 is reported");
    assert_eq!(event.pause, Duration::from_secs(2));
    assert_eq!(event.allowed_per_minute, 300.0);
    // Other customers' cart calls wait out the pause; catalog calls do not.
    let cart_b = core.enqueue(&call("cart", "b", false), t0 + ms(20), None);
    let catalog = core.enqueue(&call("catalog", "b", false), t0 + ms(20), None);
    assert_eq!(grant(&mut core, t0 + ms(20)), vec![catalog]);
    assert!(
        grant(&mut core, t0 + ms(2009)).is_empty(),
        "inside the pause"
    );
    // The pause ends with an empty bucket: the first token comes 1/rate later (300/min: 200 ms).
    assert!(grant(&mut core, t0 + ms(2100)).is_empty());
    assert_eq!(grant(&mut core, t0 + ms(2210)), vec![cart_b]);
    let snapshot = core.snapshot(t0 + ms(2210));
    let cart = snapshot.iter().find(|c| c.class == "cart").expect("cart");
    assert_eq!((cart.throttled, cart.granted, cart.paused_ms), (1, 2, 0));
    assert!(cart.allowed_per_minute > 300.0 && cart.allowed_per_minute < 302.0);
}

#[test]
fn echoes_of_one_overload_halve_once_and_repeated_429s_back_off_exponentially() {
    let t0 = Instant::now();
    let mut core = Core::new(&config(&[("orders", 6000)], 16), t0);
    for i in 0..4 {
        core.enqueue(&call("orders", &format!("c{i}"), false), t0, None);
    }
    let granted = core.dispatch(t0);
    assert_eq!(
        granted.len(),
        4,
        "100/s with a one-second bucket lets all four go"
    );
    let class = granted[0].class;
    let throttled = |s| Feedback::Throttled {
        retry_after: Some(Duration::from_secs(s)),
    };
    let now = chrono::Utc::now();
    // Four calls sent together come back 429: one decrease, not four.
    assert!(core
        .finish(class, t0, throttled(1), t0 + ms(5), now)
        .is_some());
    for _ in 0..3 {
        assert!(core
            .finish(class, t0, throttled(1), t0 + ms(6), now)
            .is_none());
    }
    let allowed = |core: &Core, at| {
        core.snapshot(at)
            .iter()
            .find(|c| c.class == "orders")
            .map(|c| c.allowed_per_minute)
    };
    assert_eq!(allowed(&core, t0 + ms(6)), Some(3000.0));
    // A call admitted after the decrease is throttled again: a second strike, a doubled pause.
    let again = core
        .finish(class, t0 + ms(1100), throttled(1), t0 + ms(1110), now)
        .expect("a new overload");
    assert_eq!(again.pause, Duration::from_secs(2));
    // Half of what it had grown back to since the first pause ended (3000/min plus 105 ms of
    // recovery at 1% of the budget per second).
    assert!(
        (1500.0..1505.0).contains(&again.allowed_per_minute),
        "{again:?}"
    );
    // An answered call ends the streak; the rate grows back by 1% of the budget per second.
    core.finish(class, t0 + ms(4000), Feedback::Answered, t0 + ms(4000), now);
    let third = core
        .finish(class, t0 + ms(4500), throttled(1), t0 + ms(4500), now)
        .expect("a new overload");
    assert_eq!(third.pause, Duration::from_secs(1), "the streak was reset");
    let later = t0 + ms(4500) + Duration::from_secs(1) + Duration::from_secs(200);
    core.dispatch(later);
    assert_eq!(allowed(&core, later), Some(6000.0), "back to the budget");
}

#[test]
fn money_first_then_round_robin_across_customers() {
    let t0 = Instant::now();
    // One call slot: the order of grants is the order of service.
    let mut core = Core::new(&config(&[("c", 1_000_000)], 1), t0);
    let mut names = std::collections::HashMap::new();
    for i in 0..6 {
        names.insert(
            core.enqueue(&call("c", "big", false), t0, None),
            format!("big{i}"),
        );
    }
    names.insert(
        core.enqueue(&call("c", "small-a", false), t0, None),
        "a".into(),
    );
    names.insert(
        core.enqueue(&call("c", "small-b", false), t0, None),
        "b".into(),
    );
    names.insert(
        core.enqueue(&call("c", "late", true), t0, None),
        "urgent".into(),
    );
    let order: Vec<String> = (0..9)
        .map(|step| names[&serve(&mut core, t0 + ms(step))].clone())
        .collect();
    assert_eq!(
        order,
        ["urgent", "big0", "a", "b", "big1", "big2", "big3", "big4", "big5"],
        "the urgent call first; then each customer in turn, least recently served first"
    );
}

#[test]
fn call_slots_bound_calls_in_flight_and_a_finished_call_frees_its_slot() {
    let t0 = Instant::now();
    let mut core = Core::new(&config(&[], 2), t0);
    for i in 0..3 {
        core.enqueue(&call("unknown-class", &format!("c{i}"), false), t0, None);
    }
    let granted = core.dispatch(t0);
    assert_eq!(granted.len(), 2);
    assert_eq!(core.waiting(), 1);
    assert!(core.dispatch(t0).is_empty());
    core.finish(
        granted[0].class,
        t0,
        Feedback::Unanswered,
        t0,
        chrono::Utc::now(),
    );
    assert_eq!(core.dispatch(t0).len(), 1);
}

#[test]
fn a_withdrawn_wait_is_not_granted() {
    let t0 = Instant::now();
    let mut core = Core::new(&config(&[("c", 60)], 4), t0);
    let a = core.enqueue(&call("c", "a", false), t0, None);
    let b = core.enqueue(&call("c", "b", false), t0, None);
    assert_eq!(grant(&mut core, t0), vec![a]);
    assert!(core.withdraw(b));
    assert!(grant(&mut core, t0 + Duration::from_secs(5)).is_empty());
    assert!(!core.withdraw(b));
}

#[tokio::test]
async fn the_async_governor_lets_waiters_through_as_tokens_come() {
    // Real time, but short: 600/min with one token banked (a 100 ms burst), three calls:
    // ~200 ms in all.
    let governor = pcsaga_engine::Governor::new(&GovernorConfig {
        burst: ms(100),
        ..config(&[("c", 600)], 4)
    });
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..3 {
        let governor = governor.clone();
        tasks.spawn(async move {
            let permit = governor.acquire(&call("c", &format!("c{i}"), false)).await;
            let at = Instant::now();
            permit.finish(Feedback::Answered, 1);
            at
        });
    }
    let mut times: Vec<Duration> = Vec::new();
    while let Some(at) = tasks.join_next().await {
        times.push(at.expect("task").duration_since(started));
    }
    times.sort();
    assert!(
        times[2] >= ms(190),
        "the third call waited two tokens: {times:?}"
    );
    let snapshot = governor.snapshot();
    let c = snapshot.iter().find(|s| s.class == "c").expect("class c");
    assert_eq!((c.granted, c.waiting), (3, 0));
}

#[test]
fn a_new_customer_joins_the_round_behind_those_already_waiting() {
    let t0 = Instant::now();
    let mut core = Core::new(&config(&[("c", 1_000_000)], 1), t0);
    let x1 = core.enqueue(&call("c", "x", false), t0, None);
    let x2 = core.enqueue(&call("c", "x", false), t0, None);
    let y = core.enqueue(&call("c", "y", false), t0, None);
    assert_eq!(serve(&mut core, t0), x1);
    // z arrives after x was served: it queues behind y (not yet served) and behind x's next
    // call (served as long ago as z's arrival, and queued first).
    let z = core.enqueue(&call("c", "z", false), t0 + ms(1), None);
    assert_eq!(
        [
            serve(&mut core, t0 + ms(2)),
            serve(&mut core, t0 + ms(3)),
            serve(&mut core, t0 + ms(4))
        ],
        [y, x2, z]
    );
}

#[test]
fn a_call_that_followed_pages_is_charged_for_each_request() {
    let t0 = Instant::now();
    let mut core = Core::new(&config(&[("entitlements", 60)], 4), t0);
    core.enqueue(&call("entitlements", "a", false), t0, None);
    let granted = core.dispatch(t0);
    // Three pages: two requests beyond the call's own.
    core.charge(granted[0].class, 2);
    core.finish(
        granted[0].class,
        t0,
        Feedback::Answered,
        t0,
        chrono::Utc::now(),
    );
    core.enqueue(&call("entitlements", "b", false), t0, None);
    assert_eq!(core.next_ready(t0), Some(t0 + Duration::from_secs(3)));
    assert!(core.dispatch(t0 + ms(2999)).is_empty());
    assert_eq!(core.dispatch(t0 + ms(3000)).len(), 1);
    let snapshot = core.snapshot(t0 + ms(3000));
    assert_eq!(
        snapshot
            .iter()
            .find(|c| c.class == "entitlements")
            .map(|c| c.granted),
        Some(4)
    );
}
