//! A scripted workflow: `Start` → `Pay` (one side-effecting call) → `Wait` (polls until the
//! script says done) → success. Outcomes come from a script so tests choose every answer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pcsaga_engine::policy::{OnExhausted, Policies, StatePolicy};
use pcsaga_engine::{
    AttemptRecord, Decision, Engine, EngineConfig, Executed, ManualClock, Plan, SagaState,
    SagaView, SqliteConfig, SqliteStore, Store, Workflow,
};
use serde::{Deserialize, Serialize};

/// The test workflow's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum St {
    Start,
    Pay,
    Wait,
}

impl SagaState for St {
    const ALL: &'static [Self] = &[St::Start, St::Pay, St::Wait];

    fn name(self) -> &'static str {
        match self {
            St::Start => "Start",
            St::Pay => "Pay",
            St::Wait => "Wait",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ctx {
    pub request_id: Option<String>,
    pub paid: bool,
    pub polls: u32,
}

#[derive(Debug, Clone, Serialize)]
pub enum Effect {
    Pay { request_id: String },
    Look,
}

/// What the next call returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    Ok,
    Transient,
    Throttled(Duration),
    Permanent,
    NotYet,
}

/// Everything the workflow saw, for assertions.
#[derive(Debug, Default)]
pub struct Script {
    /// Calls wait for these, one each, before answering (stalled workers).
    pub stall: VecDeque<Arc<tokio::sync::Notify>>,
    pub answers: VecDeque<Answer>,
    /// (effect, request id, was the intent committed when the call ran?)
    pub calls: Vec<(String, Option<String>, bool)>,
    /// The saga of each call, in the order the calls started.
    pub sagas: Vec<String>,
}

pub struct TestWorkflow {
    pub script: Arc<Mutex<Script>>,
    pub store: SqliteStore,
}

impl Workflow for TestWorkflow {
    type State = St;
    type Context = Ctx;
    type Effect = Effect;
    type Outcome = Answer;

    fn name(&self) -> &'static str {
        "test"
    }

    fn correlation_id(&self, _: &Ctx) -> String {
        "corr".into()
    }

    fn effect_name(&self, effect: &Effect) -> String {
        match effect {
            Effect::Pay { .. } => "pay".into(),
            Effect::Look => "look".into(),
        }
    }

    fn validate_policy(&self, state: &str, policy: &StatePolicy) -> Result<(), String> {
        if state == "Pay" && policy.retry.on_exhausted == OnExhausted::Fail {
            return Err("retry.on_exhausted must be \"park\" once money may move".into());
        }
        Ok(())
    }

    fn plan(&self, saga: &SagaView<St, Ctx>, _now: DateTime<Utc>) -> Plan<Effect, St, Ctx> {
        match saga.state {
            St::Start => Plan::Decide(Decision::Advance {
                to: St::Pay,
                context: saga.context.clone(),
                note: "go".into(),
            }),
            St::Pay => {
                let mut context = saga.context.clone();
                let request_id = context
                    .request_id
                    .get_or_insert_with(|| uuid::Uuid::new_v4().to_string())
                    .clone();
                Plan::Call {
                    effect: Effect::Pay { request_id },
                    side_effecting: true,
                    context,
                }
            }
            _ => Plan::Call {
                effect: Effect::Look,
                side_effecting: false,
                context: saga.context.clone(),
            },
        }
    }

    async fn execute(&self, saga: &SagaView<St, Ctx>, effect: &Effect) -> Executed<Answer> {
        let stored = self.store.get(&saga.id).await.ok().flatten();
        let (name, request_id) = match effect {
            Effect::Pay { request_id } => ("pay", Some(request_id.clone())),
            Effect::Look => ("look", None),
        };
        let intent_committed = stored.is_some_and(|s| {
            request_id
                .as_ref()
                .is_some_and(|id| s.context.contains(id.as_str()))
        });
        let (answer, stall) = {
            let mut script = self.script.lock().expect("script");
            script
                .calls
                .push((name.into(), request_id.clone(), intent_committed));
            script.sagas.push(saga.id.clone());
            (
                script.answers.pop_front().unwrap_or(Answer::Ok),
                script.stall.pop_front(),
            )
        };
        if let Some(stall) = stall {
            stall.notified().await;
        }
        Executed {
            outcome: answer,
            attempt: AttemptRecord {
                call: name.into(),
                request_id,
                ..AttemptRecord::default()
            },
        }
    }

    fn decide(
        &self,
        saga: &SagaView<St, Ctx>,
        effect: &Effect,
        outcome: Answer,
    ) -> Decision<St, Ctx> {
        let mut context = saga.context.clone();
        match (effect, outcome) {
            (Effect::Pay { .. }, Answer::Ok) => {
                context.paid = true;
                Decision::Advance {
                    to: St::Wait,
                    context,
                    note: "paid".into(),
                }
            }
            (_, Answer::Transient) => Decision::Retry {
                context,
                retry_after: None,
                error: "transient".into(),
            },
            (_, Answer::Throttled(after)) => Decision::Retry {
                context,
                retry_after: Some(after),
                error: "429".into(),
            },
            (_, Answer::Permanent) => Decision::Fail {
                context,
                reason: "refused".into(),
            },
            (Effect::Look, Answer::NotYet) => {
                context.polls += 1;
                Decision::Poll {
                    context,
                    note: "not yet".into(),
                }
            }
            (Effect::Look, _) => Decision::Succeed {
                context,
                note: "done".into(),
            },
            (Effect::Pay { .. }, Answer::NotYet) => Decision::Retry {
                context,
                retry_after: None,
                error: "odd".into(),
            },
        }
    }

    fn prepare_resume(&self, saga: &SagaView<St, Ctx>, from: St) -> Result<Ctx, String> {
        if saga.context.paid && from != St::Wait {
            return Err(format!(
                "cannot resume from {}: the payment was made; resume from Wait",
                from.name()
            ));
        }
        Ok(saga.context.clone())
    }

    fn check_cancel(&self, saga: &SagaView<St, Ctx>) -> Result<(), String> {
        if saga.context.request_id.is_some() {
            Err("a payment may have been sent".into())
        } else {
            Ok(())
        }
    }
}

pub const POLICY: &str = r#"
workflow = "test"
[defaults.retry]
initial_interval_ms = 1000
multiplier = 2.0
max_interval_ms = 60000
max_attempts = 4
jitter = 0.0
[defaults.poll]
interval_ms = 10000
deadline_s = 60
[states.Pay.retry]
on_exhausted = "park"
"#;

pub struct Harness {
    pub engine: Engine<TestWorkflow, SqliteStore>,
    pub store: SqliteStore,
    pub clock: Arc<ManualClock>,
    pub script: Arc<Mutex<Script>>,
    pub dir: tempfile::TempDir,
}

pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("valid")
}

pub async fn harness(owner: &str) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(SqliteConfig::new(dir.path().join("test.db")))
        .await
        .expect("store opens");
    harness_on(dir, store, owner, Arc::new(ManualClock::at(t0()))).await
}

pub async fn harness_on(
    dir: tempfile::TempDir,
    store: SqliteStore,
    owner: &str,
    clock: Arc<ManualClock>,
) -> Harness {
    harness_with(dir, store, owner, clock, |_| {}).await
}

pub async fn harness_with(
    dir: tempfile::TempDir,
    store: SqliteStore,
    owner: &str,
    clock: Arc<ManualClock>,
    tune: impl FnOnce(&mut EngineConfig),
) -> Harness {
    let script = Arc::new(Mutex::new(Script::default()));
    let workflow = TestWorkflow {
        script: script.clone(),
        store: store.clone(),
    };
    let policies = Policies::parse(POLICY, "test", &St::names(), |s, p| {
        workflow.validate_policy(s, p)
    })
    .expect("policy");
    let mut config = EngineConfig::new(owner);
    config.lease = Duration::from_secs(30);
    tune(&mut config);
    let engine = Engine::new(workflow, store.clone(), policies, clock.clone(), config);
    Harness {
        engine,
        store,
        clock,
        script,
        dir,
    }
}

impl Harness {
    pub fn answer(&self, answers: &[Answer]) {
        self.script
            .lock()
            .expect("script")
            .answers
            .extend(answers.iter().cloned());
    }

    pub async fn submit(&self, key: &str) -> String {
        self.submit_for(key, "customer").await
    }

    pub async fn submit_for(&self, key: &str, customer: &str) -> String {
        self.engine
            .submit(key, "{}".into(), &Ctx::default(), Some(customer.into()))
            .await
            .expect("submit")
            .saga
            .id
    }

    pub fn calls(&self) -> Vec<(String, Option<String>, bool)> {
        self.script.lock().expect("script").calls.clone()
    }
}

/// Yields until `done` holds; fails the test, naming `what`, if it does not within a bounded
/// number of turns (the work it waits for is in-process and takes a handful).
pub async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{what} never happened");
}
