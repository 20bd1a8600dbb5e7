//! Catalog resources: Product, Sku, Availability (spec 7.1-7.3, calls E3-E8).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::common::{Links, ResourceAttributes};
use super::lenient::{de, lenient_enum};

lenient_enum! {
    /// `BillingCycleType` (spec 8): snake_case on the wire, integers in the SDK.
    pub enum BillingCycle {
        Monthly = "monthly" | 1,
        Annual = "annual" | 2,
        None = "none" | 3,
        OneTime = "one_time" | 4,
        Triennial = "triennial" | 5,
        Biennial = "biennial" | 6,
    }
}

lenient_enum! {
    /// The SKU purchase prerequisites the saga acts on.
    pub enum PurchasePrerequisite {
        AzureSubscriptionRegistration = "AzureSubscriptionRegistration",
        InventoryCheck = "InventoryCheck",
        MicrosoftCloudAgreement = "MicrosoftCloudAgreement",
        MicrosoftCustomerAgreement = "MicrosoftCustomerAgreement",
    }
}

/// `ItemType`: `{id, displayName, subType?}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ItemType {
    pub id: String,
    pub display_name: Option<String>,
    pub sub_type: Option<Box<ItemType>>,
}

/// A catalog product.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Product {
    pub id: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub product_type: Option<ItemType>,
    pub is_microsoft_product: Option<bool>,
    pub publisher_name: Option<String>,
    pub links: Links,
}

/// An attestation requirement of a SKU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AttestationProperties {
    pub attestation_type: Option<String>,
    pub enforce_attestation: bool,
}

/// A SKU of a product.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Sku {
    pub id: String,
    pub product_id: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub minimum_quantity: Option<i64>,
    pub maximum_quantity: Option<i64>,
    pub is_trial: Option<bool>,
    pub terms_of_use_uri: Option<String>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub supported_billing_cycles: Vec<BillingCycle>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub purchase_prerequisites: Vec<PurchasePrerequisite>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub inventory_variables: Vec<String>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub provisioning_variables: Vec<String>,
    /// Volatile attributes (`armRegionName`, `duration`, ...); values may be any JSON.
    pub dynamic_attributes: BTreeMap<String, serde_json::Value>,
    pub attestation_properties: Option<AttestationProperties>,
    pub consumption_type: Option<String>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub actions: Vec<String>,
    pub links: Links,
}

impl Sku {
    /// Whether the SKU lists the given purchase prerequisite.
    pub fn requires(&self, prerequisite: &PurchasePrerequisite) -> bool {
        self.purchase_prerequisites.contains(prerequisite)
    }

    /// A dynamic attribute as text (`armRegionName`, `duration`, ...), matched case-insensitively.
    pub fn dynamic_attribute(&self, name: &str) -> Option<String> {
        self.dynamic_attributes
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| match value {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => Some(other.to_string()),
            })
    }
}

/// `defaultCurrency`: an object in the JSON examples, a string in the resource table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Currency {
    Info {
        code: String,
        #[serde(default)]
        symbol: Option<String>,
    },
    Code(String),
}

impl Currency {
    /// The ISO currency code.
    pub fn code(&self) -> &str {
        match self {
            Self::Info { code, .. } | Self::Code(code) => code,
        }
    }
}

/// A purchase term of an availability.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Term {
    pub id: Option<String>,
    pub duration: Option<String>,
    pub description: Option<String>,
    pub billing_cycle: Option<BillingCycle>,
}

/// An availability: the purchasable form of a SKU in a country and segment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Availability {
    pub id: String,
    pub product_id: String,
    #[serde(alias = "skuID")]
    pub sku_id: String,
    pub catalog_item_id: String,
    pub default_currency: Option<Currency>,
    pub segment: Option<String>,
    pub country: Option<String>,
    pub is_purchasable: Option<bool>,
    pub is_renewable: Option<bool>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub terms: Vec<Term>,
    /// The embedded product; `{}` in some examples, so every field is optional.
    pub product: Option<Product>,
    /// The embedded SKU.
    pub sku: Option<Sku>,
    pub links: Links,
    pub attributes: ResourceAttributes,
}

impl Availability {
    /// Whether the availability offers a term of this ISO-8601 duration (case-insensitive).
    pub fn has_term(&self, duration: &str) -> bool {
        self.terms.iter().any(|term| {
            term.duration
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case(duration))
        })
    }
}
