//! The two ids Partner Center traces calls by.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps an existing id (for example one read back from the database).
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The id as a UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type! {
    /// `MS-RequestId`: the idempotency key of one logical call. A side-effecting call reuses
    /// it on every retry after a timeout or lost connection and gets a new one only after a
    /// response arrived (spec 3.1 and 9.2). The caller persists it before sending.
    RequestId
}

id_type! {
    /// `MS-CorrelationId`: ties the calls of one purchase together for support.
    CorrelationId
}
