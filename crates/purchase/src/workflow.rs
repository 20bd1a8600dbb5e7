//! The purchase saga as an engine workflow.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use pcsaga_engine::policy::{OnExhausted, StatePolicy};
use pcsaga_engine::{Decision, Executed, Plan, SagaView, Workflow};
use pcsaga_partner_center::Client;

use pcsaga_engine::{Admission, Clock, Feedback, SystemClock};

use crate::cache::{CacheStats, ReadCache, DEFAULT_TTL};
use crate::call::{Call, Outcome};
use crate::context::{PurchaseContext, Registration};
use crate::decide::CREDENTIALS_HOLD;
use crate::state::State;

/// A purchase saga as the workflow sees it.
type View = SagaView<State, PurchaseContext>;
use crate::transitions::Driven;

/// The workflow's name, stored with each saga.
pub const WORKFLOW_NAME: &str = "one-time-purchase";

/// The one-time-purchase workflow. Without a client it can plan, decide and judge operator
/// actions (the CLI's `resume` and `cancel`) but not call Partner Center.
#[derive(Debug, Clone)]
pub struct PurchaseWorkflow {
    client: Option<Client>,
    credentials: Arc<CredentialGate>,
    /// How long a purchase holds, and how often the credentials are probed, while the token
    /// service refuses them.
    credentials_retry: Duration,
    /// Told of every transition the workflow decides (tests record the table's rows they drive).
    recorder: Option<Recorder>,
    /// Replies every purchase of this daemon can share (catalog reads, registered
    /// subscriptions).
    cache: Arc<ReadCache>,
    /// How direct orders wait for proof of absence, and how often they are sent again.
    direct: crate::direct::DirectSettings,
}

/// Receives every transition a workflow decides.
#[derive(Clone)]
pub struct Recorder(pub Arc<dyn Fn(Driven) + Send + Sync>);

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl PurchaseWorkflow {
    pub fn new(client: Client) -> Self {
        Self {
            client: Some(client),
            credentials: Arc::default(),
            credentials_retry: CREDENTIALS_HOLD,
            recorder: None,
            cache: Arc::new(ReadCache::new(DEFAULT_TTL, Arc::new(SystemClock))),
            direct: crate::direct::DirectSettings::default(),
        }
    }

    /// A workflow for operator actions only.
    pub fn offline() -> Self {
        Self {
            client: None,
            credentials: Arc::default(),
            credentials_retry: CREDENTIALS_HOLD,
            recorder: None,
            cache: Arc::new(ReadCache::new(Duration::ZERO, Arc::new(SystemClock))),
            direct: crate::direct::DirectSettings::default(),
        }
    }

    /// Keeps shared replies for `ttl` by `clock` (zero: no cache). Default: one hour, the
    /// wall clock.
    pub fn with_cache(mut self, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        self.cache = Arc::new(ReadCache::new(ttl, clock));
        self
    }

    /// Sets the direct-order settings (default: [`crate::direct::DirectSettings::default`]).
    pub fn with_direct_settings(mut self, settings: crate::direct::DirectSettings) -> Self {
        self.direct = settings;
        self
    }

    /// The read cache's hits, misses and evictions.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Tells `recorder` of every transition decided (tests: the table's coverage).
    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    fn record<C>(&self, state: State, call: &str, outcome: &str, decision: &Decision<State, C>) {
        if let Some(recorder) = &self.recorder {
            (recorder.0)(Driven::of(state, call, outcome, decision));
        }
    }

    /// Sets how often refused credentials are tried again (default [`CREDENTIALS_HOLD`]).
    pub fn with_credentials_retry(mut self, every: Duration) -> Self {
        self.credentials_retry = every;
        self
    }
}

/// Whether the token service refused our credentials, shared by every purchase of a daemon.
/// Set by a call that came back `AuthExpired`, cleared by any answered call or by a probe
/// (a fresh token) at most once per `credentials_retry`.
#[derive(Debug, Default)]
struct CredentialGate {
    refused: Mutex<Option<Refusal>>,
}

#[derive(Debug, Clone)]
struct Refusal {
    reason: String,
    probed_at: Instant,
}

impl CredentialGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Refusal>> {
        // A poisoned lock only means a panic elsewhere; the value is still a plain Option.
        self.refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn observe(&self, outcome: &Outcome) {
        match outcome {
            Err(f) if f.class == pcsaga_partner_center::ErrorClass::AuthExpired => {
                let mut refused = self.lock();
                if refused.is_none() {
                    *refused = Some(Refusal {
                        reason: f.to_string(),
                        probed_at: Instant::now(),
                    });
                }
            }
            Err(f) if f.status().is_none() => {}
            _ => *self.lock() = None,
        }
    }
}

/// What a purchase must already know before an operator may resume it in `from`: each state
/// works on what the states before it found. `None` when nothing is missing.
fn missing_for(from: State, ctx: &PurchaseContext) -> Option<String> {
    let all_skus = ctx.items.iter().all(|i| i.sku.is_some());
    let all_chosen = ctx.items.iter().all(|i| i.catalog_item_id.is_some());
    let cart = ctx
        .checkout
        .cart_id
        .as_deref()
        .or(ctx.cart.as_ref().map(|c| c.id.as_str()));
    match from {
        State::Enablement => None,
        State::RegistrationPolling | State::Discovery if !all_skus || !ctx.registrations_planned => {
            Some("its SKUs have not all been read; resume --from Enablement".to_owned())
        }
        State::InventoryCheck | State::CartBuild if !all_chosen => Some(
            "its catalog items have not all been chosen; resume --from Discovery".to_owned(),
        ),
        State::Checkout
            if ctx.request.order_path == crate::OrderPath::Direct && ctx.direct.is_none() =>
        {
            Some("its direct order was never built; resume --from CartBuild".to_owned())
        }
        State::Checkout if ctx.request.order_path == crate::OrderPath::Cart && cart.is_none() => {
            Some("it has no cart; resume --from CartBuild".to_owned())
        }
        State::OrderVisibilityPolling | State::EntitlementFetch if ctx.orders.is_empty() => Some(match (ctx.checkout.attempted, ctx.checkout.reconciling) {
            (false, _) => "no checkout was ever sent, so there are no orders to follow; resume --from Checkout (or earlier)".to_owned(),
            (true, true) => "its orders are not known: the checkout reply was lost and the orders were not found yet; resume --from Checkout keeps looking for them by the purchase's token".to_owned(),
            (true, false) => "no order of it is known; resume --from Checkout (it re-uses the same cart, which Partner Center checks out at most once)".to_owned(),
        }),
        State::EntitlementFetch if !ctx.orders.iter().all(|o| o.completed) => Some(
            "not all of its orders are known to be completed; resume --from OrderVisibilityPolling".to_owned(),
        ),
        _ => None,
    }
}

impl Workflow for PurchaseWorkflow {
    type State = State;
    type Context = PurchaseContext;
    type Effect = Call;
    type Outcome = Outcome;

    fn name(&self) -> &'static str {
        WORKFLOW_NAME
    }

    fn context_schema(&self) -> u32 {
        crate::context::CONTEXT_SCHEMA
    }

    fn decode_context(
        &self,
        schema: u32,
        context: &str,
        input: &str,
    ) -> Result<PurchaseContext, String> {
        crate::context::decode(schema, context, input)
    }

    fn correlation_id(&self, context: &PurchaseContext) -> String {
        context.correlation_id.to_string()
    }

    fn effect_name(&self, effect: &Call) -> String {
        effect.name().to_owned()
    }

    fn effect_route(&self, effect: &Call) -> &'static str {
        effect.route()
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

    fn plan(&self, saga: &View, now: DateTime<Utc>) -> Plan<Call, State, PurchaseContext> {
        let plan = crate::plan::plan_with(saga.state, &saga.context, now, &self.direct);
        if let Plan::Decide(decision) = &plan {
            self.record(saga.state, "-", "-", decision);
        }
        plan
    }

    async fn execute(&self, saga: &View, effect: &Call) -> Executed<Outcome> {
        match &self.client {
            Some(client) => {
                let (outcome, attempt) =
                    crate::execute::execute(client, &saga.context, effect).await;
                crate::metrics::sent(effect, &attempt, outcome.is_ok());
                self.credentials.observe(&outcome);
                self.cache.learn(&saga.context, effect, &outcome);
                Executed { outcome, attempt }
            }
            None => {
                let failure = pcsaga_partner_center::Error::config(
                    "no Partner Center client in this process",
                );
                Executed {
                    attempt: pcsaga_engine::AttemptRecord {
                        call: effect.name().to_owned(),
                        error: Some(failure.to_string()),
                        ..Default::default()
                    },
                    outcome: Err(failure),
                }
            }
        }
    }

    fn admission(&self, saga: &View, effect: &Call) -> Admission {
        crate::budgets::admission(&saga.context, effect)
    }

    fn feedback(&self, outcome: &Outcome) -> Feedback {
        crate::budgets::feedback(outcome)
    }

    fn answer_locally(&self, saga: &View, effect: &Call) -> Option<Outcome> {
        self.cache.answer(&saga.context, effect)
    }

    fn decide(
        &self,
        saga: &View,
        effect: &Call,
        outcome: Outcome,
    ) -> Decision<State, PurchaseContext> {
        let class = match &outcome {
            Ok(_) => "ok",
            Err(failure) => failure.class.as_str(),
        };
        let decision = crate::decide::decide(saga.state, &saga.context, effect, outcome);
        self.record(saga.state, effect.name(), class, &decision);
        match decision {
            // The decision logic says "hold"; how long is this daemon's setting.
            Decision::Hold {
                context, reason, ..
            } => Decision::Hold {
                context,
                wait: self.credentials_retry,
                reason,
            },
            other => other,
        }
    }

    fn prepare_resume(&self, saga: &View, from: State) -> Result<PurchaseContext, String> {
        let ctx = &saga.context;
        if let (true, false, Some(direct)) = (
            ctx.checkout.attempted,
            from.after_checkout_began(),
            ctx.direct.as_ref(),
        ) {
            return Err(format!(
                "a direct order was already sent for this purchase (MS-RequestId {}); resuming from {from} could buy twice. Resume from Checkout or later: Checkout sends nothing again before the order list proves the order absent",
                direct.request_id
            ));
        }
        if ctx.checkout.attempted && !from.after_checkout_began() {
            return Err(format!(
                "a checkout was already sent for this purchase (cart {}); resuming from {from} could buy twice. Resume from Checkout or later: Checkout re-uses the same cart, which Partner Center checks out at most once",
                ctx.checkout.cart_id.as_deref().unwrap_or("unknown")
            ));
        }
        if let Some(missing) = missing_for(from, ctx) {
            return Err(format!("cannot resume from {from}: {missing}"));
        }
        let mut next = ctx.clone();
        // Redo what the state does, and re-check what may have changed while the purchase
        // stood still. From Enablement: every SKU and every registration is read again.
        if from == State::Enablement {
            for item in &mut next.items {
                item.sku = None;
            }
            next.registrations.clear();
            next.registrations_planned = false;
        }
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
        // A direct order never sent is built again (a new body and request id, from what the
        // states before found); once sent, its body and id are kept for every later send.
        if from <= State::CartBuild && !ctx.checkout.attempted {
            next.direct = None;
        }
        // A direct order stopped while it was looked for is looked for once more: the order
        // list is read again before anything else, and nothing is sent unless it proves the
        // order absent with sends still allowed.
        if from == State::Checkout && next.checkout.reconciling {
            if let Some(direct) = next.direct.as_mut() {
                direct.nothing_found = false;
            }
        }
        Ok(next)
    }

    async fn hold(&self) -> Option<String> {
        let client = self.client.as_ref()?;
        let refused = self.credentials.lock().clone()?;
        if refused.probed_at.elapsed() < self.credentials_retry {
            return Some(refused.reason);
        }
        match client.check_credentials().await {
            Err(e) if e.class() == pcsaga_partner_center::ErrorClass::AuthExpired => {
                let reason = e.to_string();
                *self.credentials.lock() = Some(Refusal {
                    reason: reason.clone(),
                    probed_at: Instant::now(),
                });
                Some(reason)
            }
            // Accepted, or a token service that cannot be reached: that is not a refusal,
            // and purchases handle unreachable services with their own retries.
            _ => {
                *self.credentials.lock() = None;
                None
            }
        }
    }

    fn check_cancel(&self, saga: &View) -> Result<(), String> {
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
