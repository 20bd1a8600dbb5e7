//! Timestamps as Partner Center writes them.
//!
//! The service writes ISO-8601 with seven fractional digits and `Z`
//! (`2019-01-16T00:45:41.6062996Z`), with explicit offsets (`2018-03-06T17:37:05.253-08:00`) or
//! with no offset at all (`2019-02-23T00:00:00`). All of them decode to UTC; an offset-less value
//! is taken as UTC (spec section 4, a derived rule). A value that is not a date at all is kept
//! out of the way as `None` rather than failing the whole response: no decision of ours rests
//! on a server timestamp being well-formed.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Parses one Partner Center timestamp; `None` if it is not one.
pub fn parse(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(with_offset) = DateTime::parse_from_rfc3339(raw) {
        return Some(with_offset.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(raw, format) {
            return Some(naive.and_utc());
        }
    }
    None
}

/// Serde adapter for `Option<DateTime<Utc>>` fields.
pub(crate) mod opt {
    use super::{parse, DateTime, Deserialize, Deserializer, Serializer, Utc};

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<String>::deserialize(deserializer)
            .ok()
            .flatten()
            .and_then(|raw| parse(&raw)))
    }

    #[expect(
        clippy::ref_option,
        reason = "serde's `with` passes a reference to the field"
    )]
    pub(crate) fn serialize<S: Serializer>(
        value: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(at) => {
                serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[track_caller]
    fn check(raw: &str, expected: Option<&str>) {
        let got = parse(raw).map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        assert_eq!(got.as_deref(), expected, "parsing {raw:?}");
    }

    #[test]
    fn every_documented_timestamp_form_parses_to_utc() {
        check(
            "2019-01-16T00:45:41.6062996Z",
            Some("2019-01-16T00:45:41.606299600Z"),
        );
        check(
            "2019-01-16T00:48:44.76+00:00",
            Some("2019-01-16T00:48:44.760000000Z"),
        );
        check(
            "2018-03-06T17:37:05.253-08:00",
            Some("2018-03-07T01:37:05.253000000Z"),
        );
        check(
            "2019-02-23T00:00:00",
            Some("2019-02-23T00:00:00.000000000Z"),
        );
        check(
            "2018-02-23T18:15:24.6724884",
            Some("2018-02-23T18:15:24.672488400Z"),
        );
        check("not a date", None);
        check("", None);
    }
}
