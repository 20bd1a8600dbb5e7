//! What a workflow gives the engine: a plan (the next call, as data), an executor for that
//! call, and a pure decision on its outcome.
//!
//! The split keeps I/O out of decisions (Restate, Temporal): `plan` is a pure function of the
//! saga and the clock, `decide` of the saga, the call and its outcome; only `execute` talks to
//! the outside world. The engine
//! persists a side-effecting plan's context (its *intent*: the request id it will send) before
//! `execute` runs, and persists the decision after; no database transaction spans the call.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::policy::StatePolicy;
use crate::store::SagaRecord;

/// A workflow's states: a closed set that prints as the names stored in saga rows and parses
/// back. The engine parses a row's state before anything else; a name this binary cannot
/// parse is never guessed at (the saga parks, see [`Workflow::continues`]).
pub trait SagaState: Copy + Eq + std::hash::Hash + Debug + Send + Sync + 'static {
    /// Every state, in order; the first is where sagas start.
    const ALL: &'static [Self];

    /// The name stored in saga rows, history and policies, and shown to operators.
    fn name(self) -> &'static str;

    /// The state a name stands for (any case), or `None`.
    fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// Every state's name, in order.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|s| s.name()).collect()
    }
}

/// A saga as the workflow sees it.
#[derive(Debug, Clone)]
pub struct SagaView<S, C> {
    pub id: String,
    pub state: S,
    pub context: C,
    /// Attempts made in the current state since it was entered or last made progress.
    pub attempt: u32,
    pub state_entered_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// What to do next.
#[derive(Debug, Clone)]
pub enum Plan<E, S, C> {
    /// Make a call. When `side_effecting`, `context` (which records the intent) is committed
    /// before the call is made, and the call is made only if that commit succeeded.
    Call {
        effect: E,
        side_effecting: bool,
        context: C,
    },
    /// No call needed: decide directly.
    Decide(Decision<S, C>),
}

/// A workflow's verdict after a plan or a call. The engine applies the state's policy to it
/// (backoff, poll cadence, deadlines, what happens when they run out).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<S, C> {
    /// Enter another state and run it at once.
    Advance { to: S, context: C, note: String },
    /// Stay, having made progress (the next call of the same state); run again at once.
    Continue { context: C, note: String },
    /// Stay after a failure that may pass; retry after the policy's backoff (or `retry_after`
    /// when that is longer). When the policy's attempts run out, its `on_exhausted` applies.
    Retry {
        context: C,
        retry_after: Option<Duration>,
        error: String,
    },
    /// Stay and look again after the poll interval; when the deadline passes, `on_deadline`.
    Poll { context: C, note: String },
    /// As [`Decision::Poll`], looking again no sooner than `after` (the service said when:
    /// `Retry-After` on a running export). The poll interval still applies when longer.
    PollAfter {
        context: C,
        note: String,
        after: Duration,
    },
    /// Stay, without counting an attempt, and run again after `wait`:
    /// the cause lies outside the saga and fixing it is an operator's job (credentials refused
    /// by the token service). The daemon also stops claiming while [`Workflow::hold`] says so.
    Hold {
        context: C,
        wait: Duration,
        reason: String,
    },
    /// The saga is done.
    Succeed { context: C, note: String },
    /// A permanent failure before any money moved: safe to fix and resume.
    Fail { context: C, reason: String },
    /// Stop for an operator: something needs a human (money may have moved).
    Park { context: C, reason: String },
}

impl<S, C> Decision<S, C> {
    /// A short name for tables and history rows.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Advance { .. } => "advance",
            Self::Continue { .. } => "continue",
            Self::Retry { .. } => "retry",
            Self::Poll { .. } | Self::PollAfter { .. } => "poll",
            Self::Hold { .. } => "hold",
            Self::Succeed { .. } => "succeed",
            Self::Fail { .. } => "fail",
            Self::Park { .. } => "park",
        }
    }

    /// The context the decision carries.
    pub fn context(&self) -> &C {
        match self {
            Self::Advance { context, .. }
            | Self::Continue { context, .. }
            | Self::Retry { context, .. }
            | Self::Poll { context, .. }
            | Self::PollAfter { context, .. }
            | Self::Hold { context, .. }
            | Self::Succeed { context, .. }
            | Self::Fail { context, .. }
            | Self::Park { context, .. } => context,
        }
    }
}

/// One call as the history records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    /// The call's name, e.g. `checkout`.
    pub call: String,
    pub http_status: Option<u16>,
    pub latency_ms: u64,
    pub request_id: Option<String>,
    /// The error class when the call failed (`transient`, `throttled`, ...).
    pub error_class: Option<String>,
    pub error: Option<String>,
    /// HTTP requests the call took (pages followed, a retry after a 401); 0 counts as one.
    /// The governor charges each to the call's class. Not stored in the history.
    #[serde(skip)]
    pub http_requests: u32,
}

/// The result of executing an effect.
#[derive(Debug)]
pub struct Executed<O> {
    pub outcome: O,
    pub attempt: AttemptRecord,
}

/// A durable workflow.
pub trait Workflow: Send + Sync + 'static {
    /// The saga's persisted context. Its JSON encoding must lose nothing (decoding it gives an
    /// equal value): the engine keeps the typed value between the steps of one claim and decodes
    /// the JSON only after a claim, and a saga resumed elsewhere must decide as this one would.
    type Context: Serialize + DeserializeOwned + Clone + Send + Sync + Debug + 'static;
    /// The saga's states (stored by name).
    type State: SagaState;
    /// A planned call, as data.
    type Effect: Serialize + Clone + Send + Sync + Debug + 'static;
    /// What a call returned.
    type Outcome: Send + Debug + 'static;

    /// The workflow's name, stored with every saga.
    fn name(&self) -> &'static str;

    /// Every state's name, in order; the first is where sagas start.
    fn states(&self) -> Vec<&'static str> {
        Self::State::names()
    }

    /// The version of this workflow's definition: its states and its context's shape. Bump it
    /// when a change means an earlier binary could not continue this binary's sagas (a state
    /// renamed or added, a context field an earlier binary would drop or misread), and teach
    /// [`Workflow::continues`] what this binary can still continue. Stored with every write.
    fn definition(&self) -> u32 {
        1
    }

    /// The version of the context's JSON shape. Bump it whenever the encoding changes, even
    /// compatibly, and teach [`Workflow::decode_context`] to read every earlier one: contexts of
    /// every schema up to this one must decode (fixture contexts of each are committed and
    /// tested). Stored with every write that encodes a context.
    fn context_schema(&self) -> u32 {
        1
    }

    /// Decodes a context stored at `schema` (at most [`Workflow::context_schema`]), with the
    /// request the saga was submitted with (`input`, as stored once in the row). The default
    /// reads the JSON as it is.
    fn decode_context(
        &self,
        _schema: u32,
        context: &str,
        _input: &str,
    ) -> Result<Self::Context, String> {
        serde_json::from_str(context).map_err(|e| e.to_string())
    }

    /// Whether this binary can continue a saga as stored: it was written at a definition and
    /// a context schema this binary knows, its state parses, and its context decodes. `Err`
    /// says why not; the engine then parks the saga without a call, and `pcsaga check-upgrade`
    /// lists it. A workflow that bumps its definition overrides this to upgrade (or refuse)
    /// older sagas.
    fn continues(&self, saga: &SagaRecord) -> Result<(Self::State, Self::Context), String> {
        if saga.definition > self.definition() {
            return Err(format!(
                "it was written by a newer release (workflow definition {}; this binary knows up to {}); run it with that release",
                saga.definition,
                self.definition()
            ));
        }
        if saga.context_schema > self.context_schema() {
            return Err(format!(
                "its context was written by a newer release (context schema {}; this binary knows up to {}); run it with that release",
                saga.context_schema,
                self.context_schema()
            ));
        }
        let Some(state) = Self::State::parse(&saga.state) else {
            return Err(format!(
                "its state {:?} is not one this binary knows ({}); it was written by another release or the row is damaged. Nothing was called; run it with the release that wrote it",
                saga.state,
                self.states().join(", ")
            ));
        };
        let context = self
            .decode_context(saga.context_schema, &saga.context, &saga.input)
            .map_err(|e| {
                format!(
                    "its context cannot be read by this binary ({e}); inspect it with `pcsaga show {}`",
                    saga.id
                )
            })?;
        Ok((state, context))
    }

    /// The id that ties a saga's calls together in logs (a purchase's `MS-CorrelationId`).
    fn correlation_id(&self, context: &Self::Context) -> String;

    /// A call's short name (`checkout`), for logs and crash points.
    fn effect_name(&self, effect: &Self::Effect) -> String;

    /// A call's method and path template (`POST /customers/{c}/carts/{cart}/checkout`), for
    /// the operator's log; no ids, so lines group by call.
    fn effect_route(&self, _effect: &Self::Effect) -> &'static str {
        ""
    }

    /// Checks a state's policy against the workflow's own rules (for example: a state after
    /// money may have moved must park, never fail, when it runs out of attempts).
    fn validate_policy(&self, state: &str, policy: &StatePolicy) -> Result<(), String>;

    /// The next thing to do.
    fn plan(
        &self,
        saga: &SagaView<Self::State, Self::Context>,
        now: DateTime<Utc>,
    ) -> Plan<Self::Effect, Self::State, Self::Context>;

    /// Performs a call. Must not touch the saga tables (the engine's; a workflow may keep tables
    /// of its own, as billing reconciliation stages the lines it reads) and must not panic on
    /// outside input.
    fn execute(
        &self,
        saga: &SagaView<Self::State, Self::Context>,
        effect: &Self::Effect,
    ) -> impl Future<Output = Executed<Self::Outcome>> + Send;

    /// How a call waits in the rate governor: its class, its customer, whether money may
    /// have moved for the saga (its calls go first). Default: unclassified.
    fn admission(
        &self,
        _saga: &SagaView<Self::State, Self::Context>,
        _effect: &Self::Effect,
    ) -> crate::governor::Admission {
        crate::governor::Admission::default()
    }

    /// What an outcome tells the rate governor (a 429 pauses the call's class for every saga).
    fn feedback(&self, _outcome: &Self::Outcome) -> crate::governor::Feedback {
        crate::governor::Feedback::Answered
    }

    /// An answer the workflow already has (a cache), so the call need not wait for the
    /// governor or leave the process. `None`: make the call. The step's history row then
    /// carries no attempt and says it was answered locally.
    fn answer_locally(
        &self,
        _saga: &SagaView<Self::State, Self::Context>,
        _effect: &Self::Effect,
    ) -> Option<Self::Outcome> {
        None
    }

    /// Decides what a call's outcome means: a pure function of the saga, the call and its
    /// outcome (time enters through the policies the engine applies to the decision).
    fn decide(
        &self,
        saga: &SagaView<Self::State, Self::Context>,
        effect: &Self::Effect,
        outcome: Self::Outcome,
    ) -> Decision<Self::State, Self::Context>;

    /// Whether an operator may resume a stopped saga in `from` (default: its current state),
    /// and the context to resume with. Refusals say why.
    fn prepare_resume(
        &self,
        saga: &SagaView<Self::State, Self::Context>,
        from: Self::State,
    ) -> Result<Self::Context, String>;

    /// Whether an operator may cancel the saga. Refusals say why.
    fn check_cancel(&self, saga: &SagaView<Self::State, Self::Context>) -> Result<(), String>;

    /// A reason the daemon must claim no new work now (say, the token service refuses our
    /// credentials: every purchase would only hold), or `None`. Called before every claim; it
    /// may probe the outside world, so it should answer from a cache between probes.
    fn hold(&self) -> impl Future<Output = Option<String>> + Send {
        std::future::ready(None)
    }
}
