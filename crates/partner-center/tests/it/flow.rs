//! The whole documented purchase flow (register → poll → discover → inventory → cart →
//! checkout → order → entitlements) through the client against the simulator, for a
//! reserved VM instance, a software subscription and perpetual software.

use std::collections::BTreeMap;
use std::time::Duration;

use pcsaga_partner_center::models::{
    Availability, BillingCycle, Cart, CartErrorCode, CartLineItem, CartStatus, EntitlementType,
    InventoryCheckRequest, InventoryTarget, OrderCancellation, OrderStatus, ProvisioningState,
    PurchasePrerequisite, RegistrationState, Sku,
};
use pcsaga_partner_center::{Client, CorrelationId, RequestId};
use pcsaga_simulator::SimConfig;

use crate::support::{self, cid, AZURE_SUBSCRIPTION, BRAZIL_CUSTOMER, CUSTOMER};

/// Discovery as the saga does it: product, SKU, and the purchasable availability with the term.
async fn discover(
    client: &Client,
    c: CorrelationId,
    view: &str,
    product: &str,
    sku: &str,
    term: Option<&str>,
) -> (Sku, Availability) {
    let products = client
        .list_products(c, "US", view, None)
        .await
        .expect("E3")
        .value;
    assert!(
        products.iter().any(|p| p.id == product),
        "{product} listed under {view}"
    );
    let got = client
        .get_product(c, product, "US")
        .await
        .expect("E4")
        .value;
    assert_eq!(got.id, product);
    let skus = client
        .list_skus(c, product, "US", None)
        .await
        .expect("E5")
        .value;
    assert!(skus.iter().any(|s| s.id == sku));
    let sku = client
        .get_sku(c, product, sku, "US")
        .await
        .expect("E6")
        .value;
    let availabilities = client
        .list_availabilities(c, product, &sku.id, "US", Some("commercial"))
        .await
        .expect("E7")
        .value;
    let chosen = availabilities
        .into_iter()
        .find(|a| a.is_purchasable == Some(true) && term.is_none_or(|t| a.has_term(t)))
        .expect("a purchasable availability");
    let again = client
        .get_availability(c, product, &sku.id, &chosen.id, "US")
        .await
        .expect("E8")
        .value;
    assert_eq!(again.catalog_item_id, chosen.catalog_item_id);
    (sku, chosen)
}

fn line(
    availability: &Availability,
    quantity: i64,
    term: Option<&str>,
    token: &str,
    context: BTreeMap<String, String>,
) -> CartLineItem {
    CartLineItem {
        id: Some(0),
        catalog_item_id: availability.catalog_item_id.clone(),
        friendly_name: Some(format!("pcsaga-{token}")),
        quantity,
        billing_cycle: Some(BillingCycle::OneTime),
        term_duration: term.map(str::to_owned),
        provisioning_context: context,
        ..CartLineItem::default()
    }
}

fn ri_context(sku: &Sku) -> BTreeMap<String, String> {
    let mut context = BTreeMap::new();
    context.insert("subscriptionId".to_owned(), AZURE_SUBSCRIPTION.to_owned());
    context.insert("scope".to_owned(), "shared".to_owned());
    context.insert(
        "duration".to_owned(),
        sku.dynamic_attribute("duration")
            .expect("RI SKUs carry a duration"),
    );
    context
}

#[tokio::test]
async fn reserved_vm_instance_end_to_end() {
    let sim = support::sim(SimConfig {
        registration_polls: 3,
        order_completion_s: 30,
        order_list_lag_s: 600,
        ..SimConfig::default()
    })
    .await;
    let client = support::client(&sim);
    let c = cid();

    // Enablement and registration polling.
    let status = client
        .registration_status(c, CUSTOMER, AZURE_SUBSCRIPTION)
        .await
        .expect("E2")
        .value;
    assert_eq!(status.status, RegistrationState::NotRegistered);
    let registered = client
        .register_subscription(c, RequestId::new(), CUSTOMER, AZURE_SUBSCRIPTION)
        .await
        .expect("E1");
    assert_eq!(registered.meta.status, 202);
    assert!(registered
        .value
        .as_deref()
        .is_some_and(|l| l.ends_with("/registrationstatus")));
    let mut polls = 0;
    loop {
        polls += 1;
        let status = client
            .registration_status(c, CUSTOMER, AZURE_SUBSCRIPTION)
            .await
            .expect("E2")
            .value
            .status;
        if status == RegistrationState::Registered {
            break;
        }
        assert_eq!(status, RegistrationState::Registering);
        assert!(polls < 10, "registration never completed");
    }
    assert_eq!(polls, 3);

    // Discovery and inventory.
    let (sku, availability) = discover(
        &client,
        c,
        "AzureReservationsVM",
        "DZH318Z0BQ3Q",
        "0001",
        Some("P1Y"),
    )
    .await;
    assert!(sku.requires(&PurchasePrerequisite::AzureSubscriptionRegistration));
    assert!(sku.requires(&PurchasePrerequisite::InventoryCheck));
    let mut context = BTreeMap::new();
    context.insert("customerId".to_owned(), CUSTOMER.to_owned());
    context.insert(
        "azureSubscriptionId".to_owned(),
        AZURE_SUBSCRIPTION.to_owned(),
    );
    context.insert(
        "armRegionName".to_owned(),
        sku.dynamic_attribute("armRegionName").expect("region"),
    );
    let inventory = client
        .check_inventory(
            c,
            "US",
            &InventoryCheckRequest {
                target_items: vec![InventoryTarget {
                    product_id: sku.product_id.clone(),
                    sku_id: Some(sku.id.clone()),
                }],
                inventory_context: context,
            },
        )
        .await
        .expect("E9")
        .value;
    assert_eq!(inventory.len(), 1);
    assert!(!inventory[0].is_restricted);

    // Cart and checkout.
    let token = "ri-0001";
    let cart = Cart {
        line_items: vec![line(&availability, 2, Some("P1Y"), token, ri_context(&sku))],
        ..Cart::default()
    };
    let created = client
        .create_cart(c, RequestId::new(), CUSTOMER, &cart)
        .await
        .expect("E10");
    assert_eq!(created.meta.status, 201);
    let cart = created.value;
    assert_eq!(cart.lines_with_errors().count(), 0, "{cart:?}");
    assert!(cart.expiration_timestamp > cart.creation_timestamp);
    let cart_id = cart.id.clone().expect("cart id");
    assert_eq!(
        client
            .get_cart(c, CUSTOMER, &cart_id)
            .await
            .expect("E11")
            .value
            .status,
        Some(CartStatus::Active)
    );

    let checkout_id = RequestId::new();
    let result = client
        .checkout(c, checkout_id, CUSTOMER, &cart_id)
        .await
        .expect("E13")
        .value;
    assert!(result.order_errors.is_empty());
    assert_eq!(result.orders.len(), 1);
    let order = &result.orders[0];
    assert_eq!(order.status, Some(OrderStatus::Pending));
    assert_eq!(
        order.line_items[0].friendly_name.as_deref(),
        Some("pcsaga-ri-0001")
    );
    assert_eq!(
        client
            .get_cart(c, CUSTOMER, &cart_id)
            .await
            .expect("E11")
            .value
            .status,
        Some(CartStatus::Ordered)
    );

    // Checkout is idempotent per cart: a second call replays the first result.
    let replay = client
        .checkout(c, RequestId::new(), CUSTOMER, &cart_id)
        .await
        .expect("E13 replay")
        .value;
    assert_eq!(
        replay.orders.iter().map(|o| &o.id).collect::<Vec<_>>(),
        vec![&order.id]
    );

    // The order is visible by id at once, in the list only after the lag.
    let by_id = client
        .get_order(c, CUSTOMER, &order.id)
        .await
        .expect("E14")
        .value;
    assert_eq!(by_id.id, order.id);
    let listed = client
        .list_orders(c, CUSTOMER, Some("OneTime"))
        .await
        .expect("E16")
        .value;
    assert!(listed.is_empty(), "the list lags behind");
    sim.advance_clock(Duration::from_secs(601));
    let listed = client
        .list_orders(c, CUSTOMER, Some("OneTime"))
        .await
        .expect("E16")
        .value;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, Some(OrderStatus::Completed));
    assert_eq!(
        client
            .list_orders(c, CUSTOMER, None)
            .await
            .expect("E15")
            .value
            .len(),
        1
    );

    // Fulfilment and entitlements (app+user).
    let provisioning = client
        .order_provisioning_status(c, CUSTOMER, &order.id)
        .await
        .expect("E17")
        .value;
    assert_eq!(provisioning[0].status, Some(ProvisioningState::Fulfilled));
    let entitlements = client
        .list_entitlements(c, CUSTOMER, Some(&EntitlementType::ReservedInstance), false)
        .await
        .expect("E18")
        .value;
    let entitlement = entitlements
        .iter()
        .find(|e| {
            e.reference_order
                .as_ref()
                .is_some_and(|r| r.id == order.id && r.line_item_id.as_deref() == Some("0"))
        })
        .expect("the order's entitlement");
    assert_eq!(entitlement.quantity, 2);
    let artifact = &entitlement.entitled_artifacts[0];
    let details = client
        .get_artifact_details(c, artifact.link.as_ref().expect("RI artifact link"))
        .await
        .expect("E19")
        .value;
    assert_eq!(details.reservations[0].quantity, 2);
    assert_eq!(
        details.reservations[0].scope_type.as_deref(),
        Some("Shared")
    );
    assert_eq!(
        Some(&details.reservations[0].reservation_id),
        artifact.resource_id.as_ref()
    );

    // Reservations cannot be cancelled through the API in production.
    let refused = client
        .cancel_order(
            c,
            RequestId::new(),
            CUSTOMER,
            &OrderCancellation::new(order.id.clone(), Vec::new()),
        )
        .await
        .expect_err("RI cancellation is refused");
    assert_eq!(
        (refused.status(), refused.code()),
        (Some(403), Some("800019"))
    );

    // The ledger: one cart, checked out twice (one replay), one order.
    let ledger = sim.ledger();
    assert_eq!(ledger.checkouts_with_token(token).len(), 1);
    assert_eq!(ledger.checkouts_with_token(token)[0].calls, 2);
    assert_eq!(ledger.orders_with_token(token).len(), 1);
    assert_eq!(ledger.checkouts[0].request_ids[0], checkout_id.to_string());
}

#[tokio::test]
async fn software_subscription_end_to_end_with_cancellation() {
    let sim = support::sim(SimConfig {
        order_completion_s: 5,
        ..SimConfig::default()
    })
    .await;
    let client = support::client(&sim);
    let c = cid();
    let (sku, availability) = discover(
        &client,
        c,
        "SoftwareSubscriptions",
        "DG7GMGF0FKZV",
        "0003",
        Some("P3Y"),
    )
    .await;
    assert!(sku.purchase_prerequisites.is_empty());
    let cart = Cart {
        line_items: vec![line(
            &availability,
            4,
            Some("P3Y"),
            "sw-sub",
            BTreeMap::new(),
        )],
        ..Cart::default()
    };
    let cart = client
        .create_cart(c, RequestId::new(), CUSTOMER, &cart)
        .await
        .expect("E10")
        .value;
    assert_eq!(cart.lines_with_errors().count(), 0);
    let result = client
        .checkout(
            c,
            RequestId::new(),
            CUSTOMER,
            cart.id.as_deref().expect("id"),
        )
        .await
        .expect("E13")
        .value;
    let order = result.orders.into_iter().next().expect("one order");
    assert_eq!(order.line_items[0].term_duration.as_deref(), Some("P3Y"));

    // No entitlement before the order completes.
    assert!(client
        .list_entitlements(c, CUSTOMER, None, true)
        .await
        .expect("E18")
        .value
        .is_empty());
    sim.advance_clock(Duration::from_secs(6));
    let entitlements = client
        .list_entitlements(c, CUSTOMER, None, true)
        .await
        .expect("E18")
        .value;
    assert_eq!(entitlements.len(), 1);
    assert_eq!(
        entitlements[0].entitlement_type,
        Some(EntitlementType::Software)
    );
    assert!(
        entitlements[0].expiry_date.is_some(),
        "subscriptions expire"
    );

    // Compensation: software can be cancelled within the window.
    let cancelled = client
        .cancel_order(
            c,
            RequestId::new(),
            CUSTOMER,
            &OrderCancellation::new(order.id.clone(), Vec::new()),
        )
        .await
        .expect("E20")
        .value;
    assert_eq!(cancelled.status, Some(OrderStatus::Cancelled));
    assert_eq!(cancelled.line_items[0].quantity, 0);
    assert!(client
        .list_entitlements(c, CUSTOMER, None, false)
        .await
        .expect("E18")
        .value
        .is_empty());
}

#[tokio::test]
async fn perpetual_software_end_to_end() {
    let sim = support::sim(SimConfig {
        order_completion_s: 0,
        ..SimConfig::default()
    })
    .await;
    let client = support::client(&sim);
    let c = cid();
    let (_, availability) = discover(
        &client,
        c,
        "SoftwarePerpetual",
        "DG7GMGF0DWTL",
        "0001",
        None,
    )
    .await;
    assert!(
        availability.terms.is_empty(),
        "perpetual software has no term"
    );
    let cart = Cart {
        line_items: vec![line(&availability, 1, None, "perpetual", BTreeMap::new())],
        ..Cart::default()
    };
    let cart = client
        .create_cart(c, RequestId::new(), CUSTOMER, &cart)
        .await
        .expect("E10")
        .value;
    let result = client
        .checkout(
            c,
            RequestId::new(),
            CUSTOMER,
            cart.id.as_deref().expect("id"),
        )
        .await
        .expect("E13")
        .value;
    let order = &result.orders[0];
    let fetched = client
        .get_order(c, CUSTOMER, &order.id)
        .await
        .expect("E14")
        .value;
    assert_eq!(fetched.status, Some(OrderStatus::Completed));
    let entitlements = client
        .list_entitlements(c, CUSTOMER, Some(&EntitlementType::Software), true)
        .await
        .expect("E18")
        .value;
    assert_eq!(entitlements.len(), 1);
    assert!(
        entitlements[0].expiry_date.is_none(),
        "perpetual licences do not expire"
    );
}

/// Line errors the spec names: unregistered subscription, bad catalog item, quantity out of
/// bounds; and the fix by PUT while the cart is active.
#[tokio::test]
async fn cart_line_errors_and_fix_by_update() {
    let sim = support::sim(SimConfig::default()).await;
    let client = support::client(&sim);
    let c = cid();
    let (sku, ri) = discover(
        &client,
        c,
        "AzureReservationsVM",
        "DZH318Z0BQ3Q",
        "0001",
        Some("P1Y"),
    )
    .await;
    let (_, perpetual) = discover(
        &client,
        c,
        "SoftwarePerpetual",
        "DG7GMGF0DWTL",
        "0001",
        None,
    )
    .await;
    let mut bogus = perpetual.clone();
    bogus.catalog_item_id = "DG7GMGF0DWTL:0001:NOPE".to_owned();
    let cart = Cart {
        line_items: vec![
            line(&ri, 1, Some("P1Y"), "a", ri_context(&sku)),
            line(&bogus, 1, None, "b", BTreeMap::new()),
            line(&perpetual, 101, None, "c", BTreeMap::new()),
        ],
        ..Cart::default()
    };
    let cart = client
        .create_cart(c, RequestId::new(), CUSTOMER, &cart)
        .await
        .expect("E10 succeeds with line errors")
        .value;
    let codes: Vec<CartErrorCode> = cart
        .line_items
        .iter()
        .map(|l| {
            l.error
                .as_ref()
                .map_or(CartErrorCode::Unknown("none".into()), |e| {
                    e.error_code.clone()
                })
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            CartErrorCode::SubscriptionNotRegistered,
            CartErrorCode::CatalogItemIdIsNotValid,
            CartErrorCode::InvalidInput
        ]
    );
    let cart_id = cart.id.clone().expect("id");

    // Checkout refuses a cart with line errors.
    let refused = client
        .checkout(c, RequestId::new(), CUSTOMER, &cart_id)
        .await
        .expect_err("line errors block checkout");
    assert_eq!(
        (refused.status(), refused.code()),
        (Some(400), Some("800009"))
    );

    // Fix by PUT: keep only a valid line.
    let mut fixed = cart.clone();
    fixed.line_items = vec![line(&perpetual, 3, None, "c", BTreeMap::new())];
    let updated = client
        .update_cart(c, RequestId::new(), CUSTOMER, &cart_id, &fixed)
        .await
        .expect("E12")
        .value;
    assert_eq!(updated.lines_with_errors().count(), 0);
    assert_eq!(updated.line_items[0].quantity, 3);
    client
        .checkout(c, RequestId::new(), CUSTOMER, &cart_id)
        .await
        .expect("E13 after the fix");

    // An ordered cart cannot be updated.
    let late = client
        .update_cart(c, RequestId::new(), CUSTOMER, &cart_id, &fixed)
        .await
        .expect_err("ordered carts are final");
    assert_eq!(late.code(), Some("800065"));
}

#[tokio::test]
async fn restrictions_inventory_and_markets() {
    let sim = support::sim(SimConfig::default()).await;
    let client = support::client(&sim);
    let c = cid();
    // japanwest is restricted in the default configuration.
    let mut context = BTreeMap::new();
    context.insert("customerId".to_owned(), CUSTOMER.to_owned());
    context.insert(
        "azureSubscriptionId".to_owned(),
        AZURE_SUBSCRIPTION.to_owned(),
    );
    context.insert("armRegionName".to_owned(), "japanwest".to_owned());
    let items = client
        .check_inventory(
            c,
            "US",
            &InventoryCheckRequest {
                target_items: vec![InventoryTarget {
                    product_id: "DZH318Z0BQ3Q".to_owned(),
                    sku_id: Some("0003".to_owned()),
                }],
                inventory_context: context,
            },
        )
        .await
        .expect("E9")
        .value;
    assert!(items[0].is_restricted);
    assert_eq!(
        items[0].restrictions[0].reason_code.as_deref(),
        Some("NotAvailableForSubscription")
    );

    // Software subscriptions are not sold in Brazil: not listed, and refused in a cart.
    let listed = client
        .list_products(c, "BR", "Software", None)
        .await
        .expect("E3")
        .value;
    assert!(listed.iter().all(|p| p.id != "DG7GMGF0FKZV"));
    assert!(
        listed.iter().any(|p| p.id == "DG7GMGF0DWTL"),
        "perpetual software is"
    );
    let missing = client
        .get_product(c, "DG7GMGF0FKZV", "BR")
        .await
        .expect_err("not in BR");
    assert_eq!(
        (missing.class(), missing.code()),
        (pcsaga_partner_center::ErrorClass::NotFound, Some("400013"))
    );
    let (_, availability) = discover(
        &client,
        c,
        "SoftwareSubscriptions",
        "DG7GMGF0FKZV",
        "0003",
        Some("P1Y"),
    )
    .await;
    let cart = Cart {
        line_items: vec![line(&availability, 1, Some("P1Y"), "br", BTreeMap::new())],
        ..Cart::default()
    };
    let cart = client
        .create_cart(c, RequestId::new(), BRAZIL_CUSTOMER, &cart)
        .await
        .expect("E10")
        .value;
    assert_eq!(
        cart.line_items[0]
            .error
            .as_ref()
            .map(|e| e.error_code.clone()),
        Some(CartErrorCode::CatalogItemIdIsNotValid)
    );
}

/// Partial success: the software subscription's group fails at checkout while the
/// reservation's group succeeds; a second checkout re-attempts only the failed group.
#[tokio::test]
async fn partial_checkout_reports_order_errors_per_group() {
    let sim = support::sim(SimConfig {
        checkout_restricted_regions: vec!["eastus".to_owned()],
        preregistered_subscriptions: vec![AZURE_SUBSCRIPTION.to_owned()],
        ..SimConfig::default()
    })
    .await;
    let client = support::client(&sim);
    let c = cid();
    let (sku, ri) = discover(
        &client,
        c,
        "AzureReservationsVM",
        "DZH318Z0BQ3Q",
        "0001",
        Some("P1Y"),
    )
    .await;
    let (_, software) = discover(
        &client,
        c,
        "SoftwareSubscriptions",
        "DG7GMGF0FKZV",
        "0003",
        Some("P1Y"),
    )
    .await;
    let cart = Cart {
        line_items: vec![
            line(&ri, 1, Some("P1Y"), "multi", ri_context(&sku)),
            line(&software, 2, Some("P1Y"), "multi", BTreeMap::new()),
        ],
        ..Cart::default()
    };
    let cart = client
        .create_cart(c, RequestId::new(), CUSTOMER, &cart)
        .await
        .expect("E10")
        .value;
    let groups: Vec<Option<String>> = cart
        .line_items
        .iter()
        .map(|l| l.order_group.clone())
        .collect();
    assert_eq!(groups, vec![Some("0".to_owned()), Some("1".to_owned())]);
    let cart_id = cart.id.expect("id");
    let result = client
        .checkout(c, RequestId::new(), CUSTOMER, &cart_id)
        .await
        .expect("E13")
        .value;
    assert_eq!(result.orders.len(), 1);
    assert_eq!(result.order_errors.len(), 1);
    assert_eq!(result.order_errors[0].order_group_id.as_deref(), Some("0"));
    assert_eq!(result.order_errors[0].code.as_deref(), Some("800010"));
    let again = client
        .checkout(c, RequestId::new(), CUSTOMER, &cart_id)
        .await
        .expect("E13 again")
        .value;
    assert_eq!(
        again.orders[0].id, result.orders[0].id,
        "the successful group is replayed, not re-bought"
    );
    assert_eq!(sim.ledger().orders.len(), 1);
}

/// Lists follow `links.next`.
#[tokio::test]
async fn collections_follow_next_links() {
    let sim = support::sim(SimConfig {
        page_size: 2,
        order_list_lag_s: 0,
        ..SimConfig::default()
    })
    .await;
    let client = support::client(&sim);
    let c = cid();
    let (_, perpetual) = discover(
        &client,
        c,
        "SoftwarePerpetual",
        "DG7GMGF0DWTL",
        "0001",
        None,
    )
    .await;
    for n in 0..5 {
        let cart = Cart {
            line_items: vec![line(
                &perpetual,
                1,
                None,
                &format!("page-{n}"),
                BTreeMap::new(),
            )],
            ..Cart::default()
        };
        let cart = client
            .create_cart(c, RequestId::new(), CUSTOMER, &cart)
            .await
            .expect("E10")
            .value;
        client
            .checkout(
                c,
                RequestId::new(),
                CUSTOMER,
                cart.id.as_deref().expect("id"),
            )
            .await
            .expect("E13");
    }
    let orders = client
        .list_orders(c, CUSTOMER, Some("OneTime"))
        .await
        .expect("E16");
    assert_eq!(orders.value.len(), 5);
    assert_eq!(orders.meta.http_requests, 3, "three pages of two");
}
