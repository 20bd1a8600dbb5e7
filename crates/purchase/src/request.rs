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

/// A validated purchase request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseRequest {
    pub idempotency_key: String,
    pub customer_id: String,
    pub country: String,
    pub segment: String,
    pub items: Vec<PurchaseItem>,
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
    let value: Value = serde_json::from_str(text).map_err(|e| RequestError {
        field: "$".into(),
        problem: format!("not valid JSON: {e}"),
    })?;
    parse_value(&value)
}

const TOP_FIELDS: &[&str] = &[
    "idempotencyKey",
    "customerId",
    "country",
    "segment",
    "items",
];
const ITEM_FIELDS: &[&str] = &[
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
    Ok(PurchaseRequest {
        idempotency_key,
        customer_id,
        country: country.to_ascii_uppercase(),
        segment,
        items,
    })
}

fn parse_item(index: usize, value: &Value) -> Result<PurchaseItem, RequestError> {
    let at = |field: &str| format!("items[{index}].{field}");
    let Some(object) = value.as_object() else {
        return refuse(format!("items[{index}]"), "must be an object");
    };
    unknown_fields(object, ITEM_FIELDS, &format!("items[{index}]."))?;
    let product_id = required_str(object, "productId", &at("productId"))?;
    catalog_id(&product_id, &at("productId"))?;
    let sku_id = required_str(object, "skuId", &at("skuId"))?;
    catalog_id(&sku_id, &at("skuId"))?;
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
    let availability_id = optional_str(object, "availabilityId", &at("availabilityId"))?;
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
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(other) => refuse(field, format!("must be a string (got {other})")),
    }
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
