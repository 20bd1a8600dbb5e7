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

pub struct TestWorkflow<S = SqliteStore> {
    pub script: Arc<Mutex<Script>>,
    pub store: S,
}

impl<S: Store + Clone + std::fmt::Debug + 'static> Workflow for TestWorkflow<S> {
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

pub struct Harness<S = SqliteStore> {
    pub engine: Engine<TestWorkflow<S>, S>,
    pub store: S,
    pub clock: Arc<ManualClock>,
    pub script: Arc<Mutex<Script>>,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database of the test, dropped with the harness.
    pub pg: Option<Arc<PgTestDb>>,
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

pub async fn harness_on<S: Store + Clone + std::fmt::Debug + 'static>(
    dir: tempfile::TempDir,
    store: S,
    owner: &str,
    clock: Arc<ManualClock>,
) -> Harness<S> {
    harness_with(dir, store, owner, clock, |_| {}).await
}

pub async fn harness_with<S: Store + Clone + std::fmt::Debug + 'static>(
    dir: tempfile::TempDir,
    store: S,
    owner: &str,
    clock: Arc<ManualClock>,
    tune: impl FnOnce(&mut EngineConfig),
) -> Harness<S> {
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
        pg: None,
    }
}

impl<S: Store + Clone + std::fmt::Debug + 'static> Harness<S> {
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

// ---- one test, both stores ----------------------------------------------------------------

/// A store the engine's tests run on: SQLite in a temporary directory, or a PostgreSQL
/// database of the test's own.
pub trait Backend {
    type Store: Store + Clone + std::fmt::Debug + 'static;

    /// A fresh, empty store.
    fn harness(owner: &str) -> impl std::future::Future<Output = Harness<Self::Store>>;

    /// Another handle on `h`'s database (a second daemon's), with its own engine.
    fn another(
        h: &Harness<Self::Store>,
        owner: &str,
        tune: impl FnOnce(&mut EngineConfig),
    ) -> impl std::future::Future<Output = Harness<Self::Store>>;
}

pub struct Sqlite;
pub struct Postgres;

impl Backend for Sqlite {
    type Store = SqliteStore;

    async fn harness(owner: &str) -> Harness<SqliteStore> {
        harness(owner).await
    }

    async fn another(
        h: &Harness<SqliteStore>,
        owner: &str,
        tune: impl FnOnce(&mut EngineConfig),
    ) -> Harness<SqliteStore> {
        let store = SqliteStore::open(SqliteConfig::new(h.dir.path().join("test.db")))
            .await
            .expect("a second store");
        harness_with(
            tempfile::tempdir().expect("dir"),
            store,
            owner,
            h.clock.clone(),
            tune,
        )
        .await
    }
}

impl Backend for Postgres {
    type Store = pcsaga_engine::PgStore;

    async fn harness(owner: &str) -> Harness<pcsaga_engine::PgStore> {
        let db = PgTestDb::create().await;
        let store = db.store().await;
        let mut h = harness_on(
            tempfile::tempdir().expect("dir"),
            store,
            owner,
            Arc::new(ManualClock::at(t0())),
        )
        .await;
        h.pg = Some(Arc::new(db));
        h
    }

    async fn another(
        h: &Harness<pcsaga_engine::PgStore>,
        owner: &str,
        tune: impl FnOnce(&mut EngineConfig),
    ) -> Harness<pcsaga_engine::PgStore> {
        let db = h.pg.clone().expect("a PostgreSQL harness");
        let store = db.store().await;
        let mut other = harness_with(
            tempfile::tempdir().expect("dir"),
            store,
            owner,
            h.clock.clone(),
            tune,
        )
        .await;
        other.pg = Some(db);
        other
    }
}

/// The server the PostgreSQL tests use: `PCSAGA_TEST_PG`, default the local trust-authenticated
/// cluster. A test that cannot reach it fails; it never skips.
pub fn pg_server() -> String {
    std::env::var("PCSAGA_TEST_PG")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".to_owned())
}

/// A database of one test's own (a unique name), dropped when the test ends.
#[derive(Debug)]
pub struct PgTestDb {
    pub name: String,
    pub url: String,
}

impl PgTestDb {
    pub async fn create() -> Self {
        let server = pg_server();
        let name = format!("pcsaga_test_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(&server).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {server} cannot be reached ({e}): the PostgreSQL store's tests need it (set PCSAGA_TEST_PG, or run .ci/run, which starts it)"
            )
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create the test database");
        admin.close().await;
        let mut url = url::Url::parse(&server).expect("PCSAGA_TEST_PG is a URL");
        url.set_path(&format!("/{name}"));
        Self {
            name,
            url: url.to_string(),
        }
    }

    pub async fn store(&self) -> pcsaga_engine::PgStore {
        pcsaga_engine::PgStore::connect(pcsaga_engine::PgConfig::new(&self.url))
            .await
            .expect("the PostgreSQL store opens")
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A runtime of its own: Drop cannot await, and the test's runtime may be ending.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(admin) = sqlx::PgPool::connect(&pg_server()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// Runs a test written once, generic over [`Backend`], on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name::<$crate::support::Sqlite>().await
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name::<$crate::support::Postgres>().await
                }
            }
        )+
    };
}
