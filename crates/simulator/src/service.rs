//! The Partner Center endpoints (E1-E20) and the token endpoint, as the spec describes them.
//!
//! Written from `shared/partner-center-api.md`, not from the client's types: bodies are built
//! and read as JSON values. Request property names are matched case-insensitively (the service
//! accepts camelCase and PascalCase, spec section 4) by normalising every key to camelCase.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method};
use serde_json::{json, Value};

use crate::catalog::{link, Catalog, ProductKind};
use crate::clock::SimClock;
use crate::config::{CheckoutReplay, SimConfig};
use crate::faults::Injector;
use crate::world::{
    CartLine, CartRecord, Grant, LedgerCart, LedgerCheckout, LedgerOrder, OrderLine, OrderRecord,
    Registration, TokenInfo, World,
};

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    pub config: SimConfig,
    pub catalog: Catalog,
    pub clock: SimClock,
    pub injector: Injector,
    pub world: Mutex<World>,
    /// Signalled each time a checkout starts processing, so tests can act while it runs.
    pub checkout_started: tokio::sync::Notify,
    /// Partner Center (`/v1`) requests being handled now, and the most ever at once.
    pub in_flight: std::sync::atomic::AtomicU64,
    pub max_in_flight: std::sync::atomic::AtomicU64,
    /// Restricted regions, changeable at run time (`PUT /_sim/restrictions`); they start as the
    /// configuration's.
    pub restrictions: std::sync::RwLock<Restrictions>,
    /// Budgets per tenant and call class (`throttle` in the configuration).
    pub throttle: crate::throttle::Throttle,
    /// Signs the access tokens (JWTs).
    pub signer: crate::jwt::Signer,
}

/// The regions the simulator refuses, now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Restrictions {
    /// Regions whose RI SKUs check-inventory reports restricted.
    pub restricted_regions: Vec<String>,
    /// Regions whose RI lines fail at checkout with 800010.
    pub checkout_restricted_regions: Vec<String>,
}

impl Restrictions {
    fn lists(list: &[String], region: &str) -> bool {
        list.iter().any(|x| x.eq_ignore_ascii_case(region))
    }
}

impl Shared {
    pub fn restrictions(&self) -> Restrictions {
        self.restrictions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn set_restrictions(&self, restrictions: Restrictions) {
        *self
            .restrictions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = restrictions;
    }

    fn inventory_restricted(&self, region: &str) -> bool {
        Restrictions::lists(&self.restrictions().restricted_regions, region)
    }

    fn checkout_restricted(&self, region: &str) -> bool {
        Restrictions::lists(&self.restrictions().checkout_restricted_regions, region)
    }

    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn completion(&self) -> chrono::Duration {
        secs(self.config.order_completion_s)
    }
}

fn secs(s: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000))
}

/// A parsed request.
#[derive(Debug)]
pub struct Req {
    pub method: Method,
    /// Path segments after `/v1`, as sent.
    pub segments: Vec<String>,
    /// Query parameters with lower-cased names.
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    fn q(&self, name: &str) -> Option<&str> {
        self.query
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The JSON body with keys normalised to camelCase.
    pub(crate) fn json(&self) -> Result<Value, Resp> {
        let value: Value = serde_json::from_slice(&self.body).map_err(|e| {
            Resp::error(
                400,
                "800002",
                &format!("Invalid request input: the body is not valid JSON ({e})."),
            )
        })?;
        Ok(camel_keys(value))
    }
}

/// A response before headers are added.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub body: Option<Value>,
    /// A body that is not JSON (a PDF, a gzip file), with its content type.
    pub raw: Option<(&'static str, Bytes)>,
    pub headers: Vec<(&'static str, String)>,
}

impl Resp {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            raw: None,
            headers: Vec::new(),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            raw: None,
            headers: Vec::new(),
        }
    }

    /// The standard error body (spec 5.1).
    pub fn error(status: u16, code: &str, description: &str) -> Self {
        Self::json(
            status,
            json!({"code": code, "description": description, "data": [], "source": "PartnerFD"}),
        )
    }

    fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// Lower-cases the first letter of every object key, recursively.
fn camel_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let mut chars = k.chars();
                    let key = match chars.next() {
                        Some(first) => first.to_lowercase().chain(chars).collect(),
                        None => k,
                    };
                    (key, camel_keys(v))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(camel_keys).collect()),
        other => other,
    }
}

fn collection(items: Vec<Value>, self_uri: &str) -> Value {
    json!({
        "totalCount": items.len(),
        "items": items,
        "links": {"self": link(self_uri)},
        "attributes": {"objectType": "Collection"},
    })
}

/// A page of `items` starting at `offset`, with `links.next` when more remain.
fn paged(items: Vec<Value>, base_uri: &str, offset: usize, page_size: usize) -> Value {
    let total = items.len();
    let page: Vec<Value> = items
        .into_iter()
        .skip(offset)
        .take(page_size.max(1))
        .collect();
    let separator = if base_uri.contains('?') { '&' } else { '?' };
    let mut value = collection(page, &format!("{base_uri}{separator}offset={offset}"));
    value["totalCount"] = json!(total);
    if offset + page_size.max(1) < total {
        value["links"]["next"] = link(&format!(
            "{base_uri}{separator}offset={}",
            offset + page_size.max(1)
        ));
    }
    value
}

fn is_guid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

// ---- token endpoint ------------------------------------------------------------------------

/// `POST /{tenant}/oauth2/token` (v1, `resource`) and `/{tenant}/oauth2/v2.0/token` (`scope`).
pub fn token(shared: &Shared, tenant: &str, v2: bool, req: &Req) -> Resp {
    let aad_error = |status: u16, error: &str, description: &str| {
        Resp::json(
            status,
            json!({"error": error, "error_description": description, "error_codes": [], "timestamp": crate::world::timestamp(Utc::now())}),
        )
    };
    let config = &shared.config;
    // Entra ID takes the tenant as its GUID or as one of its verified domain names.
    let known = tenant.eq_ignore_ascii_case(&config.tenant_id)
        || config
            .tenant_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(tenant));
    if !known {
        return aad_error(
            400,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(&req.body) {
        Ok(form) => form,
        Err(_) => {
            return aad_error(
                400,
                "invalid_request",
                "AADSTS900144: The request body must be form-encoded.",
            )
        }
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if field("client_id") != config.client_id {
        return aad_error(
            400,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    if field("client_secret") != config.client_secret {
        return aad_error(
            401,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let graph_resource = crate::billing::GRAPH_RESOURCE;
    let wants = |resource: &str| {
        if v2 {
            field("scope").split(' ').any(|s| s.starts_with(resource))
        } else {
            field("resource").trim_end_matches('/') == resource.trim_end_matches('/')
        }
    };
    let graph = wants(graph_resource);
    let audience_ok = graph || wants(&config.resource);
    if !audience_ok {
        return aad_error(
            400,
            "invalid_resource",
            "AADSTS500011: The resource principal was not found in the tenant.",
        );
    }
    let grant = match field("grant_type") {
        "client_credentials" => Grant::AppOnly,
        "refresh_token" if field("refresh_token") == config.refresh_token => Grant::AppUser,
        "refresh_token" => {
            return aad_error(
                400,
                "invalid_grant",
                "AADSTS70000: The provided refresh token is invalid or expired.",
            )
        }
        other => {
            return aad_error(
                400,
                "unsupported_grant_type",
                &format!("AADSTS70003: grant type {other:?} is not supported."),
            )
        }
    };
    let now = shared.now();
    let ttl = config.token_ttl();
    let expires = now + secs(ttl.as_secs());
    let audience = if graph {
        graph_resource
    } else {
        config.resource.as_str()
    };
    let mut claims = json!({
        "aud": audience,
        "iss": format!("https://sts.windows.net/{}/", config.tenant_id),
        "iat": now.timestamp(),
        "nbf": now.timestamp(),
        "exp": expires.timestamp(),
        "tid": config.tenant_id,
        "appid": config.client_id,
        "appidacr": "1",
        "ver": "1.0",
        "uti": uuid::Uuid::new_v4().simple().to_string(),
    });
    if grant == Grant::AppUser {
        claims["oid"] = json!(config.user_object_id);
        claims["scp"] = json!("user_impersonation");
    }
    let value = shared.signer.issue(&claims);
    {
        let mut world = shared.world();
        world.tokens.retain(|_, t| t.expires_at > now);
        world.tokens.insert(
            value.clone(),
            TokenInfo {
                grant,
                graph,
                expires_at: expires,
            },
        );
    }
    let expires_on = expires.timestamp();
    let mut body = json!({
        "token_type": "Bearer",
        "expires_in": ttl.as_secs().to_string(),
        "ext_expires_in": ttl.as_secs().to_string(),
        "expires_on": expires_on.to_string(),
        "not_before": now.timestamp().to_string(),
        "resource": audience,
        "access_token": value,
    });
    if grant == Grant::AppUser {
        body["scope"] = json!("user_impersonation");
    }
    Resp::json(200, body)
}

/// Checks the bearer token; `Err` is the 401 to send.
pub fn authenticate(shared: &Shared, req: &Req) -> Result<Grant, Resp> {
    authenticate_for(shared, req, false)
}

/// [`authenticate`] for Partner Center (`graph == false`) or Microsoft Graph: a token is valid
/// only at the service it was issued for.
pub fn authenticate_for(shared: &Shared, req: &Req, graph: bool) -> Result<Grant, Resp> {
    let unauthorized = |code: &str, description: &str| {
        Resp::error(401, code, description).with_header(
            "WWW-Authenticate",
            "OAuth realm=urn:cpsvc:cpid:pcsaga-simulator".to_owned(),
        )
    };
    let Some(header) = req.header("authorization") else {
        return Err(unauthorized(
            "800001",
            "Partner token is missing in the request context.",
        ));
    };
    let Some(token) = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
    else {
        return Err(unauthorized(
            "800001",
            "Partner token is missing in the request context.",
        ));
    };
    let world = shared.world();
    match world.tokens.get(token.trim()) {
        Some(info) if info.graph != graph => Err(unauthorized(
            "400",
            "Access denied: the access token was issued for another audience.",
        )),
        Some(info) if info.expires_at > shared.now() => Ok(info.grant),
        Some(_) => Err(unauthorized(
            "400",
            "Access denied: the access token has expired.",
        )),
        None => Err(unauthorized(
            "400",
            "Access denied: the access token is not valid.",
        )),
    }
}

/// The endpoints that accept only app+user tokens (spec 2.4).
pub fn requires_app_user(endpoint: &str) -> bool {
    matches!(
        endpoint,
        "provisioning_status"
            | "list_entitlements"
            | "artifact_details"
            | "invoice_summaries"
            | "get_invoice"
            | "invoice_statement"
    )
}

/// Our decision where the spec is silent: an app-only token on an app+user-only call is an
/// authenticated caller without the right, so 403 (not 401, which would invite a refresh).
pub fn app_user_required() -> Resp {
    Resp::error(
        403,
        "400",
        "Access denied: this operation supports App+User authentication only.",
    )
}

// ---- customers -----------------------------------------------------------------------------

pub(crate) fn customer_country(shared: &Shared, customer_id: &str) -> Result<String, Resp> {
    if !is_guid(customer_id) {
        return Err(Resp::error(
            400,
            "800002",
            &format!("Invalid request input: customer id '{customer_id}' is not a GUID."),
        ));
    }
    if let Some(customer) = shared.catalog.customer(customer_id) {
        return Ok(customer.country.clone());
    }
    shared
        .config
        .default_customer_country
        .clone()
        .ok_or_else(|| {
            Resp::error(
                403,
                "20002",
                "There is no commerce relationship between the partner and the customer.",
            )
        })
}

/// The customer-scoped catalog (`/customers/{c}/products…`): the partner-scoped answer for the
/// customer's country (a `country` the caller gives wins, as Partner Center's does).
pub fn customer_scoped(shared: &Shared, req: &Req, endpoint: &str, p: &[String]) -> Resp {
    let country = match customer_country(shared, &p[0]) {
        Ok(country) => country,
        Err(resp) => return resp,
    };
    let mut scoped = Req {
        method: req.method.clone(),
        segments: req.segments.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        body: req.body.clone(),
    };
    scoped.query.entry("country".to_owned()).or_insert(country);
    match endpoint {
        "list_products" => list_products(shared, &scoped),
        "get_product" => get_product(shared, &scoped, &p[1]),
        "list_skus" => list_skus(shared, &scoped, &p[1]),
        "get_sku" => get_sku(shared, &scoped, &p[1], &p[2]),
        "list_availabilities" => list_availabilities(shared, &scoped, &p[1], &p[2]),
        "get_availability" => get_availability(shared, &scoped, &p[1], &p[2], &p[3]),
        other => Resp::error(404, "1000", &format!("No handler for customer_{other}.")),
    }
}

/// Every customer the simulator knows: the catalog file's, and any a purchase named.
fn known_customers(shared: &Shared) -> Vec<(String, String, Option<String>)> {
    let mut customers: BTreeMap<String, (String, Option<String>)> = shared
        .catalog
        .customers()
        .map(|c| {
            (
                c.id.to_ascii_lowercase(),
                (c.country.clone(), c.company_name.clone()),
            )
        })
        .collect();
    let world = shared.world();
    let seen = world
        .carts
        .values()
        .map(|c| c.customer_id.clone())
        .chain(world.registrations.keys().map(|(c, _)| c.clone()));
    for id in seen {
        if let std::collections::btree_map::Entry::Vacant(entry) =
            customers.entry(id.to_ascii_lowercase())
        {
            if let Ok(country) = customer_country(shared, entry.key()) {
                entry.insert((country, None));
            }
        }
    }
    customers
        .into_iter()
        .map(|(id, (country, name))| (id, country, name))
        .collect()
}

/// A Customer resource with the fields a purchase flow reads (company profile with the tenant
/// and domain, billing profile with the default address's country, the relationship).
fn customer_json(id: &str, country: &str, name: Option<&str>) -> Value {
    let name = name.map_or_else(
        || format!("Customer {}", &id[..8.min(id.len())]),
        str::to_owned,
    );
    let domain = format!(
        "{}.onmicrosoft.com",
        name.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase()
    );
    json!({
        "id": id,
        "commerceId": id,
        "companyProfile": {
            "tenantId": id,
            "domain": domain,
            "companyName": name,
            "links": {"self": link(&format!("/customers/{id}/profiles/company"))},
            "attributes": {"objectType": "CustomerCompanyProfile"},
        },
        "billingProfile": {
            "id": id,
            "email": format!("billing@{domain}"),
            "culture": "en-US",
            "language": "en",
            "companyName": name,
            "defaultAddress": {"country": country, "city": "", "addressLine1": "", "postalCode": ""},
            "links": {"self": link(&format!("/customers/{id}/profiles/billing"))},
            "attributes": {"objectType": "CustomerBillingProfile"},
        },
        "relationshipToPartner": "reseller",
        "allowDelegatedAccess": true,
        "links": {"self": link(&format!("/customers/{id}"))},
        "attributes": {"objectType": "Customer"},
    })
}

pub fn list_customers(shared: &Shared, req: &Req) -> Resp {
    let items: Vec<Value> = known_customers(shared)
        .iter()
        .map(|(id, country, name)| customer_json(id, country, name.as_deref()))
        .collect();
    let size = req
        .q("size")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(shared.config.page_size)
        .clamp(1, shared.config.page_size.max(1));
    let offset = req.q("offset").and_then(|s| s.parse().ok()).unwrap_or(0);
    Resp::json(200, paged(items, "/customers", offset, size))
}

pub fn get_customer(shared: &Shared, customer: &str) -> Resp {
    match customer_country(shared, customer) {
        Ok(country) => {
            let name = shared
                .catalog
                .customer(customer)
                .and_then(|c| c.company_name.clone());
            Resp::json(
                200,
                customer_json(&customer.to_ascii_lowercase(), &country, name.as_deref()),
            )
        }
        Err(resp) => resp,
    }
}

/// The customer's subscriptions: the Azure subscriptions registrations named (an Azure plan,
/// active), and one per software subscription bought.
fn subscriptions_of(shared: &Shared, customer: &str) -> Vec<Value> {
    let world = shared.world();
    let mut items: Vec<Value> = world
        .registrations
        .keys()
        .filter(|(c, _)| c.eq_ignore_ascii_case(customer))
        .map(|(_, s)| azure_subscription(customer, s))
        .collect();
    let mut orders: Vec<&crate::world::OrderRecord> = world
        .orders
        .values()
        .filter(|o| o.customer_id.eq_ignore_ascii_case(customer))
        .collect();
    orders.sort_by_key(|o| (o.created, o.id.clone()));
    for order in orders {
        for line in order
            .lines
            .iter()
            .filter(|l| l.kind == ProductKind::SoftwareSubscription)
        {
            items.push(json!({
                "id": line.resource_id,
                "entitlementId": line.resource_id,
                "offerId": line.offer_id,
                "offerName": line.friendly_name,
                "friendlyName": line.friendly_name,
                "quantity": if line.cancelled { 0 } else { line.quantity },
                "unitType": "Licenses",
                "creationDate": crate::world::timestamp(order.created),
                "effectiveStartDate": crate::world::timestamp(order.created),
                "status": if line.cancelled { "deleted" } else { "active" },
                "autoRenewEnabled": false,
                "isTrial": false,
                "billingType": "license",
                "billingCycle": "one_time",
                "termDuration": line.term,
                "contractType": "subscription",
                "orderId": order.id,
                "links": {"self": link(&format!("/customers/{customer}/subscriptions/{}", line.resource_id))},
                "attributes": {"objectType": "Subscription"},
            }));
        }
    }
    items
}

/// An Azure plan subscription: what an RI registration names. The simulator takes any GUID
/// as one of the customer's, active.
fn azure_subscription(customer: &str, id: &str) -> Value {
    json!({
        "id": id,
        "entitlementId": id,
        "offerId": "DZH318Z0BPS6:0001",
        "offerName": "Azure plan",
        "friendlyName": "Azure plan",
        "quantity": 1,
        "unitType": "Usage-based",
        "status": "active",
        "autoRenewEnabled": false,
        "isTrial": false,
        "billingType": "usage",
        "billingCycle": "monthly",
        "contractType": "subscription",
        "links": {"self": link(&format!("/customers/{customer}/subscriptions/{id}"))},
        "attributes": {"objectType": "Subscription"},
    })
}

pub fn list_subscriptions(shared: &Shared, customer: &str) -> Resp {
    if let Err(resp) = customer_country(shared, customer) {
        return resp;
    }
    let items = subscriptions_of(shared, customer);
    Resp::json(
        200,
        collection(items, &format!("/customers/{customer}/subscriptions")),
    )
}

pub fn get_subscription(shared: &Shared, customer: &str, subscription: &str) -> Resp {
    if let Err(resp) = customer_country(shared, customer) {
        return resp;
    }
    if let Some(found) = subscriptions_of(shared, customer).into_iter().find(|s| {
        s["id"]
            .as_str()
            .is_some_and(|id| id.eq_ignore_ascii_case(subscription))
    }) {
        return Resp::json(200, found);
    }
    if is_guid(subscription) {
        return Resp::json(200, azure_subscription(customer, subscription));
    }
    Resp::error(
        404,
        "800004",
        &format!("Subscription {subscription} was not found for customer {customer}."),
    )
}

// ---- E1-E2 ---------------------------------------------------------------------------------

pub fn register(shared: &Shared, customer: &str, subscription: &str) -> Resp {
    if let Err(resp) = customer_country(shared, customer) {
        return resp;
    }
    if !is_guid(subscription) {
        return Resp::error(
            404,
            "20003",
            &format!("Subscription '{subscription}' was not found."),
        );
    }
    let mut world = shared.world();
    let key = (
        customer.to_ascii_lowercase(),
        subscription.to_ascii_lowercase(),
    );
    let current = registration_of(shared, &world, &key);
    if current == Registration::NotRegistered {
        world
            .registrations
            .insert(key, Registration::Registering(0));
    }
    Resp::empty(202).with_header(
        "Location",
        format!("/customers/{customer}/subscriptions/{subscription}/registrationstatus"),
    )
}

/// Sets a subscription's registration (the admin API): `true` registers it now, `false`
/// makes it unregistered (as if never registered).
pub fn set_registration(shared: &Shared, customer: &str, subscription: &str, registered: bool) {
    let key = (
        customer.to_ascii_lowercase(),
        subscription.to_ascii_lowercase(),
    );
    let mut world = shared.world();
    if registered {
        world.registrations.insert(key, Registration::Registered);
    } else {
        world.registrations.insert(key, Registration::NotRegistered);
    }
}

fn registration_of(shared: &Shared, world: &World, key: &(String, String)) -> Registration {
    if shared
        .config
        .preregistered_subscriptions
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&key.1))
    {
        return Registration::Registered;
    }
    world
        .registrations
        .get(key)
        .copied()
        .unwrap_or(Registration::NotRegistered)
}

pub fn registration_status(shared: &Shared, customer: &str, subscription: &str) -> Resp {
    if let Err(resp) = customer_country(shared, customer) {
        return resp;
    }
    if !is_guid(subscription) {
        return Resp::error(
            404,
            "20003",
            &format!("Subscription '{subscription}' was not found."),
        );
    }
    let mut world = shared.world();
    let key = (
        customer.to_ascii_lowercase(),
        subscription.to_ascii_lowercase(),
    );
    let state = match registration_of(shared, &world, &key) {
        Registration::Registering(polls) if polls + 1 >= shared.config.registration_polls => {
            Registration::Registered
        }
        Registration::Registering(polls) => Registration::Registering(polls + 1),
        other => other,
    };
    if state != Registration::NotRegistered {
        world.registrations.insert(key, state);
    }
    // PascalCase as in the spec's example; clients must compare case-insensitively.
    let status = match state {
        Registration::NotRegistered => "NotRegistered",
        Registration::Registering(_) => "Registering",
        Registration::Registered => "Registered",
    };
    Resp::json(
        200,
        json!({"subscriptionId": subscription, "status": status, "attributes": {"objectType": "SubscriptionRegistrationStatus"}}),
    )
}

// ---- E3-E8 ---------------------------------------------------------------------------------

fn country_of(req: &Req) -> Result<String, Resp> {
    match req.q("country") {
        Some(c) if c.len() == 2 && c.chars().all(|ch| ch.is_ascii_alphabetic()) => {
            Ok(c.to_ascii_uppercase())
        }
        Some(c) => Err(Resp::error(
            400,
            "800002",
            &format!("Invalid request input: country '{c}' is not an ISO 3166 alpha-2 code."),
        )),
        None => Err(Resp::error(
            400,
            "800002",
            "Invalid request input: the country query parameter is required.",
        )),
    }
}

fn segment_of(req: &Req) -> Result<Option<String>, Resp> {
    match req.q("targetSegment") {
        None => Ok(None),
        Some(s)
            if ["commercial", "education", "government", "nonprofit"]
                .iter()
                .any(|x| x.eq_ignore_ascii_case(s)) =>
        {
            Ok(Some(s.to_ascii_lowercase()))
        }
        Some(s) => Err(Resp::error(
            403,
            "400030",
            &format!("targetSegment '{s}' is not allowed."),
        )),
    }
}

pub fn list_products(shared: &Shared, req: &Req) -> Resp {
    let country = match country_of(req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(view) = req.q("targetView") else {
        return Resp::error(
            400,
            "800002",
            "Invalid request input: the targetView query parameter is required.",
        );
    };
    const VIEWS: &[&str] = &[
        "Azure",
        "AzureReservations",
        "AzureReservationsVM",
        "AzureReservationsSQL",
        "AzureReservationsCosmosDb",
        "MicrosoftAzure",
        "OnlineServices",
        "Software",
        "SoftwareSUSELinux",
        "SoftwarePerpetual",
        "SoftwareSubscriptions",
    ];
    if !VIEWS.iter().any(|v| v.eq_ignore_ascii_case(view)) {
        return Resp::error(
            403,
            "400036",
            &format!("targetView '{view}' is not allowed."),
        );
    }
    if let Err(r) = segment_of(req) {
        return r;
    }
    let items = shared
        .catalog
        .products
        .iter()
        .filter(|p| p.target_views.iter().any(|v| v.eq_ignore_ascii_case(view)))
        .filter(|p| shared.catalog.sold_in(p, &country))
        .map(|p| shared.catalog.product_json(p, &country))
        .collect();
    Resp::json(
        200,
        collection(
            items,
            &format!("/products?country={country}&targetView={view}"),
        ),
    )
}

fn find_product<'a>(
    shared: &'a Shared,
    id: &str,
    country: &str,
) -> Result<&'a crate::catalog::ProductEntry, Resp> {
    shared
        .catalog
        .product(id)
        .filter(|p| shared.catalog.sold_in(p, country))
        .ok_or_else(|| Resp::error(404, "400013", &format!("Product '{id}' was not found.")))
}

pub fn get_product(shared: &Shared, req: &Req, product: &str) -> Resp {
    let country = match country_of(req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match find_product(shared, product, &country) {
        Ok(p) => Resp::json(200, shared.catalog.product_json(p, &country)),
        Err(r) => r,
    }
}

pub fn list_skus(shared: &Shared, req: &Req, product: &str) -> Resp {
    let country = match country_of(req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = segment_of(req) {
        return r;
    }
    match find_product(shared, product, &country) {
        Ok(p) => {
            let items = p
                .skus
                .iter()
                .map(|s| shared.catalog.sku_json(p, s, &country))
                .collect();
            Resp::json(
                200,
                collection(items, &format!("/products/{}/skus?country={country}", p.id)),
            )
        }
        Err(r) => r,
    }
}

pub fn get_sku(shared: &Shared, req: &Req, product: &str, sku: &str) -> Resp {
    let country = match country_of(req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let p = match find_product(shared, product, &country) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match p.skus.iter().find(|s| s.id.eq_ignore_ascii_case(sku)) {
        Some(s) => Resp::json(200, shared.catalog.sku_json(p, s, &country)),
        None => Resp::error(
            404,
            "400018",
            &format!("SKU '{sku}' of product '{product}' was not found."),
        ),
    }
}

pub fn list_availabilities(shared: &Shared, req: &Req, product: &str, sku: &str) -> Resp {
    let country = match country_of(req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let segment = match segment_of(req) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let p = match find_product(shared, product, &country) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(s) = p.skus.iter().find(|s| s.id.eq_ignore_ascii_case(sku)) else {
        return Resp::error(
            404,
            "400018",
            &format!("SKU '{sku}' of product '{product}' was not found."),
        );
    };
    let mut items = Vec::new();
    for a in &s.availabilities {
        for seg in &a.segments {
            if segment
                .as_deref()
                .is_none_or(|wanted| wanted.eq_ignore_ascii_case(seg))
            {
                items.push(shared.catalog.availability_json(p, s, a, &country, seg));
            }
        }
    }
    let mut uri = format!(
        "/products/{}/skus/{}/availabilities?country={country}",
        p.id, s.id
    );
    if let Some(seg) = &segment {
        uri.push_str(&format!("&targetSegment={seg}"));
    }
    Resp::json(200, collection(items, &uri))
}

pub fn get_availability(
    shared: &Shared,
    req: &Req,
    product: &str,
    sku: &str,
    availability: &str,
) -> Resp {
    let country = match country_of(req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let p = match find_product(shared, product, &country) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(s) = p.skus.iter().find(|s| s.id.eq_ignore_ascii_case(sku)) else {
        return Resp::error(
            404,
            "400018",
            &format!("SKU '{sku}' of product '{product}' was not found."),
        );
    };
    match s
        .availabilities
        .iter()
        .find(|a| a.id.eq_ignore_ascii_case(availability))
    {
        Some(a) => {
            let segment = a.segments.first().map_or("commercial", String::as_str);
            Resp::json(
                200,
                shared.catalog.availability_json(p, s, a, &country, segment),
            )
        }
        None => Resp::error(
            404,
            "400019",
            &format!("Availability '{availability}' was not found."),
        ),
    }
}

// ---- E9 ------------------------------------------------------------------------------------

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
}

pub fn check_inventory(shared: &Shared, req: &Req) -> Resp {
    let country = match country_of(req) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = match req.json() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let Some(targets) = body
        .get("targetItems")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    else {
        return Resp::error(
            400,
            "800002",
            "Invalid request input: targetItems must be a non-empty array.",
        );
    };
    let context: BTreeMap<String, String> = body
        .get("inventoryContext")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.to_ascii_lowercase(),
                        v.as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for target in targets {
        let Some(product_id) = target.get("productId").and_then(Value::as_str) else {
            return Resp::error(
                400,
                "800002",
                "Invalid request input: every target item needs a productId.",
            );
        };
        let Some(product) = shared
            .catalog
            .product(product_id)
            .filter(|p| shared.catalog.sold_in(p, &country))
        else {
            continue; // items not found in the catalog are silently omitted (spec E9)
        };
        let wanted_sku = target.get("skuId").and_then(Value::as_str);
        for sku in product
            .skus
            .iter()
            .filter(|s| wanted_sku.is_none_or(|w| w.eq_ignore_ascii_case(&s.id)))
        {
            for variable in sku.inventory_variables() {
                let key = lower_first(&variable).to_ascii_lowercase();
                if context.get(&key).is_none_or(String::is_empty) {
                    return Resp::error(
                        400,
                        "800002",
                        &format!(
                            "Invalid request input: inventoryContext is missing '{}'.",
                            lower_first(&variable)
                        ),
                    );
                }
            }
            let region = sku.attribute("armRegionName");
            if let (Some(sent), Some(expected)) = (context.get("armregionname"), &region) {
                if !sent.eq_ignore_ascii_case(expected) {
                    return Resp::error(400, "800002", &format!("Invalid request input: armRegionName '{sent}' does not match the SKU's region '{expected}'."));
                }
            }
            let restricted = region
                .as_ref()
                .is_some_and(|r| shared.inventory_restricted(r));
            let restrictions = if restricted {
                let r = region.clone().unwrap_or_default();
                json!([{"reasonCode": "NotAvailableForSubscription", "description": format!("Restriction identified of type 'Location' with values '{r}'."), "properties": {"type": "Location", "values": r}}])
            } else {
                json!([])
            };
            out.push(json!({"productId": product.id, "skuId": sku.id, "isRestricted": restricted, "restrictions": restrictions}));
        }
    }
    Resp::json(200, Value::Array(out))
}

// ---- E10-E13 -------------------------------------------------------------------------------

fn line_error(code: &str, description: String) -> Option<(String, String)> {
    Some((code.to_owned(), description))
}

/// Validates one cart line; the line comes back with server fields and maybe an `error`.
pub(crate) fn validate_line(
    shared: &Shared,
    world: &World,
    customer: &str,
    country: &str,
    index: usize,
    raw: &Value,
) -> Result<CartLine, Resp> {
    let Some(object) = raw.as_object() else {
        return Err(Resp::error(
            400,
            "800002",
            &format!("Invalid request input: lineItems[{index}] is not an object."),
        ));
    };
    let mut line = object.clone();
    let catalog_item_id = object
        .get("catalogItemId")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let Some(quantity) = object.get("quantity").and_then(Value::as_i64) else {
        return Err(Resp::error(
            400,
            "800002",
            &format!("Invalid request input: lineItems[{index}].quantity must be an integer."),
        ));
    };
    if !line.contains_key("id") {
        line.insert("id".into(), json!(index));
    }
    line.insert(
        "currencyCode".into(),
        json!(shared.catalog.currency_code(country)),
    );
    let mut kind = None;
    let mut region = None;
    let mut group = "0".to_owned();
    let error = match shared.catalog.catalog_item(&catalog_item_id) {
        None => line_error("catalog_item_id_is_not_valid", format!("Catalog item id '{catalog_item_id}' is not valid.")),
        Some((product, _, _)) if !shared.catalog.sold_in(product, country) => line_error(
            "catalog_item_id_is_not_valid",
            format!("Catalog item id '{catalog_item_id}' is not available in the customer's market ({country})."),
        ),
        Some((product, sku, availability)) => {
            kind = Some(product.kind);
            region = sku.attribute("armRegionName");
            // Our grouping: one-time items (reservations, perpetual software) share group "0",
            // as in the spec's create-cart example; software subscriptions go to group "1".
            if product.kind == ProductKind::SoftwareSubscription {
                group = "1".to_owned();
            }
            let (min, max) = sku.quantity_bounds();
            let cycle = object.get("billingCycle").and_then(Value::as_str).unwrap_or("");
            let context: BTreeMap<String, String> = object
                .get("provisioningContext")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap_or_default().to_owned())).collect())
                .unwrap_or_default();
            let missing: Vec<String> = sku
                .provisioning_variables()
                .iter()
                .map(|v| lower_first(v))
                .filter(|v| context.get(&v.to_ascii_lowercase()).is_none_or(String::is_empty))
                .collect();
            let term = object.get("termDuration").and_then(Value::as_str);
            let terms: Vec<String> = availability.terms.as_array().map(|t| t.iter().filter_map(|x| x["duration"].as_str().map(str::to_owned)).collect()).unwrap_or_default();
            if quantity < min || quantity > max {
                line_error("invalid_input", format!("Quantity {quantity} is outside the allowed range {min}..{max}."))
            } else if !sku.billing_cycles().iter().any(|c| c.replace('_', "").eq_ignore_ascii_case(&cycle.replace('_', ""))) {
                line_error("billing_plan_not_supported", format!("Billing cycle '{cycle}' is not supported by this SKU."))
            } else if !missing.is_empty() {
                line_error("invalid_input", format!("provisioningContext is missing: {}.", missing.join(", ")))
            } else if let Some(t) = term.filter(|t| !terms.iter().any(|x| x.eq_ignore_ascii_case(t))) {
                line_error("invalid_input", format!("Term duration '{t}' is not offered by this availability."))
            } else if sku.prerequisites().iter().any(|p| p.eq_ignore_ascii_case("AzureSubscriptionRegistration")) {
                let subscription = context.get("subscriptionid").cloned().unwrap_or_default();
                let key = (customer.to_ascii_lowercase(), subscription.to_ascii_lowercase());
                if registration_of(shared, world, &key) != Registration::Registered {
                    line_error("subscription_not_registered", format!("Subscription '{subscription}' is not registered for reservation purchases."))
                } else if region.as_ref().is_some_and(|r| shared.inventory_restricted(r)) {
                    line_error("inventory_not_available", format!("Inventory is not available in region '{}'.", region.clone().unwrap_or_default()))
                } else {
                    None
                }
            } else {
                None
            }
        }
    };
    line.insert("orderGroup".into(), json!(group));
    line.remove("error");
    if let Some((code, description)) = &error {
        line.insert(
            "error".into(),
            json!({"errorCode": code, "errorDescription": description}),
        );
    }
    Ok(CartLine {
        json: Value::Object(line),
        error,
        order_group: group,
        kind,
        region,
    })
}

fn cart_json(cart: &CartRecord) -> Value {
    let ts = crate::world::timestamp;
    let mut value = json!({
        "id": cart.id,
        "creationTimestamp": ts(cart.created),
        "lastModifiedTimestamp": ts(cart.modified),
        "expirationTimestamp": ts(cart.expires),
        "lastModifiedUser": "1824b7fc-2fac-4478-b177-66823c40ab75",
        "status": if cart.ordered { "Ordered" } else { "Active" },
        "lineItems": cart.lines.iter().map(|l| l.json.clone()).collect::<Vec<_>>(),
        "links": {"self": link(&format!("/customers/{}/carts/{}", cart.customer_id, cart.id))},
        "attributes": {"objectType": "Cart"},
    });
    if let Some(accepted) = cart.attestation {
        value["partnerOnRecordAttestationAccepted"] = json!(accepted);
    }
    value
}

fn validate_lines(
    shared: &Shared,
    world: &World,
    customer: &str,
    country: &str,
    body: &Value,
) -> Result<Vec<CartLine>, Resp> {
    let Some(items) = body
        .get("lineItems")
        .and_then(Value::as_array)
        .filter(|items| !items.is_empty())
    else {
        return Err(Resp::error(
            400,
            "800002",
            "Invalid request input: lineItems must hold at least one item.",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| validate_line(shared, world, customer, country, i, raw))
        .collect()
}

fn friendly_names(lines: &[CartLine]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            l.json
                .get("friendlyName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// What a create call (a cart, a direct order) starts from: the customer's country, the body,
/// and the key of its `MS-RequestId` per customer (lowercase); or the refusal.
pub(crate) fn create_request(
    shared: &Shared,
    req: &Req,
    customer: &str,
    request_id: &str,
) -> Result<(String, Value, (String, String)), Resp> {
    let country = customer_country(shared, customer)?;
    let body = req.json()?;
    let key = (
        customer.to_ascii_lowercase(),
        request_id.to_ascii_lowercase(),
    );
    Ok((country, body, key))
}

pub fn create_cart(shared: &Shared, req: &Req, customer: &str, request_id: &str) -> Resp {
    let (country, body, key) = match create_request(shared, req, customer, request_id) {
        Ok(parts) => parts,
        Err(refused) => return refused,
    };
    let mut world = shared.world();
    if let Some(existing) = world
        .cart_requests
        .get(&key)
        .and_then(|id| world.carts.get(id))
    {
        return Resp::json(201, cart_json(existing));
    }
    let lines = match validate_lines(shared, &world, customer, &country, &body) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let now = shared.now();
    let cart = CartRecord {
        id: uuid::Uuid::new_v4().to_string(),
        customer_id: customer.to_owned(),
        created: now,
        modified: now,
        expires: now + secs(shared.config.cart_ttl_s),
        ordered: false,
        checkout_in_progress: false,
        attestation: body
            .get("partnerOnRecordAttestationAccepted")
            .and_then(Value::as_bool),
        lines,
        groups: BTreeMap::new(),
    };
    world.ledger.carts.push(LedgerCart {
        cart_id: cart.id.clone(),
        customer_id: customer.to_owned(),
        request_id: Some(request_id.to_owned()),
        created_at: now,
        friendly_names: friendly_names(&cart.lines),
    });
    world.cart_requests.insert(key, cart.id.clone());
    let response = Resp::json(201, cart_json(&cart));
    world.carts.insert(cart.id.clone(), cart);
    response
}

fn live_cart<'w>(
    shared: &Shared,
    world: &'w mut World,
    customer: &str,
    cart_id: &str,
) -> Result<&'w mut CartRecord, Resp> {
    let now = shared.now();
    match world.carts.get_mut(cart_id) {
        Some(cart)
            if cart.customer_id.eq_ignore_ascii_case(customer)
                && (cart.ordered || now < cart.expires) =>
        {
            Ok(cart)
        }
        _ => Err(Resp::error(
            404,
            "800008",
            &format!("Cart '{cart_id}' could not be retrieved (unknown or expired)."),
        )),
    }
}

pub fn get_cart(shared: &Shared, customer: &str, cart_id: &str) -> Resp {
    let mut world = shared.world();
    match live_cart(shared, &mut world, customer, cart_id) {
        Ok(cart) => Resp::json(200, cart_json(cart)),
        Err(r) => r,
    }
}

pub fn update_cart(shared: &Shared, req: &Req, customer: &str, cart_id: &str) -> Resp {
    let country = match customer_country(shared, customer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = match req.json() {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut world = shared.world();
    let lines = match validate_lines(shared, &world, customer, &country, &body) {
        Ok(l) => l,
        Err(r) => return r,
    };
    let now = shared.now();
    let cart = match live_cart(shared, &mut world, customer, cart_id) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if cart.ordered || cart.checkout_in_progress {
        return Resp::error(
            400,
            "800065",
            "Cannot update a cart that was already submitted.",
        );
    }
    cart.lines = lines;
    cart.modified = now;
    // The spec's update example answers 201 Created.
    Resp::json(201, cart_json(cart))
}

/// The checkout result for a cart whose groups are settled.
fn checkout_result(shared: &Shared, world: &World, cart: &CartRecord) -> Value {
    let now = shared.now();
    let mut orders = Vec::new();
    let mut errors = Vec::new();
    for (group, outcome) in &cart.groups {
        match outcome {
            Ok(order_id) => {
                if let Some(order) = world.orders.get(order_id) {
                    orders.push(
                        world
                            .order_json(order, world.order_status(order, now, shared.completion())),
                    );
                }
            }
            Err((code, description)) => errors
                .push(json!({"orderGroupId": group, "code": code, "description": description})),
        }
    }
    json!({"orders": orders, "orderErrors": errors, "attributes": {"objectType": "CartCheckoutResult"}})
}

/// E13. Idempotent per cart: a cart already checked out returns its first result (or 800065,
/// per configuration), and failed groups are attempted again.
pub async fn checkout(shared: &Shared, customer: &str, cart_id: &str, request_id: &str) -> Resp {
    {
        let mut world = shared.world();
        let cart = match live_cart(shared, &mut world, customer, cart_id) {
            Ok(c) => c,
            Err(r) => return r,
        };
        if cart.checkout_in_progress {
            return Resp::error(
                409,
                "800064",
                "The cart is being processed by another request.",
            );
        }
        if cart.ordered && shared.config.checkout_replay == CheckoutReplay::AlreadySubmitted {
            return Resp::error(400, "800065", "Cannot check out an already submitted cart.");
        }
        if !cart.ordered {
            if let Some(bad) = cart.lines.iter().find(|l| l.error.is_some()) {
                let (code, _) = bad.error.clone().unwrap_or_default();
                return Resp::error(
                    400,
                    "800009",
                    &format!("Error in cart item(s): line {} has {code}.", bad.json["id"]),
                );
            }
        }
        cart.checkout_in_progress = true;
    }
    shared.checkout_started.notify_one();
    if shared.config.checkout_duration_ms > 0 {
        tokio::time::sleep(Duration::from_millis(shared.config.checkout_duration_ms)).await;
    }
    let mut world = shared.world();
    let now = shared.now();
    let Some(mut cart) = world.carts.get(cart_id).cloned() else {
        return Resp::error(
            404,
            "800008",
            &format!("Cart '{cart_id}' could not be retrieved."),
        );
    };
    let groups: BTreeMap<String, Vec<&CartLine>> =
        cart.lines.iter().fold(BTreeMap::new(), |mut acc, line| {
            acc.entry(line.order_group.clone())
                .or_insert_with(Vec::new)
                .push(line);
            acc
        });
    let country = customer_country(shared, customer).unwrap_or_else(|_| "US".to_owned());
    let mut created = Vec::new();
    for (group, lines) in groups {
        if matches!(cart.groups.get(&group), Some(Ok(_))) {
            continue;
        }
        let blocked = lines
            .iter()
            .find_map(|l| l.region.as_ref().filter(|r| shared.checkout_restricted(r)));
        if let Some(region) = blocked {
            cart.groups.insert(
                group,
                Err((
                    800_010,
                    format!(
                        "Inventory is not available for the catalog item in region '{region}'."
                    ),
                )),
            );
            continue;
        }
        let order_id = place_order(
            shared,
            &mut world,
            (customer, &country),
            &lines,
            (&cart.id, &group),
            now,
        );
        cart.groups.insert(group, Ok(order_id.clone()));
        created.push(order_id);
    }
    cart.ordered = true;
    cart.checkout_in_progress = false;
    let names = friendly_names(&cart.lines);
    let errors: Vec<String> = cart
        .groups
        .iter()
        .filter_map(|(g, o)| o.as_ref().err().map(|(code, _)| format!("{g}:{code}")))
        .collect();
    let all_orders: Vec<String> = cart
        .groups
        .values()
        .filter_map(|o| o.as_ref().ok().cloned())
        .collect();
    match world
        .ledger
        .checkouts
        .iter_mut()
        .find(|c| c.cart_id == cart.id)
    {
        Some(entry) => {
            entry.calls += 1;
            entry.request_ids.push(request_id.to_owned());
            entry.orders = all_orders;
            entry.order_errors = errors;
        }
        None => world.ledger.checkouts.push(LedgerCheckout {
            cart_id: cart.id.clone(),
            customer_id: customer.to_owned(),
            calls: 1,
            request_ids: vec![request_id.to_owned()],
            first_at: now,
            orders: all_orders,
            order_errors: errors,
            friendly_names: names,
        }),
    }
    let result = checkout_result(shared, &world, &cart);
    world.carts.insert(cart.id.clone(), cart);
    Resp::json(201, result)
}

/// Creates an order of `lines` for the customer, pending, as a checkout's order group or a
/// direct order (E21) does: in the ledger, the customer's order list (after the list lag) and
/// its entitlements. Returns its id.
pub(crate) fn place_order(
    shared: &Shared,
    world: &mut World,
    (customer, country): (&str, &str),
    lines: &[&CartLine],
    (cart_id, group): (&str, &str),
    now: DateTime<Utc>,
) -> String {
    let order_id = world.new_order_id();
    let alternate_id = format!("{:012x}", uuid::Uuid::new_v4().as_u128() & 0xFFFF_FFFF_FFFF);
    let order_lines = lines
        .iter()
        .enumerate()
        .map(|(number, line)| {
            let offer_id = line.json["catalogItemId"].as_str().unwrap_or("").to_owned();
            let item = shared.catalog.catalog_item(&offer_id);
            let (product_id, sku_id, title) = item.map_or_else(Default::default, |(p, s, _)| {
                (p.id.clone(), s.id.clone(), s.title())
            });
            OrderLine {
                number: number as i64,
                offer_id,
                product_id,
                sku_id,
                kind: line.kind.unwrap_or(ProductKind::PerpetualSoftware),
                term: line
                    .json
                    .get("termDuration")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                // A partner-set friendly name is echoed into the order line (spec
                // ambiguity 4 decided: yes, unless `echo_friendly_names` is off), else the
                // SKU title as in the examples.
                friendly_name: line
                    .json
                    .get("friendlyName")
                    .and_then(Value::as_str)
                    .filter(|_| shared.config.echo_friendly_names)
                    .map_or(title, str::to_owned),
                quantity: line.json["quantity"].as_i64().unwrap_or(0),
                cancelled: false,
                provisioning_context: line
                    .json
                    .get("provisioningContext")
                    .cloned()
                    .unwrap_or(json!({})),
                resource_id: uuid::Uuid::new_v4().to_string(),
            }
        })
        .collect::<Vec<_>>();
    let order = OrderRecord {
        id: order_id.clone(),
        alternate_id,
        customer_id: customer.to_owned(),
        cart_id: cart_id.to_owned(),
        order_group: group.to_owned(),
        created: now,
        currency: shared.catalog.currency_code(country),
        currency_symbol: shared.catalog.currency_symbol(country),
        country: country.to_owned(),
        lines: order_lines,
    };
    world.ledger.orders.push(LedgerOrder {
        order_id: order_id.clone(),
        cart_id: cart_id.to_owned(),
        customer_id: customer.to_owned(),
        order_group: group.to_owned(),
        created_at: now,
        offer_ids: order.lines.iter().map(|l| l.offer_id.clone()).collect(),
        // What the partner sent in the cart lines, whether or not the order echoes it:
        // the ledger is the test harness's truth of which purchase bought what.
        friendly_names: lines
            .iter()
            .map(|l| {
                l.json
                    .get("friendlyName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect(),
        quantities: order.lines.iter().map(|l| l.quantity).collect(),
        cancelled_lines: Vec::new(),
    });
    world
        .customer_orders
        .entry(customer.to_ascii_lowercase())
        .or_default()
        .push(order_id.clone());
    world.orders.insert(order_id.clone(), order);
    order_id
}

/// Clears a checkout left in progress when its request was abandoned (hang or drop faults).
pub fn release_checkout(shared: &Shared, cart_id: &str) {
    if let Some(cart) = shared.world().carts.get_mut(cart_id) {
        cart.checkout_in_progress = false;
    }
}

// ---- E14-E17, E20 --------------------------------------------------------------------------

pub fn get_order(shared: &Shared, customer: &str, order_id: &str) -> Resp {
    let world = shared.world();
    match world
        .orders
        .get(order_id)
        .filter(|o| o.customer_id.eq_ignore_ascii_case(customer))
    {
        Some(order) => Resp::json(
            200,
            world.order_json(
                order,
                world.order_status(order, shared.now(), shared.completion()),
            ),
        ),
        None => Resp::error(404, "20000", &format!("Order '{order_id}' was not found.")),
    }
}

pub fn list_orders(shared: &Shared, req: &Req, customer: &str) -> Resp {
    if let Err(r) = customer_country(shared, customer) {
        return r;
    }
    let billing = req
        .q("billingType")
        .map(|b| b.replace('_', "").to_ascii_lowercase());
    if let Some(b) = &billing {
        if ![
            "onetime",
            "monthly",
            "annual",
            "none",
            "triennial",
            "biennial",
            "unknown",
        ]
        .contains(&b.as_str())
        {
            return Resp::error(
                400,
                "900126",
                &format!("Unable to parse enum value '{b}' for billingType."),
            );
        }
    }
    let offset = req.q("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let now = shared.now();
    let lag = secs(shared.config.order_list_lag_s);
    let world = shared.world();
    let items: Vec<Value> = world
        .customer_orders
        .get(&customer.to_ascii_lowercase())
        .into_iter()
        .flatten()
        .filter_map(|id| world.orders.get(id))
        .filter(|o| now >= o.created + lag)
        .filter(|_| billing.as_deref().is_none_or(|b| b == "onetime"))
        .map(|o| world.order_json(o, world.order_status(o, now, shared.completion())))
        .collect();
    let mut base = format!("/customers/{customer}/orders");
    if let Some(b) = req.q("billingType") {
        base.push_str(&format!("?billingType={b}"));
    }
    Resp::json(200, paged(items, &base, offset, shared.config.page_size))
}

pub fn provisioning_status(shared: &Shared, customer: &str, order_id: &str) -> Resp {
    let world = shared.world();
    let Some(order) = world
        .orders
        .get(order_id)
        .filter(|o| o.customer_id.eq_ignore_ascii_case(customer))
    else {
        return Resp::error(404, "20000", &format!("Order '{order_id}' was not found."));
    };
    let completed = shared.now() >= order.created + shared.completion();
    let items = order
        .lines
        .iter()
        .map(|line| {
            let status = if line.cancelled { "unfulfilled" } else if completed { "fulfilled" } else { "prefulfillmentpending" };
            json!({"orderLineItemId": line.number, "lineItemNumber": line.number, "status": status,
                   "quantityProvisioningInformation": [{"quantity": line.quantity, "status": status}]})
        })
        .collect();
    Resp::json(
        200,
        collection(
            items,
            &format!("/customers/{customer}/orders/{order_id}/provisioningstatus"),
        ),
    )
}

pub fn cancel_order(shared: &Shared, req: &Req, customer: &str, order_id: &str) -> Resp {
    let body = match req.json() {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !body
        .get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| s.eq_ignore_ascii_case("cancelled"))
    {
        return Resp::error(
            400,
            "800002",
            "Invalid request input: only status 'cancelled' can be set.",
        );
    }
    let wanted: Option<Vec<i64>> = body
        .get("lineItems")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .map(|lines| {
            lines
                .iter()
                .filter_map(|l| l.get("lineItemNumber").and_then(Value::as_i64))
                .collect()
        });
    let now = shared.now();
    let window = chrono::Duration::days(
        i64::try_from(shared.config.cancellation_window_days).unwrap_or(i64::MAX / 86_400_000),
    );
    let mut world = shared.world();
    let Some(order) = world
        .orders
        .get_mut(order_id)
        .filter(|o| o.customer_id.eq_ignore_ascii_case(customer))
    else {
        return Resp::error(404, "20000", &format!("Order '{order_id}' was not found."));
    };
    let targets: Vec<i64> =
        wanted.unwrap_or_else(|| order.lines.iter().map(|l| l.number).collect());
    for number in &targets {
        let Some(line) = order.lines.iter().find(|l| l.number == *number) else {
            return Resp::error(
                400,
                "800071",
                &format!(
                    "Line item number {number} must be between 0 and {}.",
                    order.lines.len().saturating_sub(1)
                ),
            );
        };
        if line.kind == ProductKind::Reservation {
            return Resp::error(403, "800019", "Non-sandbox tenants can only cancel software subscriptions and perpetual software.");
        }
    }
    if now > order.created + window {
        return Resp::error(
            400,
            "900117",
            &format!(
                "The order is past the {}-day cancellation window.",
                shared.config.cancellation_window_days
            ),
        );
    }
    for line in order
        .lines
        .iter_mut()
        .filter(|l| targets.contains(&l.number))
    {
        line.cancelled = true;
    }
    let order = order.clone();
    if let Some(entry) = world
        .ledger
        .orders
        .iter_mut()
        .find(|o| o.order_id == order.id)
    {
        entry.cancelled_lines = order
            .lines
            .iter()
            .filter(|l| l.cancelled)
            .map(|l| l.number)
            .collect();
    }
    let status = world.order_status(&order, now, shared.completion());
    let status = if status == "pending" {
        "completed"
    } else {
        status
    };
    Resp::json(200, world.order_json(&order, status))
}

// ---- E18-E19 -------------------------------------------------------------------------------

pub fn list_entitlements(shared: &Shared, req: &Req, customer: &str) -> Resp {
    if let Err(r) = customer_country(shared, customer) {
        return r;
    }
    let wanted = req.q("entitlementType").map(str::to_ascii_lowercase);
    let show_expiry = req
        .q("showExpiry")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let offset = req.q("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let now = shared.now();
    let world = shared.world();
    let mut items = Vec::new();
    for order in world
        .customer_orders
        .get(&customer.to_ascii_lowercase())
        .into_iter()
        .flatten()
        .filter_map(|id| world.orders.get(id))
    {
        if now < order.created + shared.completion() {
            continue;
        }
        for line in order.lines.iter().filter(|l| !l.cancelled) {
            let kind = if line.kind == ProductKind::Reservation {
                "reservedinstance"
            } else {
                "software"
            };
            if wanted.as_deref().is_some_and(|w| {
                w != kind && !(w == "virtualmachinereservedinstance" && kind == "reservedinstance")
            }) {
                continue;
            }
            let mut entitlement = json!({
                "includedEntitlements": [],
                "referenceOrder": {"id": order.id, "lineItemId": line.number.to_string(), "alternateId": order.alternate_id},
                "productId": line.product_id,
                "skuId": line.sku_id,
                "quantity": line.quantity,
                "quantityDetails": [{"quantity": line.quantity, "status": "Active"}],
                "entitlementType": kind,
                "entitledArtifacts": [],
            });
            if line.kind == ProductKind::Reservation {
                entitlement["entitledArtifacts"] = json!([{
                    "artifactType": "reservedinstance",
                    "link": link(&format!("/customers/{customer}/artifacts/reservedinstance/groups/{}/lineitems/{}/resource/{}", order.id, line.number, line.resource_id)),
                    "resourceId": line.resource_id,
                    "dynamicAttributes": {"reservationType": "virtualmachines"},
                }]);
                entitlement["dynamicAttributes"] = json!({"reservationType": "virtualmachines"});
            }
            if show_expiry && line.kind != ProductKind::PerpetualSoftware {
                let years = if line
                    .term
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case("P3Y"))
                {
                    3
                } else {
                    1
                };
                let expiry = order.created + chrono::Duration::days(365 * years);
                entitlement["expiryDate"] =
                    json!(expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            items.push(entitlement);
        }
    }
    Resp::json(
        200,
        paged(
            items,
            &format!("/customers/{customer}/entitlements"),
            offset,
            shared.config.page_size,
        ),
    )
}

pub fn artifact_details(
    shared: &Shared,
    customer: &str,
    order_id: &str,
    line_number: &str,
    resource_id: &str,
) -> Resp {
    let world = shared.world();
    let found = world
        .orders
        .get(order_id)
        .filter(|o| o.customer_id.eq_ignore_ascii_case(customer))
        .and_then(|o| {
            o.lines
                .iter()
                .find(|l| {
                    l.number.to_string() == line_number
                        && l.resource_id.eq_ignore_ascii_case(resource_id)
                })
                .map(|l| (o, l))
        });
    let Some((order, line)) = found else {
        return Resp::error(404, "1000", "The artifact was not found.");
    };
    let scope = line
        .provisioning_context
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("shared");
    let single = scope.eq_ignore_ascii_case("single");
    let years = if line
        .term
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("P3Y"))
    {
        3
    } else {
        1
    };
    let mut reservation = json!({
        "reservationId": line.resource_id,
        "displayName": line.friendly_name,
        "scopeType": if single { "Single" } else { "Shared" },
        "quantity": line.quantity,
        "expiryDateTime": (order.created + chrono::Duration::days(365 * years)).format("%Y-%m-%dT%H:%M:%S").to_string(),
        "effectiveDateTime": crate::world::timestamp(order.created),
        "provisioningState": "Created",
    });
    // The resource table says `appliedScopes` is present only for non-shared scopes; the
    // example shows `[]` for a shared one. We send `[]` for shared, as the example does.
    let subscription = line
        .provisioning_context
        .get("subscriptionId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    reservation["appliedScopes"] = if single {
        json!([format!("/subscriptions/{subscription}")])
    } else {
        json!([])
    };
    Resp::json(
        200,
        json!({"type": "reservedinstance", "reservations": [reservation]}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pascal_case_keys_are_read_as_camel_case() {
        let value = camel_keys(
            json!({"LineItems": [{"CatalogItemId": "A:B:C", "ProvisioningContext": {"SubscriptionId": "x"}}]}),
        );
        assert_eq!(
            value,
            json!({"lineItems": [{"catalogItemId": "A:B:C", "provisioningContext": {"subscriptionId": "x"}}]})
        );
    }

    #[test]
    fn pages_link_to_the_next_one() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let first = paged(items.clone(), "/customers/c/orders", 0, 2);
        assert_eq!(first["items"], json!([0, 1]));
        assert_eq!(first["totalCount"], json!(5));
        assert_eq!(
            first["links"]["next"]["uri"],
            json!("/customers/c/orders?offset=2")
        );
        let last = paged(items, "/customers/c/orders?billingType=OneTime", 4, 2);
        assert_eq!(last["items"], json!([4]));
        assert!(last["links"].get("next").is_none());
    }
}
