//! How the saga's calls meet the rate governor: each call's class, the default budgets of the
//! classes, and what an outcome tells the governor.
//!
//! Partner Center publishes one number: the Order resource (`/customers/{c}/orders…`) allows
//! 500 requests per minute per tenant (spec §5.3; billing spec §5.6). Everything else is
//! throttled dynamically with unpublished limits, so the other budgets are ours, chosen
//! conservatively and documented in README.md; `[governor]` in the daemon's config changes them.

use std::time::Duration;

use pcsaga_engine::{Admission, ClassBudget, Feedback};
use pcsaga_partner_center::ErrorClass;

use crate::call::{Call, Outcome};
use crate::context::PurchaseContext;

/// The call classes and their default budgets, in calls per minute per partner tenant.
pub const DEFAULT_BUDGETS: &[(&str, u32)] = &[
    // E4-E8: not in the throttled list; still the most frequent reads of a batch.
    ("catalog", 600),
    // E1, E2: throttled (listed); registration is rare, polling is the bulk.
    ("registration", 120),
    // E9.
    ("inventory", 300),
    // E10-E12: throttled (listed).
    ("cart", 300),
    // E13 and E15/E16 (the order list): half of the Order resource's 500/min, since the order
    // list shares that resource with the order reads below.
    ("checkout", 250),
    // E14, E17: the other half of the Order resource.
    ("order_reads", 250),
    // E18, E19.
    ("entitlements", 300),
    // E22-E29 (billing reads): the billing spec's decision, 60/min.
    ("billing", 60),
];

/// The class of a call.
pub fn class_of(call: &Call) -> &'static str {
    match call {
        Call::GetSku { .. } | Call::GetProduct { .. } | Call::ListAvailabilities { .. } => {
            "catalog"
        }
        Call::GetRegistration { .. } | Call::Register { .. } => "registration",
        Call::CheckInventory { .. } => "inventory",
        Call::CreateCart { .. } | Call::UpdateCart { .. } | Call::GetCart { .. } => "cart",
        // The Order resource's budget (E21 with the order list, addendum §5.6).
        Call::Checkout { .. } | Call::CreateOrder { .. } | Call::ListOrders => "checkout",
        Call::GetOrder { .. } => "order_reads",
        Call::ListEntitlements | Call::GetArtifact { .. } => "entitlements",
    }
}

/// The default budgets, as the engine takes them.
pub fn default_budgets() -> Vec<ClassBudget> {
    DEFAULT_BUDGETS
        .iter()
        .map(|(name, per_minute)| ClassBudget {
            name: (*name).to_owned(),
            per_minute: *per_minute,
        })
        .collect()
}

/// How a call waits: by class, by customer, and money first (a purchase that sent a checkout).
pub fn admission(ctx: &PurchaseContext, call: &Call) -> Admission {
    Admission {
        class: class_of(call),
        customer: ctx.request.customer_id.clone(),
        urgent: ctx.checkout.attempted,
    }
}

/// A 429 pauses the class; any other reply is an answer; no reply says nothing.
pub fn feedback(outcome: &Outcome) -> Feedback {
    match outcome {
        Ok(_) => Feedback::Answered,
        Err(f) if f.status() == Some(429) || f.class == ErrorClass::Throttled => {
            Feedback::Throttled {
                retry_after: f.retry_after().filter(|d| *d > Duration::ZERO),
            }
        }
        Err(f) if f.status().is_none() => Feedback::Unanswered,
        Err(_) => Feedback::Answered,
    }
}
