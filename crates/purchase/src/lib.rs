//! The one-time-purchase saga: Azure reserved VM instances, software subscriptions and
//! perpetual software through the Partner Center cart flow.
//!
//! - [`request`]: the purchase request format, parsed with errors that name the field;
//! - [`context`]: what the saga remembers (persisted);
//! - [`state`]: the eight states;
//! - [`call`]: Partner Center calls as data, replies and failures;
//! - [`plan`] and [`decide`]: the decision logic, pure;
//! - [`execute`]: the only I/O, through `pcsaga-partner-center`;
//! - [`budgets`]: each call's class in the rate governor, the default budgets;
//! - [`cache`]: replies shared by a daemon's purchases (catalog, registered subscriptions);
//! - [`workflow`]: the engine binding, with the resume and cancel rules.

pub mod attach;
pub mod budgets;
pub mod cache;
pub mod call;
pub mod context;
pub mod decide;
pub mod direct;
pub mod execute;
pub mod metrics;
pub mod plan;
pub mod request;
pub mod state;
pub mod transitions;
pub mod workflow;

pub use context::PurchaseContext;
pub use request::{
    check_for_cloud, check_for_partner, differing_fields, parse_request, parse_value, OrderPath,
    PurchaseRequest, RequestError,
};
pub use state::{State, STATE_NAMES};
pub use workflow::{submit, PurchaseWorkflow, WORKFLOW_NAME};
