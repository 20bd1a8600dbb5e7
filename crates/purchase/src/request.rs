//! The purchase request: the contract between the queue's producers and the daemon
//! (architecture section 5). Parsed, not merely validated: a [`PurchaseRequest`] exists only
//! if every field is right, and every refusal names the field (`items[1].quantity`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest request accepted, in bytes (a line of NDJSON, or a whole JSON document).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Most items in one purchase.
pub const MAX_ITEMS: usize = 50;
/// Largest quantity accepted at submission; the SKU's own bounds are checked at discovery.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// Customer segments Partner Center knows.
pub const SEGMENTS: &[&str] = &["commercial", "education", "government", "nonprofit"];

/// A validated purchase request. (`Default` is only the placeholder a context decodes with
/// before [`crate::context::decode`] puts the saga's request in.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseRequest {
    pub idempotency_key: String,
    pub customer_id: String,
    pub country: String,
    pub segment: String,
    pub items: Vec<PurchaseItem>,
    /// How the purchase is bought: a cart (the default) or a direct order (E21). Not encoded
    /// for a cart, so requests from before it existed encode as they did.
    #[serde(default, skip_serializing_if = "OrderPath::is_cart")]
    pub order_path: OrderPath,
}

/// The two purchase paths of the source documents (addendum rule 9.12).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderPath {
    /// Create a cart, then check it out (E10-E13): idempotent per cart. The default.
    #[default]
    Cart,
    /// One `POST /customers/{c}/orders` (E21), what partners' existing tools use; not
    /// documented as idempotent, so pcsaga persists the exact body and request id before the
    /// first send and reconciles through the order lists when a reply is lost.
    Direct,
}

impl OrderPath {
    pub fn is_cart(&self) -> bool {
        *self == Self::Cart
    }
}

/// One item of a purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseItem {
    pub product_id: String,
    pub sku_id: String,
    pub quantity: i64,
    /// ISO-8601 duration (`P1Y`, `P3Y`, `P1M`); absent for perpetual software.
    pub term_duration: Option<String>,
    /// Always `one_time`: this is a one-time purchase.
    pub billing_cycle: String,
    #[serde(default)]
    pub provisioning_context: BTreeMap<String, String>,
    pub availability_id: Option<String>,
    pub friendly_name: Option<String>,
    pub partner_id_on_record: Option<String>,
    pub arm_region_name: Option<String>,
}

/// A refused request: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct RequestError {
    /// The JSON path of the field, e.g. `items[0].quantity`; `$` for the whole document.
    pub field: String,
    pub problem: String,
}

fn refuse<T>(field: impl Into<String>, problem: impl Into<String>) -> Result<T, RequestError> {
    Err(RequestError {
        field: field.into(),
        problem: problem.into(),
    })
}

/// Parses a request from JSON text.
pub fn parse_request(text: &str) -> Result<PurchaseRequest, RequestError> {
    if text.len() > MAX_REQUEST_BYTES {
        return refuse(
            "$",
            format!(
                "the request is {} bytes; the limit is {MAX_REQUEST_BYTES}",
                text.len()
            ),
        );
    }
    let value = strict_json(text)?;
    parse_value(&value)
}

/// The fields (JSON paths, as in refusals) in which two requests differ; empty when they are
/// the same request. Used to refuse a known `idempotencyKey` sent with another request.
pub fn differing_fields(first: &PurchaseRequest, second: &PurchaseRequest) -> Vec<String> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for key in keys {
                    let at = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    walk(
                        &at,
                        a.get(key).unwrap_or(&Value::Null),
                        b.get(key).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
                for (i, (a, b)) in a.iter().zip(b).enumerate() {
                    walk(&format!("{path}[{i}]"), a, b, out);
                }
            }
            (a, b) if a != b => out.push(path.to_owned()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match (serde_json::to_value(first), serde_json::to_value(second)) {
        (Ok(a), Ok(b)) => walk("", &a, &b, &mut out),
        _ => out.push("$".to_owned()),
    }
    out
}

/// Parses JSON text, refusing a key that appears twice in one object, at any depth. Plain
/// JSON parsers keep the last value, so `"quantity":2,"quantity":2000` would buy 2000 while a
/// person reading the request sees 2.
fn strict_json(text: &str) -> Result<Value, RequestError> {
    let duplicate = std::cell::RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = serde::de::DeserializeSeed::deserialize(
        strict::Strict {
            path: String::new(),
            duplicate: &duplicate,
        },
        &mut deserializer,
    )
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, duplicate.into_inner()) {
        (Ok(value), _) => Ok(value),
        (Err(_), Some(field)) => refuse(
            field,
            "appears twice in one object; a request must give each field once",
        ),
        (Err(e), None) => refuse("$", format!("not valid JSON: {e}")),
    }
}

mod strict {
    use std::cell::RefCell;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    /// A JSON value whose objects have unique keys; `duplicate` receives the path of the first
    /// repeated key.
    pub(super) struct Strict<'a> {
        pub(super) path: String,
        pub(super) duplicate: &'a RefCell<Option<String>>,
    }

    impl<'de> DeserializeSeed<'de> for Strict<'_> {
        type Value = Value;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Strict<'_> {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(value) = seq.next_element_seed(Strict {
                path: format!("{}[{}]", self.path, out.len()),
                duplicate: self.duplicate,
            })? {
                out.push(value);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let path = if self.path.is_empty() {
                    key.clone()
                } else {
                    format!("{}.{key}", self.path)
                };
                if out.contains_key(&key) {
                    *self.duplicate.borrow_mut() = Some(path);
                    return Err(de::Error::custom("duplicate key"));
                }
                let value = map.next_value_seed(Strict {
                    path,
                    duplicate: self.duplicate,
                })?;
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
    }
}

/// Refuses text Partner Center and terminals would misread: control characters (C0, DEL, C1:
/// NUL, ANSI escapes, line breaks) and the bidirectional controls that reorder what a reader
/// sees (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069).
fn plain_text(field: &str, text: &str) -> Result<(), RequestError> {
    let bidi = |c: char| matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    match text.chars().find(|&c| c.is_control() || bidi(c)) {
        Some(c) => refuse(
            field,
            format!(
                "contains the control character U+{:04X}; text must be printable, without control or bidirectional formatting characters",
                u32::from(c)
            ),
        ),
        None => Ok(()),
    }
}

const TOP_FIELDS: &[&str] = &[
    "idempotencyKey",
    "customerId",
    "country",
    "segment",
    "items",
    "orderPath",
];
const ITEM_FIELDS: &[&str] = &[
    "offerId",
    "productId",
    "skuId",
    "quantity",
    "termDuration",
    "billingCycle",
    "provisioningContext",
    "availabilityId",
    "friendlyName",
    "partnerIdOnRecord",
    "armRegionName",
];

/// Parses a request from a JSON value.
pub fn parse_value(value: &Value) -> Result<PurchaseRequest, RequestError> {
    let Some(object) = value.as_object() else {
        return refuse("$", "a purchase request must be a JSON object");
    };
    unknown_fields(object, TOP_FIELDS, "")?;
    let idempotency_key = required_str(object, "idempotencyKey", "idempotencyKey")?;
    if idempotency_key.len() > 100
        || !idempotency_key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
    {
        return refuse(
            "idempotencyKey",
            "must be 1 to 100 characters of letters, digits and - _ . : /",
        );
    }
    let customer_id = required_str(object, "customerId", "customerId")?;
    let customer_id = uuid::Uuid::parse_str(&customer_id)
        .map_err(|_| RequestError {
            field: "customerId".into(),
            problem: format!("{customer_id:?} is not a GUID (the customer's tenant id)"),
        })?
        .to_string();
    let country = required_str(object, "country", "country")?;
    if country.len() != 2 || !country.chars().all(|c| c.is_ascii_alphabetic()) {
        return refuse(
            "country",
            format!("{country:?} is not an ISO 3166 alpha-2 country code such as \"US\""),
        );
    }
    let segment = optional_str(object, "segment", "segment")?
        .unwrap_or_else(|| "commercial".to_owned())
        .to_ascii_lowercase();
    if !SEGMENTS.contains(&segment.as_str()) {
        return refuse(
            "segment",
            format!("{segment:?} is not one of {}", SEGMENTS.join(", ")),
        );
    }
    let items = match object.get("items") {
        Some(Value::Array(items)) if items.is_empty() => {
            return refuse("items", "must hold at least one item")
        }
        Some(Value::Array(items)) if items.len() > MAX_ITEMS => {
            return refuse(
                "items",
                format!(
                    "holds {} items; the limit is {MAX_ITEMS} per purchase",
                    items.len()
                ),
            )
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_item(i, item))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return refuse("items", "must be an array of items"),
        None => return refuse("items", "is required"),
    };
    let order_path = match optional_str(object, "orderPath", "orderPath")?.as_deref() {
        None | Some("cart") => OrderPath::Cart,
        Some("direct") => OrderPath::Direct,
        Some(other) => {
            return refuse(
                "orderPath",
                format!("{other:?} is not a purchase path: \"cart\" (the default) or \"direct\""),
            )
        }
    };
    Ok(PurchaseRequest {
        idempotency_key,
        customer_id,
        country: country.to_ascii_uppercase(),
        segment,
        items,
        order_path,
    })
}

fn parse_item(index: usize, value: &Value) -> Result<PurchaseItem, RequestError> {
    let at = |field: &str| format!("items[{index}].{field}");
    let Some(object) = value.as_object() else {
        return refuse(format!("items[{index}]"), "must be an object");
    };
    unknown_fields(object, ITEM_FIELDS, &format!("items[{index}]."))?;
    let (product_id, sku_id, offered_availability) = match offer_of(object, index)? {
        Some(named) => named,
        None => {
            let product_id = required_str(object, "productId", &at("productId"))?;
            catalog_id(&product_id, &at("productId"))?;
            let sku_id = required_str(object, "skuId", &at("skuId"))?;
            catalog_id(&sku_id, &at("skuId"))?;
            (product_id, sku_id, None)
        }
    };
    let quantity = match object.get("quantity") {
        Some(Value::Number(n)) => match n.as_i64() {
            Some(q) if (1..=MAX_QUANTITY).contains(&q) => q,
            Some(q) if q < 1 => {
                return refuse(at("quantity"), format!("must be at least 1 (got {q})"))
            }
            Some(q) => {
                return refuse(
                    at("quantity"),
                    format!("{q} is above the limit of {MAX_QUANTITY}"),
                )
            }
            None => return refuse(at("quantity"), format!("must be a whole number (got {n})")),
        },
        Some(other) => {
            return refuse(
                at("quantity"),
                format!("must be a whole number (got {other})"),
            )
        }
        None => return refuse(at("quantity"), "is required"),
    };
    let term_duration =
        optional_str(object, "termDuration", &at("termDuration"))?.map(|t| t.to_ascii_uppercase());
    if let Some(term) = &term_duration {
        let ok = term.len() >= 3
            && term.starts_with('P')
            && matches!(term.chars().last(), Some('Y' | 'M' | 'D'))
            && term[1..term.len() - 1].chars().all(|c| c.is_ascii_digit());
        if !ok {
            return refuse(
                at("termDuration"),
                format!("{term:?} is not an ISO-8601 duration such as \"P1Y\", \"P3Y\" or \"P1M\""),
            );
        }
    }
    let billing_cycle = optional_str(object, "billingCycle", &at("billingCycle"))?
        .unwrap_or_else(|| "one_time".to_owned());
    if billing_cycle.to_ascii_lowercase().replace('_', "") != "onetime" {
        return refuse(
            at("billingCycle"),
            format!(
                "{billing_cycle:?}: pcsaga makes one-time purchases, so it must be \"one_time\""
            ),
        );
    }
    let provisioning_context = match object.get("provisioningContext") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => {
            if map.len() > 20 {
                return refuse(at("provisioningContext"), "has more than 20 keys");
            }
            let mut out = BTreeMap::new();
            for (key, value) in map {
                let field = format!("{}.{key}", at("provisioningContext"));
                plain_text(&field, key)?;
                if let Value::String(text) = value {
                    plain_text(&field, text)?;
                }
                match value {
                    Value::String(s) if !s.trim().is_empty() && s.len() <= 256 => {
                        out.insert(key.clone(), s.trim().to_owned());
                    }
                    Value::String(_) => {
                        return refuse(
                            field,
                            "must be a non-empty string of at most 256 characters",
                        )
                    }
                    other => return refuse(field, format!("must be a string (got {other})")),
                }
            }
            if let Some((key, value)) = out
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("subscriptionId"))
            {
                if uuid::Uuid::parse_str(value).is_err() {
                    return refuse(
                        format!("{}.{key}", at("provisioningContext")),
                        format!("{value:?} is not a GUID (an Azure subscription id)"),
                    );
                }
            }
            out
        }
        Some(other) => {
            return refuse(
                at("provisioningContext"),
                format!("must be an object of strings (got {other})"),
            )
        }
    };
    let availability_id = match offered_availability {
        Some(id) => Some(id),
        None => optional_str(object, "availabilityId", &at("availabilityId"))?,
    };
    if let Some(id) = &availability_id {
        catalog_id(id, &at("availabilityId"))?;
    }
    let friendly_name = optional_str(object, "friendlyName", &at("friendlyName"))?;
    if friendly_name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 80)
    {
        return refuse(
            at("friendlyName"),
            "must be at most 80 characters (pcsaga appends its own tag)",
        );
    }
    let partner_id_on_record = optional_str(object, "partnerIdOnRecord", &at("partnerIdOnRecord"))?;
    if partner_id_on_record
        .as_ref()
        .is_some_and(|p| p.is_empty() || p.len() > 20 || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return refuse(
            at("partnerIdOnRecord"),
            "must be a partner (MPN) id of digits",
        );
    }
    let arm_region_name = optional_str(object, "armRegionName", &at("armRegionName"))?
        .map(|r| r.to_ascii_lowercase());
    if arm_region_name.as_ref().is_some_and(|r| {
        r.is_empty() || r.len() > 40 || !r.chars().all(|c| c.is_ascii_alphanumeric())
    }) {
        return refuse(
            at("armRegionName"),
            "must be an Azure region name such as \"westus2\"",
        );
    }
    Ok(PurchaseItem {
        product_id,
        sku_id,
        quantity,
        term_duration,
        billing_cycle: "one_time".to_owned(),
        provisioning_context,
        availability_id,
        friendly_name,
        partner_id_on_record,
        arm_region_name,
    })
}

fn unknown_fields(
    object: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
) -> Result<(), RequestError> {
    for key in object.keys() {
        if !known.contains(&key.as_str()) {
            let hint = known
                .iter()
                .find(|k| k.eq_ignore_ascii_case(key))
                .map(|k| format!(" (did you mean {k:?}?)"))
                .unwrap_or_default();
            return refuse(
                format!("{prefix}{key}"),
                format!("unknown field{hint}; the fields are {}", known.join(", ")),
            );
        }
    }
    Ok(())
}

fn required_str(
    object: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<String, RequestError> {
    match optional_str(object, key, field)? {
        Some(s) => Ok(s),
        None => refuse(field, "is required"),
    }
}

fn optional_str(
    object: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<Option<String>, RequestError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => refuse(field, "must not be empty"),
        Some(Value::String(s)) => {
            plain_text(field, s)?;
            Ok(Some(s.trim().to_owned()))
        }
        Some(other) => refuse(field, format!("must be a string (got {other})")),
    }
}

/// What depends on the Partner Center cloud, checked where it is known (`submit`): a
/// reservation can be bought by direct order only in the public cloud (addendum §6 E21,
/// ambiguity 27). A reservation is recognised by its Azure subscription
/// (`provisioningContext.subscriptionId`, which every reservation request carries).
pub fn check_for_cloud(request: &PurchaseRequest, public_cloud: bool) -> Result<(), RequestError> {
    check_for_partner(request, public_cloud, None)
}

/// [`check_for_cloud`], and, when the partner's own Partner ID is known, that no item names it
/// as `partnerIdOnRecord` (which records an indirect reseller, never the provider itself:
/// addendum §6 E21).
pub fn check_for_partner(
    request: &PurchaseRequest,
    public_cloud: bool,
    own_partner_id: Option<&str>,
) -> Result<(), RequestError> {
    if let Some(own) = own_partner_id {
        if let Some(index) = request
            .items
            .iter()
            .position(|i| i.partner_id_on_record.as_deref() == Some(own))
        {
            return refuse(
                format!("items[{index}].partnerIdOnRecord"),
                format!("{own} is this partner's own Partner ID (partner_center.partner_id); partnerIdOnRecord names an indirect reseller, so leave it out when buying for your own customer"),
            );
        }
    }
    if public_cloud || request.order_path != OrderPath::Direct {
        return Ok(());
    }
    match request.items.iter().position(|item| {
        item.provisioning_context
            .keys()
            .any(|k| k.eq_ignore_ascii_case("subscriptionId"))
    }) {
        Some(index) => refuse(
            format!("items[{index}].provisioningContext"),
            "names an Azure subscription, so it is a reservation, and reservations are bought by direct order only in the public Partner Center cloud; submit it with \"orderPath\": \"cart\"",
        ),
        None => Ok(()),
    }
}

/// An item's `offerId`: a catalog item id, `{productId}:{skuId}:{availabilityId}`, naming all
/// three at once (what a direct order's line carries). `None` when the item names them apart.
fn offer_of(
    object: &Map<String, Value>,
    index: usize,
) -> Result<Option<(String, String, Option<String>)>, RequestError> {
    let field = format!("items[{index}].offerId");
    let Some(offer) = optional_str(object, "offerId", &field)? else {
        return Ok(None);
    };
    if let Some(also) = ["productId", "skuId", "availabilityId"]
        .into_iter()
        .find(|k| object.contains_key(*k))
    {
        return refuse(
            field,
            format!("names the product, SKU and availability itself; give offerId or {also} (with the others), not both"),
        );
    }
    let parts: Vec<&str> = offer.split(':').collect();
    let [product, sku, availability] = parts.as_slice() else {
        return refuse(
            field,
            format!("{offer:?} is not a catalog item id \"{{productId}}:{{skuId}}:{{availabilityId}}\" such as \"DZH318Z0BQ3Q:0001:DZH318XZXVNF\" (legacy GUID offers are not bought through pcsaga)"),
        );
    };
    for part in [product, sku, availability] {
        catalog_id(part, &field)?;
    }
    Ok(Some((
        (*product).to_owned(),
        (*sku).to_owned(),
        Some((*availability).to_owned()),
    )))
}

fn catalog_id(value: &str, field: &str) -> Result<(), RequestError> {
    if value.len() > 40 || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
        return refuse(
            field,
            format!("{value:?} is not a catalog id (letters and digits, such as \"DZH318Z0BQ3Q\")"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "idempotencyKey": "po-2026-00017",
            "customerId": "4c4d0c6e-38b9-4c5a-a0f4-3b2f1c1e7a10",
            "country": "us",
            "segment": "commercial",
            "items": [{
                "productId": "DZH318Z0BQ3Q", "skuId": "0001", "quantity": 2, "termDuration": "P1Y", "billingCycle": "one_time",
                "provisioningContext": {"subscriptionId": "1c461a25-f729-4fa5-aadb-280947dd05e8", "scope": "shared", "duration": "1Year"}
            }]
        })
    }

    /// Applies `edit` to a good request and expects a refusal naming `field`, saying `says`.
    #[track_caller]
    fn check(edit: impl FnOnce(&mut Value), field: &str, says: &str) {
        let mut value = good();
        edit(&mut value);
        let err = parse_value(&value).expect_err("refused");
        assert_eq!(err.field, field, "{err}");
        assert!(err.problem.contains(says), "{err}");
    }

    /// `offerId` names product, SKU and availability at once; with any of them as well, or
    /// not in the catalog item form, it is refused by name. `orderPath` takes its two values.
    #[test]
    fn an_offer_id_names_the_catalog_item_and_the_path_is_checked() {
        let mut value = good();
        let item = value["items"][0].as_object_mut().expect("item");
        item.remove("productId");
        item.remove("skuId");
        item.insert("offerId".into(), json!("DZH318Z0BQ3Q:0001:DZH318XZXVNF"));
        value["orderPath"] = json!("direct");
        let request = parse_value(&value).expect("valid");
        let item = &request.items[0];
        assert_eq!(
            (
                item.product_id.as_str(),
                item.sku_id.as_str(),
                item.availability_id.as_deref()
            ),
            ("DZH318Z0BQ3Q", "0001", Some("DZH318XZXVNF"))
        );
        assert_eq!(request.order_path, OrderPath::Direct);
        check(
            |v| v["items"][0]["offerId"] = json!("DZH318Z0BQ3Q:0001:DZH318XZXVNF"),
            "items[0].offerId",
            "not both",
        );
        check(
            |v| {
                let item = v["items"][0].as_object_mut().expect("item");
                item.remove("productId");
                item.remove("skuId");
                item.insert(
                    "offerId".into(),
                    json!("84A03D81-6B37-4D66-8D4A-FAEA24541538"),
                );
            },
            "items[0].offerId",
            "not a catalog item id",
        );
        check(
            |v| v["orderPath"] = json!("checkout"),
            "orderPath",
            "not a purchase path",
        );
        // A cart purchase encodes as before orderPath existed.
        let cart = parse_value(&good()).expect("valid");
        assert!(!serde_json::to_string(&cart)
            .expect("encodes")
            .contains("orderPath"));
    }

    #[test]
    fn the_architecture_example_parses() {
        let request = parse_value(&good()).expect("valid");
        assert_eq!(request.country, "US");
        assert_eq!(request.items[0].quantity, 2);
        assert_eq!(request.items[0].provisioning_context["scope"], "shared");
    }

    #[test]
    fn every_bad_field_is_named() {
        check(
            |v| v["idempotencyKey"] = json!(""),
            "idempotencyKey",
            "must not be empty",
        );
        check(
            |v| v["idempotencyKey"] = json!("has space"),
            "idempotencyKey",
            "letters, digits",
        );
        check(
            |v| {
                v.as_object_mut().map(|o| o.remove("customerId"));
            },
            "customerId",
            "is required",
        );
        check(
            |v| v["customerId"] = json!("not-a-guid"),
            "customerId",
            "not a GUID",
        );
        check(
            |v| v["customerId"] = json!(42),
            "customerId",
            "must be a string",
        );
        check(|v| v["country"] = json!("USA"), "country", "alpha-2");
        check(|v| v["segment"] = json!("retail"), "segment", "not one of");
        check(|v| v["items"] = json!([]), "items", "at least one");
        check(|v| v["items"] = json!({}), "items", "array");
        check(
            |v| v["items"][0]["quantity"] = json!(0),
            "items[0].quantity",
            "at least 1",
        );
        check(
            |v| v["items"][0]["quantity"] = json!(-3),
            "items[0].quantity",
            "at least 1",
        );
        check(
            |v| v["items"][0]["quantity"] = json!(2.5),
            "items[0].quantity",
            "whole number",
        );
        check(
            |v| v["items"][0]["quantity"] = json!("2"),
            "items[0].quantity",
            "whole number",
        );
        check(
            |v| v["items"][0]["quantity"] = json!(5_000_000),
            "items[0].quantity",
            "above the limit",
        );
        check(
            |v| v["items"][0]["termDuration"] = json!("1 year"),
            "items[0].termDuration",
            "ISO-8601",
        );
        check(
            |v| v["items"][0]["billingCycle"] = json!("monthly"),
            "items[0].billingCycle",
            "one_time",
        );
        check(
            |v| v["items"][0]["provisioningContext"]["subscriptionId"] = json!("x"),
            "items[0].provisioningContext.subscriptionId",
            "GUID",
        );
        check(
            |v| v["items"][0]["provisioningContext"]["scope"] = json!(1),
            "items[0].provisioningContext.scope",
            "must be a string",
        );
        check(
            |v| v["items"][0]["productId"] = json!("DZH/318"),
            "items[0].productId",
            "catalog id",
        );
        check(
            |v| v["items"][0]["sku"] = json!("0001"),
            "items[0].sku",
            "unknown field",
        );
        check(
            |v| v["Items"] = json!([]),
            "Items",
            "did you mean \"items\"",
        );
        check(
            |v| v["items"][0]["friendlyName"] = json!("x".repeat(81)),
            "items[0].friendlyName",
            "at most 80",
        );
    }

    /// A key given twice is refused at any depth, naming it; the last value never wins.
    #[test]
    fn duplicate_keys_are_refused_where_they_stand() {
        let text = good().to_string();
        let cases = [
            (
                text.replacen("\"quantity\":2", "\"quantity\":2,\"quantity\":2000", 1),
                "items[0].quantity",
            ),
            (text.replacen("{", "{\"country\":\"GB\",", 1), "country"),
            (
                text.replacen(
                    "\"scope\":\"shared\"",
                    "\"scope\":\"shared\",\"scope\":\"single\"",
                    1,
                ),
                "items[0].provisioningContext.scope",
            ),
        ];
        for (text, field) in cases {
            assert_ne!(text, good().to_string(), "the case edits the request");
            let err = parse_request(&text).expect_err("refused");
            assert_eq!(err.field, field, "{err}");
            assert!(err.problem.contains("appears twice"), "{err}");
        }
        assert!(parse_request(&text).is_ok());
    }

    /// NUL, ANSI escapes, line breaks and bidi overrides are refused in every free-text field.
    #[test]
    fn control_characters_are_refused_in_free_text() {
        for bad in [
            "a\u{0}b",
            "\u{1b}[31mred",
            "line\nbreak",
            "\u{202E}evil",
            "x\u{2066}y",
            "c1\u{85}",
        ] {
            check(
                |v| v["items"][0]["friendlyName"] = json!(bad),
                "items[0].friendlyName",
                "control character",
            );
            check(
                |v| v["items"][0]["provisioningContext"]["scope"] = json!(bad),
                "items[0].provisioningContext.scope",
                "control character",
            );
        }
        check(
            |v| v["items"][0]["provisioningContext"]["sc\u{1b}ope"] = json!("x"),
            "items[0].provisioningContext.sc\u{1b}ope",
            "control character",
        );
        // Printable text of any script is fine.
        let mut ok = good();
        ok["items"][0]["friendlyName"] = json!("Réservation 東京 — année 1");
        assert!(parse_value(&ok).is_ok());
    }

    #[test]
    fn garbage_and_oversized_input_are_refused_whole() {
        assert_eq!(
            parse_request("{\"idempotencyKey\":")
                .expect_err("bad")
                .field,
            "$"
        );
        assert_eq!(
            parse_request("[]").expect_err("bad").problem,
            "a purchase request must be a JSON object"
        );
        let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_REQUEST_BYTES));
        assert!(parse_request(&huge)
            .expect_err("bad")
            .problem
            .contains("the limit is"));
    }
}
