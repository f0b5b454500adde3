//! RFC 3339 in the API, Unix milliseconds inside.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats Unix milliseconds as RFC 3339 UTC (`2026-11-28T05:00:00.123Z`).
pub fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses RFC 3339 into Unix milliseconds (sub-millisecond digits are dropped).
pub fn parse_ms(s: &str) -> Result<i64, String> {
    let t = OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|_| format!("{s:?} is not an RFC 3339 date-time such as 2027-01-01T00:00:00Z"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| "date out of range".to_owned())
}

/// Serde helpers for `Option<i64>` milliseconds as RFC 3339 strings.
pub mod opt_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes.
    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ms) => s.serialize_str(&super::format_ms(*ms)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| super::parse_ms(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde helpers for `i64` milliseconds as RFC 3339 strings.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes.
    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_ms(*v))
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_ms(&s).map_err(serde::de::Error::custom)
    }
}
