//! The saga's transition table, declared once: in a state, after a call (or a plan that
//! decides without one) answered with an outcome, the decisions the saga may make and where
//! each leads. `plan` and `decide` are checked against it (every decision they make must be a
//! row), the auditor derives the state changes it allows from it, and the behavioural tests
//! must drive every row that a Partner Center reply can reach.
//!
//! Outcomes are the client's classes (`transient`, `business`, ...), `ok` for a reply, `-` for
//! a plan that decides without a call, or a group:
//!
//! - `retryable`: `transient`, `throttled`, `outcome_unknown`;
//! - `refused`: `business`, `not_found`, `in_flight`, `already_submitted`.
//!
//! A row's call is a call name or `*` (any call of the state without a row of its own for that
//! outcome).

use std::fmt;

use crate::state::State;

/// What can produce a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// A Partner Center reply (or the plan) produces it: a behavioural test must drive it.
    Wire,
    /// No reply produces it today (an outcome the client never gives for that call, or an
    /// internal invariant): the row says what `decide` does if it ever happens.
    Defensive,
}

/// One row of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub state: State,
    pub call: &'static str,
    pub outcome: &'static str,
    /// `advance`, `continue`, `retry`, `poll`, `hold`, `succeed`, `fail` or `park`.
    pub decision: &'static str,
    /// A state name for `advance`, else `stay` or the status a stop leads to.
    pub next: &'static str,
    pub reach: Reach,
    /// When this row applies rather than a sibling with the same call and outcome.
    pub when: &'static str,
}

/// A transition as a saga made it: what the behavioural tests record and `decide` is
/// checked against.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Driven {
    pub state: State,
    pub call: String,
    /// The client's class, `ok`, or `-`.
    pub outcome: String,
    pub decision: String,
    pub next: String,
}

impl fmt::Display for Driven {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} | {} | {} | {} | {}",
            self.state, self.call, self.outcome, self.decision, self.next
        )
    }
}

impl Driven {
    /// Describes a decision made in `state` after `call` answered `outcome`.
    pub fn of<C>(
        state: State,
        call: &str,
        outcome: &str,
        decision: &pcsaga_engine::Decision<State, C>,
    ) -> Self {
        use pcsaga_engine::Decision as D;
        let next = match decision {
            D::Advance { to, .. } => to.name().to_owned(),
            D::Succeed { .. } => "succeeded".to_owned(),
            D::Fail { .. } => "failed".to_owned(),
            D::Park { .. } => "needs_attention".to_owned(),
            _ => "stay".to_owned(),
        };
        Self {
            state,
            call: call.to_owned(),
            outcome: outcome.to_owned(),
            decision: decision.kind().to_owned(),
            next,
        }
    }
}

fn in_group(group: &str, outcome: &str) -> bool {
    match group {
        "retryable" => matches!(outcome, "transient" | "throttled" | "outcome_unknown"),
        "refused" => matches!(
            outcome,
            "business" | "not_found" | "in_flight" | "already_submitted"
        ),
        exact => exact == outcome,
    }
}

impl Transition {
    fn covers_key(&self, driven: &Driven) -> bool {
        self.state == driven.state
            && (self.call == driven.call || self.call == "*")
            && in_group(self.outcome, &driven.outcome)
    }

    fn specific_to(&self, driven: &Driven) -> bool {
        self.call == driven.call && self.covers_key(driven)
    }
}

/// The row a transition is an instance of, or `None`: a decision the table does not declare.
/// A row naming the call wins over `*` rows for the same outcome.
pub fn row_of(driven: &Driven) -> Option<&'static Transition> {
    let table = table();
    let keyed: Vec<&Transition> = if table.iter().any(|r| r.specific_to(driven)) {
        table.iter().filter(|r| r.specific_to(driven)).collect()
    } else {
        table.iter().filter(|r| r.covers_key(driven)).collect()
    };
    keyed
        .into_iter()
        .find(|r| r.decision == driven.decision && r.next == driven.next)
}

/// The state changes the table allows (forward edges; staying and stopping are not listed).
pub fn edges() -> Vec<(State, State)> {
    let mut out: Vec<(State, State)> = table()
        .iter()
        .filter(|r| r.decision == "advance")
        .filter_map(|r| State::parse(r.next).map(|to| (r.state, to)))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The table.
pub fn table() -> &'static [Transition] {
    static TABLE: std::sync::OnceLock<Vec<Transition>> = std::sync::OnceLock::new();
    TABLE.get_or_init(build)
}

fn build() -> Vec<Transition> {
    use Reach::{Defensive, Wire};
    use State::*;
    let mut rows = Vec::new();
    let mut row = |state, call, outcome, decision, next, reach, when| {
        rows.push(Transition {
            state,
            call,
            outcome,
            decision,
            next,
            reach,
            when,
        })
    };
    // What every state does with failures, unless a row of its own says otherwise. Before
    // Checkout nothing can have been bought, so a refusal fails; from Checkout on it parks.
    for state in State::ALL {
        let stop = if state.after_checkout_began() {
            ("park", "needs_attention")
        } else {
            ("fail", "failed")
        };
        row(
            state,
            "*",
            "retryable",
            "retry",
            "stay",
            Wire,
            "may pass: backoff, at least Retry-After",
        );
        row(
            state,
            "*",
            "auth_expired",
            "hold",
            "stay",
            Wire,
            "credentials refused: wait, no attempt counted",
        );
        row(
            state,
            "*",
            "refused",
            stop.0,
            stop.1,
            Wire,
            "a permanent refusal",
        );
        row(
            state,
            "*",
            "config",
            stop.0,
            stop.1,
            Defensive,
            "our own configuration",
        );
    }
    // Enablement: SKUs, then registrations.
    row(
        Enablement,
        "get_sku",
        "ok",
        "continue",
        "stay",
        Wire,
        "SKU facts recorded",
    );
    row(
        Enablement,
        "-",
        "-",
        "continue",
        "stay",
        Wire,
        "every SKU read: the subscriptions to check are listed",
    );
    row(
        Enablement,
        "-",
        "-",
        "fail",
        "failed",
        Wire,
        "a reservation without provisioningContext.subscriptionId",
    );
    row(
        Enablement,
        "registration_status",
        "ok",
        "continue",
        "stay",
        Wire,
        "status recorded",
    );
    row(
        Enablement,
        "register",
        "ok",
        "continue",
        "stay",
        Wire,
        "registration requested",
    );
    row(
        Enablement,
        "-",
        "-",
        "advance",
        "Discovery",
        Wire,
        "every subscription registered (or none needed)",
    );
    row(
        Enablement,
        "-",
        "-",
        "advance",
        "RegistrationPolling",
        Wire,
        "registration requested",
    );
    // RegistrationPolling.
    row(
        RegistrationPolling,
        "registration_status",
        "ok",
        "poll",
        "stay",
        Wire,
        "still registering",
    );
    row(
        RegistrationPolling,
        "registration_status",
        "ok",
        "continue",
        "stay",
        Wire,
        "this one registered, others not yet",
    );
    row(
        RegistrationPolling,
        "registration_status",
        "ok",
        "advance",
        "Discovery",
        Wire,
        "every subscription registered",
    );
    row(
        RegistrationPolling,
        "-",
        "-",
        "advance",
        "Discovery",
        Defensive,
        "every subscription registered (after a resume)",
    );
    // Discovery.
    row(
        Discovery,
        "get_product",
        "ok",
        "continue",
        "stay",
        Wire,
        "product found",
    );
    row(
        Discovery,
        "list_availabilities",
        "ok",
        "continue",
        "stay",
        Wire,
        "availability chosen",
    );
    row(
        Discovery,
        "list_availabilities",
        "ok",
        "fail",
        "failed",
        Wire,
        "no purchasable availability, term, quantity, billing cycle or provisioning variable",
    );
    row(
        Discovery,
        "-",
        "-",
        "advance",
        "InventoryCheck",
        Wire,
        "an item needs an inventory check",
    );
    row(
        Discovery,
        "-",
        "-",
        "advance",
        "CartBuild",
        Wire,
        "no inventory check needed",
    );
    // InventoryCheck.
    row(
        InventoryCheck,
        "check_inventory",
        "ok",
        "continue",
        "stay",
        Wire,
        "available",
    );
    row(
        InventoryCheck,
        "check_inventory",
        "ok",
        "fail",
        "failed",
        Wire,
        "restricted, or the SKU not reported",
    );
    row(
        InventoryCheck,
        "-",
        "-",
        "advance",
        "CartBuild",
        Wire,
        "every item available",
    );
    // CartBuild.
    for call in ["create_cart", "update_cart"] {
        // A PUT follows only a reply that asked for one; its own line errors are not sent
        // back to Discovery or retried by the simulator's carts.
        let reach = if call == "create_cart" {
            Wire
        } else {
            Defensive
        };
        row(
            CartBuild,
            call,
            "ok",
            "advance",
            "Checkout",
            Wire,
            "no line errors",
        );
        row(
            CartBuild,
            call,
            "ok",
            "advance",
            "Discovery",
            reach,
            "stale catalog ids: discover again, fix by PUT",
        );
        row(
            CartBuild,
            call,
            "ok",
            "retry",
            "stay",
            reach,
            "line errors that may pass, or no cart id",
        );
        row(
            CartBuild,
            call,
            "ok",
            "fail",
            "failed",
            Wire,
            "line errors: nothing bought",
        );
    }
    row(
        CartBuild,
        "update_cart",
        "not_found",
        "continue",
        "stay",
        Wire,
        "the cart expired before checkout: build a new one",
    );
    row(
        CartBuild,
        "-",
        "-",
        "continue",
        "stay",
        Defensive,
        "the cart expires within the hour: build a new one",
    );
    row(
        CartBuild,
        "-",
        "-",
        "advance",
        "Checkout",
        Wire,
        "a direct order's body and request id are built (no call), or the cart is ready",
    );
    row(
        CartBuild,
        "-",
        "-",
        "park",
        "needs_attention",
        Defensive,
        "invariant: a checkout was already sent",
    );
    // Checkout: the only call that spends money.
    row(
        Checkout,
        "checkout",
        "ok",
        "advance",
        "OrderVisibilityPolling",
        Wire,
        "orders (and maybe orderErrors)",
    );
    row(
        Checkout,
        "checkout",
        "ok",
        "fail",
        "failed",
        Wire,
        "every order group failed: nothing bought",
    );
    row(
        Checkout,
        "checkout",
        "ok",
        "park",
        "needs_attention",
        Defensive,
        "neither orders nor errors",
    );
    row(
        Checkout,
        "checkout",
        "in_flight",
        "retry",
        "stay",
        Wire,
        "800064: another request is checking the cart out",
    );
    row(
        Checkout,
        "checkout",
        "in_flight",
        "continue",
        "stay",
        Wire,
        "800060: reconcile through the order list",
    );
    row(
        Checkout,
        "checkout",
        "already_submitted",
        "continue",
        "stay",
        Wire,
        "reconcile through the order list",
    );
    row(
        Checkout,
        "checkout",
        "not_found",
        "continue",
        "stay",
        Wire,
        "reconcile through the order list",
    );
    row(
        Checkout,
        "checkout",
        "business",
        "continue",
        "stay",
        Wire,
        "read the cart (or reconcile after an unanswered attempt)",
    );
    row(
        Checkout,
        "get_cart",
        "ok",
        "fail",
        "failed",
        Wire,
        "the cart reads Active: the refusal is proven",
    );
    row(
        Checkout,
        "get_cart",
        "ok",
        "continue",
        "stay",
        Wire,
        "the cart reads Ordered: reconcile",
    );
    row(
        Checkout,
        "get_cart",
        "ok",
        "park",
        "needs_attention",
        Wire,
        "the cart reads neither",
    );
    for outcome in ["not_found", "in_flight", "already_submitted"] {
        row(
            Checkout,
            "get_cart",
            outcome,
            "continue",
            "stay",
            Wire,
            "the cart is gone or was submitted: reconcile",
        );
    }
    row(
        Checkout,
        "get_cart",
        "business",
        "park",
        "needs_attention",
        Wire,
        "the cart cannot be read",
    );
    row(
        Checkout,
        "list_orders",
        "ok",
        "poll",
        "stay",
        Wire,
        "not in the lagging list yet",
    );
    row(
        Checkout,
        "list_orders",
        "ok",
        "advance",
        "OrderVisibilityPolling",
        Wire,
        "the token's orders found, or exactly one order matches by customer, time and items",
    );
    row(
        Checkout,
        "list_orders",
        "ok",
        "park",
        "needs_attention",
        Wire,
        "no order carries the token and two or more match by customer, time and items",
    );
    row(
        Checkout,
        "-",
        "-",
        "park",
        "needs_attention",
        Wire,
        "a direct order proven absent after every send allowed (also the invariants: Checkout without a cart, or a direct order without its body)",
    );
    // Checkout of a direct order (E21, crates/purchase/src/direct.rs): nothing is sent again
    // before the order list proves the first send absent.
    row(
        Checkout,
        "create_order",
        "ok",
        "advance",
        "OrderVisibilityPolling",
        Wire,
        "the order was created",
    );
    row(
        Checkout,
        "create_order",
        "throttled",
        "retry",
        "stay",
        Wire,
        "turned away (429): the same body and id after Retry-After",
    );
    row(
        Checkout,
        "create_order",
        "transient",
        "retry",
        "stay",
        // A create-order's 408 and 5xx are outcome_unknown (the client's E21 rule); transient
        // is only a connection never made, which the simulator on loopback cannot produce.
        Defensive,
        "never reached Partner Center (no connection): the same body and id again",
    );
    for outcome in ["outcome_unknown", "in_flight", "already_submitted"] {
        row(
            Checkout,
            "create_order",
            outcome,
            "continue",
            "stay",
            if outcome == "already_submitted" {
                Defensive
            } else {
                Wire
            },
            "the order may exist: reconcile through the order list before anything is sent",
        );
    }
    for outcome in ["business", "not_found"] {
        row(
            Checkout,
            "create_order",
            outcome,
            "fail",
            "failed",
            Wire,
            "refused: no order was created (addendum 5.5)",
        );
        row(
            Checkout,
            "create_order",
            outcome,
            "continue",
            "stay",
            Wire,
            "refused after an earlier send whose outcome is unknown: reconcile",
        );
    }

    // OrderVisibilityPolling.
    row(
        OrderVisibilityPolling,
        "get_order",
        "ok",
        "poll",
        "stay",
        Wire,
        "pending",
    );
    row(
        OrderVisibilityPolling,
        "get_order",
        "ok",
        "continue",
        "stay",
        Wire,
        "this order completed, others not yet",
    );
    row(
        OrderVisibilityPolling,
        "get_order",
        "ok",
        "advance",
        "EntitlementFetch",
        Wire,
        "every order completed",
    );
    row(
        OrderVisibilityPolling,
        "get_order",
        "ok",
        "park",
        "needs_attention",
        Wire,
        "cancelled in Partner Center",
    );
    row(
        OrderVisibilityPolling,
        "get_order",
        "not_found",
        "poll",
        "stay",
        Wire,
        "not visible yet",
    );
    row(
        OrderVisibilityPolling,
        "-",
        "-",
        "advance",
        "EntitlementFetch",
        Wire,
        "every order already completed (found so by reconciliation)",
    );
    // EntitlementFetch.
    row(
        EntitlementFetch,
        "list_entitlements",
        "ok",
        "continue",
        "stay",
        Wire,
        "every order line matched",
    );
    row(
        EntitlementFetch,
        "list_entitlements",
        "ok",
        "poll",
        "stay",
        Wire,
        "not listed yet",
    );
    row(
        EntitlementFetch,
        "list_entitlements",
        "config",
        "succeed",
        "succeeded",
        Wire,
        "no app+user credentials: finish without them, and say so",
    );
    row(
        EntitlementFetch,
        "list_entitlements",
        "config",
        "park",
        "needs_attention",
        Defensive,
        "no app+user credentials, some groups failed",
    );
    row(
        EntitlementFetch,
        "artifact_details",
        "ok",
        "continue",
        "stay",
        Wire,
        "reservation ids recorded",
    );
    row(
        EntitlementFetch,
        "artifact_details",
        "not_found",
        "poll",
        "stay",
        Wire,
        "not visible yet",
    );
    row(
        EntitlementFetch,
        "-",
        "-",
        "succeed",
        "succeeded",
        Wire,
        "orders completed, entitlements read",
    );
    row(
        EntitlementFetch,
        "-",
        "-",
        "park",
        "needs_attention",
        Wire,
        "partly bought, or no confirmed order",
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forward_edges_are_the_states_in_order_and_the_rediscovery() {
        let edges: Vec<(&str, &str)> = edges()
            .into_iter()
            .map(|(a, b)| (a.name(), b.name()))
            .collect();
        assert_eq!(
            edges,
            vec![
                ("Enablement", "RegistrationPolling"),
                ("Enablement", "Discovery"),
                ("RegistrationPolling", "Discovery"),
                ("Discovery", "InventoryCheck"),
                ("Discovery", "CartBuild"),
                ("InventoryCheck", "CartBuild"),
                ("CartBuild", "Discovery"),
                ("CartBuild", "Checkout"),
                ("Checkout", "OrderVisibilityPolling"),
                ("OrderVisibilityPolling", "EntitlementFetch"),
            ]
        );
    }

    #[test]
    fn a_specific_row_wins_over_the_states_default() {
        let checkout_refused = Driven {
            state: State::Checkout,
            call: "checkout".into(),
            outcome: "business".into(),
            decision: "park".into(),
            next: "needs_attention".into(),
        };
        // The default would allow a park; the checkout's own row says: read the cart.
        assert!(row_of(&checkout_refused).is_none());
        let read_cart = Driven {
            decision: "continue".into(),
            next: "stay".into(),
            ..checkout_refused
        };
        assert!(row_of(&read_cart).is_some());
    }
}
