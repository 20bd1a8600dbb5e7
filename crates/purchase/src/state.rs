//! The eight states of a one-time purchase, in order.

use serde::{Deserialize, Serialize};

/// A purchase saga's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum State {
    Enablement,
    RegistrationPolling,
    Discovery,
    InventoryCheck,
    CartBuild,
    Checkout,
    OrderVisibilityPolling,
    EntitlementFetch,
}

/// The state names, in order, as stored.
pub const STATE_NAMES: &[&str] = &[
    "Enablement",
    "RegistrationPolling",
    "Discovery",
    "InventoryCheck",
    "CartBuild",
    "Checkout",
    "OrderVisibilityPolling",
    "EntitlementFetch",
];

impl State {
    pub const ALL: [State; 8] = [
        State::Enablement,
        State::RegistrationPolling,
        State::Discovery,
        State::InventoryCheck,
        State::CartBuild,
        State::Checkout,
        State::OrderVisibilityPolling,
        State::EntitlementFetch,
    ];

    pub fn name(self) -> &'static str {
        STATE_NAMES[self as usize]
    }

    /// Parses a state name, ignoring case.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(name))
    }

    /// Whether money may have moved once a saga is in this state.
    pub fn after_checkout_began(self) -> bool {
        self >= State::Checkout
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The engine stores a purchase's state by [`State::name`] and parses it back with
/// [`State::parse`]; a name that does not parse parks the saga.
impl pcsaga_engine::workflow::SagaState for State {
    const ALL: &'static [Self] = &State::ALL;

    fn name(self) -> &'static str {
        State::name(self)
    }

    fn parse(name: &str) -> Option<Self> {
        State::parse(name)
    }
}
