//! Entitlements and reservation details (spec 7.11, calls E18-E19).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::common::Link;
use super::datetime;
use super::lenient::{de, lenient_enum};

lenient_enum! {
    /// `entitlementType`.
    pub enum EntitlementType {
        Software = "software",
        ReservedInstance = "reservedinstance",
        VirtualMachineReservedInstance = "virtualmachinereservedinstance",
    }
}

/// The order line an entitlement came from: the join key back to a purchase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReferenceOrder {
    pub id: String,
    #[serde(deserialize_with = "de::opt_string_or_number")]
    pub line_item_id: Option<String>,
    pub alternate_id: Option<String>,
}

/// An artifact of an entitlement; reserved-instance artifacts carry a link and a resource id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Artifact {
    pub artifact_type: Option<String>,
    pub link: Option<Link>,
    pub resource_id: Option<String>,
    pub dynamic_attributes: BTreeMap<String, serde_json::Value>,
}

/// A quantity and its state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuantityDetail {
    pub quantity: i64,
    pub status: Option<String>,
}

/// An entitlement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Entitlement {
    pub reference_order: Option<ReferenceOrder>,
    pub product_id: Option<String>,
    #[serde(alias = "skuID")]
    pub sku_id: Option<String>,
    pub quantity: i64,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub quantity_details: Vec<QuantityDetail>,
    pub entitlement_type: Option<EntitlementType>,
    pub fulfillment_state: Option<String>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub entitled_artifacts: Vec<Artifact>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub included_entitlements: Vec<Entitlement>,
    #[serde(with = "datetime::opt")]
    pub expiry_date: Option<DateTime<Utc>>,
    pub dynamic_attributes: BTreeMap<String, serde_json::Value>,
}

/// One Azure reservation behind a reserved-instance artifact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Reservation {
    pub reservation_id: String,
    pub display_name: Option<String>,
    pub scope_type: Option<String>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub applied_scopes: Vec<String>,
    pub quantity: i64,
    #[serde(with = "datetime::opt")]
    pub expiry_date_time: Option<DateTime<Utc>>,
    #[serde(with = "datetime::opt")]
    pub effective_date_time: Option<DateTime<Utc>>,
    pub provisioning_state: Option<String>,
}

/// The response of E19. The array is `reservations` in the resource table and the SDK, and
/// `virtualMachineReservations` in the doc examples; both decode (spec ambiguity 17).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReservedInstanceArtifactDetails {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(
        alias = "virtualMachineReservations",
        deserialize_with = "de::null_as_empty"
    )]
    pub reservations: Vec<Reservation>,
}
