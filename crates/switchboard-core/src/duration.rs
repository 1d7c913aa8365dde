//! Pure layer: durations as people write them in the configuration (`"60s"`, `"500ms"`, `"2m"`,
//! `"1h"`), parsed, printed and (de)serialized. No I/O.

use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// The longest duration [`parse_duration`] accepts: ten years. Anything longer is a typo, and
/// adding it to a monotonic instant could overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

const DURATION_HELP: &str =
    "a whole number followed by a unit ms, s, m or h, e.g. \"60s\", \"500ms\", \"2m\", \"1h\"";

/// Parses a duration written as a whole number followed by a unit: `ms`, `s`, `m` or `h`
/// (`"500ms"`, `"60s"`, `"2m"`, `"1h"`). No spaces, signs, fractions or other units.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    if s.is_empty() {
        return Err(format!("empty duration: expected {DURATION_HELP}"));
    }
    if number.is_empty() {
        return Err(format!(
            "invalid duration \"{s}\": expected {DURATION_HELP}"
        ));
    }
    if unit.starts_with('.') {
        return Err(format!(
            "invalid duration \"{s}\": fractions are not supported, use a smaller unit (e.g. \"1500ms\" instead of \"1.5s\")"
        ));
    }
    if unit.is_empty() {
        return Err(format!(
            "invalid duration \"{s}\": missing unit, expected {DURATION_HELP}"
        ));
    }
    let too_large = || format!("invalid duration \"{s}\": too large (at most 87600h)");
    let n: u64 = number.parse().map_err(|_| too_large())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_large)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_large)?),
        other => {
            return Err(format!(
                "invalid duration \"{s}\": unknown unit \"{other}\", expected {DURATION_HELP}"
            ));
        }
    };
    if d > MAX_DURATION {
        return Err(too_large());
    }
    Ok(d)
}

/// Writes a duration in the form [`parse_duration`] reads, using the largest unit that
/// represents it exactly (`"1h"`, `"5m"`, `"15s"`, `"500ms"`). Sub-millisecond parts, which
/// the format cannot express, are dropped.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_owned()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A `Duration` that (de)serializes as a duration string.
struct DurationStr(Duration);

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"60s\", \"500ms\", \"2m\" or \"1h\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationStr, E> {
                parse_duration(v).map(DurationStr).map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// `#[serde(with = "duration_str")]` for `Duration` fields: `"60s"`, `"500ms"`, `"2m"`, `"1h"`.
pub mod duration_str {
    use super::{DurationStr, format_duration};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        DurationStr::deserialize(d).map(|v| v.0)
    }
}

/// `#[serde(default, with = "option_duration_str", skip_serializing_if = "Option::is_none")]`
/// for `Option<Duration>` fields: absent key = `None`.
pub mod option_duration_str {
    use super::{DurationStr, format_duration};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<DurationStr>::deserialize(d).map(|v| v.map(|v| v.0))
    }
}
