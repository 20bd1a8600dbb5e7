//! The direct-order path (`"orderPath": "direct"`; the addendum's rules 9.12-9.18): the same
//! eight states, but CartBuild builds and persists the order's exact body and `MS-RequestId`
//! without a call, and Checkout posts it (E21) instead of checking a cart out. Unlike a
//! checkout, create-order is not documented as idempotent, so everything here is about never
//! sending it twice unless the first is proven absent. Pure, like `plan` and `decide`.
//!
//! Decisions (the addendum leaves them to us; ARCHITECTURE.md, "Direct orders"):
//! - **No same-id re-send on an unknown outcome.** The addendum allows two re-sends with the
//!   same id after a timeout (`direct_order.same_id_retries`), but nothing documents that the
//!   service deduplicates (ambiguity 26): if it does not (the simulator's `ignore`), such a
//!   re-send buys twice. So a lost reply, a 408 or 5xx (500/800005 included) or 409/800060 goes
//!   straight to reconciliation. Only a call that never reached Partner Center (no connection)
//!   or that it turned away (429) is sent again at once, with the same id and body.
//! - **Absence is proven by time.** The order list lags up to 15 minutes; only a list that
//!   shows nothing of the purchase [`ABSENCE_WAIT`] after the last send proves the order was
//!   not created. Then the same body goes again with the same id (if the service does
//!   deduplicate, it answers the original), at most [`MAX_RESENDS`] times; after that the
//!   purchase parks with the evidence.
//! - **A refusal of the only send is proof** (addendum §5.5: 400/403/404 with a business code
//!   created no order): the purchase fails, and the request id is renewed (a response settles
//!   it), so a resume sends the same body under a new id. After an earlier send whose outcome
//!   is unknown, a refusal proves nothing about that one: reconcile.
//! - **One order per purchase.** Every line of the body carries the token (`{token}:{line}`,
//!   ambiguity 31's character set); two or more orders carrying it are a duplicate: park.

use chrono::{DateTime, Duration, Utc};
use pcsaga_engine::{Decision, Plan};
use pcsaga_partner_center::models::{NewOrder, NewOrderLineItem, Order};
use pcsaga_partner_center::{Error as ApiError, ErrorClass};
use uuid::Uuid;

use crate::call::Call;
use crate::context::{DirectOrder, PurchaseContext};
use crate::decide::{
    advance, fail, fallback_match, held_for_credentials, order_state, orders_with_token, park,
    poll, start_reconcile, Fallback,
};
use crate::state::State;

type P = Plan<Call, State, PurchaseContext>;
type D = Decision<State, PurchaseContext>;

/// How long after the last send an empty order list proves the order was not created, by
/// default: the list lags up to 15 minutes behind new orders (addendum rule 9.16).
pub const ABSENCE_WAIT: Duration = Duration::minutes(20);

/// Sends after proven absence, at most, by default (addendum rule 9.17).
pub const MAX_RESENDS: u32 = 1;

/// The direct-order settings (`[direct_order]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectSettings {
    /// How long after the last send an empty order list proves absence. Never shorter than
    /// Partner Center's list lag (15 minutes) in production; tests against a simulator whose
    /// list lag is seconds set it to seconds.
    pub absence_wait: Duration,
    /// Sends after proven absence, at most.
    pub max_resends: u32,
    /// TEST ONLY (the battery's canary, `PCSAGA_TEST_UNSAFE_DIRECT_RESEND`): send again at
    /// once after a lost reply, without looking for the order. Breaks the guarantee; exists
    /// so the battery proves its auditor catches what it would do.
    pub unsafe_resend_without_proof: bool,
}

impl Default for DirectSettings {
    fn default() -> Self {
        Self {
            absence_wait: ABSENCE_WAIT,
            max_resends: MAX_RESENDS,
            unsafe_resend_without_proof: false,
        }
    }
}

/// The body of the purchase's direct order: the lines the cart path would put in its cart,
/// each named with the token and its line number.
pub fn body(ctx: &PurchaseContext) -> NewOrder {
    let cart = crate::plan::build_cart(ctx);
    let line_items = cart
        .line_items
        .into_iter()
        .zip(&ctx.request.items)
        .enumerate()
        .map(|(index, (line, item))| NewOrderLineItem {
            line_item_number: index as i64,
            offer_id: line.catalog_item_id,
            quantity: line.quantity,
            friendly_name: Some(format!("{}:{index}", ctx.token)),
            provisioning_context: line.provisioning_context,
            partner_id_on_record: item.partner_id_on_record.clone(),
            term_duration: line.term_duration,
            renews_to: None,
        })
        .collect();
    NewOrder {
        reference_customer_id: ctx.request.customer_id.clone(),
        billing_cycle: "one_time".to_owned(),
        line_items,
    }
}

/// CartBuild for a direct order: the body and request id are fixed and committed with the
/// move to Checkout, before anything is sent (rule 9.13). No call.
pub fn build(ctx: &PurchaseContext) -> P {
    if let Some(direct) = &ctx.direct {
        return Plan::Decide(advance(
            State::Checkout,
            ctx.clone(),
            format!(
                "direct order ready (request id {}), nothing sent yet",
                direct.request_id
            ),
        ));
    }
    let mut next = ctx.clone();
    let body = body(ctx);
    let lines = body.line_items.len();
    let request_id = Uuid::new_v4();
    next.direct = Some(DirectOrder {
        body,
        request_id,
        last_sent_at: None,
        replies: 0,
        resends: 0,
        nothing_found: false,
    });
    Plan::Decide(advance(
        State::Checkout,
        next,
        format!("direct order built: {lines} line(s), request id {request_id}; nothing sent"),
    ))
}

/// Checkout for a direct order: send the body, or look for it in the order list, or, once its
/// absence is proven, send it again (same body, same id) or stop.
pub fn checkout(ctx: &PurchaseContext, now: DateTime<Utc>, settings: &DirectSettings) -> P {
    let Some(direct) = &ctx.direct else {
        return Plan::Decide(park(
            ctx.clone(),
            "internal invariant: Checkout of a direct order without its body",
        ));
    };
    if !ctx.checkout.reconciling && ctx.checkout.sent > direct.replies {
        // A send whose outcome was never recorded: the process stopped while it was in
        // flight (or just before it left). It may have created the order: look first.
        let mut next = ctx.clone();
        next.checkout.reconciling = true;
        next.checkout.reconcile_reason = Some(
            "a send's outcome was never recorded (the process stopped while it was in flight); looking for the order before anything is sent again".to_owned(),
        );
        if let Some(d) = next.direct.as_mut() {
            d.replies = next.checkout.sent;
        }
        return Plan::Call {
            effect: Call::ListOrders,
            side_effecting: Call::ListOrders.is_side_effecting(),
            context: next,
        };
    }
    if !ctx.checkout.reconciling {
        return send(ctx.clone(), now);
    }
    if settings.unsafe_resend_without_proof {
        let mut next = ctx.clone();
        next.checkout.reconciling = false;
        return send(next, now);
    }
    let absent = direct.nothing_found
        && direct
            .last_sent_at
            .is_some_and(|sent| now >= sent + settings.absence_wait);
    if !absent {
        return Plan::Call {
            effect: Call::ListOrders,
            side_effecting: Call::ListOrders.is_side_effecting(),
            context: ctx.clone(),
        };
    }
    if direct.resends >= settings.max_resends {
        let reason = format!(
            "direct order: the order list showed nothing of this purchase {} s after each of its {} send(s) (request id {}, token {}), and pcsaga sends it at most {} times. Look for the token among the customer's orders in Partner Center: attach the order if it exists; if none does, nothing was bought",
            settings.absence_wait.num_seconds(),
            ctx.checkout.sent,
            direct.request_id,
            ctx.token,
            settings.max_resends + 1
        );
        return Plan::Decide(park(ctx.clone(), reason));
    }
    let mut next = ctx.clone();
    next.checkout.reconciling = false;
    if let Some(d) = next.direct.as_mut() {
        d.resends += 1;
        d.nothing_found = false;
    }
    send(next, now)
}

/// The intent of a send, committed before it leaves: attempted (never cleared), counted, timed.
fn send(mut next: PurchaseContext, now: DateTime<Utc>) -> P {
    next.checkout.attempted = true;
    next.checkout.first_attempt_at.get_or_insert(now);
    next.checkout.sent += 1;
    let Some(direct) = next.direct.as_mut() else {
        return Plan::Decide(park(
            next,
            "internal invariant: Checkout of a direct order without its body",
        ));
    };
    direct.last_sent_at = Some(now);
    let call = Call::CreateOrder {
        request_id: direct.request_id,
        order: direct.body.clone(),
    };
    Plan::Call {
        side_effecting: call.is_side_effecting(),
        effect: call,
        context: next,
    }
}

/// E21 answered 201: the order exists; never send again.
pub fn ordered(mut next: PurchaseContext, order: &Order) -> D {
    replied(&mut next);
    next.checkout.confirmed = true;
    next.checkout.answered += 1;
    next.checkout.reconciling = false;
    next.orders = vec![order_state(order)];
    advance(
        State::OrderVisibilityPolling,
        next,
        format!("ordered directly: order {}", order.id),
    )
}

/// E21 failed. See the module's decisions.
pub fn failed(mut next: PurchaseContext, failure: &ApiError) -> D {
    replied(&mut next);
    let earlier_unknown = next.checkout.sent.saturating_sub(1) > next.checkout.answered;
    if failure.answers_attempt() {
        next.checkout.answered += 1;
    }
    match failure.class {
        // Never reached Partner Center, or turned away before processing: same id, same body.
        ErrorClass::Transient => Decision::Retry {
            context: next,
            retry_after: None,
            error: format!("{failure} (the order was not sent; sending it again, same request id)"),
        },
        ErrorClass::Throttled => Decision::Retry {
            context: next,
            retry_after: failure.retry_after(),
            error: failure.to_string(),
        },
        ErrorClass::OutcomeUnknown | ErrorClass::InFlight | ErrorClass::AlreadySubmitted => {
            start_reconcile(
                next,
                format!("direct order: {failure}; it may exist: looking for it in the order list before anything is sent again"),
            )
        }
        ErrorClass::Business | ErrorClass::NotFound if earlier_unknown => start_reconcile(
            next,
            format!("direct order refused ({failure}) after an earlier send whose outcome is unknown; looking for the orders"),
        ),
        ErrorClass::Business | ErrorClass::NotFound => {
            // A response settles the request id: a resume sends the same body under a new one.
            if let Some(d) = next.direct.as_mut() {
                d.request_id = Uuid::new_v4();
            }
            fail(
                next,
                format!("direct order refused, no order was created: {failure}; fix the cause, then resume the purchase (from Checkout it sends the same order under a new request id)"),
            )
        }
        ErrorClass::AuthExpired => held_for_credentials(next, failure),
        ErrorClass::Config => park(
            next,
            format!("{failure}; fix the configuration, then resume the purchase"),
        ),
    }
}

/// Looks for the direct order in the customer's order list: by the token, else by the
/// fallback match of the cart path; nothing found is recorded, and the plan concludes absence
/// only [`ABSENCE_WAIT`] after the last send.
pub fn reconcile(mut next: PurchaseContext, orders: &[Order]) -> D {
    let token = next.token.clone();
    let mut ours = orders_with_token(orders, &token);
    ours.dedup_by(|a, b| a.id == b.id);
    match ours.as_slice() {
        [order] => adopt(next, order, format!("reconciled: order {} carries token {token}", order.id)),
        [] => match fallback_match(&next, orders) {
            Fallback::One(order, evidence) => {
                next.checkout.matched_by_fallback = Some(evidence.clone());
                adopt(next, order, format!("reconciled by fallback: {evidence}"))
            }
            Fallback::Several(ids, seen) => park(next, format!("reconciling the direct order: no order line carries token {token}, and {} orders match the purchase by customer, time and items ({}): pcsaga cannot tell which is this purchase's. {seen}. Attach the right one (`pcsaga show` prints the command)", ids.len(), ids.join(", "))),
            Fallback::None(seen) => {
                if let Some(d) = next.direct.as_mut() {
                    d.nothing_found = true;
                }
                poll(next, format!("reconciling the direct order: {seen}; its absence is concluded only once the list shows nothing long after the last send (default {} minutes)", ABSENCE_WAIT.num_minutes()))
            }
        },
        several => {
            let ids: Vec<&str> = several.iter().map(|o| o.id.as_str()).collect();
            park(next, format!("direct order: {} orders carry token {token} ({}): a duplicate purchase. Cancel the extra software orders inside their cancellation window; reservations need Microsoft support", ids.len(), ids.join(", ")))
        }
    }
}

/// Records that the outcome of the latest send is known (whatever it says).
fn replied(next: &mut PurchaseContext) {
    let sent = next.checkout.sent;
    if let Some(d) = next.direct.as_mut() {
        d.replies = sent;
    }
}

fn adopt(mut next: PurchaseContext, order: &Order, note: String) -> D {
    next.orders = vec![order_state(order)];
    next.checkout.confirmed = true;
    next.checkout.reconciling = false;
    if let Some(d) = next.direct.as_mut() {
        d.nothing_found = false;
    }
    advance(State::OrderVisibilityPolling, next, note)
}
