//! The HTTP server: accept loop, routing, fault injection and the `/_sim` admin API.
//!
//! Built on hyper directly rather than a router framework because one fault needs control a
//! framework hides: `drop` processes a request and then closes the connection without writing
//! a byte, which is how a lost reply looks to a client. Each connection task races the
//! connection against a per-connection kill switch to do that.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};

use crate::faults::{Fault, FaultPlan};
use crate::service::{self, Req, Resp, Shared};
use crate::world::RequestRecord;

/// How long shutdown waits for in-flight requests before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, shared.clone(), shutdown.clone()));
                }
                Err(error) => {
                    // Accept errors (file descriptors exhausted, ...) are transient; back off
                    // briefly instead of spinning.
                    tracing::warn!(%error, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

async fn connection(stream: TcpStream, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    let kill = Arc::new(Notify::new());
    let service = {
        let kill = kill.clone();
        service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            let kill = kill.clone();
            async move { Ok::<_, Infallible>(handle(shared, kill, request).await) }
        })
    };
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = kill.notified() => {} // dropping `conn` closes the socket without a response
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

/// Where a request goes.
enum Route {
    Token {
        tenant: String,
        v2: bool,
    },
    Api {
        endpoint: &'static str,
        params: Vec<String>,
    },
    Admin(String),
    /// Microsoft Graph's billing export (E29), served on the same listener under `/graph/v1.0`.
    Graph {
        endpoint: &'static str,
        params: Vec<String>,
    },
    /// An export file (`/sim-blob/{export}/{name}`): SAS-signed, no token.
    Blob {
        export: String,
        name: String,
    },
    NotFound,
    MethodNotAllowed,
}

fn route(method: &Method, segments: &[String]) -> Route {
    let lower: Vec<String> = segments.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let s = segments;
    if l.first() == Some(&"_sim") {
        return Route::Admin(l[1..].join("/"));
    }
    if l.first() == Some(&"sim-blob") && l.len() == 3 && method == Method::GET {
        return Route::Blob {
            export: s[1].clone(),
            name: s[2].clone(),
        };
    }
    if l.len() >= 6 && l[..5] == ["graph", "v1.0", "reports", "partners", "billing"] {
        let rest = &l[5..];
        let graph = |endpoint: &'static str, params: Vec<String>, allowed: Method| {
            if *method == allowed {
                Route::Graph { endpoint, params }
            } else {
                Route::MethodNotAllowed
            }
        };
        return match rest {
            ["reconciliation", "billed", export] if export.ends_with("export") => {
                graph("billed_export", Vec::new(), Method::POST)
            }
            ["reconciliation", "unbilled", export] if export.ends_with("export") => {
                graph("unbilled_export", Vec::new(), Method::POST)
            }
            ["operations", _] => graph("export_operation", vec![s[6].clone()], Method::GET),
            ["manifests", _] => graph("export_manifest", vec![s[6].clone()], Method::GET),
            _ => Route::NotFound,
        };
    }
    if l.len() == 3 && l[1] == "oauth2" && l[2] == "token" && method == Method::POST {
        return Route::Token {
            tenant: s[0].clone(),
            v2: false,
        };
    }
    if l.len() == 4
        && l[1] == "oauth2"
        && l[2] == "v2.0"
        && l[3] == "token"
        && method == Method::POST
    {
        return Route::Token {
            tenant: s[0].clone(),
            v2: true,
        };
    }
    if l.first() != Some(&"v1") {
        return Route::NotFound;
    }
    let (l, s) = (&l[1..], &s[1..]);
    let api = |endpoint: &'static str, params: &[usize]| Route::Api {
        endpoint,
        params: params.iter().map(|i| s[*i].clone()).collect(),
    };
    let (endpoint_route, allowed): (Route, &[Method]) = match l {
        ["customers", _, "subscriptions", _, "registrations"] => {
            (api("register", &[1, 3]), &[Method::POST])
        }
        ["customers", _, "subscriptions", _, "registrationstatus"] => {
            (api("registration_status", &[1, 3]), &[Method::GET])
        }
        ["products"] => (api("list_products", &[]), &[Method::GET]),
        ["products", _] => (api("get_product", &[1]), &[Method::GET]),
        ["products", _, "skus"] => (api("list_skus", &[1]), &[Method::GET]),
        ["products", _, "skus", _] => (api("get_sku", &[1, 3]), &[Method::GET]),
        ["products", _, "skus", _, "availabilities"] => {
            (api("list_availabilities", &[1, 3]), &[Method::GET])
        }
        ["products", _, "skus", _, "availabilities", _] => {
            (api("get_availability", &[1, 3, 5]), &[Method::GET])
        }
        // The customer-scoped catalog (spec §6, E4-E8 variants): as the partner-scoped one,
        // for the customer's country.
        ["customers", _, "products"] => (api("customer_list_products", &[1]), &[Method::GET]),
        ["customers", _, "products", _] => (api("customer_get_product", &[1, 3]), &[Method::GET]),
        ["customers", _, "products", _, "skus"] => {
            (api("customer_list_skus", &[1, 3]), &[Method::GET])
        }
        ["customers", _, "products", _, "skus", _] => {
            (api("customer_get_sku", &[1, 3, 5]), &[Method::GET])
        }
        ["customers", _, "products", _, "skus", _, "availabilities"] => (
            api("customer_list_availabilities", &[1, 3, 5]),
            &[Method::GET],
        ),
        ["customers", _, "products", _, "skus", _, "availabilities", _] => (
            api("customer_get_availability", &[1, 3, 5, 7]),
            &[Method::GET],
        ),
        // Customers and their subscriptions, read-only.
        ["customers"] => (api("list_customers", &[]), &[Method::GET]),
        ["customers", _] => (api("get_customer", &[1]), &[Method::GET]),
        ["customers", _, "subscriptions"] => (api("list_subscriptions", &[1]), &[Method::GET]),
        ["invoices", "summary"] => (api("account_balance", &[]), &[Method::GET]),
        ["invoices", "summaries"] => (api("invoice_summaries", &[]), &[Method::GET]),
        ["invoices"] => (api("list_invoices", &[]), &[Method::GET]),
        ["invoices", "unbilled", "lineitems"] => (api("unbilled_lines", &[]), &[Method::GET]),
        ["invoices", _] => (api("get_invoice", &[1]), &[Method::GET]),
        ["invoices", _, "lineitems"] => (api("invoice_lines", &[1]), &[Method::GET]),
        ["invoices", _, "lineitems", "onetime", "billinglineitems"] => {
            (api("invoice_lines", &[1]), &[Method::GET])
        }
        ["invoices", _, "documents", "statement"] => {
            (api("invoice_statement", &[1]), &[Method::GET])
        }
        ["customers", _, "subscriptions", _] => (api("get_subscription", &[1, 3]), &[Method::GET]),
        ["extensions", "product", "checkinventory"] => {
            (api("check_inventory", &[]), &[Method::POST])
        }
        ["customers", _, "carts"] => (api("create_cart", &[1]), &[Method::POST]),
        ["customers", _, "carts", _] => {
            let endpoint = if method == Method::PUT {
                "update_cart"
            } else {
                "get_cart"
            };
            (api(endpoint, &[1, 3]), &[Method::GET, Method::PUT])
        }
        ["customers", _, "carts", _, "checkout"] => (api("checkout", &[1, 3]), &[Method::POST]),
        ["customers", _, "orders"] => {
            let endpoint = if method == Method::POST {
                "create_order"
            } else {
                "list_orders"
            };
            (api(endpoint, &[1]), &[Method::GET, Method::POST])
        }
        ["customers", _, "orders", _] => {
            let endpoint = if method == Method::PATCH {
                "cancel_order"
            } else {
                "get_order"
            };
            (api(endpoint, &[1, 3]), &[Method::GET, Method::PATCH])
        }
        ["customers", _, "orders", _, "provisioningstatus"] => {
            (api("provisioning_status", &[1, 3]), &[Method::GET])
        }
        ["customers", _, "entitlements"] => (api("list_entitlements", &[1]), &[Method::GET]),
        ["customers", _, "artifacts", _, "groups", _, "lineitems", _, "resource", _] => {
            (api("artifact_details", &[1, 5, 7, 9]), &[Method::GET])
        }
        _ => return Route::NotFound,
    };
    if allowed.contains(method) {
        endpoint_route
    } else {
        Route::MethodNotAllowed
    }
}

async fn handle(
    shared: Arc<Shared>,
    kill: Arc<Notify>,
    request: Request<Incoming>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let query: HashMap<String, String> = parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let body = match Limited::new(body, shared.config.max_request_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return render(
                &Resp::error(
                    413,
                    "800002",
                    "Invalid request input: the body is too large.",
                ),
                None,
                None,
            );
        }
    };
    let req = Req {
        method: parts.method.clone(),
        segments,
        query,
        headers: parts.headers,
        body,
    };
    let request_id = req
        .header("ms-requestid")
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let correlation_id = req.header("ms-correlationid");

    let route = route(&req.method, &req.segments);
    let endpoint = match &route {
        Route::Admin(action) => return render(&admin(&shared, &req, action), None, None),
        Route::Token { .. } => "token",
        Route::Api { endpoint, .. } | Route::Graph { endpoint, .. } => endpoint,
        Route::Blob { export, name } => {
            let resp = crate::billing::blob(&shared, &req, export, name);
            return render(&resp, None, None);
        }
        Route::NotFound => {
            return render(
                &Resp::error(404, "1000", &format!("No resource at {path}.")),
                Some(&request_id),
                correlation_id.as_deref(),
            )
        }
        Route::MethodNotAllowed => {
            return render(
                &Resp::error(
                    405,
                    "1000",
                    &format!("{} is not allowed on {path}.", req.method),
                ),
                Some(&request_id),
                correlation_id.as_deref(),
            )
        }
    };

    // A hung request stops counting as in flight once it hangs: its client gives up at its own
    // timeout and moves on, and the in-flight measure is about what clients keep open.
    let mut in_flight = matches!(route, Route::Api { .. }).then(|| InFlight::enter(&shared));
    let decision = shared.injector.decide(endpoint);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let mut record = RequestRecord {
        seq: 0,
        at: chrono::Utc::now(),
        endpoint: endpoint.to_owned(),
        method: req.method.to_string(),
        path: path.clone(),
        request_id: req.header("ms-requestid"),
        correlation_id: correlation_id.clone(),
        status: None,
        fault: decision.fault.as_ref().map(fault_name),
        processed: false,
        retry_after_s: None,
    };

    // Over the tenant's budget for this class: 429, before anything else happens.
    if let Some(retry_after) = shared.throttle.check(
        &shared.config.tenant_id,
        endpoint,
        std::time::Instant::now(),
    ) {
        record.status = Some(429);
        record.fault = Some("rate_limit".to_owned());
        record.retry_after_s = Some(retry_after.as_secs());
        shared.world().log(record);
        return throttled(retry_after, &request_id, correlation_id.as_deref());
    }

    // Faults that strike before the request takes effect.
    match &decision.fault {
        Some(Fault::Throttle {
            retry_after_s,
            http_date,
        }) => {
            let value = if *http_date {
                httpdate::fmt_http_date(
                    std::time::SystemTime::now() + Duration::from_secs(*retry_after_s),
                )
            } else {
                retry_after_s.to_string()
            };
            record.status = Some(429);
            record.retry_after_s = Some(*retry_after_s);
            shared.world().log(record);
            let mut response = throttled(
                Duration::from_secs(*retry_after_s),
                &request_id,
                correlation_id.as_deref(),
            );
            if let Ok(v) = http::HeaderValue::from_str(&value) {
                response.headers_mut().insert(http::header::RETRY_AFTER, v);
            }
            return response;
        }
        Some(Fault::Status { status, code }) => {
            record.status = Some(*status);
            shared.world().log(record);
            let code = code.as_deref().unwrap_or("800003");
            let resp = Resp::error(
                *status,
                code,
                &format!("Injected response {status} with code {code}."),
            );
            return render(&resp, Some(&request_id), correlation_id.as_deref());
        }
        Some(Fault::Respond {
            processed: false, ..
        }) => {
            return respond_as_told(
                &shared,
                record,
                decision.fault.as_ref(),
                &request_id,
                correlation_id.as_deref(),
            );
        }
        Some(Fault::Hang { processed: false }) => {
            shared.world().log(record);
            in_flight.take();
            tokio::time::sleep(Duration::from_secs(shared.config.hang_s)).await;
            return render(
                &Resp::error(504, "800003", "Gateway timeout (injected hang)."),
                Some(&request_id),
                correlation_id.as_deref(),
            );
        }
        _ => {}
    }

    let resp = match &route {
        Route::Token { tenant, v2 } => service::token(&shared, tenant, *v2, &req),
        Route::Graph { endpoint, params } => match service::authenticate_for(&shared, &req, true) {
            Err(_) => Resp::json(
                401,
                json!({"error": {"code": "InvalidAuthenticationToken", "message": "Access token is missing, expired or not for Microsoft Graph."}}),
            ),
            Ok(_) => {
                record.processed = true;
                graph(&shared, &req, endpoint, params)
            }
        },
        Route::Api { endpoint, params } => match service::authenticate(&shared, &req) {
            Err(unauthorized) => unauthorized,
            // Addendum §14.10: the app+user-only billing calls answer app-only tokens 401.
            Ok(crate::world::Grant::AppOnly)
                if matches!(
                    *endpoint,
                    "invoice_summaries" | "get_invoice" | "invoice_statement"
                ) =>
            {
                Resp::error(
                    401,
                    "400",
                    "Access denied: this operation supports App+User authentication only.",
                )
            }
            Ok(crate::world::Grant::AppOnly) if service::requires_app_user(endpoint) => {
                service::app_user_required()
            }
            Ok(_) => {
                record.processed = true;
                dispatch(&shared, &req, endpoint, params, &request_id).await
            }
        },
        _ => Resp::error(404, "1000", "No resource."),
    };

    // Faults that strike after the request took effect.
    match &decision.fault {
        Some(Fault::Drop) => {
            shared.world().log(record);
            kill.notify_one();
            std::future::pending::<()>().await;
            unreachable!("a pending future never completes")
        }
        Some(Fault::Hang { processed: true }) => {
            shared.world().log(record);
            in_flight.take();
            tokio::time::sleep(Duration::from_secs(shared.config.hang_s)).await;
            render(
                &Resp::error(504, "800003", "Gateway timeout (injected hang)."),
                Some(&request_id),
                correlation_id.as_deref(),
            )
        }
        Some(Fault::Respond {
            processed: true, ..
        }) => respond_as_told(
            &shared,
            record,
            decision.fault.as_ref(),
            &request_id,
            correlation_id.as_deref(),
        ),
        Some(Fault::BodyDrop) => {
            record.status = Some(resp.status);
            shared.world().log(record);
            let full = resp
                .body
                .as_ref()
                .map_or_else(|| "{}".to_owned(), Value::to_string);
            let mut response = render(&resp, Some(&request_id), correlation_id.as_deref());
            let half = Bytes::from(full.as_bytes()[..full.len() / 2].to_vec());
            if let Ok(length) = http::HeaderValue::from_str(&full.len().to_string()) {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, length);
            }
            *response.body_mut() = PartialBody {
                data: Some(half),
                done: false,
            }
            .boxed_unsync();
            response
        }
        Some(Fault::Malformed) => {
            record.status = Some(200);
            shared.world().log(record);
            let full = resp
                .body
                .as_ref()
                .map_or_else(|| "{}".to_owned(), Value::to_string);
            let mut cut = full.len() / 2;
            while !full.is_char_boundary(cut) {
                cut -= 1;
            }
            let truncated = full[..cut].to_owned();
            let mut response = render(
                &Resp::empty(200),
                Some(&request_id),
                correlation_id.as_deref(),
            );
            *response.body_mut() = full_body(Bytes::from(truncated));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        _ => {
            record.status = Some(resp.status);
            shared.world().log(record);
            render(&resp, Some(&request_id), correlation_id.as_deref())
        }
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: &Req,
    endpoint: &str,
    p: &[String],
    request_id: &str,
) -> Resp {
    match endpoint {
        "register" => service::register(shared, &p[0], &p[1]),
        "registration_status" => service::registration_status(shared, &p[0], &p[1]),
        "list_products" => service::list_products(shared, req),
        "get_product" => service::get_product(shared, req, &p[0]),
        "list_skus" => service::list_skus(shared, req, &p[0]),
        "get_sku" => service::get_sku(shared, req, &p[0], &p[1]),
        "list_availabilities" => service::list_availabilities(shared, req, &p[0], &p[1]),
        "get_availability" => service::get_availability(shared, req, &p[0], &p[1], &p[2]),
        "check_inventory" => service::check_inventory(shared, req),
        scoped if scoped.starts_with("customer_") => {
            service::customer_scoped(shared, req, &scoped["customer_".len()..], p)
        }
        "list_customers" => service::list_customers(shared, req),
        "get_customer" => service::get_customer(shared, &p[0]),
        "list_subscriptions" => service::list_subscriptions(shared, &p[0]),
        "get_subscription" => service::get_subscription(shared, &p[0], &p[1]),
        "create_cart" => service::create_cart(shared, req, &p[0], request_id),
        "get_cart" => service::get_cart(shared, &p[0], &p[1]),
        "update_cart" => service::update_cart(shared, req, &p[0], &p[1]),
        "checkout" => {
            // If the client goes away mid-checkout, this future is dropped; the guard then
            // clears the in-progress mark so the cart is not stuck at 409 forever.
            let guard = CheckoutGuard {
                shared: shared.clone(),
                cart_id: p[1].clone(),
                armed: true,
            };
            let resp = service::checkout(shared, &p[0], &p[1], request_id).await;
            guard.disarm();
            resp
        }
        "get_order" => service::get_order(shared, &p[0], &p[1]),
        "list_orders" => service::list_orders(shared, req, &p[0]),
        "create_order" => crate::direct::create_order(shared, req, &p[0], request_id),
        "provisioning_status" => service::provisioning_status(shared, &p[0], &p[1]),
        "cancel_order" => service::cancel_order(shared, req, &p[0], &p[1]),
        "list_entitlements" => service::list_entitlements(shared, req, &p[0]),
        "account_balance" => crate::billing::balance(shared),
        "invoice_summaries" => crate::billing::summaries(shared),
        "list_invoices" => crate::billing::list_invoices(shared, req),
        "get_invoice" => crate::billing::get_invoice(shared, &p[0]),
        "invoice_lines" => crate::billing::line_items(shared, req, Some(&p[0])),
        "unbilled_lines" => crate::billing::line_items(shared, req, None),
        "invoice_statement" => crate::billing::statement(shared, &p[0]),
        "artifact_details" => service::artifact_details(shared, &p[0], &p[1], &p[2], &p[3]),
        other => Resp::error(404, "1000", &format!("No handler for {other}.")),
    }
}

/// A 429 as Partner Center sends it: its own body (spec §5.1) and `Retry-After` in seconds.
fn throttled(
    retry_after: Duration,
    request_id: &str,
    correlation_id: Option<&str>,
) -> Response<Body> {
    let seconds = retry_after.as_secs();
    let resp = Resp::json(
        429,
        json!({"statusCode": 429, "message": format!("Rate limit is exceeded. Try again in {seconds} seconds.")}),
    );
    let mut response = render(&resp, Some(request_id), correlation_id);
    if let Ok(v) = http::HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    response
}

/// Counts a request in flight for as long as it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        use std::sync::atomic::Ordering::SeqCst;
        let now = shared.in_flight.fetch_add(1, SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, SeqCst);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

struct CheckoutGuard {
    shared: Arc<Shared>,
    cart_id: String,
    armed: bool,
}

impl CheckoutGuard {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CheckoutGuard {
    fn drop(&mut self) {
        if self.armed {
            service::release_checkout(&self.shared, &self.cart_id);
        }
    }
}

fn fault_name(fault: &Fault) -> String {
    match fault {
        Fault::Latency { .. } => "latency",
        Fault::Throttle { .. } => "throttle",
        Fault::Status { .. } => "status",
        Fault::Hang { processed: false } => "hang",
        Fault::Hang { processed: true } => "hang_after_processing",
        Fault::Drop => "drop",
        Fault::Malformed => "malformed",
        Fault::Respond { .. } => "respond",
        Fault::BodyDrop => "body_drop",
    }
    .to_owned()
}

/// The response body type: whole bodies, or one that breaks off (the `body_drop` fault).
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn full_body(bytes: Bytes) -> Body {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body that yields its data and then fails, which makes hyper abort the connection
/// mid-body.
struct PartialBody {
    data: Option<Bytes>,
    done: bool,
}

impl hyper::body::Body for PartialBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if let Some(data) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
        }
        if self.done {
            return std::task::Poll::Ready(None);
        }
        self.done = true;
        std::task::Poll::Ready(Some(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "injected body_drop",
        ))))
    }
}

fn respond_as_told(
    shared: &Shared,
    mut record: RequestRecord,
    fault: Option<&Fault>,
    request_id: &str,
    correlation_id: Option<&str>,
) -> Response<Body> {
    let Some(Fault::Respond {
        status,
        body,
        repeat,
        content_type,
        retry_after,
        ..
    }) = fault
    else {
        return render(
            &Resp::error(
                500,
                "800003",
                "internal: respond_as_told without a Respond fault",
            ),
            Some(request_id),
            correlation_id,
        );
    };
    record.status = Some(*status);
    record.retry_after_s = retry_after.as_deref().and_then(|r| r.trim().parse().ok());
    shared.world().log(record);
    let mut response = render(&Resp::empty(*status), Some(request_id), correlation_id);
    *response.body_mut() = full_body(Bytes::from(body.repeat(*repeat as usize)));
    if let Some(v) = content_type
        .as_deref()
        .and_then(|c| http::HeaderValue::from_str(c).ok())
    {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    if let Some(v) = retry_after
        .as_deref()
        .and_then(|r| http::HeaderValue::from_str(r).ok())
    {
        response.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
    response
}

fn graph(shared: &Shared, req: &Req, endpoint: &str, p: &[String]) -> Resp {
    match endpoint {
        "billed_export" => crate::billing::start_export(shared, req, true),
        "unbilled_export" => crate::billing::start_export(shared, req, false),
        "export_operation" => crate::billing::operation(shared, req, &p[0]),
        "export_manifest" => crate::billing::manifest(shared, req, &p[0]),
        other => Resp::error(404, "1000", &format!("No handler for {other}.")),
    }
}

fn render(resp: &Resp, request_id: Option<&str>, correlation_id: Option<&str>) -> Response<Body> {
    let body = match (&resp.raw, &resp.body) {
        (Some((_, bytes)), _) => bytes.clone(),
        (None, Some(body)) => Bytes::from(body.to_string()),
        (None, None) => Bytes::new(),
    };
    let mut response = Response::new(full_body(body));
    *response.status_mut() =
        StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    if let Some(v) = resp
        .raw
        .as_ref()
        .and_then(|(content_type, _)| http::HeaderValue::from_str(content_type).ok())
    {
        headers.insert(http::header::CONTENT_TYPE, v);
    } else if resp.body.is_some() {
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = http::HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    if let Some(id) = request_id {
        put("ms-requestid", id);
    }
    if let Some(id) = correlation_id {
        put("ms-correlationid", id);
    }
    put(
        "ms-cv",
        &format!("sim.{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
    );
    put("ms-serverid", "pcsaga-simulator");
    for (name, value) in &resp.headers {
        put(name, value);
    }
    response
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&segment[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/_sim/...`: the ledger, the request log, the clock and the fault plan. Outside `/v1` and
/// without authentication, because it is the test harness's view, not Partner Center's.
fn admin(shared: &Shared, req: &Req, action: &str) -> Resp {
    match (req.method.clone(), action) {
        (Method::GET, "health") => Resp::json(200, json!({"status": "ok"})),
        (Method::GET, "billing") => crate::billing::ledger(shared),
        (Method::PUT, "billing") => crate::billing::set_faults(shared, req),
        (Method::POST, "billing/close") => crate::billing::close_now(shared),
        (Method::GET, "stats") => {
            use std::sync::atomic::Ordering::SeqCst;
            Resp::json(
                200,
                json!({
                    "inFlight": shared.in_flight.load(SeqCst),
                    "maxInFlight": shared.max_in_flight.load(SeqCst),
                    "throttle": {
                        "enabled": shared.throttle.config().enabled,
                        "classes": shared.throttle.stats(),
                    },
                }),
            )
        }
        (Method::GET, "ledger") => Resp::json(
            200,
            serde_json::to_value(&shared.world().ledger).unwrap_or(Value::Null),
        ),
        (Method::GET, "requests") => {
            let since: u64 = req
                .query
                .get("since")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let world = shared.world();
            let items: Vec<&RequestRecord> =
                world.requests.iter().filter(|r| r.seq > since).collect();
            Resp::json(200, json!({"items": items}))
        }
        (Method::GET, "clock") => Resp::json(
            200,
            json!({"now": shared.clock.now(), "offsetSeconds": shared.clock.offset().as_secs()}),
        ),
        (Method::POST, "clock/advance") => {
            let Some(seconds) = req.query.get("seconds").and_then(|s| s.parse::<u64>().ok()) else {
                return Resp::error(
                    400,
                    "800002",
                    "POST /_sim/clock/advance?seconds=N needs a whole number of seconds.",
                );
            };
            shared.clock.advance(Duration::from_secs(seconds));
            Resp::json(
                200,
                json!({"now": shared.clock.now(), "offsetSeconds": shared.clock.offset().as_secs()}),
            )
        }
        (Method::GET, "faults") => Resp::json(
            200,
            serde_json::to_value(shared.injector.plan()).unwrap_or(Value::Null),
        ),
        (Method::PUT, "faults") => match serde_json::from_slice::<FaultPlan>(&req.body) {
            Ok(plan) => {
                if let Some(problem) = plan
                    .rules
                    .iter()
                    .enumerate()
                    .find_map(|(i, r)| r.validate().err().map(|e| format!("rules[{i}]: {e}")))
                {
                    return Resp::error(400, "800002", &problem);
                }
                shared.injector.replace(plan);
                Resp::json(
                    200,
                    serde_json::to_value(shared.injector.plan()).unwrap_or(Value::Null),
                )
            }
            Err(e) => Resp::error(400, "800002", &format!("the fault plan is not valid: {e}")),
        },
        (Method::GET, "restrictions") => Resp::json(
            200,
            serde_json::to_value(shared.restrictions()).unwrap_or(Value::Null),
        ),
        (Method::PUT, "restrictions") => {
            match serde_json::from_slice::<crate::service::Restrictions>(&req.body) {
                Ok(restrictions) => {
                    shared.set_restrictions(restrictions);
                    Resp::json(
                        200,
                        serde_json::to_value(shared.restrictions()).unwrap_or(Value::Null),
                    )
                }
                Err(e) => Resp::error(
                    400,
                    "800002",
                    &format!("PUT /_sim/restrictions takes {{\"restrictedRegions\": [..], \"checkoutRestrictedRegions\": [..]}}: {e}"),
                ),
            }
        }
        (Method::PUT, "registrations") => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "camelCase", deny_unknown_fields)]
            struct Body {
                customer_id: String,
                subscription_id: String,
                registered: bool,
            }
            match serde_json::from_slice::<Body>(&req.body) {
                Ok(body) => {
                    crate::service::set_registration(
                        shared,
                        &body.customer_id,
                        &body.subscription_id,
                        body.registered,
                    );
                    Resp::json(
                        200,
                        json!({"customerId": body.customer_id, "subscriptionId": body.subscription_id, "registered": body.registered}),
                    )
                }
                Err(e) => Resp::error(
                    400,
                    "800002",
                    &format!("PUT /_sim/registrations takes {{\"customerId\", \"subscriptionId\", \"registered\": true|false}}: {e}"),
                ),
            }
        }
        _ => Resp::error(
            404,
            "1000",
            &format!(
                "no admin action {} /_sim/{action}; the admin API is: GET health, stats, ledger, requests[?since=N], clock, faults, restrictions, billing; POST clock/advance?seconds=N, billing/close; PUT faults, restrictions, registrations, billing (see README)",
                req.method
            ),
        ),
    }
}

/// Binds the listener. Loopback unless the caller asks for another address.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
