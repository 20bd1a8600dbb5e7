//! The purchase saga as an engine workflow.

use chrono::{DateTime, Utc};

use pcsaga_engine::policy::{OnExhausted, StatePolicy};
use pcsaga_engine::{Decision, Executed, Plan, SagaView, Workflow};
use pcsaga_partner_center::Client;

use crate::call::{Call, Failure, Outcome};
use crate::context::{PurchaseContext, Registration};
use crate::state::{State, STATE_NAMES};

/// The workflow's name, stored with each saga.
pub const WORKFLOW_NAME: &str = "one-time-purchase";

/// The one-time-purchase workflow. Without a client it can plan, decide and judge operator
/// actions (the CLI's `resume` and `cancel`) but not call Partner Center.
#[derive(Debug, Clone)]
pub struct PurchaseWorkflow {
    client: Option<Client>,
}

impl PurchaseWorkflow {
    pub fn new(client: Client) -> Self {
        Self {
            client: Some(client),
        }
    }

    /// A workflow for operator actions only.
    pub fn offline() -> Self {
        Self { client: None }
    }
}

fn state_of(name: &str) -> State {
    // States come from our own database and were validated on the way in; an unknown name
    // can only be a corrupted row, which the first state's plan handles by re-checking.
    State::parse(name).unwrap_or(State::Enablement)
}

impl Workflow for PurchaseWorkflow {
    type Context = PurchaseContext;
    type Effect = Call;
    type Outcome = Outcome;

    fn name(&self) -> &'static str {
        WORKFLOW_NAME
    }

    fn states(&self) -> &'static [&'static str] {
        STATE_NAMES
    }

    fn correlation_id(&self, context: &PurchaseContext) -> String {
        context.correlation_id.to_string()
    }

    fn effect_name(&self, effect: &Call) -> String {
        effect.name().to_owned()
    }

    fn validate_policy(&self, state: &str, policy: &StatePolicy) -> Result<(), String> {
        let state = State::parse(state).ok_or_else(|| format!("unknown state {state}"))?;
        if state.after_checkout_began() {
            if policy.retry.on_exhausted == OnExhausted::Fail {
                return Err(
                    "retry.on_exhausted must be \"park\": money may have moved by this state"
                        .to_owned(),
                );
            }
            if policy.poll.on_deadline == OnExhausted::Fail {
                return Err(
                    "poll.on_deadline must be \"park\": money may have moved by this state"
                        .to_owned(),
                );
            }
        }
        Ok(())
    }

    fn plan(
        &self,
        saga: &SagaView<PurchaseContext>,
        now: DateTime<Utc>,
    ) -> Plan<Call, PurchaseContext> {
        crate::plan::plan(state_of(&saga.state), &saga.context, now)
    }

    async fn execute(&self, saga: &SagaView<PurchaseContext>, effect: &Call) -> Executed<Outcome> {
        match &self.client {
            Some(client) => {
                let (outcome, attempt) =
                    crate::execute::execute(client, &saga.context, effect).await;
                Executed { outcome, attempt }
            }
            None => {
                let failure = Failure {
                    class: pcsaga_partner_center::ErrorClass::Config,
                    status: None,
                    code: None,
                    retry_after: None,
                    message: "no Partner Center client in this process".to_owned(),
                };
                Executed {
                    outcome: Err(failure.clone()),
                    attempt: pcsaga_engine::AttemptRecord {
                        call: effect.name().to_owned(),
                        error: Some(failure.message),
                        ..Default::default()
                    },
                }
            }
        }
    }

    fn decide(
        &self,
        saga: &SagaView<PurchaseContext>,
        effect: &Call,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Decision<PurchaseContext> {
        crate::decide::decide(state_of(&saga.state), &saga.context, effect, outcome, now)
    }

    fn prepare_resume(
        &self,
        saga: &SagaView<PurchaseContext>,
        from: &str,
    ) -> Result<PurchaseContext, String> {
        let from = State::parse(from).ok_or_else(|| format!("no state {from:?}"))?;
        let ctx = &saga.context;
        if ctx.checkout.attempted && !from.after_checkout_began() {
            return Err(format!(
                "a checkout was already sent for this purchase (cart {}); resuming from {from} could buy twice. Resume from Checkout or later: Checkout re-uses the same cart, which Partner Center checks out at most once",
                ctx.checkout.cart_id.as_deref().unwrap_or("unknown")
            ));
        }
        let mut next = ctx.clone();
        // Re-check what may have changed while the purchase stood still.
        if from <= State::RegistrationPolling {
            for r in &mut next.registrations {
                if r.status != Registration::Registered {
                    r.status = Registration::Unknown;
                    r.register_sent = false;
                }
            }
        }
        if from <= State::Discovery {
            for item in &mut next.items {
                item.product_checked = false;
                item.catalog_item_id = None;
                item.inventory_checked = false;
            }
            if let Some(cart) = next.cart.as_mut() {
                cart.needs_update = true;
            }
        } else if from == State::CartBuild {
            if let Some(cart) = next.cart.as_mut() {
                cart.needs_update = true;
            }
        }
        Ok(next)
    }

    fn check_cancel(&self, saga: &SagaView<PurchaseContext>) -> Result<(), String> {
        let ctx = &saga.context;
        if ctx.checkout.attempted {
            return Err(format!(
                "a checkout was sent (cart {}): money may have moved, so pcsaga will not cancel it. Cancel software orders in Partner Center within their cancellation window; reservations cannot be cancelled through the API",
                ctx.checkout.cart_id.as_deref().unwrap_or("unknown")
            ));
        }
        Ok(())
    }
}

/// Submits a validated request: a new purchase saga, or the existing one with the same
/// idempotency key.
pub async fn submit<S: pcsaga_engine::Store>(
    engine: &pcsaga_engine::Engine<PurchaseWorkflow, S>,
    request: &crate::PurchaseRequest,
) -> Result<pcsaga_engine::Submitted, pcsaga_engine::Error> {
    let input =
        serde_json::to_string(request).map_err(|e| pcsaga_engine::Error::Context(e.to_string()))?;
    let context = PurchaseContext::new(request.clone());
    engine
        .submit(
            &request.idempotency_key,
            input,
            &context,
            Some(request.customer_id.clone()),
        )
        .await
}
