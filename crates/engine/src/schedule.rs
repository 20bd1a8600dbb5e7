//! How a workflow's decision becomes the saga's next row: the state's policy applied.
//!
//! A pure function of the decision, the saga as it was, the policy and the clock, so that
//! backoff, poll cadence, deadlines and exhaustion are tested without a database or a timer.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::policy::{after, poll_delay, retry_delay, seed_of, OnExhausted, StatePolicy};
use crate::store::{EventKind, HistoryEvent, SagaStatus};
use crate::workflow::{Decision, SagaState};

/// The saga before the decision.
#[derive(Debug, Clone)]
pub struct Before<'a, S> {
    pub id: &'a str,
    pub state: S,
    pub attempt: u32,
    pub total_attempts: u32,
    pub state_entered_at: DateTime<Utc>,
}

/// The saga after the decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled<S, C> {
    pub state: S,
    pub status: SagaStatus,
    pub context: C,
    pub attempt: u32,
    pub total_attempts: u32,
    pub state_entered_at: DateTime<Utc>,
    /// When to run next; `None` once stopped.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Whether the next step can run at once, in the same lease.
    pub run_now: bool,
    pub last_error: Option<String>,
    pub wait_reason: Option<String>,
    /// The transition, for the history.
    pub event: HistoryEvent,
}

/// Applies `policy` to `decision`.
pub fn schedule<S: SagaState, C>(
    decision: Decision<S, C>,
    before: &Before<'_, S>,
    policy: &StatePolicy,
    now: DateTime<Utc>,
) -> Scheduled<S, C> {
    let seed = seed_of(before.id);
    let from = before.state;
    let name = from.name();
    let stay = |context: C,
                attempt: u32,
                next: DateTime<Utc>,
                wait: String,
                error: Option<String>,
                note: String| Scheduled {
        state: from,
        status: SagaStatus::Active,
        context,
        attempt,
        total_attempts: before.total_attempts + 1,
        state_entered_at: before.state_entered_at,
        next_run_at: Some(next),
        run_now: next <= now,
        last_error: error,
        wait_reason: Some(wait),
        event: HistoryEvent::new(EventKind::Transition)
            .state(name)
            .to_state(name)
            .detail(note),
    };
    let stop = |context: C, status: SagaStatus, reason: String, kind: &str| Scheduled {
        state: from,
        status,
        context,
        attempt: before.attempt,
        total_attempts: before.total_attempts + 1,
        state_entered_at: before.state_entered_at,
        next_run_at: None,
        run_now: false,
        last_error: (status != SagaStatus::Succeeded).then(|| reason.clone()),
        wait_reason: None,
        event: HistoryEvent::new(EventKind::Transition)
            .state(name)
            .to_state(status.as_str())
            .detail(format!("{kind}: {reason}")),
    };
    let exhausted = |context: C, on: OnExhausted, reason: String| match on {
        OnExhausted::Fail => stop(context, SagaStatus::Failed, reason, "fail"),
        OnExhausted::Park => stop(context, SagaStatus::NeedsAttention, reason, "park"),
    };
    let poll = |context: C, note: String, at_least: Duration| {
        let deadline = after(before.state_entered_at, policy.poll.deadline);
        if now >= deadline {
            let reason = format!(
                "{name} did not finish within its {} deadline: {note}",
                human(policy.poll.deadline)
            );
            return exhausted(context, policy.poll.on_deadline, reason);
        }
        let polls = before.attempt + 1;
        let next = after(now, poll_delay(policy, polls, seed).max(at_least)).min(deadline);
        let wait = format!(
            "{note}; next look at {}",
            next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        );
        stay(context, polls, next, wait, None, format!("poll: {note}"))
    };
    match decision {
        Decision::Advance { to, context, note } => Scheduled {
            state: to,
            status: SagaStatus::Active,
            context,
            attempt: 0,
            total_attempts: before.total_attempts + 1,
            state_entered_at: now,
            next_run_at: Some(now),
            run_now: true,
            last_error: None,
            wait_reason: None,
            event: HistoryEvent::new(EventKind::Transition)
                .state(name)
                .to_state(to.name())
                .detail(note),
        },
        Decision::Continue { context, note } => {
            stay(context, 0, now, "next call".to_owned(), None, note)
        }
        Decision::Retry {
            context,
            retry_after,
            error,
        } => {
            let attempt = before.attempt + 1;
            if attempt >= policy.retry.max_attempts {
                let reason = format!("{attempt} attempts in {name} failed; last error: {error}");
                return exhausted(context, policy.retry.on_exhausted, reason);
            }
            let backoff = retry_delay(&policy.retry, attempt, seed);
            // Retry-After wins when it is longer than our own backoff.
            let delay = retry_after.map_or(backoff, |server| server.max(backoff));
            let next = after(now, delay);
            let wait = format!(
                "retry {attempt} of {} at {}",
                policy.retry.max_attempts - 1,
                next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
            stay(
                context,
                attempt,
                next,
                wait,
                Some(error.clone()),
                format!("retry in {}: {error}", human(delay)),
            )
        }
        Decision::Poll { context, note } => poll(context, note, Duration::ZERO),
        Decision::PollAfter {
            context,
            note,
            after: at_least,
        } => poll(context, note, at_least),
        Decision::Hold {
            context,
            wait,
            reason,
        } => {
            // Not an attempt of the saga's: the policy's counters and deadlines stay as they were.
            let next = after(now, wait);
            let mut held = stay(
                context,
                before.attempt,
                next,
                format!(
                    "held until {}: {reason}",
                    next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                ),
                Some(reason.clone()),
                format!("hold {}: {reason}", human(wait)),
            );
            held.run_now = false;
            held
        }
        Decision::Succeed { context, note } => {
            stop(context, SagaStatus::Succeeded, note, "succeed")
        }
        Decision::Fail { context, reason } => stop(context, SagaStatus::Failed, reason, "fail"),
        Decision::Park { context, reason } => {
            stop(context, SagaStatus::NeedsAttention, reason, "park")
        }
    }
}

/// A duration for people: `850ms`, `12s`, `4m10s`, `2h`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}s", (ms + 500) / 1000)
    } else if ms < 3_600_000 {
        let s = ms / 1000;
        if s % 60 == 0 {
            format!("{}m", s / 60)
        } else {
            format!("{}m{}s", s / 60, s % 60)
        }
    } else {
        let m = ms / 60_000;
        if m % 60 == 0 {
            format!("{}h", m / 60)
        } else {
            format!("{}h{}m", m / 60, m % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{PollPolicy, RetryPolicy};

    fn policy() -> StatePolicy {
        StatePolicy {
            retry: RetryPolicy {
                initial_interval: Duration::from_secs(1),
                multiplier: 2.0,
                max_interval: Duration::from_secs(60),
                max_attempts: 3,
                jitter: 0.0,
                on_exhausted: OnExhausted::Park,
            },
            poll: PollPolicy {
                interval: Duration::from_secs(10),
                deadline: Duration::from_secs(60),
                on_deadline: OnExhausted::Fail,
            },
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("valid")
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    enum St {
        S,
        T,
    }

    impl SagaState for St {
        const ALL: &'static [Self] = &[St::S, St::T];
        fn name(self) -> &'static str {
            match self {
                St::S => "S",
                St::T => "T",
            }
        }
    }

    fn before(attempt: u32) -> Before<'static, St> {
        Before {
            id: "saga",
            state: St::S,
            attempt,
            total_attempts: 5,
            state_entered_at: t(0),
        }
    }

    /// One row per case: decision, saga before, clock → (state, status, attempt, seconds until next run).
    #[track_caller]
    fn check(
        decision: Decision<St, u8>,
        attempt: u32,
        now: i64,
        expected: (&str, SagaStatus, u32, Option<i64>),
    ) {
        let s = schedule(decision, &before(attempt), &policy(), t(now));
        let next = s.next_run_at.map(|n| (n - t(now)).num_seconds());
        assert_eq!((s.state.name(), s.status, s.attempt, next), expected);
        assert_eq!(s.total_attempts, 6, "every decision counts");
    }

    #[test]
    fn decisions_become_schedules() {
        let ctx = 0u8;
        check(
            Decision::Advance {
                to: St::T,
                context: ctx,
                note: String::new(),
            },
            2,
            5,
            ("T", SagaStatus::Active, 0, Some(0)),
        );
        check(
            Decision::Continue {
                context: ctx,
                note: String::new(),
            },
            2,
            5,
            ("S", SagaStatus::Active, 0, Some(0)),
        );
        check(
            Decision::Retry {
                context: ctx,
                retry_after: None,
                error: "e".into(),
            },
            0,
            5,
            ("S", SagaStatus::Active, 1, Some(1)),
        );
        check(
            Decision::Retry {
                context: ctx,
                retry_after: None,
                error: "e".into(),
            },
            1,
            5,
            ("S", SagaStatus::Active, 2, Some(2)),
        );
        // Retry-After longer than the backoff wins; shorter does not.
        check(
            Decision::Retry {
                context: ctx,
                retry_after: Some(Duration::from_secs(30)),
                error: "e".into(),
            },
            0,
            5,
            ("S", SagaStatus::Active, 1, Some(30)),
        );
        check(
            Decision::Retry {
                context: ctx,
                retry_after: Some(Duration::from_millis(10)),
                error: "e".into(),
            },
            1,
            5,
            ("S", SagaStatus::Active, 2, Some(2)),
        );
        // The third attempt exhausts max_attempts = 3: park, as the policy says.
        check(
            Decision::Retry {
                context: ctx,
                retry_after: None,
                error: "e".into(),
            },
            2,
            5,
            ("S", SagaStatus::NeedsAttention, 2, None),
        );
        check(
            Decision::Poll {
                context: ctx,
                note: "n".into(),
            },
            0,
            5,
            ("S", SagaStatus::Active, 1, Some(10)),
        );
        // A poll never overshoots the deadline, and past it the deadline action applies.
        check(
            Decision::Poll {
                context: ctx,
                note: "n".into(),
            },
            3,
            55,
            ("S", SagaStatus::Active, 4, Some(5)),
        );
        check(
            Decision::Poll {
                context: ctx,
                note: "n".into(),
            },
            4,
            60,
            ("S", SagaStatus::Failed, 4, None),
        );
        // A hold waits as long as it says and counts no attempt, even past the deadline.
        check(
            Decision::Hold {
                context: ctx,
                wait: Duration::from_secs(60),
                reason: "r".into(),
            },
            2,
            70,
            ("S", SagaStatus::Active, 2, Some(60)),
        );
        check(
            Decision::Succeed {
                context: ctx,
                note: String::new(),
            },
            0,
            5,
            ("S", SagaStatus::Succeeded, 0, None),
        );
        check(
            Decision::Fail {
                context: ctx,
                reason: "r".into(),
            },
            0,
            5,
            ("S", SagaStatus::Failed, 0, None),
        );
        check(
            Decision::Park {
                context: ctx,
                reason: "r".into(),
            },
            0,
            5,
            ("S", SagaStatus::NeedsAttention, 0, None),
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(human(Duration::from_millis(850)), "850ms");
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(250)), "4m10s");
        assert_eq!(human(Duration::from_secs(7200)), "2h");
        // The boundaries: a second is "1s", a minute "1m", an hour "1h"; minutes and hours
        // carry their remainders.
        assert_eq!(human(Duration::from_millis(999)), "999ms");
        assert_eq!(human(Duration::from_millis(1000)), "1s");
        assert_eq!(human(Duration::from_secs(60)), "1m");
        assert_eq!(human(Duration::from_secs(61)), "1m1s");
        assert_eq!(human(Duration::from_secs(3600)), "1h");
        assert_eq!(human(Duration::from_secs(3660)), "1h1m");
    }
}
