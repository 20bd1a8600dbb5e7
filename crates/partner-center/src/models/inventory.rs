//! Inventory check (spec 7.4, call E9).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::lenient::de;

/// An item to check; `sku_id` omitted checks every SKU of the product.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryTarget {
    pub product_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku_id: Option<String>,
}

/// The request body of E9. Context keys come from the SKU's `inventoryVariables`,
/// lower-camel-cased (`CustomerId` → `customerId`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryCheckRequest {
    pub target_items: Vec<InventoryTarget>,
    pub inventory_context: BTreeMap<String, String>,
}

/// One restriction on an inventory item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InventoryRestriction {
    pub reason_code: Option<String>,
    pub description: Option<String>,
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// One element of E9's bare-array response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InventoryItem {
    pub product_id: String,
    pub sku_id: Option<String>,
    pub is_restricted: bool,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub restrictions: Vec<InventoryRestriction>,
}
