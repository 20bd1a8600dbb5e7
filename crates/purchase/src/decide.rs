//! What each call's outcome means: pure functions from (state, context, call, outcome) to a
//! decision; no clock, no I/O, no logging (the decision's note is what the history keeps). The transition table in `tests/transition_table.rs` snapshots every
//! state × class of outcome.
//!
//! The money rule, enforced here: before Checkout a permanent error *fails* the purchase
//! (nothing was bought, safe to fix and resume); from Checkout on, anything unexpected *parks*
//! it for an operator, and nothing ever builds a second cart or goes back before Checkout.

use pcsaga_engine::Decision;
use pcsaga_partner_center::models::{
    Availability, BillingCycle, Cart, CartCheckoutResult, CartErrorCode, CartStatus, Entitlement,
    InventoryItem, Order, OrderStatus, RegistrationState as Wire, Sku,
};
use pcsaga_partner_center::ErrorClass;

use crate::call::{Call, Outcome, Reply};
use crate::context::{
    ArtifactState, CartState, EntitlementState, GroupError, OrderState, PurchaseContext,
    Registration, SkuFacts,
};
use crate::request::OrderPath;
use crate::state::State;
use pcsaga_partner_center::Error as ApiError;

type D = Decision<State, PurchaseContext>;

/// Most times a cart is rebuilt because catalog ids went stale, before giving up.
pub const MAX_REDISCOVERIES: u32 = 3;

pub(crate) fn advance(to: State, context: PurchaseContext, note: impl Into<String>) -> D {
    Decision::Advance {
        to,
        context,
        note: note.into(),
    }
}

pub(crate) fn cont(context: PurchaseContext, note: impl Into<String>) -> D {
    Decision::Continue {
        context,
        note: note.into(),
    }
}

pub(crate) fn fail(context: PurchaseContext, reason: impl Into<String>) -> D {
    Decision::Fail {
        context,
        reason: reason.into(),
    }
}

pub(crate) fn park(context: PurchaseContext, reason: impl Into<String>) -> D {
    Decision::Park {
        context,
        reason: reason.into(),
    }
}

pub(crate) fn poll(context: PurchaseContext, note: impl Into<String>) -> D {
    Decision::Poll {
        context,
        note: note.into(),
    }
}

/// Decides what an outcome means.
pub fn decide(state: State, ctx: &PurchaseContext, call: &Call, outcome: Outcome) -> D {
    let mut next = ctx.clone();
    next.answered(
        call,
        outcome.as_ref().map_or_else(ApiError::settles, |_| true),
    );
    let reply = match outcome {
        Ok(reply) => reply,
        Err(failure) => return failed(state, next, call, &failure),
    };
    match (call, reply) {
        (Call::GetSku { item }, Reply::Sku(sku)) => {
            next.items[*item].sku = Some(facts(&sku));
            cont(next, format!("SKU {}:{} read", sku.product_id, sku.id))
        }
        (Call::GetRegistration { subscription_id }, Reply::Registration(status)) => {
            registration(state, next, subscription_id, &status)
        }
        (
            Call::Register {
                subscription_id, ..
            },
            Reply::Registered,
        ) => {
            if let Some(r) = next
                .registrations
                .iter_mut()
                .find(|r| &r.subscription_id == subscription_id)
            {
                r.register_sent = true;
                r.status = Registration::Registering;
            }
            cont(next, format!("registration of {subscription_id} requested"))
        }
        (Call::GetProduct { item }, Reply::Product(_)) => {
            next.items[*item].product_checked = true;
            cont(next, format!("product of items[{item}] found"))
        }
        (Call::ListAvailabilities { item }, Reply::Availabilities(list)) => {
            choose_availability(next, *item, &list)
        }
        (Call::CheckInventory { item }, Reply::Inventory(list)) => inventory(next, *item, &list),
        (Call::GetCart { .. }, Reply::Cart(cart)) => verify_cart(next, &cart),
        (Call::CreateCart { .. } | Call::UpdateCart { .. }, Reply::Cart(cart)) => {
            judge_cart(next, &cart)
        }
        (Call::Checkout { .. }, Reply::Checkout(result)) => checked_out(next, &result),
        (Call::CreateOrder { .. }, Reply::Order(order)) => crate::direct::ordered(next, &order),
        (Call::ListOrders, Reply::Orders(orders))
            if next.request.order_path == OrderPath::Direct =>
        {
            crate::direct::reconcile(next, &orders)
        }
        (Call::ListOrders, Reply::Orders(orders)) => reconcile(next, &orders),
        (Call::GetOrder { order_id }, Reply::Order(order)) => order_status(next, order_id, &order),
        (Call::ListEntitlements, Reply::Entitlements(list)) => entitlements(next, &list),
        (
            Call::GetArtifact {
                entitlement,
                artifact,
                ..
            },
            Reply::Artifact(details),
        ) => {
            if let Some(a) = next
                .entitlements
                .get_mut(*entitlement)
                .and_then(|e| e.artifacts.get_mut(*artifact))
            {
                a.reservation_ids = Some(
                    details
                        .reservations
                        .iter()
                        .map(|r| r.reservation_id.clone())
                        .collect(),
                );
            }
            cont(next, "reservation details read")
        }
        (call, reply) => park(
            next,
            format!(
                "internal: {} answered with an unexpected reply {reply:?}",
                call.name()
            ),
        ),
    }
}

/// Failures. Classes that may pass are retried (the policy bounds them); the rest fail
/// before Checkout and park from Checkout on, except where the spec says otherwise.
fn failed(state: State, mut next: PurchaseContext, call: &Call, failure: &ApiError) -> D {
    let money = state.after_checkout_began();
    if failure.class == ErrorClass::AuthExpired {
        return held_for_credentials(next, failure);
    }
    if let Call::Checkout { .. } = call {
        return checkout_failed(next, failure);
    }
    if let Call::CreateOrder { .. } = call {
        return crate::direct::failed(next, failure);
    }
    if let Call::GetCart { cart_id } = call {
        return cart_read_failed(next, cart_id, failure);
    }
    if matches!(call, Call::ListEntitlements) && failure.class == ErrorClass::Config {
        return entitlements_unavailable(next, &failure.to_string());
    }
    match failure.class {
        ErrorClass::Transient | ErrorClass::OutcomeUnknown => Decision::Retry {
            context: next,
            retry_after: None,
            error: failure.to_string(),
        },
        ErrorClass::Throttled => Decision::Retry {
            context: next,
            retry_after: failure.retry_after(),
            error: failure.to_string(),
        },
        ErrorClass::AuthExpired => held_for_credentials(next, failure),
        ErrorClass::Config => {
            let reason = format!(
                "{}; fix the configuration, then resume the purchase",
                failure
            );
            if money {
                park(next, reason)
            } else {
                fail(next, reason)
            }
        }
        ErrorClass::NotFound
            if matches!(call, Call::GetOrder { .. } | Call::GetArtifact { .. }) =>
        {
            poll(next, format!("{} not visible yet", call.name()))
        }
        ErrorClass::NotFound if matches!(call, Call::UpdateCart { .. }) => {
            // The cart expired before checkout: nothing was bought, build a new one.
            next.cart = None;
            cont(
                next,
                "the cart is gone (expired before checkout); building a new one",
            )
        }
        ErrorClass::NotFound
        | ErrorClass::Business
        | ErrorClass::InFlight
        | ErrorClass::AlreadySubmitted => {
            let what = match call {
                Call::GetSku { item }
                | Call::GetProduct { item }
                | Call::ListAvailabilities { item }
                | Call::CheckInventory { item } => {
                    let i = &next.request.items[*item];
                    format!(
                        "items[{item}] ({}:{} in {}): ",
                        i.product_id, i.sku_id, next.request.country
                    )
                }
                Call::Register {
                    subscription_id, ..
                }
                | Call::GetRegistration { subscription_id } => {
                    format!("subscription {subscription_id}: ")
                }
                _ => String::new(),
            };
            let reason = format!("{what}{}", failure);
            if money {
                park(next, reason)
            } else {
                fail(next, reason)
            }
        }
    }
}

/// How long a purchase waits before it tries again when the token service refuses our
/// credentials. The daemon itself stops claiming meanwhile (`PurchaseWorkflow::hold`).
pub const CREDENTIALS_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

/// Credentials refused (401 after a fresh token, or the token service says no): not the
/// purchase's fault and not a verdict on it. It keeps its state and its pending request id and
/// waits for an operator to fix the credentials; nothing fails or parks because a secret was
/// rotated.
pub(crate) fn held_for_credentials(next: PurchaseContext, failure: &ApiError) -> D {
    Decision::Hold {
        context: next,
        wait: CREDENTIALS_HOLD,
        reason: format!(
            "{}; the purchase waits (no attempt counted) and the daemon claims no new work until the credentials work again",
            failure
        ),
    }
}

fn checkout_failed(mut next: PurchaseContext, failure: &ApiError) -> D {
    // Did an earlier checkout call (before this one) go unanswered? Then it may have gone
    // through, and a refusal now does not prove nothing was bought.
    let earlier_unknown = next.checkout.sent.saturating_sub(1) > next.checkout.answered;
    if failure.answers_attempt() {
        next.checkout.answered += 1;
    }
    match failure.class {
        // Timeout, lost connection, unreadable 2xx or 5xx: the checkout may have gone through.
        // Re-call checkout on the same cart with the same request id (spec 9.3).
        ErrorClass::Transient | ErrorClass::OutcomeUnknown => Decision::Retry { context: next, retry_after: None, error: failure.to_string() },
        ErrorClass::Throttled => Decision::Retry { context: next, retry_after: failure.retry_after(), error: failure.to_string() },
        ErrorClass::InFlight if failure.code() == Some("800064") => {
            Decision::Retry { context: next, retry_after: None, error: format!("{} (another request is checking this cart out; waiting, same cart)", failure) }
        }
        ErrorClass::InFlight | ErrorClass::AlreadySubmitted | ErrorClass::NotFound => {
            start_reconcile(next, format!("checkout answered {}: committed or in flight; looking for the orders", failure))
        }
        ErrorClass::Business if earlier_unknown => {
            start_reconcile(next, format!("checkout refused ({}) after an earlier attempt whose outcome is unknown; looking for the orders", failure))
        }
        // A refusal is believed only once the cart proves it: a faulty proxy, a mislabelled
        // status or an undocumented code could answer a checkout that went through.
        ErrorClass::Business => {
            next.checkout.verifying = Some(failure.to_string());
            cont(next, format!("checkout refused ({}); reading the cart to learn whether it was checked out all the same", failure))
        }
        ErrorClass::AuthExpired => held_for_credentials(next, failure),
        ErrorClass::Config => park(next, format!("{}; fix the configuration, then resume the purchase", failure)),
    }
}

/// The cart read after a checkout refusal (E11): the proof the refusal lacked.
fn verify_cart(mut next: PurchaseContext, cart: &Cart) -> D {
    let refusal = next.checkout.verifying.take().unwrap_or_default();
    let id = next.checkout.cart_id.clone().unwrap_or_default();
    match &cart.status {
        Some(CartStatus::Active) => {
            fail(next, format!("checkout refused, nothing was bought (cart {id} still reads Active after the refusal): {refusal}; fix the cause, then resume the purchase (it checks out the same cart)"))
        }
        Some(CartStatus::Ordered) => start_reconcile(next, format!("checkout was refused ({refusal}) but cart {id} reads Ordered: it was checked out; looking for the orders")),
        other => {
            let reason = format!("checkout refused ({refusal}) and cart {id} reads {}: pcsaga cannot prove whether anything was bought. Look for orders with token {} in Partner Center", other.as_ref().map_or("no status".to_owned(), |s| format!("{s:?}")), next.token);
            park(next, reason)
        }
    }
}

/// The cart read after a refusal failed. A missing cart may have been checked out (and then
/// expired), so the orders decide; transient errors are retried; the rest park.
fn cart_read_failed(next: PurchaseContext, cart_id: &str, failure: &ApiError) -> D {
    match failure.class {
        ErrorClass::Transient | ErrorClass::OutcomeUnknown => Decision::Retry { context: next, retry_after: None, error: failure.to_string() },
        ErrorClass::Throttled => Decision::Retry { context: next, retry_after: failure.retry_after(), error: failure.to_string() },
        ErrorClass::NotFound | ErrorClass::InFlight | ErrorClass::AlreadySubmitted => {
            let mut next = next;
            let refusal = next.checkout.verifying.take().unwrap_or_default();
            start_reconcile(next, format!("checkout was refused ({refusal}) and cart {cart_id} cannot be read ({}); looking for the orders", failure))
        }
        ErrorClass::AuthExpired => held_for_credentials(next, failure),
        ErrorClass::Business | ErrorClass::Config => park(next, format!("checkout was refused and cart {cart_id} cannot be read to prove nothing was bought: {}", failure)),
    }
}

pub(crate) fn start_reconcile(mut next: PurchaseContext, reason: String) -> D {
    next.checkout.reconciling = true;
    next.checkout.reconcile_reason = Some(reason.clone());
    cont(next, reason)
}

fn facts(sku: &Sku) -> SkuFacts {
    use pcsaga_partner_center::models::PurchasePrerequisite as P;
    SkuFacts {
        title: sku.title.clone().unwrap_or_else(|| sku.id.clone()),
        needs_registration: sku.requires(&P::AzureSubscriptionRegistration),
        needs_inventory_check: sku.requires(&P::InventoryCheck),
        minimum_quantity: sku.minimum_quantity,
        maximum_quantity: sku.maximum_quantity,
        billing_cycles: sku
            .supported_billing_cycles
            .iter()
            .map(|b| b.as_str().to_owned())
            .collect(),
        provisioning_variables: sku.provisioning_variables.clone(),
        inventory_variables: sku.inventory_variables.clone(),
        arm_region_name: sku.dynamic_attribute("armRegionName"),
        duration: sku.dynamic_attribute("duration"),
    }
}

fn registration(
    state: State,
    mut next: PurchaseContext,
    subscription_id: &str,
    status: &Wire,
) -> D {
    let read = match status {
        Wire::Registered => Registration::Registered,
        Wire::Registering => Registration::Registering,
        Wire::NotRegistered => Registration::NotRegistered,
        // An unknown value is not "registered": keep polling rather than guess (the
        // history row of the step carries the reply's note).
        Wire::Unknown(_) => Registration::Registering,
    };
    if let Some(r) = next
        .registrations
        .iter_mut()
        .find(|r| r.subscription_id == subscription_id)
    {
        // Once we asked for registration, a lagging "notregistered" means "not yet".
        r.status = if read == Registration::NotRegistered && r.register_sent {
            Registration::Registering
        } else {
            read
        };
    }
    if state == State::RegistrationPolling {
        if next
            .registrations
            .iter()
            .all(|r| r.status == Registration::Registered)
        {
            return advance(State::Discovery, next, "every subscription is registered");
        }
        if read == Registration::Registered {
            return cont(next, format!("{subscription_id} is registered"));
        }
        return poll(
            next,
            format!("waiting for registration of {subscription_id}"),
        );
    }
    cont(next, format!("{subscription_id} is {read:?}"))
}

/// `1Year` → `P1Y`, `3Years` → `P3Y`.
fn term_of_duration(duration: &str) -> Option<String> {
    let digits: String = duration.chars().take_while(char::is_ascii_digit).collect();
    let rest = duration[digits.len()..].to_ascii_lowercase();
    if digits.is_empty() {
        return None;
    }
    if rest.starts_with("year") {
        Some(format!("P{digits}Y"))
    } else if rest.starts_with("month") {
        Some(format!("P{digits}M"))
    } else {
        None
    }
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

fn choose_availability(mut next: PurchaseContext, index: usize, list: &[Availability]) -> D {
    let item = next.request.items[index].clone();
    let at = format!("items[{index}] ({}:{})", item.product_id, item.sku_id);
    let Some(sku) = next.items[index].sku.clone() else {
        return fail(
            next,
            format!("internal: {at} has no SKU facts at discovery"),
        );
    };
    let wanted_term = item
        .term_duration
        .clone()
        .or_else(|| sku.duration.as_deref().and_then(term_of_duration));
    let purchasable = list.iter().filter(|a| a.is_purchasable != Some(false));
    let chosen = match &item.availability_id {
        Some(id) => purchasable.clone().find(|a| a.id.eq_ignore_ascii_case(id)),
        None => purchasable.clone().find(|a| {
            wanted_term
                .as_deref()
                .is_none_or(|t| a.has_term(t) || a.terms.is_empty() && item.term_duration.is_none())
        }),
    };
    let Some(chosen) = chosen else {
        let terms: Vec<String> = list
            .iter()
            .flat_map(|a| a.terms.iter().filter_map(|t| t.duration.clone()))
            .collect();
        return fail(
            next.clone(),
            format!(
                "{at}: no purchasable availability in {}/{}{}{}; offered terms: [{}]",
                next.request.country,
                next.request.segment,
                item.availability_id
                    .as_ref()
                    .map(|a| format!(" with id {a}"))
                    .unwrap_or_default(),
                wanted_term
                    .as_ref()
                    .map(|t| format!(" with term {t}"))
                    .unwrap_or_default(),
                terms.join(", ")
            ),
        );
    };
    if let Some(term) = &wanted_term {
        if !chosen.terms.is_empty() && !chosen.has_term(term) {
            return fail(
                next,
                format!(
                    "{at}: availability {} does not offer term {term}",
                    chosen.id
                ),
            );
        }
    }
    if let Some(min) = sku.minimum_quantity.filter(|min| item.quantity < *min) {
        return fail(
            next,
            format!(
                "{at}: quantity {} is below the SKU's minimum of {min}",
                item.quantity
            ),
        );
    }
    if let Some(max) = sku.maximum_quantity.filter(|max| item.quantity > *max) {
        return fail(
            next,
            format!(
                "{at}: quantity {} is above the SKU's maximum of {max}",
                item.quantity
            ),
        );
    }
    if !sku.billing_cycles.is_empty()
        && !sku
            .billing_cycles
            .iter()
            .any(|b| BillingCycle::parse(b) == BillingCycle::OneTime)
    {
        return fail(
            next,
            format!(
                "{at}: the SKU cannot be bought one-time (it supports {})",
                sku.billing_cycles.join(", ")
            ),
        );
    }
    let mut provisioning = std::collections::BTreeMap::new();
    for variable in &sku.provisioning_variables {
        let key = lower_first(variable);
        let given = item
            .provisioning_context
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(variable))
            .map(|(_, v)| v.clone());
        let value = given.or_else(|| {
            if variable.eq_ignore_ascii_case("Duration") {
                sku.duration.clone()
            } else {
                None
            }
        });
        match value {
            Some(value) => {
                provisioning.insert(key, value);
            }
            None => {
                return fail(next, format!("{at}: items[{index}].provisioningContext.{key} is required by the SKU (its provisioning variables are {})", sku.provisioning_variables.join(", ")));
            }
        }
    }
    let term = if chosen.terms.is_empty() {
        None
    } else {
        wanted_term.or_else(|| chosen.terms.first().and_then(|t| t.duration.clone()))
    };
    let state = &mut next.items[index];
    state.catalog_item_id = Some(chosen.catalog_item_id.clone());
    state.term_duration = term;
    state.provisioning_context = provisioning;
    let note = format!("{at}: chose {}", chosen.catalog_item_id);
    cont(next, note)
}

fn inventory(mut next: PurchaseContext, index: usize, list: &[InventoryItem]) -> D {
    let item = next.request.items[index].clone();
    let found = list.iter().find(|i| {
        i.product_id.eq_ignore_ascii_case(&item.product_id)
            && i.sku_id
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case(&item.sku_id))
    });
    match found {
        None => fail(
            next,
            format!(
                "items[{index}] ({}:{}): the inventory check did not report this SKU",
                item.product_id, item.sku_id
            ),
        ),
        Some(found) if found.is_restricted => {
            let reasons: Vec<String> = found
                .restrictions
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}",
                        r.reason_code.as_deref().unwrap_or("restricted"),
                        r.description.as_deref().unwrap_or("")
                    )
                })
                .collect();
            fail(
                next,
                format!(
                    "items[{index}] ({}:{}) is not available: {}",
                    item.product_id,
                    item.sku_id,
                    if reasons.is_empty() {
                        "restricted".to_owned()
                    } else {
                        reasons.join("; ")
                    }
                ),
            )
        }
        Some(_) => {
            next.items[index].inventory_checked = true;
            cont(next, format!("items[{index}] inventory available"))
        }
    }
}

fn judge_cart(mut next: PurchaseContext, cart: &Cart) -> D {
    let Some(id) = cart.id.clone() else {
        return Decision::Retry {
            context: next,
            retry_after: None,
            error: "the cart came back without an id".to_owned(),
        };
    };
    next.cart = Some(CartState {
        id: id.clone(),
        expires_at: cart.expiration_timestamp,
        needs_update: false,
    });
    let errors: Vec<(usize, CartErrorCode, String)> = cart
        .line_items
        .iter()
        .enumerate()
        .filter_map(|(position, line)| {
            let index = line
                .id
                .and_then(|i| usize::try_from(i).ok())
                .unwrap_or(position);
            line.error.as_ref().map(|e| {
                (
                    index,
                    e.error_code.clone(),
                    e.error_description.clone().unwrap_or_default(),
                )
            })
        })
        .collect();
    if errors.is_empty() {
        return advance(
            State::Checkout,
            next,
            format!("cart {id} created without line errors"),
        );
    }
    let describe = |errors: &[(usize, CartErrorCode, String)]| {
        errors
            .iter()
            .map(|(i, code, text)| format!("items[{i}]: {code} ({text})"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let stale = errors
        .iter()
        .all(|(_, code, _)| *code == CartErrorCode::CatalogItemIdIsNotValid);
    if stale && next.rediscoveries < MAX_REDISCOVERIES {
        // Catalog ids change over time (spec 9.7): fetch them again and fix the cart by PUT.
        next.rediscoveries += 1;
        for (i, _, _) in &errors {
            if let Some(item) = next.items.get_mut(*i) {
                item.catalog_item_id = None;
                item.inventory_checked = false;
            }
        }
        if let Some(cart) = next.cart.as_mut() {
            cart.needs_update = true;
        }
        return advance(
            State::Discovery,
            next,
            format!(
                "cart {id} has stale catalog items, discovering again: {}",
                describe(&errors)
            ),
        );
    }
    let passing = errors.iter().all(|(_, code, _)| {
        matches!(
            code,
            CartErrorCode::SubscriptionNotRegistered | CartErrorCode::UnableToProcessCartLineItem
        )
    });
    if passing {
        if let Some(cart) = next.cart.as_mut() {
            cart.needs_update = true;
        }
        return Decision::Retry {
            context: next,
            retry_after: None,
            error: format!("cart {id} line errors that may pass: {}", describe(&errors)),
        };
    }
    fail(next, format!("cart {id} has line errors, nothing was bought: {}; fix the request and resubmit it with a new idempotency key", describe(&errors)))
}

pub(crate) fn order_state(order: &Order) -> OrderState {
    let status = order
        .status
        .as_ref()
        .map_or("unknown".to_owned(), |s| s.as_str().to_owned());
    OrderState {
        id: order.id.clone(),
        completed: order.status == Some(OrderStatus::Completed),
        status,
        lines: order
            .line_items
            .iter()
            .map(|l| (l.line_item_number, l.offer_id.clone(), l.quantity))
            .collect(),
        alternate_id: order.alternate_id.clone(),
        currency: order.currency_code.clone(),
        created_at: order.creation_date,
    }
}

fn checked_out(mut next: PurchaseContext, result: &CartCheckoutResult) -> D {
    next.checkout.confirmed = true;
    next.checkout.answered += 1;
    next.checkout.reconciling = false;
    next.orders = result.orders.iter().map(order_state).collect();
    next.order_errors = result
        .order_errors
        .iter()
        .map(|e| GroupError {
            group: e.order_group_id.clone().unwrap_or_default(),
            code: e.code.clone().unwrap_or_default(),
            description: e.description.clone().unwrap_or_default(),
        })
        .collect();
    let errors = next
        .order_errors
        .iter()
        .map(|e| format!("group {}: {} {}", e.group, e.code, e.description))
        .collect::<Vec<_>>()
        .join("; ");
    match (next.orders.is_empty(), next.order_errors.is_empty()) {
        (true, false) => fail(next, format!("every order group failed at checkout, nothing was bought: {errors}; fix the cause, then resume the purchase: it re-attempts them on the same cart")),
        (true, true) => park(next, "checkout answered with neither orders nor errors; check the customer's orders in Partner Center"),
        (false, true) => {
            let n = next.orders.len();
            advance(State::OrderVisibilityPolling, next, format!("checked out: {n} order(s)"))
        }
        (false, false) => {
            let n = next.orders.len();
            advance(State::OrderVisibilityPolling, next, format!("checked out: {n} order(s); failed: {errors}"))
        }
    }
}

/// Finds the purchase's orders in the customer's order list: by the saga token in the lines'
/// friendly names, or, when no line carries it (Partner Center does not promise to echo
/// friendly names, spec §9.4 and ambiguity 4), by a fallback match (see [`fallback_match`]).
fn reconcile(mut next: PurchaseContext, orders: &[Order]) -> D {
    let token = next.token.clone();
    let ours = orders_with_token(orders, &token);
    let lines: usize = ours.iter().map(|o| o.line_items.len()).sum();
    let wanted = next.request.items.len();
    if !ours.is_empty() && lines < wanted {
        return poll(next, format!("reconciling: {lines} of {wanted} lines with token {token} in the order list so far (it lags up to 15 minutes)"));
    }
    if ours.is_empty() {
        return match fallback_match(&next, orders) {
            Fallback::One(order, evidence) => {
                next.orders = vec![order_state(order)];
                next.checkout.matched_by_fallback = Some(evidence.clone());
                next.checkout.confirmed = true;
                next.checkout.reconciling = false;
                advance(State::OrderVisibilityPolling, next, format!("reconciled by fallback: {evidence}"))
            }
            Fallback::Several(ids, seen) => park(next, format!("reconciling: no order line carries token {token}, and {} orders match the purchase by customer, time and items ({}): pcsaga cannot tell which is this purchase's. {seen}. Check them in Partner Center and attach the right one (`pcsaga show` on this purchase prints the attach-order command)", ids.len(), ids.join(", "))),
            Fallback::None(seen) => poll(next, format!("reconciling: {seen}; the list can lag up to 15 minutes behind a checkout")),
        };
    }
    next.orders = ours.into_iter().map(order_state).collect();
    next.checkout.confirmed = true;
    next.checkout.reconciling = false;
    let n = next.orders.len();
    advance(
        State::OrderVisibilityPolling,
        next,
        format!("reconciled: found {n} order(s) with token {token}"),
    )
}

/// The orders any of whose lines carries `token` in its friendly name.
pub(crate) fn orders_with_token<'a>(orders: &'a [Order], token: &str) -> Vec<&'a Order> {
    orders
        .iter()
        .filter(|o| {
            o.line_items.iter().any(|l| {
                l.friendly_name
                    .as_deref()
                    .is_some_and(|n| n.contains(token))
            })
        })
        .collect()
}

/// How long before the first checkout call an order may have been created and still be this
/// purchase's (clock skew between us and Partner Center, and a checkout in flight when the
/// first attempt's reply was lost).
pub const FALLBACK_WINDOW: chrono::Duration = chrono::Duration::minutes(5);

/// The result of matching without the token.
pub(crate) enum Fallback<'a> {
    One(&'a Order, String),
    /// Every candidate's id, and what the list showed.
    Several(Vec<String>, String),
    /// What the list showed.
    None(String),
}

/// Matches an order to the purchase without its token: the customer's list (the call is
/// per customer), created no earlier than [`FALLBACK_WINDOW`] before the first checkout call,
/// no line carrying another purchase's token, and the multiset of (catalog item, quantity) of
/// its lines equal to the purchase's. Exactly one candidate is adopted; more are ambiguous.
pub(crate) fn fallback_match<'a>(ctx: &PurchaseContext, orders: &'a [Order]) -> Fallback<'a> {
    let mut wanted: Vec<(String, i64)> = ctx
        .request
        .items
        .iter()
        .zip(&ctx.items)
        .map(|(item, state)| {
            (
                state
                    .catalog_item_id
                    .clone()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
                item.quantity,
            )
        })
        .collect();
    wanted.sort();
    let since = ctx.checkout.first_attempt_at.map(|at| at - FALLBACK_WINDOW);
    let recent: Vec<&Order> = orders
        .iter()
        .filter(|o| match (since, o.creation_date) {
            (Some(since), Some(created)) => created >= since,
            // Without both times the rule cannot be applied: never adopt on it.
            _ => false,
        })
        .collect();
    let candidates: Vec<&Order> = recent
        .iter()
        .copied()
        .filter(|o| {
            let foreign = o.line_items.iter().any(|l| {
                l.friendly_name
                    .as_deref()
                    .is_some_and(|n| n.contains("[pcs-"))
            });
            let mut lines: Vec<(String, i64)> = o
                .line_items
                .iter()
                .map(|l| (l.offer_id.to_ascii_lowercase(), l.quantity))
                .collect();
            lines.sort();
            !foreign && lines == wanted
        })
        .collect();
    let items = wanted
        .iter()
        .map(|(offer, quantity)| format!("{offer} x{quantity}"))
        .collect::<Vec<_>>()
        .join(", ");
    let since_text = since.map_or_else(
        || "unknown".to_owned(),
        |s| s.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    let seen = format!(
        "the list shows {} order(s), {} created since {since_text} (5 minutes before the first checkout call); none carries token {}; {} match the items {items}",
        orders.len(),
        recent.len(),
        ctx.token,
        candidates.len()
    );
    match candidates.as_slice() {
        [] => Fallback::None(seen),
        [one] => {
            let created = one.creation_date.map_or_else(String::new, |c| {
                c.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            });
            Fallback::One(
                one,
                format!("order {} (created {created}) is the only order of the customer since {since_text} with exactly the items {items}; no line carries token {} (friendly names not echoed)", one.id, ctx.token),
            )
        }
        several => Fallback::Several(several.iter().map(|o| o.id.clone()).collect(), seen),
    }
}

fn order_status(mut next: PurchaseContext, order_id: &str, order: &Order) -> D {
    let Some(known) = next.orders.iter_mut().find(|o| o.id == order_id) else {
        return park(
            next,
            format!("internal: order {order_id} is not one of this purchase's"),
        );
    };
    let fresh = order_state(order);
    known.status = fresh.status.clone();
    known.completed = fresh.completed;
    match &order.status {
        Some(OrderStatus::Completed) => {
            if next.orders.iter().all(|o| o.completed) {
                advance(State::EntitlementFetch, next, "every order is completed")
            } else {
                cont(next, format!("order {order_id} completed"))
            }
        }
        Some(OrderStatus::Cancelled) => park(
            next,
            format!("order {order_id} was cancelled in Partner Center; check with the customer"),
        ),
        _ => poll(next, format!("order {order_id} is {}", fresh.status)),
    }
}

fn entitlements(mut next: PurchaseContext, list: &[Entitlement]) -> D {
    let mut found = Vec::new();
    let mut missing = 0;
    for order in &next.orders {
        for (line, _, quantity) in &order.lines {
            if *quantity == 0 {
                continue; // cancelled lines have no entitlement
            }
            let hit = list.iter().find(|e| {
                e.reference_order.as_ref().is_some_and(|r| {
                    r.id == order.id && r.line_item_id.as_deref() == Some(line.to_string().as_str())
                })
            });
            match hit {
                Some(e) => found.push(EntitlementState {
                    order_id: order.id.clone(),
                    line_item_id: line.to_string(),
                    product_id: e.product_id.clone(),
                    sku_id: e.sku_id.clone(),
                    quantity: e.quantity,
                    kind: e.entitlement_type.as_ref().map(|k| k.as_str().to_owned()),
                    artifacts: e
                        .entitled_artifacts
                        .iter()
                        .filter_map(|a| {
                            a.link.as_ref().map(|l| ArtifactState {
                                uri: l.uri.clone(),
                                resource_id: a.resource_id.clone(),
                                reservation_ids: None,
                            })
                        })
                        .collect(),
                }),
                None => missing += 1,
            }
        }
    }
    if missing > 0 {
        return poll(
            next,
            format!("waiting for entitlements of {missing} order line(s)"),
        );
    }
    next.entitlements = found;
    next.entitlements_done = true;
    let n = next.entitlements.len();
    cont(next, format!("{n} entitlement(s) matched"))
}

/// The end: success, or needs attention when some order groups failed.
pub fn finish(ctx: PurchaseContext) -> D {
    finish_noting(ctx, "")
}

fn finish_noting(ctx: PurchaseContext, extra: &str) -> D {
    // Invariant: `succeeded` means orders exist, each read back from Partner Center as
    // completed. No path (operator actions included) reaches success without them.
    if ctx.orders.is_empty() || !ctx.orders.iter().all(|o| o.completed) {
        let reason = format!(
            "internal invariant: the purchase reached its end with {} order(s), {} of them confirmed completed; pcsaga does not record success without confirmed orders. Look for orders with token {} in Partner Center",
            ctx.orders.len(),
            ctx.orders.iter().filter(|o| o.completed).count(),
            ctx.token
        );
        return park(ctx, reason);
    }
    if ctx.order_errors.is_empty() {
        let reservations: usize = ctx
            .entitlements
            .iter()
            .flat_map(|e| &e.artifacts)
            .filter_map(|a| a.reservation_ids.as_ref())
            .map(Vec::len)
            .sum();
        let note = format!(
            "purchased: {} order(s), {} entitlement(s), {} reservation(s){extra}",
            ctx.orders.len(),
            ctx.entitlements.len(),
            reservations
        );
        return Decision::Succeed { context: ctx, note };
    }
    let errors = ctx
        .order_errors
        .iter()
        .map(|e| format!("group {}: {} {}", e.group, e.code, e.description))
        .collect::<Vec<_>>()
        .join("; ");
    park(ctx, format!("partly bought: {errors}. The other orders completed; resuming from Checkout re-attempts the failed groups on the same cart"))
}

/// What happens when a failure carries `Config` on an entitlement call: app+user credentials
/// are missing, so entitlements cannot be read (spec ambiguity 18): finish without them, and
/// say so.
fn entitlements_unavailable(mut ctx: PurchaseContext, why: &str) -> D {
    ctx.entitlements_done = true;
    finish_noting(ctx, &format!("; entitlements not read ({why})"))
}
