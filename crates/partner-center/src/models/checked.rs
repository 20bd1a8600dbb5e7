//! Identity checks on decoded replies.
//!
//! Decoding is lenient (defaults for missing fields), so `{}` or even `[]` decodes into an
//! order with an empty id. A reply without the field that identifies it is not usable, and for
//! a side-effecting call it leaves the outcome in doubt: the client treats it like an
//! unreadable body.

use super::{
    Availability, Cart, CartCheckoutResult, Collection, Entitlement, InventoryItem, Order,
    OrderLineItemProvisioningStatus, Product, ReservedInstanceArtifactDetails, Sku,
    SubscriptionRegistrationStatus,
};

/// A decoded reply that can say what it is missing.
pub trait Checked {
    /// `Some(what)` when a field the reply cannot do without is missing or empty.
    fn missing(&self) -> Option<String> {
        None
    }
}

impl Checked for Order {
    fn missing(&self) -> Option<String> {
        self.id
            .trim()
            .is_empty()
            .then(|| "the order has no id".to_owned())
    }
}

impl Checked for Cart {
    fn missing(&self) -> Option<String> {
        self.id
            .as_deref()
            .is_none_or(|id| id.trim().is_empty())
            .then(|| "the cart has no id".to_owned())
    }
}

impl Checked for CartCheckoutResult {
    fn missing(&self) -> Option<String> {
        self.orders
            .iter()
            .find_map(|o| o.missing().map(|m| format!("checkout result: {m}")))
    }
}

impl Checked for Product {
    fn missing(&self) -> Option<String> {
        self.id
            .trim()
            .is_empty()
            .then(|| "the product has no id".to_owned())
    }
}

impl Checked for Sku {
    fn missing(&self) -> Option<String> {
        self.id
            .trim()
            .is_empty()
            .then(|| "the SKU has no id".to_owned())
    }
}

impl Checked for Availability {
    fn missing(&self) -> Option<String> {
        self.catalog_item_id
            .trim()
            .is_empty()
            .then(|| format!("availability {:?} has no catalogItemId", self.id))
    }
}

impl Checked for InventoryItem {
    fn missing(&self) -> Option<String> {
        self.product_id
            .trim()
            .is_empty()
            .then(|| "an inventory item has no productId".to_owned())
    }
}

impl Checked for Entitlement {}
impl Checked for OrderLineItemProvisioningStatus {}
impl Checked for ReservedInstanceArtifactDetails {}
impl Checked for SubscriptionRegistrationStatus {}

impl<T: Checked> Checked for Vec<T> {
    fn missing(&self) -> Option<String> {
        self.iter().find_map(Checked::missing)
    }
}

impl<T: Checked> Checked for Collection<T> {
    fn missing(&self) -> Option<String> {
        self.items.missing()
    }
}
