//! Driving one claimed saga, step by step. Each step is four named parts:
//!
//! 1. **prepare**: the context to work on (kept typed from the last commit, or read from the
//!    row); a saga this binary cannot continue is parked here, before any call;
//! 2. **act**: the plan (made ahead at the last commit, or now), the intent committed before a
//!    side-effecting call, the call (through the governor) or a local answer, the decision;
//! 3. **settle**: the state's policy applied to the decision, the operator's log lines, the row
//!    to write, and, when the saga runs on, the next plan made now with its intent folded in;
//! 4. **commit**, fenced.
//!
//! Losing the lease is a value ([`Held::Lost`]) that ends the drive, never an error.

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tracing::Instrument;

use crate::policy::after;
use crate::runtime::{cannot_continue, CrashAt, Driven, Engine};
use crate::schedule::{schedule, Before, Scheduled};
use crate::store::{EventKind, HistoryEvent, SagaRecord, SagaUpdate, Store, Writer};
use crate::workflow::{AttemptRecord, Decision, Executed, Plan, SagaState, SagaView, Workflow};
use crate::Error;

/// Whether the worker still held the saga when it wrote or waited.
#[derive(Debug)]
pub(crate) enum Held<T> {
    Held(T),
    /// Another writer took the saga over; this worker steps back.
    Lost,
}

/// A plan made ahead of its step, and whether its intent is already committed.
type Planned<W> = (
    Plan<<W as Workflow>::Effect, <W as Workflow>::State, <W as Workflow>::Context>,
    bool,
);

/// The saga as the workflow sees it.
type View<W> = SagaView<<W as Workflow>::State, <W as Workflow>::Context>;

/// What a step decided, and the call it made.
struct Acted<S, C> {
    decision: Decision<S, C>,
    /// The call's name, its attempt and its route, when a call left the process.
    attempt: Option<(String, AttemptRecord, &'static str)>,
    /// The call answered from the workflow's memory, without leaving the process.
    answered_locally: Option<String>,
}

/// What a settled step leaves for the next.
enum Next<W: Workflow> {
    /// The saga runs on in this claim: its state and context as committed, and its next plan.
    RunOn((W::State, W::Context), Option<Planned<W>>),
    /// The drive ends.
    Stop(Driven),
}

impl<W: Workflow, S: Store> Engine<W, S> {
    /// Drives one claimed saga until it waits, stops, hits the step limit, or is fenced.
    pub async fn drive(
        &self,
        mut saga: SagaRecord,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Driven, Error> {
        let mut planned: Option<Planned<W>> = None;
        // The state and context as last committed, kept typed between the steps of one claim:
        // the row holds their exact encoding, so reading it back would only cost time.
        let mut carried: Option<(W::State, W::Context)> = None;
        for _ in 0..self.config().max_steps_per_claim.max(1) {
            if *shutdown.borrow() {
                return self.release(&mut saga, "shutdown").await;
            }
            let mut view = match self.prepare(&mut saga, carried.take()).await? {
                Ok(view) => view,
                Err(stopped) => return Ok(stopped),
            };
            let span = tracing::info_span!(
                "step",
                purchase = %saga.id,
                correlation = %self.workflow().correlation_id(&view.context),
                state = %saga.state,
            );
            let acted = self
                .act(&mut saga, &mut view, planned.take())
                .instrument(span.clone())
                .await?;
            let Held::Held(acted) = acted else {
                return Ok(Driven::Fenced);
            };
            match self
                .settle(&mut saga, view.state, acted, shutdown)
                .instrument(span)
                .await?
            {
                Next::RunOn(typed, plan) => {
                    carried = Some(typed);
                    planned = plan;
                }
                Next::Stop(driven) => return Ok(driven),
            }
        }
        self.release(&mut saga, "step limit of one claim reached")
            .await
    }

    /// The view to work on; `Err` when the saga cannot be continued by this binary and was
    /// parked (or the park was fenced).
    async fn prepare(
        &self,
        saga: &mut SagaRecord,
        carried: Option<(W::State, W::Context)>,
    ) -> Result<Result<View<W>, Driven>, Error> {
        let read = match carried {
            Some(typed) => Ok(typed),
            None => self.workflow().continues(saga),
        };
        let (state, context) = match read {
            Ok(typed) => typed,
            Err(why) => {
                // Never guess with a state or a context this binary does not know (a newer
                // release's, or a damaged row): park it for an operator, calling nothing.
                let (update, reason) = cannot_continue(saga, &why);
                let event = HistoryEvent::new(EventKind::Transition)
                    .state(saga.state.clone())
                    .to_state("needs_attention")
                    .detail(reason);
                let parked = self
                    .commit(saga, self.worker(None), self.now(), update, vec![event])
                    .await?;
                return Ok(Err(parked));
            }
        };
        Ok(Ok(SagaView {
            id: saga.id.clone(),
            state,
            context,
            attempt: saga.attempt,
            state_entered_at: saga.state_entered_at,
            created_at: saga.created_at,
        }))
    }

    /// Plans (or takes the plan made ahead), commits the intent of a side-effecting call,
    /// makes the call or takes a local answer, and decides.
    async fn act(
        &self,
        saga: &mut SagaRecord,
        view: &mut View<W>,
        planned: Option<Planned<W>>,
    ) -> Result<Held<Acted<W::State, W::Context>>, Error> {
        let workflow = self.workflow();
        let now = self.now();
        let (plan, intent_done) = planned.unwrap_or_else(|| (workflow.plan(view, now), false));
        let (effect, side_effecting, context) = match plan {
            Plan::Decide(decision) => {
                return Ok(Held::Held(Acted {
                    decision,
                    attempt: None,
                    answered_locally: None,
                }))
            }
            Plan::Call {
                effect,
                side_effecting,
                context,
            } => (effect, side_effecting, context),
        };
        let call = workflow.effect_name(&effect);
        self.crash_if(CrashAt::AfterClaim, &call);
        if side_effecting && !self.config().unsafe_skip_intent && !intent_done {
            // Persist before you send: the intent (and the request id in the context) is
            // durable before the call leaves.
            if let Held::Lost = self.commit_intent(saga, &effect, &context, now).await? {
                return Ok(Held::Lost);
            }
        }
        if side_effecting {
            self.crash_if(CrashAt::AfterIntent, &call);
        }
        view.context = context;
        if let Some(outcome) = workflow.answer_locally(view, &effect) {
            return Ok(Held::Held(Acted {
                decision: workflow.decide(view, &effect, outcome),
                attempt: None,
                answered_locally: Some(call),
            }));
        }
        let Held::Held(executed) = self.call(saga, view, &effect).await? else {
            return Ok(Held::Lost);
        };
        self.crash_if(CrashAt::BeforeRecord, &call);
        Ok(Held::Held(Acted {
            decision: workflow.decide(view, &effect, executed.outcome),
            attempt: Some((call, executed.attempt, workflow.effect_route(&effect))),
            answered_locally: None,
        }))
    }

    /// Commits a side-effecting call's intent: the context carrying its request id, and the
    /// call as a history row.
    async fn commit_intent(
        &self,
        saga: &mut SagaRecord,
        effect: &W::Effect,
        context: &W::Context,
        now: DateTime<Utc>,
    ) -> Result<Held<()>, Error> {
        let lease_until = after(now, self.config().lease);
        let update = SagaUpdate {
            next_run_at: Some(lease_until),
            ..SagaUpdate::from(&*saga)
        };
        let update = self.with_context(update, context)?;
        let event = HistoryEvent::new(EventKind::Intent)
            .state(saga.state.clone())
            .detail(serde_json::to_string(effect).unwrap_or_default());
        let written = self
            .commit(
                saga,
                self.worker(Some(lease_until)),
                now,
                update,
                vec![event],
            )
            .await?;
        Ok(if written == Driven::Fenced {
            Held::Lost
        } else {
            Held::Held(())
        })
    }

    /// Makes a call: waits in the governor (its class's budget, a call slot, its turn among
    /// customers), then executes it and tells the governor what came back. The wait is not an
    /// attempt. It can be long (a paused class): the lease is renewed meanwhile, and once more
    /// before the call if a quarter of it is gone, so the outcome can still be committed.
    async fn call(
        &self,
        saga: &mut SagaRecord,
        view: &View<W>,
        effect: &W::Effect,
    ) -> Result<Held<Executed<W::Outcome>>, Error> {
        let workflow = self.workflow();
        let lease = self.config().lease;
        let owner = self.config().owner.clone();
        let admission = workflow.admission(view, effect);
        let waiting = std::time::Instant::now();
        let acquire = self.governor().acquire(&admission);
        tokio::pin!(acquire);
        let permit = loop {
            tokio::select! {
                permit = &mut acquire => break permit,
                () = tokio::time::sleep(lease / 4) => {
                    if self.renew(saga, &owner).await? == Driven::Fenced {
                        return Ok(Held::Lost);
                    }
                }
            }
        };
        crate::metrics::governor_wait(admission.class, waiting.elapsed());
        let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        if saga
            .lease_expires_at
            .is_none_or(|until| until - self.now() < lease * 3 / 4)
            && self.renew(saga, &owner).await? == Driven::Fenced
        {
            return Ok(Held::Lost);
        }
        let executed = workflow.execute(view, effect).await;
        crate::metrics::call(admission.class, &executed.attempt);
        permit.finish(
            workflow.feedback(&executed.outcome),
            executed.attempt.http_requests,
        );
        Ok(Held::Held(executed))
    }

    /// Applies the state's policy to the decision, logs it for operators, writes the step
    /// (one history row, carrying the call) and, when the saga runs on, plans the next step
    /// now and folds its intent into the same commit.
    async fn settle(
        &self,
        saga: &mut SagaRecord,
        state: W::State,
        acted: Acted<W::State, W::Context>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Next<W>, Error> {
        let config = self.config();
        let now = self.now();
        let kind = acted.decision.kind();
        let scheduled = schedule(
            acted.decision,
            &Before {
                id: &saga.id,
                state,
                attempt: saga.attempt,
                total_attempts: saga.total_attempts,
                state_entered_at: saga.state_entered_at,
            },
            &self.policies().get(&saga.state),
            now,
        );
        if let Some((_, attempt, route)) = &acted.attempt {
            crate::oplog::call(self.tally(), saga, route, attempt);
        }
        crate::oplog::decided(self.tally(), saga, kind, &scheduled, now, &config.command);
        let workflow_name = self.workflow().name();
        crate::metrics::transition(workflow_name, kind);
        if kind == "retry" {
            crate::metrics::retry(workflow_name, scheduled.state.name());
        }
        if scheduled.status != crate::store::SagaStatus::Active {
            crate::metrics::finished(workflow_name, scheduled.status.as_str());
        }
        let keep = scheduled.run_now && !*shutdown.borrow();
        let lease_until = keep.then(|| after(now, config.lease));
        let run_now = scheduled.run_now;
        let call = acted.attempt.as_ref().map(|(call, ..)| call.clone());
        let next_state = scheduled.state;
        let (update, mut event, context) = row_of(saga, scheduled, keep, lease_until);
        // One history row per step: the call and its outcome ride on the transition they led
        // to (one row fewer to write per call).
        if let Some((_, attempt, _)) = acted.attempt {
            event.attempt = Some(attempt);
        }
        if let Some(call) = &acted.answered_locally {
            event.detail = Some(format!(
                "{} ({call} answered locally, no call made)",
                event.detail.as_deref().unwrap_or("")
            ));
        }
        let mut events = vec![event];
        let (written, planned) = if keep {
            let (written, planned, intent) =
                self.plan_ahead(saga, next_state, &update, context, now);
            events.extend(intent);
            (written, Some(planned))
        } else {
            (context, None)
        };
        let update = self.with_context(update, &written)?;
        if self
            .commit(saga, self.worker(lease_until), now, update, events)
            .await?
            == Driven::Fenced
        {
            return Ok(Next::Stop(Driven::Fenced));
        }
        if let Some(call) = &call {
            self.crash_if(CrashAt::AfterRecord, call);
        }
        Ok(match (keep, run_now) {
            (true, _) => Next::RunOn((next_state, written), planned),
            (false, true) => Next::Stop(Driven::Released),
            (false, false) => Next::Stop(Driven::Settled),
        })
    }

    /// Plans the next step now (plans are pure): the context to write, the plan, and, when
    /// it is side-effecting, its intent's history row for this commit: still durable before
    /// the call, one commit fewer.
    fn plan_ahead(
        &self,
        saga: &SagaRecord,
        state: W::State,
        update: &SagaUpdate,
        context: W::Context,
        now: DateTime<Utc>,
    ) -> (W::Context, Planned<W>, Option<HistoryEvent>) {
        let next_view = SagaView {
            id: saga.id.clone(),
            state,
            context,
            attempt: update.attempt,
            state_entered_at: update.state_entered_at,
            created_at: saga.created_at,
        };
        let next = self.workflow().plan(&next_view, now);
        match &next {
            Plan::Call {
                effect,
                side_effecting: true,
                context,
            } if !self.config().unsafe_skip_intent => {
                let intent = HistoryEvent::new(EventKind::Intent)
                    .state(update.state.clone())
                    .detail(serde_json::to_string(effect).unwrap_or_default());
                (context.clone(), (next, true), Some(intent))
            }
            _ => (next_view.context, (next, false), None),
        }
    }

    /// This worker, holding the lease until `lease_until` (`None`: giving it back).
    fn worker(&self, lease_until: Option<DateTime<Utc>>) -> Writer {
        Writer::Worker {
            owner: self.config().owner.clone(),
            lease_until,
        }
    }
}

/// The row a scheduled step writes (its context encoded later: the next plan may change it),
/// the history row, and the context.
fn row_of<S: SagaState, C>(
    saga: &SagaRecord,
    scheduled: Scheduled<S, C>,
    keep: bool,
    lease_until: Option<DateTime<Utc>>,
) -> (SagaUpdate, HistoryEvent, C) {
    let update = SagaUpdate {
        state: scheduled.state.name().to_owned(),
        status: scheduled.status,
        // Encoded once the next plan has had its say (Engine::with_context).
        context: String::new(),
        definition: saga.definition,
        context_schema: saga.context_schema,
        attempt: scheduled.attempt,
        total_attempts: scheduled.total_attempts,
        state_entered_at: scheduled.state_entered_at,
        // A saga that runs on keeps its lease; its due time is the lease's end.
        next_run_at: if keep {
            lease_until
        } else {
            scheduled.next_run_at
        },
        last_error: scheduled.last_error,
        wait_reason: if keep { None } else { scheduled.wait_reason },
    };
    (update, scheduled.event, scheduled.context)
}

pub(crate) fn to_json<C: serde::Serialize>(context: &C) -> Result<String, Error> {
    serde_json::to_string(context).map_err(|e| Error::Context(e.to_string()))
}
