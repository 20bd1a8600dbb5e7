//! The transition table: every state × every class of outcome → decision, next state, wait
//! and context change, snapshotted. Ids and times are not printed (only whether they changed),
//! so the table is stable. A row per case; `row` does the work.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pcsaga_engine::schedule::{schedule, Before};
use pcsaga_engine::Decision;
use pcsaga_engine::Policies;
use pcsaga_partner_center::models::{
    Availability, Cart, CartCheckoutResult, CartError, CartErrorCode, CartLineItem, CartStatus,
    Entitlement, InventoryItem, InventoryRestriction, Order, OrderError, OrderLineItem,
    OrderStatus, ReferenceOrder, RegistrationState, Sku, Term,
};
use pcsaga_partner_center::ErrorClass;
use pcsaga_partner_center::{CallContext, Error as ApiError};
use pcsaga_purchase::call::{Call, Outcome, Reply};
use pcsaga_purchase::context::{
    CartState, OrderState, Registration, RegistrationState as Reg, SkuFacts,
};
use pcsaga_purchase::decide::decide;
use pcsaga_purchase::transitions::{self, Driven};
use pcsaga_purchase::{parse_value, PurchaseContext, State};
use serde_json::json;

/// The production policies, as the daemon loads them.
fn policies() -> Policies {
    use pcsaga_engine::Workflow as _;
    let workflow = pcsaga_purchase::PurchaseWorkflow::offline();
    Policies::parse(
        include_str!("../../../../workflows/one-time-purchase.toml"),
        workflow.name(),
        &workflow.states(),
        |s, p| workflow.validate_policy(s, p),
    )
    .expect("the built-in policies")
}

pub(crate) fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("valid")
}

fn request() -> PurchaseContext {
    let request = parse_value(&json!({
        "idempotencyKey": "table", "customerId": "4c4d0c6e-38b9-4c5a-a0f4-3b2f1c1e7a10", "country": "US",
        "items": [{"productId": "DZH318Z0BQ3Q", "skuId": "0001", "quantity": 2, "termDuration": "P1Y",
                   "provisioningContext": {"subscriptionId": "1c461a25-f729-4fa5-aadb-280947dd05e8", "scope": "shared"}}]
    }))
    .expect("valid request");
    PurchaseContext::new(request)
}

pub(crate) fn sku_facts() -> SkuFacts {
    SkuFacts {
        title: "RI".into(),
        needs_registration: true,
        needs_inventory_check: true,
        minimum_quantity: Some(1),
        maximum_quantity: Some(999),
        billing_cycles: vec!["one_time".into()],
        provisioning_variables: vec!["Scope".into(), "SubscriptionId".into(), "Duration".into()],
        inventory_variables: vec![
            "CustomerId".into(),
            "AzureSubscriptionId".into(),
            "ArmRegionName".into(),
        ],
        arm_region_name: Some("eastus".into()),
        duration: Some("1Year".into()),
    }
}

/// A realistic context for a saga standing in `state`.
pub(crate) fn at(state: State) -> PurchaseContext {
    let mut ctx = request();
    if state == State::Enablement {
        return ctx;
    }
    ctx.items[0].sku = Some(sku_facts());
    ctx.registrations_planned = true;
    let status = if state == State::RegistrationPolling {
        Registration::Registering
    } else {
        Registration::Registered
    };
    ctx.registrations = vec![Reg {
        subscription_id: "1c461a25-f729-4fa5-aadb-280947dd05e8".into(),
        status,
        register_sent: true,
    }];
    if state <= State::Discovery {
        ctx.items[0].product_checked = state == State::Discovery;
        return ctx;
    }
    ctx.items[0].product_checked = true;
    ctx.items[0].catalog_item_id = Some("DZH318Z0BQ3Q:0001:DZH318XZXVNF".into());
    ctx.items[0].term_duration = Some("P1Y".into());
    if state == State::InventoryCheck {
        return ctx;
    }
    ctx.items[0].inventory_checked = true;
    if state == State::CartBuild {
        ctx.pending = Some(pcsaga_purchase::context::Intent {
            call: "create_cart".into(),
            request_id: uuid::Uuid::nil(),
        });
        return ctx;
    }
    ctx.cart = Some(CartState {
        id: "cart-1".into(),
        expires_at: Some(now() + chrono::Duration::days(7)),
        needs_update: false,
    });
    ctx.checkout.attempted = true;
    ctx.checkout.cart_id = Some("cart-1".into());
    ctx.checkout.sent = 1;
    if state == State::Checkout {
        ctx.pending = Some(pcsaga_purchase::context::Intent {
            call: "checkout".into(),
            request_id: uuid::Uuid::nil(),
        });
        return ctx;
    }
    ctx.checkout.confirmed = true;
    ctx.orders = vec![OrderState {
        id: "order-1".into(),
        status: "pending".into(),
        lines: vec![(0, "DZH318Z0BQ3Q:0001:DZH318XZXVNF".into(), 2)],
        completed: state == State::EntitlementFetch,
        alternate_id: None,
        currency: None,
        created_at: None,
    }];
    ctx
}

fn primary_call(state: State) -> Call {
    match state {
        State::Enablement => Call::GetSku { item: 0 },
        State::RegistrationPolling => Call::GetRegistration {
            subscription_id: "1c461a25-f729-4fa5-aadb-280947dd05e8".into(),
        },
        State::Discovery => Call::ListAvailabilities { item: 0 },
        State::InventoryCheck => Call::CheckInventory { item: 0 },
        State::CartBuild => Call::CreateCart {
            request_id: uuid::Uuid::nil(),
            cart: Cart::default(),
        },
        State::Checkout => Call::Checkout {
            cart_id: "cart-1".into(),
            request_id: uuid::Uuid::nil(),
        },
        State::OrderVisibilityPolling => Call::GetOrder {
            order_id: "order-1".into(),
        },
        State::EntitlementFetch => Call::ListEntitlements,
    }
}

fn failure(class: ErrorClass, status: Option<u16>, code: Option<&str>) -> Outcome {
    let context = CallContext {
        status,
        code: code.map(str::to_owned),
        retry_after: (class == ErrorClass::Throttled).then(|| Duration::from_secs(30)),
        ..CallContext::default()
    };
    Err(ApiError::new(class, "", context))
}

/// The generic classes every state is tested against.
fn generic(class: &str) -> Outcome {
    match class {
        "transient" => failure(ErrorClass::Transient, Some(503), Some("800003")),
        "throttled" => failure(ErrorClass::Throttled, Some(429), None),
        "outcome_unknown" => failure(ErrorClass::OutcomeUnknown, None, None),
        "business" => failure(ErrorClass::Business, Some(400), Some("800002")),
        "not_found" => failure(ErrorClass::NotFound, Some(404), Some("1000")),
        "auth_expired" => failure(ErrorClass::AuthExpired, Some(401), Some("400")),
        "in_flight" => failure(ErrorClass::InFlight, Some(409), Some("800060")),
        "already_submitted" => failure(ErrorClass::AlreadySubmitted, Some(400), Some("800065")),
        "config" => failure(ErrorClass::Config, None, None),
        other => unreachable!("no generic class {other}"),
    }
}

fn success(state: State) -> Outcome {
    Ok(match state {
        State::Enablement => Reply::Sku(Box::new(Sku {
            id: "0001".into(),
            product_id: "DZH318Z0BQ3Q".into(),
            purchase_prerequisites: vec![
                pcsaga_partner_center::models::PurchasePrerequisite::AzureSubscriptionRegistration,
                pcsaga_partner_center::models::PurchasePrerequisite::InventoryCheck,
            ],
            ..Sku::default()
        })),
        State::RegistrationPolling => Reply::Registration(RegistrationState::Registered),
        State::Discovery => Reply::Availabilities(vec![Availability {
            id: "DZH318XZXVNF".into(),
            catalog_item_id: "DZH318Z0BQ3Q:0001:DZH318XZXVNF".into(),
            is_purchasable: Some(true),
            terms: vec![Term {
                duration: Some("P1Y".into()),
                ..Term::default()
            }],
            ..Availability::default()
        }]),
        State::InventoryCheck => Reply::Inventory(vec![InventoryItem {
            product_id: "DZH318Z0BQ3Q".into(),
            sku_id: Some("0001".into()),
            is_restricted: false,
            restrictions: vec![],
        }]),
        State::CartBuild => Reply::Cart(Box::new(cart(None))),
        State::Checkout => Reply::Checkout(Box::new(CartCheckoutResult {
            orders: vec![order(OrderStatus::Pending, "")],
            ..Default::default()
        })),
        State::OrderVisibilityPolling => Reply::Order(Box::new(order(OrderStatus::Completed, ""))),
        State::EntitlementFetch => Reply::Entitlements(vec![Entitlement {
            reference_order: Some(ReferenceOrder {
                id: "order-1".into(),
                line_item_id: Some("0".into()),
                alternate_id: None,
            }),
            quantity: 2,
            ..Entitlement::default()
        }]),
    })
}

fn cart(error: Option<CartErrorCode>) -> Cart {
    Cart {
        id: Some("cart-1".into()),
        expiration_timestamp: Some(now() + chrono::Duration::days(7)),
        line_items: vec![CartLineItem {
            id: Some(0),
            catalog_item_id: "DZH318Z0BQ3Q:0001:DZH318XZXVNF".into(),
            quantity: 2,
            error: error.map(|code| CartError {
                error_code: code,
                error_description: Some("line error".into()),
                additional_information: None,
            }),
            ..CartLineItem::default()
        }],
        ..Cart::default()
    }
}

fn order(status: OrderStatus, friendly: &str) -> Order {
    Order {
        id: "order-1".into(),
        status: Some(status),
        line_items: vec![OrderLineItem {
            line_item_number: 0,
            offer_id: "DZH318Z0BQ3Q:0001:DZH318XZXVNF".into(),
            quantity: 2,
            friendly_name: Some(friendly.into()),
            ..OrderLineItem::default()
        }],
        ..Order::default()
    }
}

/// What changed in the context, without ids or times.
fn changes(before: &PurchaseContext, after: &PurchaseContext) -> String {
    let mut out = Vec::new();
    match (&before.pending, &after.pending) {
        (Some(_), None) => out.push("request id cleared".to_owned()),
        (Some(a), Some(b)) if a == b => out.push("request id kept".to_owned()),
        (None, Some(_)) => out.push("request id new".to_owned()),
        _ => {}
    }
    if before.items[0].sku.is_none() && after.items[0].sku.is_some() {
        out.push("sku recorded".into());
    }
    if before.items[0].catalog_item_id != after.items[0].catalog_item_id {
        out.push(format!(
            "catalog item {}",
            if after.items[0].catalog_item_id.is_some() {
                "chosen"
            } else {
                "dropped"
            }
        ));
    }
    if before.items[0].inventory_checked != after.items[0].inventory_checked {
        out.push(format!(
            "inventory checked={}",
            after.items[0].inventory_checked
        ));
    }
    if before.registrations != after.registrations {
        out.push(format!(
            "registrations {:?}",
            after
                .registrations
                .iter()
                .map(|r| r.status)
                .collect::<Vec<_>>()
        ));
    }
    if before.cart != after.cart {
        out.push(match &after.cart {
            Some(c) if c.needs_update => "cart kept, needs update".into(),
            Some(_) => "cart recorded".into(),
            None => "cart dropped".into(),
        });
    }
    if before.checkout.answered != after.checkout.answered {
        out.push(format!(
            "checkouts answered={} of sent={}",
            after.checkout.answered, after.checkout.sent
        ));
    }
    if before.checkout.reconciling != after.checkout.reconciling {
        out.push(format!("reconciling={}", after.checkout.reconciling));
    }
    if before.checkout.verifying != after.checkout.verifying {
        out.push(if after.checkout.verifying.is_some() {
            "refusal kept, cart to be read".into()
        } else {
            "cart read".into()
        });
    }
    if before.checkout.confirmed != after.checkout.confirmed {
        out.push("checkout confirmed".into());
    }
    if before.orders != after.orders {
        out.push(format!(
            "orders={} completed={}",
            after.orders.len(),
            after.orders.iter().filter(|o| o.completed).count()
        ));
    }
    if before.order_errors != after.order_errors {
        out.push(format!("order errors={}", after.order_errors.len()));
    }
    let order_id = |c: &PurchaseContext| c.direct.as_ref().map(|d| d.request_id);
    if order_id(before) != order_id(after) {
        out.push("direct order's request id renewed".into());
    }
    if before.entitlements_done != after.entitlements_done {
        out.push(format!("entitlements={}", after.entitlements.len()));
    }
    assert_eq!(
        before.checkout.attempted, after.checkout.attempted,
        "a decision never changes whether a checkout was sent"
    );
    if out.is_empty() {
        "-".into()
    } else {
        out.join(", ")
    }
}

/// One row: `state | call | outcome | decision | next | wait | context change`.
fn row(state: State, ctx: &PurchaseContext, call: &Call, label: &str, outcome: Outcome) -> String {
    // Proof that nothing was bought, read from the outcome itself (never from the label): a
    // cart that still reads Active after a refusal, or a checkout whose every group failed.
    let proven_nothing_bought = match (call, &outcome) {
        (Call::GetCart { .. }, Ok(Reply::Cart(cart))) => cart.status == Some(CartStatus::Active),
        (Call::Checkout { .. }, Ok(Reply::Checkout(result))) => {
            result.orders.is_empty() && !result.order_errors.is_empty()
        }
        // A direct order refused for a reason of Partner Center's own (addendum 5.5: no order
        // was created), when it answers the only send: no earlier send is in doubt.
        (Call::CreateOrder { .. }, Err(f)) => {
            matches!(f.class, ErrorClass::Business | ErrorClass::NotFound)
                && ctx.checkout.sent.saturating_sub(1) <= ctx.checkout.answered
        }
        _ => false,
    };
    let class = match &outcome {
        Ok(_) => "ok".to_owned(),
        Err(f) => f.class.as_str().to_owned(),
    };
    let decision = decide(state, ctx, call, outcome);
    // Every decision is a row of the declared table.
    let driven = Driven::of(state, call.name(), &class, &decision);
    assert!(
        transitions::row_of(&driven).is_some(),
        "{state} {label}: `{driven}` is not a row of crates/purchase/src/transitions.rs"
    );
    // The wait is the engine's: the decision through the state's real policy.
    let policies = policies();
    let scheduled = schedule(
        decision.clone(),
        &Before {
            id: "transition-table",
            state,
            attempt: 0,
            total_attempts: 0,
            state_entered_at: now(),
        },
        &policies.get(state.name()),
        now(),
    );
    let next = match &decision {
        Decision::Succeed { .. } | Decision::Fail { .. } | Decision::Park { .. } => {
            scheduled.status.to_string()
        }
        _ => scheduled.state.name().to_owned(),
    };
    let wait = match scheduled.next_run_at {
        None => "-".to_owned(),
        Some(at) if at <= now() => "now".to_owned(),
        Some(at) => {
            let ms = (at - now()).num_milliseconds();
            let held = matches!(decision, Decision::Hold { .. });
            format!(
                "{:.1}s{}",
                ms as f64 / 1000.0,
                if held { ", no attempt counted" } else { "" }
            )
        }
    };
    if state.after_checkout_began() {
        // Failing is allowed only on proof that nothing was bought.
        assert!(
            !matches!(decision, Decision::Fail { .. }) || proven_nothing_bought,
            "{state} {label}: never fail once money may have moved"
        );
    }
    format!(
        "| {state} | {} | {label} | {} | {next} | {wait} | {} |",
        call.name(),
        decision.kind(),
        changes(ctx, decision.context())
    )
}

#[test]
fn transition_table() {
    let mut rows = vec![
        "| state | call | outcome | decision | next | wait | context change |".to_owned(),
        "|---|---|---|---|---|---|---|".to_owned(),
    ];
    const GENERIC: [&str; 9] = [
        "transient",
        "throttled",
        "outcome_unknown",
        "business",
        "not_found",
        "in_flight",
        "already_submitted",
        "auth_expired",
        "config",
    ];
    for state in State::ALL {
        let ctx = at(state);
        let call = primary_call(state);
        rows.push(row(state, &ctx, &call, "success", success(state)));
        for class in GENERIC {
            rows.push(row(state, &ctx, &call, class, generic(class)));
        }
    }
    // Special cases the spec names.
    let reg = at(State::RegistrationPolling);
    let poll_call = primary_call(State::RegistrationPolling);
    rows.push(row(
        State::RegistrationPolling,
        &reg,
        &poll_call,
        "still registering",
        Ok(Reply::Registration(RegistrationState::Registering)),
    ));
    rows.push(row(
        State::RegistrationPolling,
        &reg,
        &poll_call,
        "unknown status value",
        Ok(Reply::Registration(RegistrationState::Unknown(
            "Pending".into(),
        ))),
    ));
    let enable = {
        let mut c = at(State::RegistrationPolling);
        c.registrations[0].status = Registration::NotRegistered;
        c.registrations[0].register_sent = false;
        c.pending = Some(pcsaga_purchase::context::Intent {
            call: "register:1c461a25-f729-4fa5-aadb-280947dd05e8".into(),
            request_id: uuid::Uuid::nil(),
        });
        c
    };
    let register = Call::Register {
        subscription_id: "1c461a25-f729-4fa5-aadb-280947dd05e8".into(),
        request_id: uuid::Uuid::nil(),
    };
    rows.push(row(
        State::Enablement,
        &enable,
        &register,
        "register accepted (202)",
        Ok(Reply::Registered),
    ));
    rows.push(row(
        State::Enablement,
        &enable,
        &register,
        "register outcome_unknown",
        generic("outcome_unknown"),
    ));
    rows.push(row(
        State::Enablement,
        &enable,
        &register,
        "register transient (5xx)",
        generic("transient"),
    ));
    let disco = at(State::Discovery);
    rows.push(row(
        State::Discovery,
        &disco,
        &primary_call(State::Discovery),
        "no availability with the term",
        Ok(Reply::Availabilities(vec![])),
    ));
    let inv = at(State::InventoryCheck);
    rows.push(row(
        State::InventoryCheck,
        &inv,
        &primary_call(State::InventoryCheck),
        "restricted",
        Ok(Reply::Inventory(vec![InventoryItem {
            product_id: "DZH318Z0BQ3Q".into(),
            sku_id: Some("0001".into()),
            is_restricted: true,
            restrictions: vec![InventoryRestriction {
                reason_code: Some("NotAvailableForSubscription".into()),
                ..Default::default()
            }],
        }])),
    ));
    let cb = at(State::CartBuild);
    let create = primary_call(State::CartBuild);
    rows.push(row(
        State::CartBuild,
        &cb,
        &create,
        "line error subscription_not_registered",
        Ok(Reply::Cart(Box::new(cart(Some(
            CartErrorCode::SubscriptionNotRegistered,
        ))))),
    ));
    rows.push(row(
        State::CartBuild,
        &cb,
        &create,
        "line error catalog_item_id_is_not_valid",
        Ok(Reply::Cart(Box::new(cart(Some(
            CartErrorCode::CatalogItemIdIsNotValid,
        ))))),
    ));
    rows.push(row(
        State::CartBuild,
        &cb,
        &create,
        "line error invalid_input",
        Ok(Reply::Cart(Box::new(cart(Some(
            CartErrorCode::InvalidInput,
        ))))),
    ));
    let update = {
        let mut c = at(State::CartBuild);
        c.cart = Some(CartState {
            id: "cart-1".into(),
            expires_at: None,
            needs_update: true,
        });
        c
    };
    rows.push(row(
        State::CartBuild,
        &update,
        &Call::UpdateCart {
            request_id: uuid::Uuid::nil(),
            cart_id: "cart-1".into(),
            cart: Cart::default(),
        },
        "update: cart expired (404)",
        generic("not_found"),
    ));
    let co = at(State::Checkout);
    let checkout = primary_call(State::Checkout);
    rows.push(row(
        State::Checkout,
        &co,
        &checkout,
        "in_flight 409/800064",
        failure(ErrorClass::InFlight, Some(409), Some("800064")),
    ));
    rows.push(row(
        State::Checkout,
        &co,
        &checkout,
        "in_flight 409/800060",
        failure(ErrorClass::InFlight, Some(409), Some("800060")),
    ));
    rows.push(row(
        State::Checkout,
        &co,
        &checkout,
        "already_submitted 400/800065",
        failure(ErrorClass::AlreadySubmitted, Some(400), Some("800065")),
    ));
    let partial = CartCheckoutResult {
        orders: vec![order(OrderStatus::Pending, "")],
        order_errors: vec![OrderError {
            order_group_id: Some("1".into()),
            code: Some("800010".into()),
            description: Some("no inventory".into()),
        }],
        ..Default::default()
    };
    rows.push(row(
        State::Checkout,
        &co,
        &checkout,
        "partial (orders + orderErrors)",
        Ok(Reply::Checkout(Box::new(partial))),
    ));
    let none = CartCheckoutResult {
        order_errors: vec![OrderError {
            order_group_id: Some("0".into()),
            code: Some("800010".into()),
            description: None,
        }],
        ..Default::default()
    };
    rows.push(row(
        State::Checkout,
        &co,
        &checkout,
        "all groups failed",
        Ok(Reply::Checkout(Box::new(none))),
    ));
    let after_unknown = {
        let mut c = at(State::Checkout);
        c.checkout.sent = 2;
        c
    };
    rows.push(row(
        State::Checkout,
        &after_unknown,
        &checkout,
        "business after an unknown outcome",
        generic("business"),
    ));
    // A refusal is believed only once the cart proves it (E11).
    for (label, refusal) in [
        (
            "business 403",
            failure(ErrorClass::Business, Some(403), Some("800069")),
        ),
        (
            "business 409/800002",
            failure(ErrorClass::Business, Some(409), Some("800002")),
        ),
        (
            "business 200 with an error code",
            failure(ErrorClass::Business, Some(200), Some("400072")),
        ),
        (
            "in_flight 200/800060",
            failure(ErrorClass::InFlight, Some(200), Some("800060")),
        ),
        (
            "in_flight 400/800064",
            failure(ErrorClass::InFlight, Some(400), Some("800064")),
        ),
        (
            "outcome_unknown 201 with an unreadable body",
            failure(ErrorClass::OutcomeUnknown, Some(201), None),
        ),
    ] {
        rows.push(row(State::Checkout, &co, &checkout, label, refusal));
    }
    let verifying = {
        let mut c = at(State::Checkout);
        c.checkout.verifying = Some("HTTP 403 code 800069".into());
        c.checkout.answered = 1;
        c.pending = None;
        c
    };
    let get_cart = Call::GetCart {
        cart_id: "cart-1".into(),
    };
    let cart_reading = |status: Option<CartStatus>| {
        Ok(Reply::Cart(Box::new(Cart {
            id: Some("cart-1".into()),
            status,
            ..Cart::default()
        })))
    };
    rows.push(row(
        State::Checkout,
        &verifying,
        &get_cart,
        "cart Active",
        cart_reading(Some(CartStatus::Active)),
    ));
    rows.push(row(
        State::Checkout,
        &verifying,
        &get_cart,
        "cart Ordered",
        cart_reading(Some(CartStatus::Ordered)),
    ));
    rows.push(row(
        State::Checkout,
        &verifying,
        &get_cart,
        "cart without status",
        cart_reading(None),
    ));
    for class in GENERIC {
        rows.push(row(
            State::Checkout,
            &verifying,
            &get_cart,
            class,
            generic(class),
        ));
    }
    let reconciling = {
        let mut c = at(State::Checkout);
        c.checkout.reconciling = true;
        c.pending = None;
        c
    };
    let token = reconciling.token.clone();
    rows.push(row(
        State::Checkout,
        &reconciling,
        &Call::ListOrders,
        "reconcile: token not listed yet",
        Ok(Reply::Orders(vec![order(
            OrderStatus::Pending,
            "someone else's",
        )])),
    ));
    rows.push(row(
        State::Checkout,
        &reconciling,
        &Call::ListOrders,
        "reconcile: token found",
        Ok(Reply::Orders(vec![order(
            OrderStatus::Pending,
            &format!("x [{token}]"),
        )])),
    ));
    rows.push(row(
        State::Checkout,
        &reconciling,
        &Call::ListOrders,
        "reconcile: transient",
        generic("transient"),
    ));
    let ov = at(State::OrderVisibilityPolling);
    let get_order = primary_call(State::OrderVisibilityPolling);
    rows.push(row(
        State::OrderVisibilityPolling,
        &ov,
        &get_order,
        "pending",
        Ok(Reply::Order(Box::new(order(OrderStatus::Pending, "")))),
    ));
    rows.push(row(
        State::OrderVisibilityPolling,
        &ov,
        &get_order,
        "cancelled",
        Ok(Reply::Order(Box::new(order(OrderStatus::Cancelled, "")))),
    ));
    let ef = at(State::EntitlementFetch);
    rows.push(row(
        State::EntitlementFetch,
        &ef,
        &Call::ListEntitlements,
        "not listed yet",
        Ok(Reply::Entitlements(vec![])),
    ));
    rows.push(row(
        State::EntitlementFetch,
        &ef,
        &Call::ListEntitlements,
        "no app+user credentials (config)",
        failure(ErrorClass::Config, None, None),
    ));

    // A direct order (E21): its Checkout sends the body built in CartBuild, and reconciles
    // before anything is sent again.
    let direct = {
        let mut c = at(State::Checkout);
        c.request.order_path = pcsaga_purchase::OrderPath::Direct;
        c.checkout.attempted = true;
        c.checkout.sent = 1;
        c.direct = Some(pcsaga_purchase::context::DirectOrder {
            body: pcsaga_purchase::direct::body(&c),
            request_id: uuid::Uuid::nil(),
            last_sent_at: Some(now()),
            replies: 1,
            resends: 0,
            nothing_found: false,
        });
        c
    };
    let create = Call::CreateOrder {
        request_id: uuid::Uuid::nil(),
        order: pcsaga_purchase::direct::body(&direct),
    };
    rows.push(row(
        State::Checkout,
        &direct,
        &create,
        "direct: success",
        Ok(Reply::Order(Box::new(order(OrderStatus::Pending, "")))),
    ));
    for class in GENERIC {
        rows.push(row(
            State::Checkout,
            &direct,
            &create,
            &format!("direct: {class}"),
            generic(class),
        ));
    }
    let mut unknown_before = direct.clone();
    unknown_before.checkout.sent = 2;
    rows.push(row(
        State::Checkout,
        &unknown_before,
        &create,
        "direct: business after an unanswered send",
        generic("business"),
    ));
    let mut looking = direct.clone();
    looking.checkout.reconciling = true;
    let token = looking.token.clone();
    rows.push(row(
        State::Checkout,
        &looking,
        &Call::ListOrders,
        "direct: nothing in the list",
        Ok(Reply::Orders(vec![])),
    ));
    rows.push(row(
        State::Checkout,
        &looking,
        &Call::ListOrders,
        "direct: its order in the list",
        Ok(Reply::Orders(vec![order(
            OrderStatus::Pending,
            &format!("{token}:0"),
        )])),
    ));
    let mut second = order(OrderStatus::Pending, &format!("{token}:0"));
    second.id = "order-2".into();
    rows.push(row(
        State::Checkout,
        &looking,
        &Call::ListOrders,
        "direct: two orders carry the token",
        Ok(Reply::Orders(vec![
            order(OrderStatus::Pending, &format!("{token}:0")),
            second,
        ])),
    ));

    insta::assert_snapshot!(rows.join("\n"));
}

/// The request-id rule, per side-effecting call: the id planned for the call is sent again
/// after every outcome that does not settle the request (lost reply, unreadable 2xx, 5xx, 408,
/// 429, refused token), and a new one is drawn only after a reply that settles it.
#[test]
fn request_ids_are_reused_until_a_reply_settles_the_request() {
    use pcsaga_purchase::plan::plan;
    let register = {
        let mut c = at(State::Enablement);
        c.items[0].sku = Some(sku_facts());
        c.registrations_planned = true;
        c.registrations = vec![Reg {
            subscription_id: "1c461a25-f729-4fa5-aadb-280947dd05e8".into(),
            status: Registration::NotRegistered,
            register_sent: false,
        }];
        (State::Enablement, c)
    };
    let create = {
        let mut c = at(State::CartBuild);
        c.pending = None;
        (State::CartBuild, c)
    };
    let update = {
        let mut c = at(State::CartBuild);
        c.pending = None;
        c.cart = Some(CartState {
            id: "cart-1".into(),
            expires_at: Some(now() + chrono::Duration::days(7)),
            needs_update: true,
        });
        (State::CartBuild, c)
    };
    let checkout = {
        let mut c = at(State::Checkout);
        c.pending = None;
        c.checkout = Default::default();
        (State::Checkout, c)
    };
    let unsettled = [
        (
            "lost reply",
            failure(ErrorClass::OutcomeUnknown, None, None),
        ),
        (
            "unreadable 201",
            failure(ErrorClass::OutcomeUnknown, Some(201), None),
        ),
        (
            "503",
            failure(ErrorClass::Transient, Some(503), Some("800003")),
        ),
        ("408", failure(ErrorClass::Transient, Some(408), None)),
        ("429", failure(ErrorClass::Throttled, Some(429), None)),
        (
            "401 after a fresh token",
            failure(ErrorClass::AuthExpired, Some(401), None),
        ),
    ];
    let settled = [
        (
            "400",
            failure(ErrorClass::Business, Some(400), Some("800002")),
        ),
        (
            "404",
            failure(ErrorClass::NotFound, Some(404), Some("800008")),
        ),
        (
            "409/800060",
            failure(ErrorClass::InFlight, Some(409), Some("800060")),
        ),
    ];
    let id_of = |call: &Call| match call {
        Call::Register { request_id, .. }
        | Call::CreateCart { request_id, .. }
        | Call::UpdateCart { request_id, .. }
        | Call::Checkout { request_id, .. } => *request_id,
        other => panic!("{} is not side-effecting", other.name()),
    };
    for (expected, (state, start)) in [
        ("register", register),
        ("create_cart", create),
        ("update_cart", update),
        ("checkout", checkout),
    ] {
        let pcsaga_engine::Plan::Call {
            effect, context, ..
        } = plan(state, &start, now())
        else {
            panic!("{expected}: no call planned");
        };
        assert_eq!(effect.name(), expected);
        let first = id_of(&effect);
        // Every unsettled outcome in a row: the same id each time.
        let mut ctx = context;
        for (label, outcome) in unsettled.clone() {
            let decision = decide(state, &ctx, &effect, outcome);
            ctx = decision.context().clone();
            let again = plan(state, &ctx, now());
            let pcsaga_engine::Plan::Call {
                effect: again,
                context: next,
                ..
            } = again
            else {
                panic!("{expected} after {label}: no call planned");
            };
            assert_eq!(again.name(), expected, "{expected} after {label}");
            assert_eq!(
                id_of(&again),
                first,
                "{expected} after {label}: the same request id"
            );
            ctx = next;
        }
        for (label, outcome) in settled.clone() {
            let decision = decide(state, &ctx, &effect, outcome);
            assert!(
                decision.context().pending.is_none(),
                "{expected} after {label}: the settled request's id is released"
            );
        }
    }
}

/// `succeeded` needs confirmed orders: the end of the saga parks when it has none, or when
/// one of them was never read back as completed, whatever led there.
#[test]
fn the_end_never_succeeds_without_confirmed_orders() {
    use pcsaga_purchase::decide::finish;
    let mut none = at(State::EntitlementFetch);
    none.orders.clear();
    none.entitlements_done = true;
    assert!(matches!(finish(none), Decision::Park { reason, .. } if reason.contains("0 order(s)")));
    let mut unconfirmed = at(State::EntitlementFetch);
    unconfirmed.orders[0].completed = false;
    assert!(matches!(finish(unconfirmed), Decision::Park { .. }));
    let done = at(State::EntitlementFetch);
    assert!(matches!(finish(done), Decision::Succeed { .. }));
}

/// A direct order's send whose outcome was never recorded (the process stopped while it was in
/// flight) is looked for in the order list before anything is sent again; once absence is
/// proven the same body and request id go again, and after the last send allowed the purchase
/// parks.
#[test]
fn a_direct_order_is_sent_again_only_after_proven_absence() {
    use pcsaga_engine::Plan;
    use pcsaga_purchase::direct::DirectSettings;
    use pcsaga_purchase::plan::plan_with;
    let settings = DirectSettings::default();
    let mut ctx = at(State::Checkout);
    ctx.request.order_path = pcsaga_purchase::OrderPath::Direct;
    ctx.checkout.attempted = true;
    ctx.checkout.sent = 1;
    ctx.direct = Some(pcsaga_purchase::context::DirectOrder {
        body: pcsaga_purchase::direct::body(&ctx),
        request_id: uuid::Uuid::from_u128(7),
        last_sent_at: Some(now()),
        replies: 0,
        resends: 0,
        nothing_found: false,
    });
    // In flight when the process stopped: look first.
    match plan_with(State::Checkout, &ctx, now(), &settings) {
        Plan::Call {
            effect: Call::ListOrders,
            context,
            ..
        } => assert!(context.checkout.reconciling),
        other => panic!("planned {other:?}"),
    }
    // Nothing found, but the list may lag: look again, send nothing.
    let mut looking = ctx.clone();
    looking.checkout.reconciling = true;
    if let Some(d) = looking.direct.as_mut() {
        d.replies = 1;
        d.nothing_found = true;
    }
    let soon = now() + settings.absence_wait - chrono::Duration::seconds(1);
    assert!(matches!(
        plan_with(State::Checkout, &looking, soon, &settings),
        Plan::Call {
            effect: Call::ListOrders,
            ..
        }
    ));
    // Absent long enough: the same body and id again, counted.
    let later = now() + settings.absence_wait;
    match plan_with(State::Checkout, &looking, later, &settings) {
        Plan::Call {
            effect: Call::CreateOrder { request_id, order },
            context,
            side_effecting: true,
        } => {
            assert_eq!(request_id, uuid::Uuid::from_u128(7));
            assert_eq!(order, pcsaga_purchase::direct::body(&ctx));
            assert_eq!(context.checkout.sent, 2);
            assert_eq!(context.direct.map(|d| d.resends), Some(1));
        }
        other => panic!("planned {other:?}"),
    }
    // After the last send allowed: park, with the evidence.
    if let Some(d) = looking.direct.as_mut() {
        d.resends = settings.max_resends;
    }
    match plan_with(State::Checkout, &looking, later, &settings) {
        Plan::Decide(Decision::Park { reason, .. }) => {
            assert!(reason.contains("showed nothing"), "{reason}")
        }
        other => panic!("planned {other:?}"),
    }
}
