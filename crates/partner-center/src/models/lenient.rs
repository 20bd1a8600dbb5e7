//! Lenient enumerations and field decoders.
//!
//! Partner Center's enum values arrive in several casings (`NotRegistered`, `notregistered`,
//! `not_registered`), sometimes as integers (the .NET SDK accepts both), and new values appear
//! without notice. Every enum in this crate therefore decodes case- and underscore-insensitively,
//! accepts the documented integer position, and keeps any value it does not know in
//! `Unknown(String)` instead of failing the whole response (spec section 4).

/// Normalises an enum spelling for comparison: lower case, without `_`, `-` or spaces.
pub(crate) fn fold(value: &str) -> String {
    value
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Declares an enum that decodes leniently and encodes to its canonical wire spelling.
///
/// Each variant lists its canonical wire string and, optionally, the integer the SDK uses.
macro_rules! lenient_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal $(| $num:literal)? ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this client does not know, kept verbatim.
            Unknown(String),
        }

        impl $name {
            /// The canonical wire spelling of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )+
                    Self::Unknown(raw) => raw.as_str(),
                }
            }

            /// Decodes a wire string, ignoring case and `_`/`-`; never fails.
            pub fn parse(raw: &str) -> Self {
                let folded = $crate::models::lenient::fold(raw);
                $( if folded == $crate::models::lenient::fold($wire) { return Self::$variant; } )+
                Self::Unknown(raw.to_owned())
            }

            /// Decodes the SDK's integer form; unknown numbers are kept as text.
            #[allow(unused_variables, reason = "enums without numeric forms ignore the argument")]
            pub fn from_number(number: i64) -> Self {
                $( $( if number == $num { return Self::$variant; } )? )+
                Self::Unknown(number.to_string())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                match serde_json::Value::deserialize(deserializer)? {
                    serde_json::Value::String(raw) => Ok(Self::parse(&raw)),
                    serde_json::Value::Number(n) => Ok(n
                        .as_i64()
                        .map(Self::from_number)
                        .unwrap_or_else(|| Self::Unknown(n.to_string()))),
                    serde_json::Value::Null => Ok(Self::Unknown(String::new())),
                    other => Ok(Self::Unknown(other.to_string())),
                }
            }
        }
    };
}
pub(crate) use lenient_enum;

/// Serde helpers for fields whose JSON type varies between documents.
pub(crate) mod de {
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    /// A string that may arrive as a JSON string or number (`"3600"` or `3600`, `800010` or
    /// `"800010"`). Null and absent become `None`.
    pub(crate) fn opt_string_or_number<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        Ok(match Option::<Value>::deserialize(deserializer)? {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        })
    }

    /// An amount of money, exact: a JSON number or numeric string, read from its text (the
    /// shortest text of the number as sent) into a decimal, never through a float's value.
    /// Null, absent or unreadable become `None`.
    pub(crate) fn opt_decimal<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<rust_decimal::Decimal>, D::Error> {
        use std::str::FromStr;
        Ok(match Option::<Value>::deserialize(deserializer)? {
            Some(Value::Number(n)) => rust_decimal::Decimal::from_str(&n.to_string())
                .or_else(|_| rust_decimal::Decimal::from_scientific(&n.to_string()))
                .ok(),
            Some(Value::String(s)) => rust_decimal::Decimal::from_str(s.trim()).ok(),
            _ => None,
        })
    }

    /// An integer that may arrive as a JSON number or numeric string (CartLineItem `id`).
    pub(crate) fn opt_int_or_string<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i64>, D::Error> {
        Ok(match Option::<Value>::deserialize(deserializer)? {
            Some(Value::Number(n)) => n.as_i64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// A timestamp in any documented form; `0001-01-01T00:00:00` (the billing calls' "never"),
    /// null, absent or unreadable become `None`.
    pub(crate) fn opt_date<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, D::Error> {
        use chrono::Datelike;
        Ok(match Option::<Value>::deserialize(deserializer)? {
            Some(Value::String(s)) => crate::models::datetime::parse(&s).filter(|d| d.year() > 1),
            _ => None,
        })
    }

    /// A list that may be absent or null; both read as empty.
    pub(crate) fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
    }
}
