//! Decisions that the tables leave open, each pinned by a case that fails when the rule
//! breaks: found missed by the mutation check of `decide.rs` (see the closing notes), one
//! `check` per rule.

use pcsaga_engine::Decision;
use pcsaga_partner_center::models::{Availability, InventoryItem, RegistrationState, Term};
use pcsaga_partner_center::ErrorClass;
use pcsaga_partner_center::{CallContext, Error as ApiError};
use pcsaga_purchase::call::{Call, Outcome, Reply};
use pcsaga_purchase::context::{Intent, Registration, RegistrationState as Reg};
use pcsaga_purchase::decide::decide;
use pcsaga_purchase::{PurchaseContext, State};

use crate::transition_table::{at, now, sku_facts};

const FIRST: &str = "1c461a25-f729-4fa5-aadb-280947dd05e8";
const SECOND: &str = "9a1f4c2e-5b3d-4e6f-8a7b-0c1d2e3f4a5b";

/// Decides and hands the decision to `expect`, naming the case on failure.
#[track_caller]
fn check(
    name: &str,
    state: State,
    ctx: &PurchaseContext,
    call: Call,
    outcome: Outcome,
    expect: impl FnOnce(&Decision<State, PurchaseContext>) -> bool,
) {
    let decision = decide(state, ctx, &call, outcome);
    assert!(expect(&decision), "{name}: {decision:#?}");
}

fn two_registrations(state: State, first: Registration, sent: bool) -> PurchaseContext {
    let mut ctx = at(state);
    ctx.registrations = vec![
        Reg {
            subscription_id: FIRST.into(),
            status: first,
            register_sent: sent,
        },
        Reg {
            subscription_id: SECOND.into(),
            status: Registration::NotRegistered,
            register_sent: sent,
        },
    ];
    ctx
}

fn availability(id: &str, term: &str) -> Availability {
    Availability {
        id: id.into(),
        catalog_item_id: format!("DZH318Z0BQ3Q:0001:{id}"),
        is_purchasable: Some(true),
        terms: vec![Term {
            duration: Some(term.into()),
            ..Term::default()
        }],
        ..Availability::default()
    }
}

fn discovery(term: Option<&str>, sku_duration: &str) -> PurchaseContext {
    let mut ctx = at(State::Discovery);
    ctx.request.items[0].term_duration = term.map(str::to_owned);
    let mut sku = sku_facts();
    sku.duration = Some(sku_duration.into());
    ctx.items[0].sku = Some(sku);
    ctx.items[0].catalog_item_id = None;
    ctx
}

fn chosen(d: &Decision<State, PurchaseContext>) -> Option<String> {
    d.context().items[0].catalog_item_id.clone()
}

#[test]
fn registrations_are_matched_by_subscription() {
    // The register reply marks the subscription it was for, not another.
    let ctx = two_registrations(State::Enablement, Registration::NotRegistered, false);
    check(
        "register answered",
        State::Enablement,
        &ctx,
        Call::Register {
            subscription_id: SECOND.into(),
            request_id: uuid::Uuid::nil(),
        },
        Ok(Reply::Registered),
        |d| {
            let r = &d.context().registrations;
            r[1].register_sent && r[1].status == Registration::Registering && !r[0].register_sent
        },
    );
    // A status read updates its own subscription only.
    check(
        "status read",
        State::Enablement,
        &ctx,
        Call::GetRegistration {
            subscription_id: SECOND.into(),
        },
        Ok(Reply::Registration(RegistrationState::Registered)),
        |d| {
            let r = &d.context().registrations;
            r[1].status == Registration::Registered && r[0].status == Registration::NotRegistered
        },
    );
    // After registration was requested, a lagging "NotRegistered" means "not yet": poll.
    let sent = two_registrations(State::RegistrationPolling, Registration::Registering, true);
    check(
        "lagging NotRegistered",
        State::RegistrationPolling,
        &sent,
        Call::GetRegistration {
            subscription_id: FIRST.into(),
        },
        Ok(Reply::Registration(RegistrationState::NotRegistered)),
        |d| {
            matches!(d, Decision::Poll { .. })
                && d.context().registrations[0].status == Registration::Registering
        },
    );
    // One of two registered: carry on with the other, do not advance yet.
    check(
        "one of two registered",
        State::RegistrationPolling,
        &sent,
        Call::GetRegistration {
            subscription_id: FIRST.into(),
        },
        Ok(Reply::Registration(RegistrationState::Registered)),
        |d| matches!(d, Decision::Continue { .. }),
    );
    // A refusal names the subscription.
    check(
        "refusal names the subscription",
        State::Enablement,
        &ctx,
        Call::GetRegistration {
            subscription_id: SECOND.into(),
        },
        Err(refusal(ErrorClass::Business, Some(400), "800011")),
        |d| matches!(d, Decision::Fail { reason, .. } if reason.contains(&format!("subscription {SECOND}"))),
    );
}

#[test]
fn availabilities_are_chosen_by_term_and_checked() {
    let list = vec![
        availability("ONEYEAR", "P1Y"),
        availability("THREEYEARS", "P3Y"),
    ];
    // No term in the request: the SKU's duration decides (3Years is P3Y).
    check(
        "term from the SKU",
        State::Discovery,
        &discovery(None, "3Years"),
        Call::ListAvailabilities { item: 0 },
        Ok(Reply::Availabilities(list.clone())),
        |d| chosen(d).as_deref() == Some("DZH318Z0BQ3Q:0001:THREEYEARS"),
    );
    check(
        "term from the SKU, months",
        State::Discovery,
        &discovery(None, "1Year"),
        Call::ListAvailabilities { item: 0 },
        Ok(Reply::Availabilities(list.clone())),
        |d| chosen(d).as_deref() == Some("DZH318Z0BQ3Q:0001:ONEYEAR"),
    );
    // An availability without terms matches only a request without a term.
    let mut termless = availability("NOTERM", "P1Y");
    termless.terms.clear();
    check(
        "no term offered, a term asked",
        State::Discovery,
        &discovery(Some("P3Y"), "3Years"),
        Call::ListAvailabilities { item: 0 },
        Ok(Reply::Availabilities(vec![
            termless.clone(),
            availability("THREEYEARS", "P3Y"),
        ])),
        |d| chosen(d).as_deref() == Some("DZH318Z0BQ3Q:0001:THREEYEARS"),
    );
    // A named availability that does not offer the asked term fails, naming it.
    let mut named = discovery(Some("P3Y"), "3Years");
    named.request.items[0].availability_id = Some("ONEYEAR".into());
    check(
        "named availability without the term",
        State::Discovery,
        &named,
        Call::ListAvailabilities { item: 0 },
        Ok(Reply::Availabilities(list.clone())),
        |d| matches!(d, Decision::Fail { reason, .. } if reason.contains("does not offer term P3Y")),
    );
    // A SKU with no billing cycles listed is not refused for it; one without one_time is.
    let mut any_cycle = discovery(Some("P1Y"), "1Year");
    if let Some(sku) = any_cycle.items[0].sku.as_mut() {
        sku.billing_cycles.clear();
    }
    check(
        "no billing cycles listed",
        State::Discovery,
        &any_cycle,
        Call::ListAvailabilities { item: 0 },
        Ok(Reply::Availabilities(list.clone())),
        |d| matches!(d, Decision::Continue { .. }),
    );
    let mut monthly = discovery(Some("P1Y"), "1Year");
    if let Some(sku) = monthly.items[0].sku.as_mut() {
        sku.billing_cycles = vec!["monthly".into()];
    }
    check(
        "monthly only",
        State::Discovery,
        &monthly,
        Call::ListAvailabilities { item: 0 },
        Ok(Reply::Availabilities(list)),
        |d| matches!(d, Decision::Fail { reason, .. } if reason.contains("cannot be bought one-time")),
    );
}

#[test]
fn the_inventory_answer_is_read_for_the_items_own_sku() {
    let ctx = at(State::InventoryCheck);
    // Another SKU of the same product is restricted; ours is available.
    let list = vec![
        InventoryItem {
            product_id: "DZH318Z0BQ3Q".into(),
            sku_id: Some("0003".into()),
            is_restricted: true,
            restrictions: vec![],
        },
        InventoryItem {
            product_id: "DZH318Z0BQ3Q".into(),
            sku_id: Some("0001".into()),
            is_restricted: false,
            restrictions: vec![],
        },
    ];
    check(
        "another SKU restricted",
        State::InventoryCheck,
        &ctx,
        Call::CheckInventory { item: 0 },
        Ok(Reply::Inventory(list)),
        |d| matches!(d, Decision::Continue { .. }) && d.context().items[0].inventory_checked,
    );
}

/// A read answered while a side-effecting call is in doubt (a resume went back to Discovery
/// after a lost create-cart reply) must not free the pending request id.
#[test]
fn a_read_reply_never_frees_a_pending_request_id() {
    let mut ctx = discovery(Some("P1Y"), "1Year");
    ctx.pending = Some(Intent {
        call: "create_cart".into(),
        request_id: uuid::Uuid::from_u128(9),
    });
    check(
        "read answered",
        State::Discovery,
        &ctx,
        Call::GetProduct { item: 0 },
        Ok(Reply::Product(Box::default())),
        |d| d.context().pending == ctx.pending,
    );
    check(
        "read refused",
        State::Discovery,
        &ctx,
        Call::ListAvailabilities { item: 0 },
        Err(refusal(ErrorClass::NotFound, Some(404), "400019")),
        |d| d.context().pending == ctx.pending,
    );
}

#[test]
fn stale_catalog_ids_are_rediscovered_a_bounded_number_of_times() {
    use pcsaga_partner_center::models::{Cart, CartError, CartErrorCode, CartLineItem};
    use pcsaga_purchase::decide::MAX_REDISCOVERIES;
    let stale = Cart {
        id: Some("cart-1".into()),
        line_items: vec![CartLineItem {
            id: Some(0),
            catalog_item_id: "DZH318Z0BQ3Q:0001:OLD".into(),
            quantity: 2,
            error: Some(CartError {
                error_code: CartErrorCode::CatalogItemIdIsNotValid,
                error_description: Some("stale".into()),
                additional_information: None,
            }),
            ..CartLineItem::default()
        }],
        ..Cart::default()
    };
    let mut ctx = at(State::CartBuild);
    let create = || Call::CreateCart {
        request_id: uuid::Uuid::nil(),
        cart: Cart::default(),
    };
    check(
        "first time",
        State::CartBuild,
        &ctx,
        create(),
        Ok(Reply::Cart(Box::new(stale.clone()))),
        |d| {
            matches!(
                d,
                Decision::Advance {
                    to: State::Discovery,
                    ..
                }
            ) && d.context().rediscoveries == 1
        },
    );
    ctx.rediscoveries = MAX_REDISCOVERIES - 1;
    check(
        "last allowed",
        State::CartBuild,
        &ctx,
        create(),
        Ok(Reply::Cart(Box::new(stale.clone()))),
        |d| matches!(d, Decision::Advance { .. }) && d.context().rediscoveries == MAX_REDISCOVERIES,
    );
    ctx.rediscoveries = MAX_REDISCOVERIES;
    check(
        "one too many",
        State::CartBuild,
        &ctx,
        create(),
        Ok(Reply::Cart(Box::new(stale))),
        |d| matches!(d, Decision::Fail { .. }),
    );
}

/// Reconciliation finishes only when every item's line is found: one order of two is not
/// enough (the other may still be on its way to the lagging list).
#[test]
fn reconciliation_waits_for_every_line() {
    use pcsaga_partner_center::models::{Order, OrderLineItem, OrderStatus};
    let mut ctx = at(State::Checkout);
    ctx.checkout.reconciling = true;
    ctx.pending = None;
    let mut second = ctx.request.items[0].clone();
    second.product_id = "DG7GMGF0DWTL".into();
    ctx.request.items.push(second);
    ctx.items.push(ctx.items[0].clone());
    let token = ctx.token.clone();
    let order = |id: &str, line: i64| Order {
        id: id.into(),
        status: Some(OrderStatus::Pending),
        line_items: vec![OrderLineItem {
            line_item_number: line,
            offer_id: "X".into(),
            quantity: 2,
            friendly_name: Some(format!("[{token}]")),
            ..OrderLineItem::default()
        }],
        ..Order::default()
    };
    check(
        "one of two lines",
        State::Checkout,
        &ctx,
        Call::ListOrders,
        Ok(Reply::Orders(vec![order("o-1", 0)])),
        |d| matches!(d, Decision::Poll { .. }) && d.context().orders.is_empty(),
    );
    check(
        "both lines",
        State::Checkout,
        &ctx,
        Call::ListOrders,
        Ok(Reply::Orders(vec![order("o-1", 0), order("o-2", 1)])),
        |d| matches!(d, Decision::Advance { .. }) && d.context().orders.len() == 2,
    );
}

/// What `plan` decides without a call, pinned where the mutation check found it loose.
mod plans {
    use super::*;
    use pcsaga_engine::Plan;
    use pcsaga_purchase::context::CartState;
    use pcsaga_purchase::plan::{build_cart, plan};

    #[test]
    fn registration_is_requested_once_per_subscription() {
        // Requested already (its reply arrived): never sent again; wait for it instead.
        let mut ctx = two_registrations(State::Enablement, Registration::NotRegistered, true);
        ctx.items[0].sku = Some(sku_facts());
        ctx.registrations_planned = true;
        match plan(State::Enablement, &ctx, now()) {
            Plan::Decide(Decision::Advance { to, .. }) => {
                assert_eq!(to, State::RegistrationPolling)
            }
            other => panic!("{other:?}"),
        }
        // Registering but not requested by us: read its status, do not register it.
        ctx.registrations[0].status = Registration::Registering;
        ctx.registrations[0].register_sent = false;
        ctx.registrations[1].register_sent = true;
        assert!(!matches!(
            plan(State::Enablement, &ctx, now()),
            Plan::Call {
                effect: Call::Register { .. },
                ..
            }
        ));
    }

    #[test]
    fn the_cart_carries_each_line_id_and_term() {
        let mut ctx = at(State::CartBuild);
        let mut second = ctx.request.items[0].clone();
        second.product_id = "DG7GMGF0DWTL".into();
        ctx.request.items.push(second);
        let mut state = ctx.items[0].clone();
        state.term_duration = Some("P3Y".into());
        ctx.items.push(state);
        let cart = build_cart(&ctx);
        let ids: Vec<Option<i64>> = cart.line_items.iter().map(|l| l.id).collect();
        assert_eq!(ids, vec![Some(0), Some(1)], "line ids are the item indexes");
        assert_eq!(cart.line_items[0].term_duration.as_deref(), Some("P1Y"));
        assert_eq!(cart.line_items[1].term_duration.as_deref(), Some("P3Y"));
    }

    #[test]
    fn a_cart_about_to_expire_is_replaced_before_checkout() {
        let mut ctx = at(State::CartBuild);
        ctx.pending = None;
        let cart = |minutes: i64| CartState {
            id: "cart-1".into(),
            expires_at: Some(now() + chrono::Duration::minutes(minutes)),
            needs_update: false,
        };
        ctx.cart = Some(cart(30));
        match plan(State::CartBuild, &ctx, now()) {
            Plan::Decide(Decision::Continue { context, .. }) => assert!(context.cart.is_none()),
            other => panic!("expiring in 30 min: {other:?}"),
        }
        ctx.cart = Some(cart(120));
        match plan(State::CartBuild, &ctx, now()) {
            Plan::Decide(Decision::Advance { to, .. }) => assert_eq!(to, State::Checkout),
            other => panic!("two hours left: {other:?}"),
        }
    }
}

/// The SKU's quantity bounds are inclusive: its minimum and its maximum can be bought.
#[test]
fn quantity_bounds_are_inclusive() {
    let list = vec![availability("ONEYEAR", "P1Y")];
    for (quantity, buys) in [(1, true), (999, true), (1000, false)] {
        let mut ctx = discovery(Some("P1Y"), "1Year");
        ctx.request.items[0].quantity = quantity;
        check(
            &format!("quantity {quantity}"),
            State::Discovery,
            &ctx,
            Call::ListAvailabilities { item: 0 },
            Ok(Reply::Availabilities(list.clone())),
            |d| matches!(d, Decision::Continue { .. }) == buys,
        );
    }
}

/// A refusal as the client reports it.
fn refusal(class: ErrorClass, status: Option<u16>, code: &str) -> ApiError {
    let context = CallContext {
        status,
        code: Some(code.to_owned()),
        ..CallContext::default()
    };
    ApiError::new(class, "", context)
}
