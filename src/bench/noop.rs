//! A workflow with the purchase saga's eight states whose steps do no I/O: the engine, store
//! and policies are the real ones; only Partner Center is taken away. Registration, cart
//! building and checkout are side-effecting, so their intents are committed as in production.

use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use pcsaga_engine::policy::StatePolicy;
use pcsaga_engine::{AttemptRecord, Decision, Executed, Plan, SagaView, Workflow};
use pcsaga_purchase::State;
use serde::{Deserialize, Serialize};

/// The context: how far the saga got, and a request id for side-effecting steps.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NoopContext {
    pub step: usize,
    pub request_id: Option<String>,
}

/// Records the instant of every plan, per saga, to measure the engine's time per transition.
#[derive(Debug, Default)]
pub struct NoopWorkflow {
    pub marks: Mutex<Vec<(String, Instant)>>,
    pub record: bool,
}

const SIDE_EFFECTING: [bool; 8] = [true, false, false, false, true, true, false, false];

impl Workflow for NoopWorkflow {
    type State = State;
    type Context = NoopContext;
    type Effect = usize;
    type Outcome = ();

    fn name(&self) -> &'static str {
        pcsaga_purchase::WORKFLOW_NAME
    }

    fn correlation_id(&self, _: &NoopContext) -> String {
        String::new()
    }

    fn effect_name(&self, effect: &usize) -> String {
        pcsaga_purchase::STATE_NAMES
            .get(*effect)
            .copied()
            .unwrap_or("noop")
            .to_owned()
    }

    fn validate_policy(&self, _: &str, _: &StatePolicy) -> Result<(), String> {
        Ok(())
    }

    fn plan(
        &self,
        saga: &SagaView<State, NoopContext>,
        _: DateTime<Utc>,
    ) -> Plan<usize, State, NoopContext> {
        if self.record {
            if let Ok(mut marks) = self.marks.lock() {
                marks.push((saga.id.clone(), Instant::now()));
            }
        }
        let step = saga.context.step.min(7);
        let mut context = saga.context.clone();
        if SIDE_EFFECTING[step] {
            context.request_id = Some(format!("{}-{step}", saga.id));
        }
        Plan::Call {
            effect: step,
            side_effecting: SIDE_EFFECTING[step],
            context,
        }
    }

    async fn execute(&self, _: &SagaView<State, NoopContext>, effect: &usize) -> Executed<()> {
        Executed {
            outcome: (),
            attempt: AttemptRecord {
                call: format!("noop-{effect}"),
                ..AttemptRecord::default()
            },
        }
    }

    fn decide(
        &self,
        saga: &SagaView<State, NoopContext>,
        effect: &usize,
        _: (),
    ) -> Decision<State, NoopContext> {
        let mut context = saga.context.clone();
        context.step = effect + 1;
        if context.step >= 8 {
            return Decision::Succeed {
                context,
                note: "done".into(),
            };
        }
        Decision::Advance {
            to: State::ALL[context.step],
            context,
            note: String::new(),
        }
    }

    fn prepare_resume(
        &self,
        saga: &SagaView<State, NoopContext>,
        _: State,
    ) -> Result<NoopContext, String> {
        Ok(saga.context.clone())
    }

    fn check_cancel(&self, _: &SagaView<State, NoopContext>) -> Result<(), String> {
        Ok(())
    }
}
