//! Calls as data (effects), their replies, and failures summarised for decisions.

use serde::Serialize;
use uuid::Uuid;

use pcsaga_partner_center::models::{
    Availability, Cart, CartCheckoutResult, Entitlement, InventoryItem, NewOrder, Order, Product,
    RegistrationState, ReservedInstanceArtifactDetails, Sku,
};
use pcsaga_partner_center::Error as ApiError;

/// A Partner Center call the saga wants made.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    GetSku {
        item: usize,
    },
    GetRegistration {
        subscription_id: String,
    },
    Register {
        subscription_id: String,
        request_id: Uuid,
    },
    GetProduct {
        item: usize,
    },
    ListAvailabilities {
        item: usize,
    },
    CheckInventory {
        item: usize,
    },
    CreateCart {
        request_id: Uuid,
        cart: Cart,
    },
    UpdateCart {
        request_id: Uuid,
        cart_id: String,
        cart: Cart,
    },
    Checkout {
        cart_id: String,
        request_id: Uuid,
    },
    /// E21, a direct order: the exact body and request id persisted before the first send
    /// (`PurchaseContext::direct`), sent again only after proven absence.
    CreateOrder {
        request_id: Uuid,
        order: NewOrder,
    },
    /// E11, after a checkout reply that refused without proof: `Ordered` means it went
    /// through after all.
    GetCart {
        cart_id: String,
    },
    ListOrders,
    GetOrder {
        order_id: String,
    },
    ListEntitlements,
    GetArtifact {
        entitlement: usize,
        artifact: usize,
        uri: String,
    },
}

impl Call {
    /// Whether the call changes state at Partner Center: its intent (with its `MS-RequestId`)
    /// is committed before it is sent, and the id is kept until a reply settles it. The one
    /// place that says so.
    pub fn is_side_effecting(&self) -> bool {
        matches!(
            self,
            Self::Register { .. }
                | Self::CreateCart { .. }
                | Self::UpdateCart { .. }
                | Self::Checkout { .. }
                | Self::CreateOrder { .. }
        )
    }

    /// The call's name in history rows.
    pub fn name(&self) -> &'static str {
        match self {
            Self::GetSku { .. } => "get_sku",
            Self::GetRegistration { .. } => "registration_status",
            Self::Register { .. } => "register",
            Self::GetProduct { .. } => "get_product",
            Self::ListAvailabilities { .. } => "list_availabilities",
            Self::CheckInventory { .. } => "check_inventory",
            Self::CreateCart { .. } => "create_cart",
            Self::UpdateCart { .. } => "update_cart",
            Self::Checkout { .. } => "checkout",
            Self::CreateOrder { .. } => "create_order",
            Self::GetCart { .. } => "get_cart",
            Self::ListOrders => "list_orders",
            Self::GetOrder { .. } => "get_order",
            Self::ListEntitlements => "list_entitlements",
            Self::GetArtifact { .. } => "artifact_details",
        }
    }
}

impl Call {
    /// The HTTP method and path template of the call (spec section 6), for logs.
    pub fn route(&self) -> &'static str {
        match self {
            Self::GetSku { .. } => "GET /products/{p}/skus/{s}",
            Self::GetRegistration { .. } => {
                "GET /customers/{c}/subscriptions/{s}/registrationstatus"
            }
            Self::Register { .. } => "POST /customers/{c}/subscriptions/{s}/registrations",
            Self::GetProduct { .. } => "GET /products/{p}",
            Self::ListAvailabilities { .. } => "GET /products/{p}/skus/{s}/availabilities",
            Self::CheckInventory { .. } => "POST /extensions/product/checkinventory",
            Self::CreateCart { .. } => "POST /customers/{c}/carts",
            Self::UpdateCart { .. } => "PUT /customers/{c}/carts/{cart}",
            Self::Checkout { .. } => "POST /customers/{c}/carts/{cart}/checkout",
            Self::CreateOrder { .. } => "POST /customers/{c}/orders",
            Self::GetCart { .. } => "GET /customers/{c}/carts/{cart}",
            Self::ListOrders => "GET /customers/{c}/orders",
            Self::GetOrder { .. } => "GET /customers/{c}/orders/{o}",
            Self::ListEntitlements => "GET /customers/{c}/entitlements",
            Self::GetArtifact { .. } => "GET {artifact link}",
        }
    }
}

/// A successful reply.
#[derive(Debug, Clone)]
pub enum Reply {
    Sku(Box<Sku>),
    Registration(RegistrationState),
    Registered,
    Product(Box<Product>),
    Availabilities(Vec<Availability>),
    Inventory(Vec<InventoryItem>),
    Cart(Box<Cart>),
    Checkout(Box<CartCheckoutResult>),
    Orders(Vec<Order>),
    Order(Box<Order>),
    Entitlements(Vec<Entitlement>),
    Artifact(Box<ReservedInstanceArtifactDetails>),
}

/// What a call returned.
pub type Outcome = Result<Reply, ApiError>;
