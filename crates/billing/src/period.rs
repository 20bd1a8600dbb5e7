//! Billing months: one-time charges are billed per calendar month, UTC (addendum §13.4,
//! ambiguity 40), and a run reconciles one month, or one invoice.

use std::fmt;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// A calendar month, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    pub fn of(at: DateTime<Utc>) -> Self {
        Self {
            year: at.year(),
            month: at.month(),
        }
    }

    pub fn next(self) -> Self {
        if self.month >= 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn previous(self) -> Self {
        if self.month <= 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// The first instant of the month.
    pub fn start(self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(self.year, self.month.clamp(1, 12), 1, 0, 0, 0)
            .single()
            .unwrap_or_default()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// What a run reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PeriodSpec {
    /// The month now in progress: its unbilled lines and any invoice already covering it.
    Current,
    /// Last month: its invoice(s), or its unbilled lines until the invoice is issued.
    Previous,
    /// One invoice, by id.
    Invoice(String),
}

impl PeriodSpec {
    /// `current`, `previous` or an invoice id (letters, digits, `-`, `_`, at most 64).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.to_ascii_lowercase().as_str() {
            "current" => Ok(Self::Current),
            "previous" => Ok(Self::Previous),
            _ if !text.is_empty()
                && text.len() <= 64
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                Ok(Self::Invoice(text.to_owned()))
            }
            _ => Err(format!(
                "--period {text:?}: give current, previous or an invoice id (`pcsaga billing invoices` lists them)"
            )),
        }
    }

    pub fn label(&self) -> String {
        match self {
            Self::Current => "current".to_owned(),
            Self::Previous => "previous".to_owned(),
            Self::Invoice(id) => id.clone(),
        }
    }
}
