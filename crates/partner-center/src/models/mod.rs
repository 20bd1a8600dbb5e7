//! Typed Partner Center resources.
//!
//! Decoding is lenient by design (spec section 4): unknown fields are ignored (no
//! `deny_unknown_fields` anywhere), enums accept any casing and keep unknown values, timestamps
//! accept every documented form, and fields whose JSON type differs between documents accept
//! each form. Encoding writes camelCase and only the fields a request may carry.

pub mod billing;
pub mod cart;
pub mod catalog;
pub mod checked;
pub mod common;
pub mod datetime;
pub mod entitlement;
pub mod inventory;
pub(crate) mod lenient;
pub mod order;
pub mod registration;

pub use billing::{Invoice, InvoiceDetail, InvoiceSummaries, InvoiceSummary, InvoiceSummaryDetail};
pub use cart::{
    Cart, CartCheckoutResult, CartError, CartErrorCode, CartLineItem, CartStatus, OrderError,
};
pub use catalog::{
    AttestationProperties, Availability, BillingCycle, Currency, ItemType, Product,
    PurchasePrerequisite, Sku, Term,
};
pub use checked::Checked;
pub use common::{ApiFault, Collection, KeyValue, Link, Links, ResourceAttributes, ThrottleFault};
pub use entitlement::{
    Artifact, Entitlement, EntitlementType, QuantityDetail, ReferenceOrder, Reservation,
    ReservedInstanceArtifactDetails,
};
pub use inventory::{InventoryCheckRequest, InventoryItem, InventoryRestriction, InventoryTarget};
pub use order::{
    CancelLine, NewOrder, NewOrderLineItem, Order, OrderCancellation, OrderLineItem,
    OrderLineItemProvisioningStatus, OrderStatus, ProvisioningState, QuantityProvisioning,
    RenewsTo,
};
pub use registration::{RegistrationState, SubscriptionRegistrationStatus};
