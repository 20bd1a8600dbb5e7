//! The rate governor: one per partner tenant, shared by every saga a daemon drives.
//!
//! Partner Center throttles per partner tenant and answers a call over its budget with 429 and
//! `Retry-After`. Its guidance is to wait for `Retry-After`, lower the call rate and avoid
//! immediate retries, which count against the limit. So every call waits here before it may
//! leave, and waits here only:
//!
//! - calls are grouped in *classes* (the workflow names a call's class), each with a budget in
//!   calls per minute, kept by a token bucket;
//! - a 429 on a class pauses that class for the whole tenant until its `Retry-After` (longer
//!   when 429s repeat), halves the class's allowed rate, which then grows back by a fixed
//!   share of the budget per second (AIMD);
//! - a call also needs one of the daemon's call slots (calls in flight at once);
//! - waiting calls are served money-first (calls of purchases that already sent a checkout go
//!   before the others), then round-robin across customers (least recently served first), so
//!   one customer's large batch cannot starve the rest;
//! - a wait here is not an attempt: the saga's retry policy never sees it.
//!
//! The decisions are a pure core ([`Core`]) over explicit instants, tested without a clock; the
//! [`Governor`] around it only locks, wakes waiters and sleeps until the next token.
//!
//! Shared between daemons (a PostgreSQL store, later): the state a class needs to agree on
//! across processes is small (`paused_until`, the allowed rate, the last 429), and a 429 seen by
//! one daemon only has to reach the others before their next call of that class. The per-daemon
//! bucket then takes a share of the budget. Today each daemon has its own governor and
//! publishes its [`ClassSnapshot`]s with its heartbeat.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// The class of calls a workflow did not classify, and of classes the configuration does not
/// name: effectively unlimited (the workflow owns classification).
pub const UNCLASSIFIED: &str = "unclassified";

/// The allowed rate never drops below this share of the budget, however many 429s arrive:
/// halving is for finding the service's current limit, not for stopping.
const FLOOR_SHARE: f64 = 1.0 / 64.0;
/// After a 429, the allowed rate grows back by this share of the budget per second: from half
/// the budget to all of it in 50 s.
const RECOVERY_SHARE_PER_S: f64 = 0.01;
/// The pause when a 429 carries no usable `Retry-After`.
const DEFAULT_PAUSE: Duration = Duration::from_secs(5);
/// The longest pause repeated 429s can build up (exponential from `Retry-After`).
const MAX_PAUSE: Duration = Duration::from_secs(300);
/// Customers remembered for round-robin once none of their calls waits; beyond it they are
/// forgotten (a forgotten customer is served as if new: first).
const MAX_REMEMBERED_CUSTOMERS: usize = 4096;

/// One class's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassBudget {
    pub name: String,
    /// Calls per minute for the whole tenant; at least 1.
    pub per_minute: u32,
}

/// How the governor runs.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernorConfig {
    /// The partner tenant it governs (for logs and status).
    pub tenant: String,
    pub classes: Vec<ClassBudget>,
    /// Calls in flight at once, across all classes.
    pub call_slots: usize,
    /// Tokens a class may bank, in seconds of its allowed rate (at least one token): how large
    /// a burst may leave at once after an idle spell. Partner Center's windows are a minute
    /// long; a short burst keeps calls evenly spread, so its buckets never run dry.
    pub burst: Duration,
}

impl GovernorConfig {
    /// A governor with no budgets: only the call slots limit calls (tests, benchmarks of the
    /// engine).
    pub fn unlimited(call_slots: usize) -> Self {
        Self {
            tenant: String::new(),
            classes: Vec::new(),
            call_slots,
            burst: Duration::from_secs(1),
        }
    }
}

/// How a call asks to be let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The call's class (a name of [`GovernorConfig::classes`]).
    pub class: &'static str,
    /// Whose call it is: waiting calls are served round-robin across customers.
    pub customer: String,
    /// Money may have moved for this saga (it sent a checkout): its calls go first.
    pub urgent: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            class: UNCLASSIFIED,
            customer: String::new(),
            urgent: false,
        }
    }
}

/// What a call's outcome tells the governor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// 429: the class is over the tenant's limit.
    Throttled { retry_after: Option<Duration> },
    /// Partner Center answered (anything but 429).
    Answered,
    /// No answer (timeout, connection lost): says nothing about rates.
    Unanswered,
}

/// A class as `pcsaga status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassSnapshot {
    pub class: String,
    pub budget_per_minute: u32,
    /// The rate allowed now (below the budget after a 429, until it has grown back).
    pub allowed_per_minute: f64,
    /// Calls waiting for this class now.
    pub waiting: usize,
    /// Milliseconds the pause in force still lasts (0: none).
    pub paused_ms: u64,
    pub last_throttled_at: Option<DateTime<Utc>>,
    pub last_retry_after_s: Option<u64>,
    /// HTTP requests let through (a call that follows pages counts each) and 429s received
    /// since the daemon started.
    pub granted: u64,
    pub throttled: u64,
    /// Total time calls of this class waited here, in milliseconds.
    pub waited_ms: u64,
}

#[derive(Debug)]
struct ClassState {
    name: String,
    budget: f64,
    allowed: f64,
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
    /// 429s in a row without an answered call between them: each doubles the pause.
    strikes: u32,
    /// When the rate was last halved: later 429s of calls admitted before it are echoes of
    /// the same overload and do not halve it again.
    decreased_at: Option<Instant>,
    last_throttled: Option<(DateTime<Utc>, Option<Duration>)>,
    granted: u64,
    throttled: u64,
    waited: Duration,
}

impl ClassState {
    fn new(name: &str, per_minute: u32, now: Instant, burst: Duration) -> Self {
        let budget = f64::from(per_minute.max(1));
        let mut class = Self {
            name: name.to_owned(),
            budget,
            allowed: budget,
            tokens: 0.0,
            refilled: now,
            paused_until: None,
            strikes: 0,
            decreased_at: None,
            last_throttled: None,
            granted: 0,
            throttled: 0,
            waited: Duration::ZERO,
        };
        class.tokens = class.capacity(burst);
        class
    }

    fn per_second(&self) -> f64 {
        self.allowed / 60.0
    }

    fn capacity(&self, burst: Duration) -> f64 {
        (self.per_second() * burst.as_secs_f64()).max(1.0)
    }

    /// Adds the tokens earned since the last refill, and grows the allowed rate back.
    fn refill(&mut self, now: Instant, burst: Duration) {
        // Nothing is earned while paused: a pause ends with an empty bucket.
        let from = match self.paused_until {
            Some(until) if now < until => {
                self.refilled = now;
                return;
            }
            Some(until) => self.refilled.max(until),
            None => self.refilled,
        };
        let elapsed = now.saturating_duration_since(from).as_secs_f64();
        self.refilled = now;
        if elapsed <= 0.0 {
            return;
        }
        if self.allowed < self.budget {
            self.allowed =
                (self.allowed + self.budget * RECOVERY_SHARE_PER_S * elapsed).min(self.budget);
        }
        self.tokens = (self.tokens + elapsed * self.per_second()).min(self.capacity(burst));
    }

    fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| now < until)
    }

    /// When this class can next let a call through.
    fn ready_at(&self, now: Instant) -> Instant {
        if let Some(until) = self.paused_until.filter(|until| now < *until) {
            // The bucket is empty when a pause ends; one token takes 1/rate.
            return until + Duration::from_secs_f64(1.0 / self.per_second());
        }
        if self.tokens >= 1.0 {
            return now;
        }
        now + Duration::from_secs_f64((1.0 - self.tokens) / self.per_second())
    }
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    class: usize,
    customer: String,
    urgent: bool,
    since: Instant,
    grant: Option<oneshot::Sender<()>>,
}

/// The governor's decisions, over explicit instants.
#[derive(Debug)]
pub struct Core {
    classes: Vec<ClassState>,
    names: HashMap<String, usize>,
    burst: Duration,
    slots_free: usize,
    waiters: Vec<Waiter>,
    /// Customer → the ticket of its last grant, or of the moment it first queued (round-robin:
    /// the smallest goes next).
    served: HashMap<String, u64>,
    ticket: u64,
    next_id: u64,
}

/// A call let through by [`Core::dispatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    pub id: u64,
    pub class: usize,
}

impl Core {
    pub fn new(config: &GovernorConfig, now: Instant) -> Self {
        let mut classes: Vec<ClassState> = config
            .classes
            .iter()
            .map(|c| ClassState::new(&c.name, c.per_minute, now, config.burst))
            .collect();
        if !config.classes.iter().any(|c| c.name == UNCLASSIFIED) {
            classes.push(ClassState::new(UNCLASSIFIED, u32::MAX, now, config.burst));
        }
        let names = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        Self {
            classes,
            names,
            burst: config.burst,
            slots_free: config.call_slots.max(1),
            waiters: Vec::new(),
            served: HashMap::new(),
            ticket: 0,
            next_id: 0,
        }
    }

    /// The index of a class by name; unknown names are [`UNCLASSIFIED`].
    pub fn class_index(&self, name: &str) -> usize {
        self.names
            .get(name)
            .or_else(|| self.names.get(UNCLASSIFIED))
            .copied()
            .unwrap_or(0)
    }

    /// Queues a call; returns its id.
    pub fn enqueue(
        &mut self,
        admission: &Admission,
        now: Instant,
        grant: Option<oneshot::Sender<()>>,
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        // A customer not seen before joins the round as if served just now: behind those
        // already waiting their turn (otherwise every new purchase's first call would go
        // before the next calls of purchases already under way).
        let ticket = self.ticket;
        self.served
            .entry(admission.customer.clone())
            .or_insert(ticket);
        self.waiters.push(Waiter {
            id,
            class: self.class_index(admission.class),
            customer: admission.customer.clone(),
            urgent: admission.urgent,
            since: now,
            grant,
        });
        id
    }

    /// Removes a waiter that gave up; true when it was still waiting.
    pub fn withdraw(&mut self, id: u64) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|w| w.id != id);
        before != self.waiters.len()
    }

    /// Lets through every waiting call that may go now, best first; returns them in order.
    pub fn dispatch(&mut self, now: Instant) -> Vec<Granted> {
        for class in &mut self.classes {
            class.refill(now, self.burst);
        }
        let mut granted = Vec::new();
        while self.slots_free > 0 {
            let best = self
                .waiters
                .iter()
                .enumerate()
                .filter(|(_, w)| {
                    let class = &self.classes[w.class];
                    !class.paused(now) && class.tokens >= 1.0
                })
                .min_by_key(|(_, w)| {
                    (
                        !w.urgent,
                        self.served.get(&w.customer).copied().unwrap_or(0),
                        w.id,
                    )
                })
                .map(|(i, _)| i);
            let Some(index) = best else { break };
            let mut waiter = self.waiters.swap_remove(index);
            let class = &mut self.classes[waiter.class];
            class.tokens -= 1.0;
            class.granted += 1;
            class.waited += now.saturating_duration_since(waiter.since);
            self.slots_free -= 1;
            self.ticket += 1;
            self.served.insert(waiter.customer.clone(), self.ticket);
            if let Some(tx) = waiter.grant.take() {
                if tx.send(()).is_err() {
                    // Its caller is gone: give the slot back (the token is spent, which only
                    // errs on the side of fewer calls).
                    self.slots_free += 1;
                    continue;
                }
            }
            granted.push(Granted {
                id: waiter.id,
                class: waiter.class,
            });
        }
        if self.served.len() > MAX_REMEMBERED_CUSTOMERS {
            let waiting: std::collections::HashSet<&str> =
                self.waiters.iter().map(|w| w.customer.as_str()).collect();
            self.served.retain(|c, _| waiting.contains(c.as_str()));
        }
        granted
    }

    /// When a waiting call's class next earns a token or ends its pause, so the waiters must
    /// dispatch again then. `None` when nothing waits, or every waiting call waits only for a
    /// call slot: a finished call dispatches, so no timer is needed (waking waiters on a timer
    /// while they wait for slots would spin).
    pub fn next_ready(&self, now: Instant) -> Option<Instant> {
        self.waiters
            .iter()
            .map(|w| self.classes[w.class].ready_at(now))
            .filter(|at| *at > now)
            .min()
    }

    /// A granted call finished: its slot is free again, and its outcome adjusts the class.
    pub fn finish(
        &mut self,
        class: usize,
        admitted_at: Instant,
        feedback: Feedback,
        now: Instant,
        wall: DateTime<Utc>,
    ) -> Option<ThrottleEvent> {
        self.slots_free += 1;
        let burst = self.burst;
        let class = self.classes.get_mut(class)?;
        match feedback {
            Feedback::Answered => {
                class.strikes = 0;
                None
            }
            Feedback::Unanswered => None,
            Feedback::Throttled { retry_after } => {
                class.refill(now, burst);
                class.throttled += 1;
                class.last_throttled = Some((wall, retry_after));
                // A call admitted before the last decrease was sent into the same overload:
                // the decrease already answered it.
                let echo = class.decreased_at.is_some_and(|at| admitted_at < at);
                let base = retry_after
                    .unwrap_or(DEFAULT_PAUSE)
                    .max(Duration::from_secs(1));
                let pause = if echo {
                    base
                } else {
                    class.strikes = class.strikes.saturating_add(1);
                    class.allowed = (class.allowed / 2.0).max(class.budget * FLOOR_SHARE);
                    class.decreased_at = Some(now);
                    base.saturating_mul(1 << (class.strikes - 1).min(8))
                        .min(MAX_PAUSE)
                };
                let until = now + pause;
                let extended = class.paused_until.is_none_or(|current| current < until);
                if extended {
                    class.paused_until = Some(until);
                }
                class.tokens = 0.0;
                (!echo).then(|| ThrottleEvent {
                    class: class.name.clone(),
                    pause,
                    allowed_per_minute: class.allowed,
                    budget_per_minute: class.budget,
                })
            }
        }
    }

    /// Holds `class` for `pause` as another daemon of the tenant was told to (its 429): no
    /// strike and no lower rate of ours, only the pause. Unknown classes are ignored.
    pub fn adopt_pause(&mut self, class: &str, pause: Duration, now: Instant) -> bool {
        let Some(class) = self.classes.iter_mut().find(|c| c.name == class) else {
            return false;
        };
        let until = now + pause.min(MAX_PAUSE);
        if class.paused_until.is_some_and(|current| current >= until) {
            return false;
        }
        class.paused_until = Some(until);
        class.tokens = 0.0;
        true
    }

    /// Charges `extra` requests a granted call made beyond its own (pages) to its class.
    pub fn charge(&mut self, class: usize, extra: u32) {
        if let Some(class) = self.classes.get_mut(class) {
            class.tokens -= f64::from(extra);
            class.granted += u64::from(extra);
        }
    }

    /// Every class, as status shows it.
    pub fn snapshot(&self, now: Instant) -> Vec<ClassSnapshot> {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, c)| ClassSnapshot {
                class: c.name.clone(),
                budget_per_minute: c.budget.min(f64::from(u32::MAX)) as u32,
                allowed_per_minute: c.allowed,
                waiting: self.waiters.iter().filter(|w| w.class == i).count(),
                paused_ms: c.paused_until.map_or(0, |until| {
                    u64::try_from(until.saturating_duration_since(now).as_millis())
                        .unwrap_or(u64::MAX)
                }),
                last_throttled_at: c.last_throttled.map(|(at, _)| at),
                last_retry_after_s: c.last_throttled.and_then(|(_, ra)| ra.map(|d| d.as_secs())),
                granted: c.granted,
                throttled: c.throttled,
                waited_ms: u64::try_from(c.waited.as_millis()).unwrap_or(u64::MAX),
            })
            .collect()
    }

    /// Calls waiting now.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

/// A 429 that paused a class (not an echo of one already handled), for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleEvent {
    pub class: String,
    pub pause: Duration,
    pub allowed_per_minute: f64,
    pub budget_per_minute: f64,
}

/// The governor a daemon's sagas share.
#[derive(Debug)]
pub struct Governor {
    core: Mutex<Core>,
    tenant: String,
}

impl Governor {
    pub fn new(config: &GovernorConfig) -> Arc<Self> {
        Arc::new(Self {
            core: Mutex::new(Core::new(config, Instant::now())),
            tenant: config.tenant.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // A poisoned lock means a panic elsewhere; the counters are still consistent enough
        // to go on (every mutation completes before anything can panic).
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the call may go. The future may be dropped: the wait is withdrawn (and a
    /// grant that raced with the drop is given back).
    pub async fn acquire(self: &Arc<Self>, admission: &Admission) -> Permit {
        let (tx, mut rx) = oneshot::channel();
        let started = Instant::now();
        let (id, class) = {
            let mut core = self.lock();
            let id = core.enqueue(admission, started, Some(tx));
            core.dispatch(started);
            (id, core.class_index(admission.class))
        };
        let mut guard = Withdraw {
            governor: self.clone(),
            id,
            class,
            granted: false,
        };
        loop {
            if rx.try_recv().is_ok() {
                break;
            }
            let wake = self.lock().next_ready(Instant::now());
            let sleep = wake.map_or(Duration::from_secs(1), |at| {
                at.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
            });
            tokio::select! {
                _ = &mut rx => break,
                () = tokio::time::sleep(sleep) => {
                    self.lock().dispatch(Instant::now());
                }
            }
        }
        guard.granted = true;
        Permit {
            governor: self.clone(),
            class,
            admitted_at: Instant::now(),
            done: false,
        }
    }

    /// Every class, for status and logs.
    pub fn snapshot(&self) -> Vec<ClassSnapshot> {
        self.lock().snapshot(Instant::now())
    }

    /// Adopts another daemon's pause of `class` (see [`Core::adopt_pause`]); true when it holds
    /// the class longer than before.
    pub fn adopt_pause(&self, class: &str, pause: Duration) -> bool {
        let now = Instant::now();
        let mut core = self.lock();
        let adopted = core.adopt_pause(class, pause, now);
        core.dispatch(now);
        adopted
    }

    /// The tenant it governs.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    fn finish(&self, class: usize, admitted_at: Instant, feedback: Feedback, http_requests: u32) {
        let now = Instant::now();
        let event = {
            let mut core = self.lock();
            core.charge(class, http_requests.saturating_sub(1));
            let event = core.finish(class, admitted_at, feedback, now, Utc::now());
            core.dispatch(now);
            event
        };
        if let Some(e) = event {
            tracing::warn!(
                tenant = %self.tenant,
                class = %e.class,
                pause_s = e.pause.as_secs(),
                allowed_per_minute = e.allowed_per_minute.round() as u64,
                budget_per_minute = e.budget_per_minute.min(1e12).round() as u64,
                "Partner Center throttled {} calls (429): every purchase of this tenant holds them for {} s, then sends them at {:.0}/min, growing back to {:.0}/min",
                e.class,
                e.pause.as_secs(),
                e.allowed_per_minute,
                e.budget_per_minute.min(1e12),
            );
        }
    }
}

/// Withdraws a wait whose future was dropped.
struct Withdraw {
    governor: Arc<Governor>,
    id: u64,
    class: usize,
    granted: bool,
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        let mut core = self.governor.lock();
        if !core.withdraw(self.id) {
            // Granted between the last poll and the drop: give the slot back.
            let now = Instant::now();
            core.finish(self.class, now, Feedback::Unanswered, now, Utc::now());
            core.dispatch(now);
        }
    }
}

/// A call let through. Report its outcome with [`Permit::finish`]; dropping it unreported
/// frees the slot and tells the governor nothing.
#[derive(Debug)]
pub struct Permit {
    governor: Arc<Governor>,
    class: usize,
    admitted_at: Instant,
    done: bool,
}

impl Permit {
    /// Reports the outcome and how many HTTP requests the call took (pages: each beyond the
    /// first is charged to the class as well, so the bucket may go below zero and later calls
    /// wait for it).
    pub fn finish(mut self, feedback: Feedback, http_requests: u32) {
        self.done = true;
        self.governor
            .finish(self.class, self.admitted_at, feedback, http_requests);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.governor
                .finish(self.class, self.admitted_at, Feedback::Unanswered, 1);
        }
    }
}

impl std::fmt::Debug for Withdraw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Withdraw").field("id", &self.id).finish()
    }
}
