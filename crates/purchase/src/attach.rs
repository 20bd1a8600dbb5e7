//! An operator's way through a parked reconciliation: they found the purchase's orders in
//! Partner Center themselves. The orders are not taken on their word: each is read from
//! Partner Center (E14) and matched to the purchase before the saga may continue past
//! Checkout, so `succeeded` still means orders exist, confirmed by Partner Center.

use pcsaga_partner_center::{Client, CorrelationId, ErrorClass};

use crate::context::PurchaseContext;
use crate::decide::order_state;

/// Most orders one `attach-order` takes (a purchase has at most one per item).
pub const MAX_ATTACHED_ORDERS: usize = crate::request::MAX_ITEMS;

/// Reads `order_ids` and, when they are this purchase's, returns the context that records
/// them (checkout confirmed, reconciliation over). Every refusal says why.
pub async fn attach_orders(
    client: &Client,
    ctx: &PurchaseContext,
    order_ids: &[String],
) -> Result<PurchaseContext, String> {
    if !ctx.checkout.attempted {
        return Err("no checkout was ever sent for this purchase, so no order can be its own; resume it instead".to_owned());
    }
    if !ctx.orders.is_empty() {
        let known: Vec<&str> = ctx.orders.iter().map(|o| o.id.as_str()).collect();
        return Err(format!(
            "its orders are already known ({}); resume it instead",
            known.join(", ")
        ));
    }
    let mut ids: Vec<&String> = order_ids.iter().collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() || ids.len() > MAX_ATTACHED_ORDERS {
        return Err(format!(
            "give 1 to {MAX_ATTACHED_ORDERS} distinct order ids"
        ));
    }
    let customer = &ctx.request.customer_id;
    let correlation = CorrelationId::from_uuid(ctx.correlation_id);
    let mut orders = Vec::new();
    for id in ids {
        let order = match client.get_order(correlation, customer, id).await {
            Ok(reply) => reply.value,
            Err(e) if e.class() == ErrorClass::NotFound => {
                return Err(format!(
                    "order {id} does not exist for customer {customer} in Partner Center"
                ))
            }
            Err(e) => return Err(format!("order {id} cannot be read to verify it: {e}")),
        };
        if let Some(other) = order
            .reference_customer_id
            .as_deref()
            .filter(|c| !c.eq_ignore_ascii_case(customer))
        {
            return Err(format!(
                "order {id} belongs to customer {other}, not to this purchase's {customer}"
            ));
        }
        if order.status == Some(pcsaga_partner_center::models::OrderStatus::Cancelled) {
            return Err(format!("order {id} was cancelled in Partner Center"));
        }
        for line in &order.line_items {
            if !line_is_ours(ctx, line) {
                return Err(format!(
                    "order {id} line {} ({} x{}) is not part of this purchase: it carries neither the purchase's token {} nor one of its offers with the same quantity",
                    line.line_item_number,
                    line.offer_id,
                    line.quantity,
                    ctx.token
                ));
            }
        }
        orders.push(order);
    }
    for (index, item) in ctx.request.items.iter().enumerate() {
        let covered = orders
            .iter()
            .flat_map(|o| &o.line_items)
            .any(|line| line_matches_item(ctx, index, line));
        if !covered {
            return Err(format!(
                "items[{index}] ({}:{} x{}) has no line in the given orders; give every order of the purchase",
                item.product_id, item.sku_id, item.quantity
            ));
        }
    }
    let mut next = ctx.clone();
    next.orders = orders.iter().map(order_state).collect();
    next.checkout.confirmed = true;
    next.checkout.reconciling = false;
    next.checkout.verifying = None;
    next.pending = None;
    Ok(next)
}

fn line_is_ours(
    ctx: &PurchaseContext,
    line: &pcsaga_partner_center::models::OrderLineItem,
) -> bool {
    (0..ctx.request.items.len()).any(|index| line_matches_item(ctx, index, line))
}

/// A line is item `index`'s when it carries the purchase's token, or the item's chosen offer
/// (catalog item id) with the item's quantity.
fn line_matches_item(
    ctx: &PurchaseContext,
    index: usize,
    line: &pcsaga_partner_center::models::OrderLineItem,
) -> bool {
    let by_token = line
        .friendly_name
        .as_deref()
        .is_some_and(|n| n.contains(&ctx.token));
    let Some(item) = ctx.request.items.get(index) else {
        return false;
    };
    let offer = ctx
        .items
        .get(index)
        .and_then(|i| i.catalog_item_id.as_deref());
    let by_offer = offer.is_some_and(|o| o.eq_ignore_ascii_case(&line.offer_id))
        && line.quantity == item.quantity;
    (by_token && offer.is_none_or(|o| o.eq_ignore_ascii_case(&line.offer_id))) || by_offer
}
