//! Core layer: the two clocks as plain values. The driver reads both clocks once per step
//! and hands the core one [`Now`]; nothing in the core reads a clock.
//!
//! `mono` (milliseconds on a clock that never jumps) drives every timer; `wall` (Unix
//! milliseconds) stamps records and stored deadlines. A stored wall deadline is converted back
//! to the monotonic scale with [`Now::mono_for`], so a wall-clock step never fires a deadline
//! early: once armed, a timer only follows the monotonic clock.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One reading of both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on the monotonic scale (the driver's epoch is arbitrary).
    pub mono: u64,
    /// Unix time in milliseconds.
    pub wall: i64,
}

impl Now {
    /// The monotonic instant matching wall time `at`; a wall time already past maps to `mono`.
    pub fn mono_for(&self, at: Timestamp) -> u64 {
        let ahead = at.0.saturating_sub(self.wall).max(0);
        self.mono.saturating_add(ahead as u64)
    }

    /// The wall time as a [`Timestamp`].
    pub fn ts(&self) -> Timestamp {
        Timestamp(self.wall)
    }

    /// The moment `d` from now, on both clocks.
    pub fn after(&self, d: std::time::Duration) -> Deadline {
        let ms = d.as_millis().min(u128::from(u64::MAX >> 1)) as u64;
        Deadline {
            wall: self.ts().plus(d),
            mono: self.mono.saturating_add(ms),
        }
    }

    /// A stored wall-clock deadline as seen from this reading (one already past is due now).
    pub fn deadline_at(&self, at: Timestamp) -> Deadline {
        Deadline {
            wall: at,
            mono: self.mono_for(at),
        }
    }

    /// A stored deadline, but never later than `longest` from now: a deadline written under a
    /// wall clock that has since stepped back (or a tampered record) cannot hold something
    /// longer than its configured duration.
    pub fn deadline_within(&self, at: Timestamp, longest: std::time::Duration) -> Deadline {
        let cap = self.after(longest);
        if at.0 > cap.wall.0 {
            cap
        } else {
            self.deadline_at(at)
        }
    }

    /// This reading moved forward by `ms` on both clocks (simulated clocks in tests).
    pub fn plus_ms(&self, ms: u64) -> Now {
        Now {
            mono: self.mono + ms,
            wall: self.wall + ms as i64,
        }
    }
}

/// A moment in the future on both clocks: `wall` is what records store, `mono` is what the
/// timer follows. Made only by [`Now::after`] and [`Now::deadline_at`], so the two never
/// disagree about which moment is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub wall: Timestamp,
    pub mono: u64,
}

/// A wall-clock time in Unix milliseconds. In JSON it is an RFC 3339 UTC string with
/// millisecond precision (`2026-11-23T10:15:02.120Z`); in the store it is the integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn plus(self, d: std::time::Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// RFC 3339 with milliseconds and `Z`.
    pub fn to_rfc3339(self) -> String {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            None => String::from("1970-01-01T00:00:00.000Z"),
        }
    }

    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| Timestamp(t.timestamp_millis()))
    }
}

/// In the OpenAPI document: an RFC 3339 date-time string.
#[cfg(feature = "utoipa")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .examples(["2026-11-23T10:15:02.120Z"])
            .into()
    }
}

#[cfg(feature = "utoipa")]
impl utoipa::ToSchema for Timestamp {}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_rfc3339())
        } else {
            s.serialize_i64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Timestamp::parse_rfc3339(&s)
                .ok_or_else(|| serde::de::Error::custom("expected an RFC 3339 time"))
        } else {
            i64::deserialize(d).map(Timestamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_as_rfc3339_with_milliseconds() {
        let t = Timestamp(1_795_428_902_120);
        assert_eq!(t.to_rfc3339(), "2026-11-23T10:15:02.120Z");
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
    }

    #[test]
    fn past_wall_deadline_maps_to_the_current_monotonic_time() {
        let now = Now {
            mono: 5_000,
            wall: 1_000_000,
        };
        assert_eq!(now.mono_for(Timestamp(999_000)), 5_000);
        assert_eq!(now.mono_for(Timestamp(1_060_000)), 65_000);
    }
}
