//! The reply table, from the wire to the decision: every row is a real HTTP reply (status,
//! headers, body bytes) served by the simulator to the real client, for every side-effecting
//! call and for reads; the columns are the client's class and what the saga decides, with the
//! request-id rule and the checkout's bookkeeping. Snapshotted, and its invariants asserted
//! row by row so a change that breaks the money rules fails with the row named.

use pcsaga_engine::Decision;
use pcsaga_partner_center::{Client, ClientConfig, Credentials, Secret};
use pcsaga_purchase::call::Call;
use pcsaga_purchase::context::{Registration, RegistrationState};
use pcsaga_purchase::decide::decide;
use pcsaga_purchase::{PurchaseContext, State};
use pcsaga_simulator::{Fault, FaultPlan, FaultRule, SimConfig, Simulator};

use crate::transition_table::{at, sku_facts};

/// A reply as it crosses the wire.
struct Wire {
    label: &'static str,
    status: u16,
    body: &'static str,
    content_type: Option<&'static str>,
    retry_after: Option<&'static str>,
}

const fn wire(label: &'static str, status: u16, body: &'static str) -> Wire {
    Wire {
        label,
        status,
        body,
        content_type: Some("application/json"),
        retry_after: None,
    }
}

const REPLIES: &[Wire] = &[
    wire(
        "200 truncated JSON",
        200,
        "{\"id\":\"x\",\"lineItems\":[{\"id\":0",
    ),
    Wire {
        label: "200 HTML",
        status: 200,
        body: "<html><body>OK</body></html>",
        content_type: Some("text/html"),
        retry_after: None,
    },
    Wire {
        label: "200 empty",
        status: 200,
        body: "",
        content_type: None,
        retry_after: None,
    },
    wire(
        "201 mis-typed",
        201,
        "{\"id\":42,\"lineItems\":\"none\",\"orders\":\"none\"}",
    ),
    wire(
        "200 code 800060",
        200,
        "{\"code\":\"800060\",\"description\":\"Order is in progress.\"}",
    ),
    wire(
        "200 code 400072",
        200,
        "{\"code\":\"400072\",\"description\":\"This item isn't available.\"}",
    ),
    wire(
        "400 800002",
        400,
        "{\"code\":\"800002\",\"description\":\"Invalid request input.\",\"source\":\"PartnerFD\"}",
    ),
    wire(
        "400 800064",
        400,
        "{\"code\":\"800064\",\"description\":\"Cart is being processed by another request.\"}",
    ),
    wire(
        "400 800065",
        400,
        "{\"code\":\"800065\",\"description\":\"Cannot check out an already submitted cart.\"}",
    ),
    wire(
        "401 twice",
        401,
        "{\"code\":\"400\",\"description\":\"Access denied.\"}",
    ),
    wire(
        "403 800069",
        403,
        "{\"code\":\"800069\",\"description\":\"Order failed risk-management check.\"}",
    ),
    wire(
        "404 800008",
        404,
        "{\"code\":\"800008\",\"description\":\"Cart id not retrievable.\"}",
    ),
    wire(
        "408",
        408,
        "{\"code\":\"800003\",\"description\":\"Request timeout.\"}",
    ),
    wire(
        "409 800060",
        409,
        "{\"code\":\"800060\",\"description\":\"Order in progress.\"}",
    ),
    wire(
        "409 800064",
        409,
        "{\"code\":\"800064\",\"description\":\"Cart is being processed by another request.\"}",
    ),
    wire(
        "409 800002",
        409,
        "{\"code\":\"800002\",\"description\":\"Invalid request input.\"}",
    ),
    Wire {
        label: "429 Retry-After 7",
        status: 429,
        body:
            "{\"statusCode\":429,\"message\":\"Rate limit is exceeded. Try again in 7 seconds.\"}",
        content_type: Some("application/json"),
        retry_after: Some("7"),
    },
    Wire {
        label: "500 HTML",
        status: 500,
        body: "<html>Internal Server Error</html>",
        content_type: Some("text/html"),
        retry_after: None,
    },
    wire(
        "503 800003",
        503,
        "{\"code\":\"800003\",\"description\":\"Unexpected service error.\"}",
    ),
];

/// The calls, each with the simulator's endpoint name, the state it is made in and a context.
fn calls() -> Vec<(&'static str, State, Call, PurchaseContext)> {
    let subscription = "1c461a25-f729-4fa5-aadb-280947dd05e8";
    let mut enablement = at(State::Enablement);
    enablement.items[0].sku = Some(sku_facts());
    enablement.registrations_planned = true;
    enablement.registrations = vec![RegistrationState {
        subscription_id: subscription.into(),
        status: Registration::NotRegistered,
        register_sent: false,
    }];
    let id = uuid::Uuid::from_u128(7);
    enablement.pending = Some(pcsaga_purchase::context::Intent {
        call: format!("register:{subscription}"),
        request_id: id,
    });
    let mut cart_build = at(State::CartBuild);
    cart_build.pending = Some(pcsaga_purchase::context::Intent {
        call: "create_cart".into(),
        request_id: id,
    });
    let mut update = cart_build.clone();
    update.pending = Some(pcsaga_purchase::context::Intent {
        call: "update_cart".into(),
        request_id: id,
    });
    let mut checkout = at(State::Checkout);
    checkout.pending = Some(pcsaga_purchase::context::Intent {
        call: "checkout".into(),
        request_id: id,
    });
    let mut verifying = at(State::Checkout);
    verifying.pending = None;
    verifying.checkout.answered = 1;
    verifying.checkout.verifying = Some("HTTP 403 code 800069".into());
    let mut reconciling = at(State::Checkout);
    reconciling.pending = None;
    reconciling.checkout.reconciling = true;
    let cart = pcsaga_partner_center::models::Cart::default();
    vec![
        (
            "register",
            State::Enablement,
            Call::Register {
                subscription_id: subscription.into(),
                request_id: id,
            },
            enablement.clone(),
        ),
        (
            "create_cart",
            State::CartBuild,
            Call::CreateCart {
                request_id: id,
                cart: cart.clone(),
            },
            cart_build,
        ),
        (
            "update_cart",
            State::CartBuild,
            Call::UpdateCart {
                request_id: id,
                cart_id: "cart-1".into(),
                cart,
            },
            update,
        ),
        (
            "checkout",
            State::Checkout,
            Call::Checkout {
                cart_id: "cart-1".into(),
                request_id: id,
            },
            checkout,
        ),
        (
            "get_cart",
            State::Checkout,
            Call::GetCart {
                cart_id: "cart-1".into(),
            },
            verifying,
        ),
        (
            "list_orders",
            State::Checkout,
            Call::ListOrders,
            reconciling,
        ),
        (
            "get_sku",
            State::Enablement,
            Call::GetSku { item: 0 },
            at(State::Enablement),
        ),
    ]
}

#[tokio::test]
async fn every_reply_from_the_wire_to_the_decision() {
    let sim = Simulator::start(SimConfig::default())
        .await
        .expect("simulator");
    let c = sim.config();
    let credentials = Credentials {
        token_url: sim.token_url(),
        resource: c.resource.clone(),
        client_id: c.client_id.clone(),
        client_secret: Secret::new(c.client_secret.clone()),
        refresh_token: Some(Secret::new(c.refresh_token.clone())),
    };
    let client = Client::new(ClientConfig::new(sim.base_url()), credentials).expect("client");
    let mut rows = vec![
        "| call | reply | class | decision | next | request id | checkout answered |".to_owned(),
        "|---|---|---|---|---|---|---|".to_owned(),
    ];
    for (endpoint, state, call, ctx) in calls() {
        for reply in REPLIES {
            sim.set_faults(FaultPlan {
                seed: 0,
                rules: vec![FaultRule {
                    endpoint: endpoint.into(),
                    probability: 1.0,
                    after: 0,
                    limit: None,
                    fault: Fault::Respond {
                        status: reply.status,
                        body: reply.body.into(),
                        repeat: 1,
                        content_type: reply.content_type.map(str::to_owned),
                        retry_after: reply.retry_after.map(str::to_owned),
                        processed: false,
                    },
                }],
            })
            .expect("plan");
            let (outcome, attempt) = pcsaga_purchase::execute::execute(&client, &ctx, &call).await;
            let class = attempt.error_class.clone().unwrap_or_else(|| "ok".into());
            let decision = decide(state, &ctx, &call, outcome);
            let after = decision.context();
            let at = format!("{endpoint} × {}", reply.label);
            let request_id = if !call.is_side_effecting() {
                "-"
            } else if after.pending == ctx.pending {
                "kept"
            } else if after.pending.is_none() {
                "released"
            } else {
                "changed"
            };
            // The money rules, row by row.
            let proves_nothing = matches!(
                class.as_str(),
                "transient" | "outcome_unknown" | "throttled" | "auth_expired"
            );
            if call.is_side_effecting() && proves_nothing {
                assert_eq!(
                    request_id, "kept",
                    "{at}: a reply that settles nothing keeps the id"
                );
            }
            if reply.status < 300 && reply.body.contains("800060") {
                assert_eq!(class, "in_flight", "{at}");
            }
            if state == State::Checkout {
                assert!(
                    !matches!(decision, Decision::Fail { .. }),
                    "{at}: a checkout is never failed without the cart's proof"
                );
            }
            if matches!(call, Call::Checkout { .. })
                && (200..300).contains(&reply.status)
                && class == "outcome_unknown"
            {
                assert_eq!(
                    after.checkout.answered, ctx.checkout.answered,
                    "{at}: an unreadable 2xx answers nothing"
                );
            }
            let next = match &decision {
                Decision::Advance { to, .. } => to.name().to_owned(),
                Decision::Succeed { .. } => "succeeded".into(),
                Decision::Fail { .. } => "failed".into(),
                Decision::Park { .. } => "needs_attention".into(),
                _ if after.checkout.reconciling && !ctx.checkout.reconciling => {
                    format!("{state} (reconcile)")
                }
                _ if after.checkout.verifying.is_some() && ctx.checkout.verifying.is_none() => {
                    format!("{state} (read cart)")
                }
                Decision::Retry {
                    retry_after: Some(wait),
                    ..
                } => format!("{state} (≥ {}s)", wait.as_secs()),
                _ => state.name().to_owned(),
            };
            let answered = if matches!(call, Call::Checkout { .. }) {
                format!("{} of {}", after.checkout.answered, after.checkout.sent)
            } else {
                "-".to_owned()
            };
            rows.push(format!(
                "| {endpoint} | {} | {class} | {} | {next} | {request_id} | {answered} |",
                reply.label,
                decision.kind()
            ));
        }
    }
    insta::assert_snapshot!(rows.join("\n"));
}
