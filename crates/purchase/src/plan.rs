//! What each state does next, as data: a call to make, or a decision without a call.
//!
//! Pure: a function of the state, the context and the clock.

use chrono::{DateTime, Duration, Utc};

use pcsaga_engine::{Decision, Plan};
use pcsaga_partner_center::models::{BillingCycle, Cart, CartLineItem, KeyValue};

use crate::call::Call;
use crate::context::{PurchaseContext, Registration, RegistrationState};
use crate::request::OrderPath;
use crate::state::State;

/// A cart this close to expiry is not checked out; a new one is built (if no checkout was
/// ever sent).
pub const CART_EXPIRY_MARGIN_HOURS: i64 = 1;

type P = Plan<Call, State, PurchaseContext>;

fn read(call: Call, ctx: &PurchaseContext) -> P {
    send(call, ctx.clone())
}

/// A call to make, with the context to commit first when it is side-effecting
/// ([`Call::is_side_effecting`] decides).
fn send(call: Call, context: PurchaseContext) -> P {
    Plan::Call {
        side_effecting: call.is_side_effecting(),
        effect: call,
        context,
    }
}

fn advance(to: State, ctx: PurchaseContext, note: impl Into<String>) -> P {
    Plan::Decide(Decision::Advance {
        to,
        context: ctx,
        note: note.into(),
    })
}

/// Plans the next step of a saga in `state`.
pub fn plan(state: State, ctx: &PurchaseContext, now: DateTime<Utc>) -> P {
    plan_with(state, ctx, now, &crate::direct::DirectSettings::default())
}

/// [`plan`] with the direct-order settings of the configuration.
pub fn plan_with(
    state: State,
    ctx: &PurchaseContext,
    now: DateTime<Utc>,
    direct: &crate::direct::DirectSettings,
) -> P {
    match state {
        State::Enablement => enablement(ctx),
        State::RegistrationPolling => match ctx
            .registrations
            .iter()
            .find(|r| r.status != Registration::Registered)
        {
            Some(r) => read(
                Call::GetRegistration {
                    subscription_id: r.subscription_id.clone(),
                },
                ctx,
            ),
            None => advance(
                State::Discovery,
                ctx.clone(),
                "every subscription is registered",
            ),
        },
        State::Discovery => {
            if let Some(item) = ctx.items.iter().position(|i| !i.product_checked) {
                return read(Call::GetProduct { item }, ctx);
            }
            if let Some(item) = ctx.items.iter().position(|i| i.catalog_item_id.is_none()) {
                return read(Call::ListAvailabilities { item }, ctx);
            }
            if ctx.items.iter().any(needs_inventory) {
                advance(State::InventoryCheck, ctx.clone(), "catalog items chosen")
            } else {
                advance(
                    State::CartBuild,
                    ctx.clone(),
                    "catalog items chosen; no inventory check needed",
                )
            }
        }
        State::InventoryCheck => match ctx.items.iter().position(needs_inventory) {
            Some(item) => read(Call::CheckInventory { item }, ctx),
            None => advance(State::CartBuild, ctx.clone(), "inventory available"),
        },
        State::CartBuild => cart_build(ctx, now),
        State::Checkout => checkout(ctx, now, direct),
        State::OrderVisibilityPolling => match ctx.orders.iter().find(|o| !o.completed) {
            Some(order) => read(
                Call::GetOrder {
                    order_id: order.id.clone(),
                },
                ctx,
            ),
            None => advance(
                State::EntitlementFetch,
                ctx.clone(),
                "every order is completed",
            ),
        },
        State::EntitlementFetch => {
            if !ctx.entitlements_done {
                return read(Call::ListEntitlements, ctx);
            }
            for (e, entitlement) in ctx.entitlements.iter().enumerate() {
                if let Some((a, artifact)) = entitlement
                    .artifacts
                    .iter()
                    .enumerate()
                    .find(|(_, a)| a.reservation_ids.is_none())
                {
                    return read(
                        Call::GetArtifact {
                            entitlement: e,
                            artifact: a,
                            uri: artifact.uri.clone(),
                        },
                        ctx,
                    );
                }
            }
            Plan::Decide(crate::decide::finish(ctx.clone()))
        }
    }
}

fn needs_inventory(item: &crate::context::ItemState) -> bool {
    item.sku.as_ref().is_some_and(|s| s.needs_inventory_check) && !item.inventory_checked
}

fn enablement(ctx: &PurchaseContext) -> P {
    if let Some(item) = ctx.items.iter().position(|i| i.sku.is_none()) {
        return read(Call::GetSku { item }, ctx);
    }
    if !ctx.registrations_planned {
        let mut next = ctx.clone();
        let mut subscriptions: Vec<String> = Vec::new();
        for (index, (item, state)) in ctx.request.items.iter().zip(&ctx.items).enumerate() {
            if !state.sku.as_ref().is_some_and(|s| s.needs_registration) {
                continue;
            }
            let Some(subscription) = item
                .provisioning_context
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("subscriptionId"))
                .map(|(_, v)| v.to_ascii_lowercase())
            else {
                return Plan::Decide(Decision::Fail {
                    context: next,
                    reason: format!(
                        "items[{index}].provisioningContext.subscriptionId is required: SKU {}:{} is a reservation bought for an Azure subscription; add it to the request and resubmit with a new idempotency key",
                        item.product_id, item.sku_id
                    ),
                });
            };
            if !subscriptions.contains(&subscription) {
                subscriptions.push(subscription);
            }
        }
        next.registrations = subscriptions
            .into_iter()
            .map(|subscription_id| RegistrationState {
                subscription_id,
                status: Registration::Unknown,
                register_sent: false,
            })
            .collect();
        next.registrations_planned = true;
        let note = format!(
            "{} Azure subscription(s) to check",
            next.registrations.len()
        );
        return Plan::Decide(Decision::Continue {
            context: next,
            note,
        });
    }
    if let Some(r) = ctx
        .registrations
        .iter()
        .find(|r| r.status == Registration::Unknown)
    {
        return read(
            Call::GetRegistration {
                subscription_id: r.subscription_id.clone(),
            },
            ctx,
        );
    }
    if let Some(r) = ctx
        .registrations
        .iter()
        .find(|r| r.status == Registration::NotRegistered && !r.register_sent)
    {
        let mut next = ctx.clone();
        let request_id = next.request_id_for(&format!("register:{}", r.subscription_id));
        return send(
            Call::Register {
                subscription_id: r.subscription_id.clone(),
                request_id,
            },
            next,
        );
    }
    if ctx
        .registrations
        .iter()
        .all(|r| r.status == Registration::Registered)
    {
        advance(State::Discovery, ctx.clone(), "no registration needed")
    } else {
        advance(
            State::RegistrationPolling,
            ctx.clone(),
            "registration requested",
        )
    }
}

/// The cart for the context's chosen catalog items.
pub fn build_cart(ctx: &PurchaseContext) -> Cart {
    let line_items = ctx
        .request
        .items
        .iter()
        .zip(&ctx.items)
        .enumerate()
        .map(|(index, (item, state))| CartLineItem {
            id: Some(index as i64),
            catalog_item_id: state.catalog_item_id.clone().unwrap_or_default(),
            friendly_name: Some(ctx.friendly_name(index)),
            quantity: item.quantity,
            billing_cycle: Some(BillingCycle::OneTime),
            term_duration: state.term_duration.clone(),
            provisioning_context: state.provisioning_context.clone(),
            participants: item
                .partner_id_on_record
                .iter()
                .map(|id| KeyValue {
                    key: "transaction_reseller".to_owned(),
                    value: id.clone(),
                })
                .collect(),
            ..CartLineItem::default()
        })
        .collect();
    Cart {
        line_items,
        ..Cart::default()
    }
}

fn cart_build(ctx: &PurchaseContext, now: DateTime<Utc>) -> P {
    // Invariant: no cart is built or changed once a checkout may have happened.
    if ctx.checkout.attempted {
        return Plan::Decide(Decision::Park {
            context: ctx.clone(),
            reason: "internal invariant: CartBuild reached after a checkout was sent; refusing to touch carts".to_owned(),
        });
    }
    if ctx.request.order_path == OrderPath::Direct {
        return crate::direct::build(ctx);
    }
    match &ctx.cart {
        Some(cart)
            if cart
                .expires_at
                .is_some_and(|at| at <= now + Duration::hours(CART_EXPIRY_MARGIN_HOURS)) =>
        {
            let mut next = ctx.clone();
            next.cart = None;
            next.pending = None;
            Plan::Decide(Decision::Continue {
                context: next,
                note: format!(
                    "cart {} expires soon and was never checked out; building a new one",
                    cart.id
                ),
            })
        }
        None => {
            let mut next = ctx.clone();
            let request_id = next.request_id_for("create_cart");
            send(
                Call::CreateCart {
                    request_id,
                    cart: build_cart(ctx),
                },
                next,
            )
        }
        Some(cart) if cart.needs_update => {
            let mut next = ctx.clone();
            let request_id = next.request_id_for("update_cart");
            let mut body = build_cart(ctx);
            body.id = Some(cart.id.clone());
            send(
                Call::UpdateCart {
                    request_id,
                    cart_id: cart.id.clone(),
                    cart: body,
                },
                next,
            )
        }
        Some(cart) => advance(
            State::Checkout,
            ctx.clone(),
            format!("cart {} is ready", cart.id),
        ),
    }
}

fn checkout(
    ctx: &PurchaseContext,
    now: DateTime<Utc>,
    direct: &crate::direct::DirectSettings,
) -> P {
    if ctx.request.order_path == OrderPath::Direct {
        return crate::direct::checkout(ctx, now, direct);
    }
    if ctx.checkout.reconciling {
        return read(Call::ListOrders, ctx);
    }
    if ctx.checkout.verifying.is_some() {
        if let Some(cart_id) = ctx.checkout.cart_id.clone() {
            return read(Call::GetCart { cart_id }, ctx);
        }
    }
    let Some(cart_id) = ctx
        .checkout
        .cart_id
        .clone()
        .or_else(|| ctx.cart.as_ref().map(|c| c.id.clone()))
    else {
        return Plan::Decide(Decision::Park {
            context: ctx.clone(),
            reason: "internal invariant: Checkout without a cart".to_owned(),
        });
    };
    let mut next = ctx.clone();
    // Persist before you send: these fields are committed as the intent, before the call.
    next.checkout.attempted = true;
    next.checkout.cart_id = Some(cart_id.clone());
    next.checkout.first_attempt_at.get_or_insert(now);
    next.checkout.sent += 1;
    let request_id = next.request_id_for("checkout");
    send(
        Call::Checkout {
            cart_id,
            request_id,
        },
        next,
    )
}
