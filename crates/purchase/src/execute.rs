//! Performs a [`Call`] with the Partner Center client. The only module here that does I/O.

use std::collections::BTreeMap;
use std::time::Instant;

use pcsaga_engine::AttemptRecord;
use pcsaga_partner_center::models::{InventoryCheckRequest, InventoryTarget, Link};
use pcsaga_partner_center::{
    CallMeta, Client, CorrelationId, Error as ApiError, Reply as ApiReply, RequestId,
};

use crate::call::{Call, Outcome, Reply};
use crate::context::PurchaseContext;

/// Runs a call and records the attempt.
pub async fn execute(
    client: &Client,
    ctx: &PurchaseContext,
    call: &Call,
) -> (Outcome, AttemptRecord) {
    let started = Instant::now();
    let correlation = CorrelationId::from_uuid(ctx.correlation_id);
    let request = &ctx.request;
    let result: Result<(Reply, CallMeta), ApiError> = async {
        Ok(match call {
            Call::GetSku { item } => {
                let i = &request.items[*item];
                wrap(
                    client
                        .get_sku(correlation, &i.product_id, &i.sku_id, &request.country)
                        .await?,
                    |s| Reply::Sku(Box::new(s)),
                )
            }
            Call::GetRegistration { subscription_id } => wrap(
                client
                    .registration_status(correlation, &request.customer_id, subscription_id)
                    .await?,
                |s| Reply::Registration(s.status),
            ),
            Call::Register {
                subscription_id,
                request_id,
            } => wrap(
                client
                    .register_subscription(
                        correlation,
                        RequestId::from_uuid(*request_id),
                        &request.customer_id,
                        subscription_id,
                    )
                    .await?,
                |_| Reply::Registered,
            ),
            Call::GetProduct { item } => wrap(
                client
                    .get_product(
                        correlation,
                        &request.items[*item].product_id,
                        &request.country,
                    )
                    .await?,
                |p| Reply::Product(Box::new(p)),
            ),
            Call::ListAvailabilities { item } => {
                let i = &request.items[*item];
                wrap(
                    client
                        .list_availabilities(
                            correlation,
                            &i.product_id,
                            &i.sku_id,
                            &request.country,
                            Some(&request.segment),
                        )
                        .await?,
                    Reply::Availabilities,
                )
            }
            Call::CheckInventory { item } => {
                let body = inventory_request(ctx, *item);
                wrap(
                    client
                        .check_inventory(correlation, &request.country, &body)
                        .await?,
                    Reply::Inventory,
                )
            }
            Call::CreateCart { request_id, cart } => wrap(
                client
                    .create_cart(
                        correlation,
                        RequestId::from_uuid(*request_id),
                        &request.customer_id,
                        cart,
                    )
                    .await?,
                |c| Reply::Cart(Box::new(c)),
            ),
            Call::UpdateCart {
                request_id,
                cart_id,
                cart,
            } => wrap(
                client
                    .update_cart(
                        correlation,
                        RequestId::from_uuid(*request_id),
                        &request.customer_id,
                        cart_id,
                        cart,
                    )
                    .await?,
                |c| Reply::Cart(Box::new(c)),
            ),
            Call::Checkout {
                cart_id,
                request_id,
            } => wrap(
                client
                    .checkout(
                        correlation,
                        RequestId::from_uuid(*request_id),
                        &request.customer_id,
                        cart_id,
                    )
                    .await?,
                |r| Reply::Checkout(Box::new(r)),
            ),
            Call::CreateOrder { request_id, order } => wrap(
                client
                    .create_order(
                        correlation,
                        RequestId::from_uuid(*request_id),
                        &request.customer_id,
                        order,
                    )
                    .await?,
                |o| Reply::Order(Box::new(o)),
            ),
            Call::GetCart { cart_id } => wrap(
                client
                    .get_cart(correlation, &request.customer_id, cart_id)
                    .await?,
                |c| Reply::Cart(Box::new(c)),
            ),
            // The SDK sends the enum name; the list lags up to 15 minutes behind checkouts.
            Call::ListOrders => wrap(
                client
                    .list_orders(correlation, &request.customer_id, Some("OneTime"))
                    .await?,
                Reply::Orders,
            ),
            Call::GetOrder { order_id } => wrap(
                client
                    .get_order(correlation, &request.customer_id, order_id)
                    .await?,
                |o| Reply::Order(Box::new(o)),
            ),
            Call::ListEntitlements => wrap(
                client
                    .list_entitlements(correlation, &request.customer_id, None, false)
                    .await?,
                Reply::Entitlements,
            ),
            Call::GetArtifact { uri, .. } => {
                let link = Link {
                    uri: uri.clone(),
                    ..Link::default()
                };
                wrap(
                    client.get_artifact_details(correlation, &link).await?,
                    |d| Reply::Artifact(Box::new(d)),
                )
            }
        })
    }
    .await;
    let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok((reply, meta)) => (
            Ok(reply),
            AttemptRecord {
                call: call.name().to_owned(),
                http_status: Some(meta.status),
                latency_ms: elapsed,
                request_id: Some(meta.request_id.to_string()),
                error_class: None,
                error: None,
                http_requests: meta.http_requests,
            },
        ),
        Err(error) => {
            let attempt = AttemptRecord {
                call: call.name().to_owned(),
                http_status: error.status(),
                latency_ms: elapsed,
                request_id: error
                    .context()
                    .and_then(|c| c.request_id)
                    .map(|id| id.to_string()),
                error_class: Some(error.class.as_str().to_owned()),
                error: Some(error.to_string()),
                http_requests: 1,
            };
            (Err(error), attempt)
        }
    }
}

fn wrap<T>(reply: ApiReply<T>, f: impl FnOnce(T) -> Reply) -> (Reply, CallMeta) {
    (f(reply.value), reply.meta)
}

/// The E9 body: the SKU's inventory variables, lower-camel-cased, from the request.
fn inventory_request(ctx: &PurchaseContext, index: usize) -> InventoryCheckRequest {
    let item = &ctx.request.items[index];
    let state = &ctx.items[index];
    let sku = state.sku.clone().unwrap_or_default();
    let subscription = item
        .provisioning_context
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("subscriptionId"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut context = BTreeMap::new();
    for variable in &sku.inventory_variables {
        let value = match variable.to_ascii_lowercase().as_str() {
            "customerid" => ctx.request.customer_id.clone(),
            "azuresubscriptionid" => subscription.clone(),
            "armregionname" => item
                .arm_region_name
                .clone()
                .or_else(|| sku.arm_region_name.clone())
                .unwrap_or_default(),
            _ => continue,
        };
        let mut chars = variable.chars();
        let key: String = chars
            .next()
            .map(|c| c.to_lowercase().chain(chars).collect())
            .unwrap_or_default();
        context.insert(key, value);
    }
    InventoryCheckRequest {
        target_items: vec![InventoryTarget {
            product_id: item.product_id.clone(),
            sku_id: Some(item.sku_id.clone()),
        }],
        inventory_context: context,
    }
}
