//! The simulator's catalog, loaded from a data file (`data/catalog.json` is built in).
//!
//! The file holds products with their SKUs and availabilities in Partner Center's JSON shapes,
//! plus two simulator-only keys per product: `kind` and `targetViews`. Availabilities are
//! listed once per SKU with their segments and terms and are served for every country the
//! product is sold in, with the country's currency.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The built-in catalog.
pub const BUILTIN_CATALOG: &str = include_str!("../data/catalog.json");

/// Markets where software subscriptions are not sold, as ISO 3166 alpha-2 codes, transcribed
/// from the table in `reference/make-a-one-time-purchase.md` (Bonaire, Saba and Sint Eustatius
/// share `BQ`; Svalbard and Jan Mayen share `SJ`; Kosovo uses the user-assigned `XK`).
pub const SOFTWARE_SUBSCRIPTION_UNAVAILABLE_MARKETS: &[&str] = &[
    "AX", "AS", "AD", "AI", "AQ", "AG", "AW", "BJ", "BT", "BQ", "BV", "BR", "IO", "VG", "BF", "BI",
    "KH", "CF", "TD", "CN", "CX", "CC", "KM", "CG", "CD", "CK", "DJ", "DM", "GQ", "ER", "FK", "GF",
    "PF", "TF", "GA", "GM", "GI", "GL", "GD", "GP", "GU", "GG", "GN", "GW", "GY", "HT", "HM", "IM",
    "SJ", "JE", "KI", "XK", "LA", "LS", "LR", "MG", "MW", "MV", "ML", "MH", "MQ", "MR", "YT", "FM",
    "MS", "MZ", "MM", "NR", "NC", "NE", "NU", "NF", "MP", "PW", "PG", "PN", "RE", "RU", "BL", "LC",
    "MF", "PM", "VC", "WS", "SM", "ST", "SC", "SL", "SX", "SB", "SO", "GS", "SS", "SH", "SR", "SZ",
    "TL", "TG", "TK", "TO", "TC", "TV", "UM", "VU", "VA", "WF", "YE",
];

/// What a product is, which decides entitlements, order groups and cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductKind {
    Reservation,
    SoftwareSubscription,
    PerpetualSoftware,
}

/// A customer the simulator knows.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Customer {
    pub id: String,
    pub country: String,
    #[serde(default)]
    pub company_name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CatalogFile {
    #[serde(default)]
    customers: Vec<Customer>,
    #[serde(default)]
    currencies: BTreeMap<String, (String, String)>,
    products: Vec<Value>,
}

/// A product with its SKUs.
#[derive(Debug, Clone)]
pub struct ProductEntry {
    pub id: String,
    pub kind: ProductKind,
    pub target_views: Vec<String>,
    /// Served fields (no `kind`, `targetViews`, `skus`).
    pub fields: Map<String, Value>,
    pub skus: Vec<SkuEntry>,
}

/// A SKU with its availabilities.
#[derive(Debug, Clone)]
pub struct SkuEntry {
    pub id: String,
    pub fields: Map<String, Value>,
    pub availabilities: Vec<AvailabilityEntry>,
}

/// An availability template.
#[derive(Debug, Clone)]
pub struct AvailabilityEntry {
    pub id: String,
    pub segments: Vec<String>,
    pub terms: Value,
}

impl SkuEntry {
    fn list(&self, key: &str) -> Vec<String> {
        self.fields
            .get(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn prerequisites(&self) -> Vec<String> {
        self.list("purchasePrerequisites")
    }

    pub fn inventory_variables(&self) -> Vec<String> {
        self.list("inventoryVariables")
    }

    pub fn provisioning_variables(&self) -> Vec<String> {
        self.list("provisioningVariables")
    }

    pub fn billing_cycles(&self) -> Vec<String> {
        self.list("supportedBillingCycles")
    }

    pub fn quantity_bounds(&self) -> (i64, i64) {
        let get = |k: &str, d: i64| self.fields.get(k).and_then(Value::as_i64).unwrap_or(d);
        (get("minimumQuantity", 1), get("maximumQuantity", i64::MAX))
    }

    /// `dynamicAttributes.<name>` as text.
    pub fn attribute(&self, name: &str) -> Option<String> {
        self.fields
            .get("dynamicAttributes")
            .and_then(|attrs| attrs.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub fn title(&self) -> String {
        self.fields
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or(&self.id)
            .to_owned()
    }
}

/// The loaded catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub products: Vec<ProductEntry>,
    customers: HashMap<String, Customer>,
    currencies: BTreeMap<String, (String, String)>,
}

impl Catalog {
    /// Parses a catalog file; the error names what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: CatalogFile =
            serde_json::from_str(text).map_err(|e| format!("catalog is not valid JSON: {e}"))?;
        let mut products = Vec::new();
        for (index, raw) in file.products.into_iter().enumerate() {
            let Value::Object(mut fields) = raw else {
                return Err(format!("products[{index}] is not an object"));
            };
            let id = take_str(&mut fields, "id", &format!("products[{index}]"))?;
            let kind: ProductKind = serde_json::from_value(fields.remove("kind").unwrap_or(Value::Null))
                .map_err(|_| format!("products[{index}] ({id}): kind must be reservation, software_subscription or perpetual_software"))?;
            let target_views =
                serde_json::from_value(fields.remove("targetViews").unwrap_or(json!([])))
                    .map_err(|e| format!("products[{index}] ({id}): targetViews: {e}"))?;
            let skus = match fields.remove("skus") {
                Some(Value::Array(skus)) => skus,
                _ => return Err(format!("products[{index}] ({id}): skus must be an array")),
            };
            let mut sku_entries = Vec::new();
            for (sku_index, raw_sku) in skus.into_iter().enumerate() {
                let at = format!("products[{index}].skus[{sku_index}]");
                let Value::Object(mut sku_fields) = raw_sku else {
                    return Err(format!("{at} is not an object"));
                };
                let sku_id = take_str(&mut sku_fields, "id", &at)?;
                let availabilities = match sku_fields.remove("availabilities") {
                    Some(Value::Array(list)) => list,
                    _ => return Err(format!("{at}: availabilities must be an array")),
                };
                let mut availability_entries = Vec::new();
                for (a_index, a) in availabilities.into_iter().enumerate() {
                    let at = format!("{at}.availabilities[{a_index}]");
                    let Value::Object(mut a) = a else {
                        return Err(format!("{at} is not an object"));
                    };
                    availability_entries.push(AvailabilityEntry {
                        id: take_str(&mut a, "id", &at)?,
                        segments: serde_json::from_value(
                            a.remove("segments").unwrap_or(json!(["commercial"])),
                        )
                        .map_err(|e| format!("{at}.segments: {e}"))?,
                        terms: a.remove("terms").unwrap_or(json!([])),
                    });
                }
                sku_entries.push(SkuEntry {
                    id: sku_id,
                    fields: sku_fields,
                    availabilities: availability_entries,
                });
            }
            products.push(ProductEntry {
                id,
                kind,
                target_views,
                fields,
                skus: sku_entries,
            });
        }
        let customers = file
            .customers
            .into_iter()
            .map(|c| (c.id.to_ascii_lowercase(), c))
            .collect();
        Ok(Self {
            products,
            customers,
            currencies: file.currencies,
        })
    }

    /// The built-in catalog.
    pub fn builtin() -> Self {
        match Self::parse(BUILTIN_CATALOG) {
            Ok(catalog) => catalog,
            // The built-in file is checked by a unit test; reaching this is a build defect.
            Err(e) => unreachable!("the built-in catalog is invalid: {e}"),
        }
    }

    /// The customers of the catalog file.
    pub fn customers(&self) -> impl Iterator<Item = &Customer> {
        self.customers.values()
    }

    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.customers.get(&id.to_ascii_lowercase())
    }

    pub fn product(&self, id: &str) -> Option<&ProductEntry> {
        self.products.iter().find(|p| p.id.eq_ignore_ascii_case(id))
    }

    /// Whether a product is sold in a country (software subscriptions are not sold everywhere).
    pub fn sold_in(&self, product: &ProductEntry, country: &str) -> bool {
        !(product.kind == ProductKind::SoftwareSubscription
            && SOFTWARE_SUBSCRIPTION_UNAVAILABLE_MARKETS
                .iter()
                .any(|m| m.eq_ignore_ascii_case(country)))
    }

    /// Resolves `product:sku:availability`.
    pub fn catalog_item(&self, id: &str) -> Option<(&ProductEntry, &SkuEntry, &AvailabilityEntry)> {
        let mut parts = id.split(':');
        let (p, s, a) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let product = self.product(p)?;
        let sku = product.skus.iter().find(|x| x.id.eq_ignore_ascii_case(s))?;
        let availability = sku
            .availabilities
            .iter()
            .find(|x| x.id.eq_ignore_ascii_case(a))?;
        Some((product, sku, availability))
    }

    fn currency(&self, country: &str) -> Value {
        let (code, symbol) = self
            .currencies
            .get(&country.to_ascii_uppercase())
            .cloned()
            .unwrap_or_else(|| ("USD".to_owned(), "$".to_owned()));
        json!({"code": code, "symbol": symbol})
    }

    /// The currency symbol of a country's currency.
    pub fn currency_symbol(&self, country: &str) -> String {
        self.currency(country)["symbol"]
            .as_str()
            .unwrap_or("$")
            .to_owned()
    }

    /// The currency code charged in a country.
    pub fn currency_code(&self, country: &str) -> String {
        self.currency(country)["code"]
            .as_str()
            .unwrap_or("USD")
            .to_owned()
    }

    pub fn product_json(&self, product: &ProductEntry, country: &str) -> Value {
        let mut out = product.fields.clone();
        out.insert("id".into(), json!(product.id));
        out.insert(
            "links".into(),
            json!({
                "skus": link(&format!("/products/{}/skus?country={country}", product.id)),
                "self": link(&format!("/products/{}?country={country}", product.id)),
            }),
        );
        Value::Object(out)
    }

    pub fn sku_json(&self, product: &ProductEntry, sku: &SkuEntry, country: &str) -> Value {
        let mut out = sku.fields.clone();
        out.insert("id".into(), json!(sku.id));
        out.insert("productId".into(), json!(product.id));
        out.insert(
            "links".into(),
            json!({
                "availabilities": link(&format!("/products/{}/skus/{}/availabilities?country={country}", product.id, sku.id)),
                "self": link(&format!("/products/{}/skus/{}?country={country}", product.id, sku.id)),
            }),
        );
        Value::Object(out)
    }

    pub fn availability_json(
        &self,
        product: &ProductEntry,
        sku: &SkuEntry,
        availability: &AvailabilityEntry,
        country: &str,
        segment: &str,
    ) -> Value {
        json!({
            "id": availability.id,
            "productId": product.id,
            "skuId": sku.id,
            "catalogItemId": format!("{}:{}:{}", product.id, sku.id, availability.id),
            "defaultCurrency": self.currency(country),
            "segment": segment,
            "country": country.to_ascii_uppercase(),
            "isPurchasable": true,
            "isRenewable": false,
            "terms": availability.terms,
            "product": self.product_json(product, country),
            "sku": self.sku_json(product, sku, country),
            "links": {"self": link(&format!("/products/{}/skus/{}/availabilities/{}?country={country}", product.id, sku.id, availability.id))},
            "attributes": {"objectType": "Availability"},
        })
    }
}

fn take_str(fields: &mut Map<String, Value>, key: &str, at: &str) -> Result<String, String> {
    match fields.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!("{at}: {key} must be a non-empty string")),
    }
}

/// A GET link as Partner Center writes them.
pub fn link(uri: &str) -> Value {
    json!({"uri": uri, "method": "GET", "headers": []})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_loads_and_covers_every_kind() {
        let catalog = Catalog::parse(BUILTIN_CATALOG).expect("built-in catalog parses");
        for kind in [
            ProductKind::Reservation,
            ProductKind::SoftwareSubscription,
            ProductKind::PerpetualSoftware,
        ] {
            assert!(
                catalog.products.iter().any(|p| p.kind == kind),
                "no {kind:?} product"
            );
        }
        let (product, sku, _) = catalog
            .catalog_item("DZH318Z0BQ3Q:0001:DZH318XZXVNF")
            .expect("RI item");
        assert_eq!(product.kind, ProductKind::Reservation);
        assert_eq!(
            sku.prerequisites(),
            vec!["AzureSubscriptionRegistration", "InventoryCheck"]
        );
        assert_eq!(sku.attribute("armRegionName").as_deref(), Some("eastus"));
    }

    #[test]
    fn software_subscriptions_are_not_sold_in_listed_markets() {
        let catalog = Catalog::builtin();
        let software = catalog
            .product("DG7GMGF0FKZV")
            .expect("software subscription");
        let perpetual = catalog.product("DG7GMGF0DWTL").expect("perpetual");
        assert!(catalog.sold_in(software, "US"));
        assert!(!catalog.sold_in(software, "BR"));
        assert!(!catalog.sold_in(software, "ru"));
        assert!(catalog.sold_in(perpetual, "BR"));
        assert_eq!(
            SOFTWARE_SUBSCRIPTION_UNAVAILABLE_MARKETS.len(),
            107,
            "110 names in the reference table, 3 sharing a code"
        );
    }

    #[test]
    fn a_bad_catalog_names_the_problem() {
        let err =
            Catalog::parse(r#"{"products":[{"id":"X","kind":"car","skus":[]}]}"#).unwrap_err();
        assert!(err.contains("products[0] (X): kind"), "{err}");
    }
}
