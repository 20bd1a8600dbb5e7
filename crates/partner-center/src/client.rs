//! The HTTP client: one method per Partner Center call (E1-E20).
//!
//! Each method sends `MS-CorrelationId` (the caller's, one per purchase) and `MS-RequestId`.
//! Side-effecting methods take the `MS-RequestId` from the caller, who persists it before the
//! call and passes the same one again when retrying after a timeout (spec 9.2); read-only
//! methods make a fresh one per call. A 401 drops the cached token, fetches a new one and
//! repeats the call once with the *same* `MS-RequestId`: a 401 means the request was refused
//! before processing, and reusing the id keeps the caller's persisted intent accurate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use reqwest::{header, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{Clock, Credentials, GrantKind, Secret, SystemClock, TokenSource};
use crate::config::ClientConfig;
use crate::error::{classify_lost_reply, classify_status, CallContext, Effect, Error, ErrorClass};
use crate::ids::{CorrelationId, RequestId};
use crate::models::{
    ApiFault, Availability, Cart, CartCheckoutResult, Checked, Collection, Entitlement,
    EntitlementType, InventoryCheckRequest, InventoryItem, Link, NewOrder, Order,
    OrderCancellation, OrderLineItemProvisioningStatus, Product, ReservedInstanceArtifactDetails,
    Sku, SubscriptionRegistrationStatus, ThrottleFault,
};

/// A successful reply and what the call looked like on the wire.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub value: T,
    pub meta: CallMeta,
}

/// Facts about one call, for the saga's attempt history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallMeta {
    /// The HTTP status of the (last) response.
    pub status: u16,
    /// Wall time of the whole call, including a token refresh and pages.
    pub latency: Duration,
    pub request_id: RequestId,
    pub correlation_id: CorrelationId,
    /// `Location` of a 202 (registration).
    pub location: Option<String>,
    /// How many HTTP requests the call took (pages, the retry after a 401).
    pub http_requests: u32,
}

/// Longest `Retry-After` honoured as given; longer (absurd) values are capped to this so one
/// bad header cannot park a purchase for years. The saga's own deadlines still apply.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The Partner Center REST client. Cheap to clone; share one per process.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    config: ClientConfig,
    /// `config.base_url`, parsed and checked once; every URL called is checked against it.
    base: crate::endpoint::CheckedUrl,
    app_only: TokenSource,
    app_user: Option<TokenSource>,
    /// Microsoft Graph (the billing export, E29): its own base and token audience.
    graph_base: crate::endpoint::CheckedUrl,
    graph: TokenSource,
    clock: Arc<dyn Clock>,
    tenant: String,
}

/// Which service a call goes to; each has its own base URL and token audience, and a token is
/// sent only to its own service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    PartnerCenter,
    Graph,
}

pub(crate) struct Call {
    method: Method,
    /// Path and query under `{base}/v1`, starting with `/`; or an absolute same-origin URL.
    target: String,
    body: Option<Vec<u8>>,
    effect: Effect,
    grant: GrantKind,
    correlation_id: CorrelationId,
    request_id: RequestId,
    host: Host,
    accept: &'static str,
    /// Extra request headers (`MS-ContinuationToken`).
    headers: Vec<(&'static str, String)>,
}

pub(crate) struct RawReply {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    pub(crate) location: Option<String>,
    pub(crate) context: CallContext,
    pub(crate) http_requests: u32,
    pub(crate) retry_after: Option<Duration>,
}

impl Client {
    /// A client for `config.base_url`, authenticating with `credentials`, on the wall clock.
    pub fn new(config: ClientConfig, credentials: Credentials) -> Result<Self, Error> {
        Self::with_clock(config, credentials, Arc::new(SystemClock))
    }

    /// As [`Client::new`], with an injected clock for token expiry.
    pub fn with_clock(
        config: ClientConfig,
        credentials: Credentials,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        // Credentials go to these two URLs only: both pass the one check (crate::endpoint).
        let base = crate::endpoint::checked_url("the Partner Center base URL", &config.base_url)
            .map_err(Error::config)?;
        let token_url = crate::endpoint::checked_url("the token URL", &credentials.token_url)
            .map_err(Error::config)?;
        // Entra ID token URLs are `/{tenant}/oauth2/...`: the tenant the rate limits apply to.
        let tenant = token_url
            .path_segments()
            .and_then(|mut s| s.next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_owned();
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::config(format!("cannot build the HTTP client: {e}")))?;
        let app_user = credentials.refresh_token.is_some().then(|| {
            TokenSource::new(
                GrantKind::AppUser,
                http.clone(),
                credentials.clone(),
                clock.clone(),
            )
        });
        let graph_base = crate::endpoint::checked_url("the Microsoft Graph URL", &config.graph_url)
            .map_err(Error::config)?;
        let graph = TokenSource::new(
            GrantKind::AppOnly,
            http.clone(),
            Credentials {
                resource: config.graph_resource.clone(),
                refresh_token: None,
                ..credentials.clone()
            },
            clock.clone(),
        );
        let app_only =
            TokenSource::new(GrantKind::AppOnly, http.clone(), credentials, clock.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                base,
                app_only,
                app_user,
                graph_base,
                graph,
                clock,
                tenant,
            }),
        })
    }

    /// The partner tenant, as the token URL names it (GUID or domain).
    pub fn tenant(&self) -> &str {
        &self.inner.tenant
    }

    /// Asks the token service for fresh tokens (app-only, and app+user when configured):
    /// `Ok` when it accepts our credentials. `AuthExpired` when it refuses them.
    pub async fn check_credentials(&self) -> Result<(), Error> {
        self.inner.app_only.refresh().await?;
        if let Some(app_user) = &self.inner.app_user {
            app_user.refresh().await?;
        }
        Ok(())
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Whether app+user credentials (a refresh token) are configured.
    pub fn has_app_user(&self) -> bool {
        self.inner.app_user.is_some()
    }

    // ---- E1-E2: registration ---------------------------------------------------------------

    /// E1: registers an Azure subscription for reservation purchases. Returns the `Location`.
    pub async fn register_subscription(
        &self,
        correlation_id: CorrelationId,
        request_id: RequestId,
        customer_id: &str,
        subscription_id: &str,
    ) -> Result<Reply<Option<String>>, Error> {
        let call = Call::side_effect(
            Method::POST,
            format!(
                "/customers/{}/subscriptions/{}/registrations",
                seg(customer_id),
                seg(subscription_id)
            ),
            Some(Vec::new()),
            correlation_id,
            request_id,
        );
        let started = Instant::now();
        let raw = self.execute(call).await?;
        // The 202 has no body; a body that is a Partner Center error is an error.
        let raw = refuse_error_body(raw)?;
        let location = raw.location.clone();
        Ok(Reply {
            value: location,
            meta: meta(&raw, started),
        })
    }

    /// E2: the registration status of an Azure subscription.
    pub async fn registration_status(
        &self,
        correlation_id: CorrelationId,
        customer_id: &str,
        subscription_id: &str,
    ) -> Result<Reply<SubscriptionRegistrationStatus>, Error> {
        self.get(
            correlation_id,
            format!(
                "/customers/{}/subscriptions/{}/registrationstatus",
                seg(customer_id),
                seg(subscription_id)
            ),
        )
        .await
    }

    // ---- E3-E8: catalog --------------------------------------------------------------------

    /// E3: products of a catalog view in a country, following every page.
    pub async fn list_products(
        &self,
        correlation_id: CorrelationId,
        country: &str,
        target_view: &str,
        target_segment: Option<&str>,
    ) -> Result<Reply<Vec<Product>>, Error> {
        let mut query = vec![("country", country), ("targetView", target_view)];
        if let Some(segment) = target_segment {
            query.push(("targetSegment", segment));
        }
        self.list(
            correlation_id,
            format!("/products?{}", encode_query(&query)),
        )
        .await
    }

    /// E4: one product.
    pub async fn get_product(
        &self,
        correlation_id: CorrelationId,
        product_id: &str,
        country: &str,
    ) -> Result<Reply<Product>, Error> {
        self.get(
            correlation_id,
            format!(
                "/products/{}?{}",
                seg(product_id),
                encode_query(&[("country", country)])
            ),
        )
        .await
    }

    /// E5: the SKUs of a product.
    pub async fn list_skus(
        &self,
        correlation_id: CorrelationId,
        product_id: &str,
        country: &str,
        target_segment: Option<&str>,
    ) -> Result<Reply<Vec<Sku>>, Error> {
        let mut query = vec![("country", country)];
        if let Some(segment) = target_segment {
            query.push(("targetSegment", segment));
        }
        self.list(
            correlation_id,
            format!(
                "/products/{}/skus?{}",
                seg(product_id),
                encode_query(&query)
            ),
        )
        .await
    }

    /// E6: one SKU.
    pub async fn get_sku(
        &self,
        correlation_id: CorrelationId,
        product_id: &str,
        sku_id: &str,
        country: &str,
    ) -> Result<Reply<Sku>, Error> {
        self.get(
            correlation_id,
            format!(
                "/products/{}/skus/{}?{}",
                seg(product_id),
                seg(sku_id),
                encode_query(&[("country", country)])
            ),
        )
        .await
    }

    /// E7: the availabilities of a SKU.
    pub async fn list_availabilities(
        &self,
        correlation_id: CorrelationId,
        product_id: &str,
        sku_id: &str,
        country: &str,
        target_segment: Option<&str>,
    ) -> Result<Reply<Vec<Availability>>, Error> {
        let mut query = vec![("country", country)];
        if let Some(segment) = target_segment {
            query.push(("targetSegment", segment));
        }
        self.list(
            correlation_id,
            format!(
                "/products/{}/skus/{}/availabilities?{}",
                seg(product_id),
                seg(sku_id),
                encode_query(&query)
            ),
        )
        .await
    }

    /// E8: one availability.
    pub async fn get_availability(
        &self,
        correlation_id: CorrelationId,
        product_id: &str,
        sku_id: &str,
        availability_id: &str,
        country: &str,
    ) -> Result<Reply<Availability>, Error> {
        self.get(
            correlation_id,
            format!(
                "/products/{}/skus/{}/availabilities/{}?{}",
                seg(product_id),
                seg(sku_id),
                seg(availability_id),
                encode_query(&[("country", country)])
            ),
        )
        .await
    }

    // ---- E9: inventory ---------------------------------------------------------------------

    /// E9: checks inventory. A POST, but it only computes, so it is read-only for retries.
    pub async fn check_inventory(
        &self,
        correlation_id: CorrelationId,
        country: &str,
        request: &InventoryCheckRequest,
    ) -> Result<Reply<Vec<InventoryItem>>, Error> {
        let call = Call::read_post(
            format!(
                "/extensions/product/checkinventory?{}",
                encode_query(&[("country", country)])
            ),
            to_body(request)?,
            correlation_id,
        );
        self.json(call).await
    }

    // ---- E10-E13: carts and checkout -------------------------------------------------------

    /// E10: creates a cart. The cart may come back with per-line `error`s; inspect them.
    pub async fn create_cart(
        &self,
        correlation_id: CorrelationId,
        request_id: RequestId,
        customer_id: &str,
        cart: &Cart,
    ) -> Result<Reply<Cart>, Error> {
        let call = Call::side_effect(
            Method::POST,
            format!("/customers/{}/carts", seg(customer_id)),
            Some(to_body(cart)?),
            correlation_id,
            request_id,
        );
        self.json(call).await
    }

    /// E11: reads a cart (its `status` tells whether it was submitted).
    pub async fn get_cart(
        &self,
        correlation_id: CorrelationId,
        customer_id: &str,
        cart_id: &str,
    ) -> Result<Reply<Cart>, Error> {
        self.get(
            correlation_id,
            format!("/customers/{}/carts/{}", seg(customer_id), seg(cart_id)),
        )
        .await
    }

    /// E12: replaces a cart's content (only while `Active`).
    pub async fn update_cart(
        &self,
        correlation_id: CorrelationId,
        request_id: RequestId,
        customer_id: &str,
        cart_id: &str,
        cart: &Cart,
    ) -> Result<Reply<Cart>, Error> {
        let call = Call::side_effect(
            Method::PUT,
            format!("/customers/{}/carts/{}", seg(customer_id), seg(cart_id)),
            Some(to_body(cart)?),
            correlation_id,
            request_id,
        );
        self.json(call).await
    }

    /// E13: checks out a cart: the only call that spends money.
    ///
    /// Sent with an empty body and `Content-Length: 0` (spec ambiguity 16: the docs send no
    /// body; the SDK sends `"success"`).
    pub async fn checkout(
        &self,
        correlation_id: CorrelationId,
        request_id: RequestId,
        customer_id: &str,
        cart_id: &str,
    ) -> Result<Reply<CartCheckoutResult>, Error> {
        let call = Call::side_effect(
            Method::POST,
            format!(
                "/customers/{}/carts/{}/checkout",
                seg(customer_id),
                seg(cart_id)
            ),
            Some(Vec::new()),
            correlation_id,
            request_id,
        );
        self.json(call).await
    }

    // ---- E21: a direct order --------------------------------------------------------------

    /// E21: creates an order without a cart (addendum §6 E21). Unlike a checkout it is not
    /// documented as idempotent: the caller persists `request_id` and the exact body before the
    /// first send and sends the same pair again (rule 9.13). The classes (addendum §5.5): a
    /// 400/403/404 refusal created no order (`Business`, `NotFound`); 409/800060 (`InFlight`) and
    /// any 408 or 5xx, 500/800005 included, or a lost reply (`OutcomeUnknown`) may have created
    /// it: reconcile through the order lists, never a plain re-send; a 429 (`Throttled`) or a
    /// connection never made (`Transient`) was not processed: retry later with the same id.
    pub async fn create_order(
        &self,
        correlation_id: CorrelationId,
        request_id: RequestId,
        customer_id: &str,
        order: &NewOrder,
    ) -> Result<Reply<Order>, Error> {
        let call = Call::side_effect(
            Method::POST,
            format!("/customers/{}/orders", seg(customer_id)),
            Some(to_body(order)?),
            correlation_id,
            request_id,
        );
        self.json(call).await.map_err(may_already_exist)
    }

    // ---- E14-E17, E20: orders --------------------------------------------------------------

    /// E14: one order by id (no documented visibility lag).
    pub async fn get_order(
        &self,
        correlation_id: CorrelationId,
        customer_id: &str,
        order_id: &str,
    ) -> Result<Reply<Order>, Error> {
        self.get(
            correlation_id,
            format!("/customers/{}/orders/{}", seg(customer_id), seg(order_id)),
        )
        .await
    }

    /// E15/E16: the customer's orders, optionally by billing type (`OneTime`, as the SDK sends).
    /// New orders can take up to 15 minutes to appear here.
    pub async fn list_orders(
        &self,
        correlation_id: CorrelationId,
        customer_id: &str,
        billing_type: Option<&str>,
    ) -> Result<Reply<Vec<Order>>, Error> {
        let mut target = format!("/customers/{}/orders", seg(customer_id));
        if let Some(billing_type) = billing_type {
            target.push('?');
            target.push_str(&encode_query(&[("billingType", billing_type)]));
        }
        self.list(correlation_id, target).await
    }

    /// E17: provisioning status of an order's lines (app+user only).
    pub async fn order_provisioning_status(
        &self,
        correlation_id: CorrelationId,
        customer_id: &str,
        order_id: &str,
    ) -> Result<Reply<Vec<OrderLineItemProvisioningStatus>>, Error> {
        let target = format!(
            "/customers/{}/orders/{}/provisioningstatus",
            seg(customer_id),
            seg(order_id)
        );
        self.list_as(correlation_id, target, GrantKind::AppUser)
            .await
    }

    /// E20: cancels an order or some of its lines (software only in production).
    pub async fn cancel_order(
        &self,
        correlation_id: CorrelationId,
        request_id: RequestId,
        customer_id: &str,
        cancellation: &OrderCancellation,
    ) -> Result<Reply<Order>, Error> {
        let call = Call::side_effect(
            Method::PATCH,
            format!(
                "/customers/{}/orders/{}",
                seg(customer_id),
                seg(&cancellation.id)
            ),
            Some(to_body(cancellation)?),
            correlation_id,
            request_id,
        );
        self.json(call).await
    }

    // ---- E18-E19: entitlements -------------------------------------------------------------

    /// E18: the customer's entitlements (app+user only).
    pub async fn list_entitlements(
        &self,
        correlation_id: CorrelationId,
        customer_id: &str,
        entitlement_type: Option<&EntitlementType>,
        show_expiry: bool,
    ) -> Result<Reply<Vec<Entitlement>>, Error> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(kind) = entitlement_type {
            query.push(("entitlementType", kind.as_str()));
        }
        if show_expiry {
            query.push(("showExpiry", "true"));
        }
        let mut target = format!("/customers/{}/entitlements", seg(customer_id));
        if !query.is_empty() {
            target.push('?');
            target.push_str(&encode_query(&query));
        }
        self.list_as(correlation_id, target, GrantKind::AppUser)
            .await
    }

    /// E19: the reservation details behind a reserved-instance artifact's link (app+user only).
    pub async fn get_artifact_details(
        &self,
        correlation_id: CorrelationId,
        link: &Link,
    ) -> Result<Reply<ReservedInstanceArtifactDetails>, Error> {
        let call = Call::read(link.uri.clone(), correlation_id, GrantKind::AppUser);
        self.json(call).await
    }

    // ---- plumbing --------------------------------------------------------------------------

    async fn get<T: DeserializeOwned + Checked>(
        &self,
        correlation_id: CorrelationId,
        target: String,
    ) -> Result<Reply<T>, Error> {
        self.json(Call::read(target, correlation_id, GrantKind::AppOnly))
            .await
    }

    async fn list<T: DeserializeOwned + Checked>(
        &self,
        correlation_id: CorrelationId,
        target: String,
    ) -> Result<Reply<Vec<T>>, Error> {
        self.list_as(correlation_id, target, GrantKind::AppOnly)
            .await
    }

    /// Reads a collection and follows `links.next` up to `max_pages` pages (spec ambiguity 12).
    async fn list_as<T: DeserializeOwned + Checked>(
        &self,
        correlation_id: CorrelationId,
        first: String,
        grant: GrantKind,
    ) -> Result<Reply<Vec<T>>, Error> {
        let started = Instant::now();
        let mut items = Vec::new();
        let mut target = first;
        let mut http_requests = 0;
        for _ in 0..self.inner.config.max_pages {
            let call = Call::read(target, correlation_id, grant);
            let page: Reply<Collection<T>> = self.json(call).await?;
            http_requests += page.meta.http_requests;
            let next = page.value.next_link().map(|link| link.uri.clone());
            items.extend(page.value.items);
            let Some(next) = next else {
                return Ok(Reply {
                    value: items,
                    meta: CallMeta {
                        latency: started.elapsed(),
                        http_requests,
                        ..page.meta
                    },
                });
            };
            target = next;
        }
        Err(Error::config(format!(
            "a collection had more than {} pages; raise max_pages if that is expected",
            self.inner.config.max_pages
        )))
    }

    pub(crate) async fn json<T: DeserializeOwned + Checked>(
        &self,
        call: Call,
    ) -> Result<Reply<T>, Error> {
        let started = Instant::now();
        let effect = call.effect;
        let raw = self.execute(call).await?;
        let value = read_body::<T>(effect, &raw)?;
        Ok(Reply {
            value,
            meta: meta(&raw, started),
        })
    }

    /// Sends a call with a token, refreshing once on 401, and reads the body within limits.
    pub(crate) async fn execute(&self, call: Call) -> Result<RawReply, Error> {
        let source = match call.grant {
            _ if call.host == Host::Graph => &self.inner.graph,
            GrantKind::AppOnly => &self.inner.app_only,
            GrantKind::AppUser => self.inner.app_user.as_ref().ok_or_else(|| {
                Error::config(format!(
                    "{} {} needs app+user credentials: configure a refresh token (PCSAGA_REFRESH_TOKEN or refresh_token_file)",
                    call.method,
                    path_only(&call.target)
                ))
            })?,
        };
        let url = match call.host {
            Host::PartnerCenter => self.url(&call.target)?,
            Host::Graph => self.graph_url(&call.target)?,
        };
        let mut context = CallContext {
            method: call.method.to_string(),
            path: path_only(&call.target),
            request_id: Some(call.request_id),
            correlation_id: Some(call.correlation_id),
            ..CallContext::default()
        };
        let mut rejected: Option<Secret> = None;
        let mut http_requests = 0;
        loop {
            let token = source.token(rejected.as_ref()).await?;
            http_requests += 1;
            let mut request = self
                .inner
                .http
                .request(call.method.clone(), &url)
                .bearer_auth(token.expose())
                .header(header::ACCEPT, call.accept)
                .header("MS-RequestId", call.request_id.to_string())
                .header("MS-CorrelationId", call.correlation_id.to_string())
                .header(
                    "MS-PartnerCenter-Application",
                    &self.inner.config.application_name,
                );
            for (name, value) in &call.headers {
                request = request.header(*name, value);
            }
            if let Some(body) = &call.body {
                if !body.is_empty() {
                    request = request.header(header::CONTENT_TYPE, "application/json");
                }
                request = request.body(body.clone());
            }
            let sent = request.send().await;
            crate::metrics::request(
                call.host,
                &call.method,
                sent.as_ref().ok().map(|r| r.status().as_u16()),
            );
            let response = match sent {
                Ok(response) => response,
                Err(e) if e.is_connect() => {
                    let detail = format!("could not connect: {}", describe_reqwest(&e));
                    return Err(Error::new(ErrorClass::Transient, detail, context));
                }
                Err(e) => {
                    return Err(classify_lost_reply(
                        call.effect,
                        format!("no reply: {}", describe_reqwest(&e)),
                        context,
                    ))
                }
            };
            let status = response.status();
            context.status = Some(status.as_u16());
            context.correlation_vector = header_text(&response, "MS-CV");
            if status == StatusCode::UNAUTHORIZED && rejected.is_none() {
                // One refresh, one retry (spec 2.3). Drain nothing: the body of a 401 is small
                // and dropping the response closes or recycles the connection.
                rejected = Some(token);
                continue;
            }
            let location = header_text(&response, "Location");
            let retry_after_header = header_text(&response, "Retry-After");
            let body = match read_limited(response, self.inner.config.max_response_bytes).await {
                Ok(body) => body,
                Err(detail) => {
                    return Err(if status.is_success() {
                        classify_lost_reply(
                            call.effect,
                            format!("reply body lost: {detail}"),
                            context,
                        )
                    } else {
                        classify_status(status.as_u16(), None, context)
                    })
                }
            };
            if status.is_success() {
                let retry_after =
                    parse_retry_after(retry_after_header.as_deref(), None, self.inner.clock.now());
                return Ok(RawReply {
                    status: status.as_u16(),
                    body,
                    location,
                    context,
                    http_requests,
                    retry_after,
                });
            }
            let retry_after = if status == StatusCode::TOO_MANY_REQUESTS {
                let message = serde_json::from_slice::<ThrottleFault>(&body)
                    .ok()
                    .and_then(|t| t.message);
                context.description = message.clone();
                parse_retry_after(
                    retry_after_header.as_deref(),
                    message.as_deref(),
                    self.inner.clock.now(),
                )
            } else {
                if let Ok(fault) = serde_json::from_slice::<ApiFault>(&body) {
                    context.code = fault.code;
                    context.description = fault.description;
                }
                None
            };
            return Err(classify_status(status.as_u16(), retry_after, context));
        }
    }

    /// Resolves a call target: a path under `/v1`, a link that already carries `/v1`, or an
    /// absolute URL on the same origin. Links to other hosts are refused: our token must never
    /// be sent anywhere but Partner Center.
    fn url(&self, target: &str) -> Result<String, Error> {
        let base = &self.inner.config.base_url;
        let text = if target.starts_with("http://") || target.starts_with("https://") {
            target.to_owned()
        } else {
            let path = if target.starts_with('/') {
                target.to_owned()
            } else {
                format!("/{target}")
            };
            let lower = path.to_ascii_lowercase();
            if lower.starts_with("/v1/") || lower == "/v1" {
                format!("{base}{path}")
            } else {
                format!("{base}/v1{path}")
            }
        };
        // Parsed, not compared as text: `{base}@other-host/` starts with the base and is not
        // on it (crate::endpoint).
        match reqwest::Url::parse(&text) {
            Ok(url) if crate::endpoint::same_origin(&self.inner.base, &url) => Ok(url.into()),
            _ => Err(Error::config(format!(
                "refusing to follow a link to another host: {target:?} is not under {base:?}"
            ))),
        }
    }
}

impl Client {
    /// Resolves a Graph target: an absolute URL on the Graph origin (an operation's
    /// `Location`, a manifest link) or a path under the configured Graph base. The Graph token
    /// goes nowhere else.
    fn graph_url(&self, target: &str) -> Result<String, Error> {
        let base = self.inner.config.graph_url.trim_end_matches('/');
        let text = if target.starts_with("http://") || target.starts_with("https://") {
            target.to_owned()
        } else {
            format!("{base}/{}", target.trim_start_matches('/'))
        };
        match reqwest::Url::parse(&text) {
            Ok(url) if crate::endpoint::same_origin(&self.inner.graph_base, &url) => Ok(url.into()),
            _ => Err(Error::config(format!(
                "refusing to send the Graph token to another host: {target:?} is not under {base:?}"
            ))),
        }
    }

    /// The HTTP client, for downloads that carry no token (SAS-signed blobs).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }
}

impl Call {
    pub(crate) fn read(target: String, correlation_id: CorrelationId, grant: GrantKind) -> Self {
        Self {
            method: Method::GET,
            target,
            body: None,
            effect: Effect::ReadOnly,
            grant,
            correlation_id,
            request_id: RequestId::new(),
            host: Host::PartnerCenter,
            accept: "application/json",
            headers: Vec::new(),
        }
    }

    /// The same call to Microsoft Graph.
    pub(crate) fn on_graph(mut self) -> Self {
        self.host = Host::Graph;
        self
    }

    pub(crate) fn accepting(mut self, accept: &'static str) -> Self {
        self.accept = accept;
        self
    }

    pub(crate) fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// A read-only POST (the Graph export: starting it twice is harmless).
    pub(crate) fn read_post(target: String, body: Vec<u8>, correlation_id: CorrelationId) -> Self {
        Self {
            method: Method::POST,
            body: Some(body),
            ..Self::read(target, correlation_id, GrantKind::AppOnly)
        }
    }

    fn side_effect(
        method: Method,
        target: String,
        body: Option<Vec<u8>>,
        correlation_id: CorrelationId,
        request_id: RequestId,
    ) -> Self {
        Self {
            method,
            target,
            body,
            effect: Effect::SideEffecting,
            grant: GrantKind::AppOnly,
            correlation_id,
            request_id,
            host: Host::PartnerCenter,
            accept: "application/json",
            headers: Vec::new(),
        }
    }
}

/// A 2xx carrying a Partner Center error body (the documented HTTP 200 with code 400072) is an
/// error, classified by the same table as any other status: 800060/800064/800065 stay what
/// they are. No resource of this API has top-level `code` and `description`, so their presence
/// identifies an error body.
fn refuse_error_body(raw: RawReply) -> Result<RawReply, Error> {
    match fault_of(&raw) {
        Some(error) => Err(error),
        None => Ok(raw),
    }
}

/// The error a 2xx body carries, if it is a Partner Center error body.
fn fault_of(raw: &RawReply) -> Option<Error> {
    match serde_json::from_slice::<ApiFault>(&raw.body) {
        Ok(fault) if fault.code.is_some() && fault.description.is_some() => {
            let mut context = raw.context.clone();
            context.code = fault.code;
            context.description = fault.description;
            Some(classify_status(raw.status, None, context))
        }
        _ => None,
    }
}

/// Reads a 2xx body as `T`, parsing it once: while `T` is decoded, the top-level keys `T` does
/// not know are noted, and only a body that is not a usable `T`, or that carries the error
/// body's `code` and `description` (which a lenient `T`, all of whose fields have defaults,
/// would otherwise take for an empty resource), is read again as an error body.
pub(crate) fn read_body<T: DeserializeOwned + Checked>(
    effect: Effect,
    raw: &RawReply,
) -> Result<T, Error> {
    let mut fault_keys = (false, false);
    let mut decoder = serde_json::Deserializer::from_slice(&raw.body);
    let decoded = serde_ignored::deserialize(&mut decoder, |path| {
        if let serde_ignored::Path::Map {
            parent: serde_ignored::Path::Root,
            key,
        } = path
        {
            match key.as_str() {
                "code" => fault_keys.0 = true,
                "description" => fault_keys.1 = true,
                _ => {}
            }
        }
    })
    .and_then(|value: T| decoder.end().map(|()| value));
    let unusable = match &decoded {
        Ok(value) if fault_keys != (true, true) => value.missing().map(|missing| {
            format!(
                "HTTP {} with a reply that is not usable: {missing}",
                raw.status
            )
        }),
        Ok(_) => Some(format!("HTTP {} with an error body", raw.status)),
        Err(decode_error) => Some(format!(
            "HTTP {} with a body that is not the expected JSON: {decode_error}",
            raw.status
        )),
    };
    match (decoded, unusable) {
        (Ok(value), None) => Ok(value),
        (_, detail) => Err(fault_of(raw).unwrap_or_else(|| {
            classify_lost_reply(effect, detail.unwrap_or_default(), raw.context.clone())
        })),
    }
}

/// A 408 or 5xx answering a create-order may have created the order: 500/800005 says "not
/// successful" but nothing says it was rolled back (addendum §5.5). Outcome unknown, never a
/// plain retry. (A checkout's 5xx stays `Transient`: a cart is checked out at most once.)
fn may_already_exist(error: Error) -> Error {
    match (error.class, error.status()) {
        (ErrorClass::Transient, Some(status)) if status == 408 || status >= 500 => Error {
            class: ErrorClass::OutcomeUnknown,
            detail: format!("HTTP {status}: the order may have been created"),
            ..error
        },
        _ => error,
    }
}

pub(crate) fn meta(raw: &RawReply, started: Instant) -> CallMeta {
    CallMeta {
        status: raw.status,
        latency: started.elapsed(),
        request_id: raw.context.request_id.unwrap_or_default(),
        correlation_id: raw.context.correlation_id.unwrap_or_default(),
        location: raw.location.clone(),
        http_requests: raw.http_requests,
    }
}

pub(crate) fn to_body<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value)
        .map_err(|e| Error::config(format!("cannot encode the request body: {e}")))
}

fn header_text(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn path_only(target: &str) -> String {
    target.split('?').next().unwrap_or(target).to_owned()
}

/// Reads a body, refusing more than `limit` bytes. The error text says what went wrong.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Bytes, String> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(format!(
            "body of {} bytes is over the {limit}-byte limit",
            response.content_length().unwrap_or(0)
        ));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(format!("body is over the {limit}-byte limit"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(body)),
            Err(e) => {
                return Err(format!(
                    "connection lost while reading the body: {}",
                    describe_reqwest(&e)
                ))
            }
        }
    }
}

/// A reqwest error with its causes, which is where the useful part usually is.
pub(crate) fn describe_reqwest(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Parses `Retry-After` as seconds or an HTTP date (spec ambiguity 14), falling back to the
/// seconds in a 429 body's message ("Try again in 57 seconds."). Negative or unparsable values
/// are ignored; values above [`MAX_RETRY_AFTER`] are capped to it.
pub fn parse_retry_after(
    header: Option<&str>,
    message: Option<&str>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let from_header = header.map(str::trim).and_then(|raw| {
        if let Ok(seconds) = raw.parse::<f64>() {
            return (seconds.is_finite() && seconds >= 0.0).then(|| {
                Duration::from_secs_f64(seconds.min(MAX_RETRY_AFTER.as_secs_f64()).ceil())
            });
        }
        let at: DateTime<Utc> = httpdate::parse_http_date(raw).ok()?.into();
        Some((at - now).to_std().unwrap_or(Duration::ZERO))
    });
    let from_message = || {
        let message = message?;
        let after = message
            .to_ascii_lowercase()
            .find("try again in ")
            .map(|i| i + "try again in ".len())?;
        let digits: String = message[after..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u64>().ok().map(Duration::from_secs)
    };
    from_header
        .or_else(from_message)
        .map(|d| d.min(MAX_RETRY_AFTER))
}

/// Percent-encodes one path segment.
pub(crate) fn seg(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub(crate) fn encode_query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[track_caller]
    fn check(header: Option<&str>, message: Option<&str>, expected: Option<u64>) {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .unwrap_or_default();
        assert_eq!(
            parse_retry_after(header, message, now).map(|d| d.as_secs()),
            expected,
            "{header:?} / {message:?}"
        );
    }

    #[test]
    fn retry_after_forms() {
        check(Some("57"), None, Some(57));
        check(Some(" 3 "), None, Some(3));
        check(Some("1.2"), None, Some(2));
        check(Some("0"), None, Some(0));
        check(Some("Sun, 22 Nov 2026 12:00:30 GMT"), None, Some(30));
        check(Some("Sun, 22 Nov 2026 11:00:00 GMT"), None, Some(0));
        check(Some("-5"), None, None);
        check(Some("99999999999"), None, Some(3600));
        check(Some("soon"), None, None);
        check(
            None,
            Some("Rate limit is exceeded. Try again in 57 seconds."),
            Some(57),
        );
        check(Some("garbage"), Some("Try again in 9 seconds."), Some(9));
        check(None, None, None);
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(
            seg("311qiN8iFwkv-XARWMvXRYAwYKMACVqv1"),
            "311qiN8iFwkv-XARWMvXRYAwYKMACVqv1"
        );
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
