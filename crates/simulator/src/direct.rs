//! E21, a direct order (addendum §6 E21 and rule 9.20), written from the addendum, not from the
//! client: the body validated as the spec says (the catalog rules of a cart line, plus the
//! order's own: line numbers 0..count-1, `referenceCustomerId`, `renewsTo`,
//! `partnerIdOnRecord`, reservations only in the public cloud), the order created pending as a
//! checkout's are (listed after the list lag, completed after `order_completion_s`, in the
//! entitlements), and a ledger keyed by customer and `MS-RequestId` whose repeated ids do what
//! `direct_order_replay` says.

use serde_json::{json, Value};

use crate::catalog::ProductKind;
use crate::config::{DirectOrderReplay, SimCloud};
use crate::service::{create_request, place_order, validate_line, Req, Resp, Shared};
use crate::world::{CartLine, LedgerDirectOrder, World};

/// `POST /customers/{customer}/orders`.
pub fn create_order(shared: &Shared, req: &Req, customer: &str, request_id: &str) -> Resp {
    let (country, body, key) = match create_request(shared, req, customer, request_id) {
        Ok(parts) => parts,
        Err(refused) => return refused,
    };
    let mut world = shared.world();
    if let Some(first) = world.direct_requests.get(&key).cloned() {
        match shared.config.direct_order_replay {
            DirectOrderReplay::Replay => {
                count_post(&mut world, &key, None);
                let Some(order) = world.orders.get(&first) else {
                    return Resp::error(500, "800003", "The order of this request is gone.");
                };
                let status = world.order_status(order, shared.now(), shared.completion());
                return Resp::json(201, world.order_json(order, status));
            }
            DirectOrderReplay::Conflict => {
                return Resp::error(
                    409,
                    "800060",
                    "Your order is in progress. Check your order history in a few minutes.",
                )
            }
            // The pessimistic case: the service does not deduplicate, a second order follows.
            DirectOrderReplay::Ignore => {}
        }
    }
    let lines = match validate_order(shared, &world, customer, &country, &body) {
        Ok(lines) => lines,
        Err(refused) => return refused,
    };
    let refs: Vec<&CartLine> = lines.iter().collect();
    let now = shared.now();
    let order_id = place_order(
        shared,
        &mut world,
        (customer, &country),
        &refs,
        ("", "direct"),
        now,
    );
    let friendly_names = lines
        .iter()
        .map(|l| l.json["friendlyName"].as_str().unwrap_or("").to_owned())
        .collect();
    match world.direct_requests.entry(key.clone()) {
        std::collections::hash_map::Entry::Occupied(_) => {
            count_post(&mut world, &key, Some(order_id.clone()));
        }
        std::collections::hash_map::Entry::Vacant(first) => {
            first.insert(order_id.clone());
            world.ledger.direct_orders.push(LedgerDirectOrder {
                customer_id: customer.to_owned(),
                request_id: request_id.to_owned(),
                calls: 1,
                first_at: now,
                orders: vec![order_id.clone()],
                friendly_names,
            });
        }
    }
    let Some(order) = world.orders.get(&order_id) else {
        return Resp::error(500, "800003", "The order just created is gone.");
    };
    let status = world.order_status(order, now, shared.completion());
    Resp::json(201, world.order_json(order, status))
}

/// Counts a repeated post of `key` in the ledger, with the order it created, if any.
fn count_post(world: &mut World, (customer, request_id): &(String, String), order: Option<String>) {
    if let Some(entry) = world.ledger.direct_orders.iter_mut().find(|e| {
        e.customer_id.eq_ignore_ascii_case(customer)
            && e.request_id.eq_ignore_ascii_case(request_id)
    }) {
        entry.calls += 1;
        entry.orders.extend(order);
    }
}

fn invalid(description: &str) -> Resp {
    Resp::error(
        400,
        "800002",
        &format!("Invalid request input: {description}"),
    )
}

/// The order's lines as cart lines (what `place_order` takes), or the refusal the spec gives.
fn validate_order(
    shared: &Shared,
    world: &World,
    customer: &str,
    country: &str,
    body: &Value,
) -> Result<Vec<CartLine>, Resp> {
    // Ambiguity 29 decided: absent is accepted, a different customer refused.
    if let Some(reference) = body.get("referenceCustomerId") {
        if !reference
            .as_str()
            .is_some_and(|r| r.eq_ignore_ascii_case(customer))
        {
            return Err(invalid(
                "referenceCustomerId differs from the customer of the path.",
            ));
        }
    }
    let items = body
        .get("lineItems")
        .and_then(Value::as_array)
        .filter(|items| !items.is_empty())
        .ok_or_else(|| invalid("lineItems must hold at least one item."))?;
    let mut numbers: Vec<i64> = items
        .iter()
        .map(|i| {
            i.get("lineItemNumber")
                .and_then(Value::as_i64)
                .unwrap_or(-1)
        })
        .collect();
    numbers.sort_unstable();
    if numbers
        .iter()
        .zip(0_i64..)
        .any(|(n, expected)| *n != expected)
    {
        return Err(Resp::error(
            400,
            "800071",
            "Line item number must be unique and between 0 and the number of line items - 1.",
        ));
    }
    let cycle = body
        .get("billingCycle")
        .and_then(Value::as_str)
        .unwrap_or("one_time");
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            validate_order_line(shared, world, (customer, country), cycle, index, item)
        })
        .collect()
}

fn validate_order_line(
    shared: &Shared,
    world: &World,
    (customer, country): (&str, &str),
    cycle: &str,
    index: usize,
    item: &Value,
) -> Result<CartLine, Resp> {
    let Some(offer_id) = item.get("offerId").and_then(Value::as_str) else {
        return Err(invalid(&format!("lineItems[{index}].offerId is required.")));
    };
    if let Some(term) = item.pointer("/renewsTo/termDuration") {
        if !matches!(term.as_str(), Some("P1M" | "P1Y")) {
            return Err(invalid(&format!(
                "lineItems[{index}].renewsTo.termDuration must be P1M or P1Y."
            )));
        }
    }
    if let Some(mpn) = item.get("partnerIdOnRecord") {
        let valid = mpn.as_str().is_some_and(|m| {
            !m.is_empty() && m.len() <= 10 && m.bytes().all(|b| b.is_ascii_digit())
        });
        if !valid {
            return Err(invalid(&format!(
                "lineItems[{index}].partnerIdOnRecord must be a partner id (digits)."
            )));
        }
    }
    // A cart line of the same item, so the catalog rules are the cart's.
    let mut line = json!({
        "id": index,
        "catalogItemId": offer_id,
        "quantity": item.get("quantity").cloned().unwrap_or(Value::Null),
        "billingCycle": cycle,
    });
    for field in [
        "friendlyName",
        "provisioningContext",
        "termDuration",
        "partnerIdOnRecord",
    ] {
        if let Some(value) = item.get(field) {
            line[field] = value.clone();
        }
    }
    let line = validate_line(shared, world, customer, country, index, &line)?;
    if line.kind == Some(ProductKind::Reservation) && shared.config.cloud != SimCloud::Public {
        return Err(invalid(
            "Azure reserved VM instances can be ordered this way only in the public cloud; use a cart.",
        ));
    }
    match &line.error {
        None => Ok(line),
        Some((code, description)) => Err(refusal(code, description)),
    }
}

/// A cart line's error as E21 answers it (addendum §5.5).
fn refusal(code: &str, description: &str) -> Resp {
    let (status, number) = match code {
        "catalog_item_id_is_not_valid" => (400, "800004"),
        "subscription_not_registered" => (400, "800030"),
        "inventory_not_available" => (400, "800010"),
        _ => (400, "800002"),
    };
    Resp::error(status, number, description)
}
