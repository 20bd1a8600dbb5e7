//! Shapes shared by every resource: links, attributes and collections (spec 4 and 7.13).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::lenient::de;

/// A hypermedia link. `uri` is relative to `{base}/v1`, sometimes with a leading `/v1` too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Link {
    pub uri: String,
    pub method: Option<String>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub headers: Vec<KeyValue>,
}

/// A `{key, value}` pair as used in link headers and cart participants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// `ResourceAttributes`: the object type and, on some resources, an etag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResourceAttributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
}

/// A resource's links, by name (`self`, `next`, `skus`, `provisioningStatus`, ...).
pub type Links = BTreeMap<String, Link>;

/// A resource collection: `{totalCount, items, links, attributes}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "T: Deserialize<'de>"))]
pub struct Collection<T> {
    #[serde(default)]
    pub total_count: Option<u64>,
    #[serde(default = "Vec::new", deserialize_with = "de::null_as_empty")]
    pub items: Vec<T>,
    #[serde(default)]
    pub links: Links,
    #[serde(default)]
    pub attributes: ResourceAttributes,
}

impl<T> Collection<T> {
    /// The link to the next page, if the service sent one.
    pub fn next_link(&self) -> Option<&Link> {
        self.links.get("next").filter(|link| !link.uri.is_empty())
    }
}

/// The standard error body of 4xx/5xx responses (spec 5.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ApiFault {
    #[serde(deserialize_with = "de::opt_string_or_number")]
    pub code: Option<String>,
    pub description: Option<String>,
    #[serde(deserialize_with = "de::null_as_empty")]
    pub data: Vec<serde_json::Value>,
    pub source: Option<String>,
}

/// The throttling body of a 429, which differs from [`ApiFault`] (spec 5.1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ThrottleFault {
    pub status_code: Option<u16>,
    pub message: Option<String>,
}
