//! Time: a millisecond [`Timestamp`] and the [`Clock`] that every component asks for the time.
//!
//! State machines never read the system clock; they take `now` as an argument. Drivers get it from
//! a [`Clock`], so tests substitute a [`ManualClock`] and step time by hand.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time: whole milliseconds since the Unix epoch (UTC), from 1970-01-01 to the end of
/// year 9999.
///
/// Serialized as RFC 3339 (`2026-12-02T04:26:34.123Z`). The range excludes dates before the epoch
/// because device clocks that were never set report them, and the hub should refuse such data
/// rather than store it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

/// A millisecond count outside [`Timestamp::EPOCH`]..=[`Timestamp::MAX`], or unparsable text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// Outside the representable range.
    #[error("timestamp {millis} ms is outside 1970-01-01T00:00:00Z..=9999-12-31T23:59:59.999Z")]
    OutOfRange {
        /// The rejected value, milliseconds since the epoch.
        millis: i64,
    },
    /// Not an RFC 3339 timestamp.
    #[error("not an RFC 3339 timestamp: {0}")]
    Parse(String),
}

impl From<TimestampError> for crate::Error {
    fn from(e: TimestampError) -> Self {
        crate::Error::invalid_input(e.to_string())
    }
}

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// 9999-12-31T23:59:59.999Z.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999);

    /// A timestamp from milliseconds since the epoch.
    pub const fn from_millis(millis: i64) -> Result<Self, TimestampError> {
        if millis < 0 || millis > Self::MAX.0 {
            return Err(TimestampError::OutOfRange { millis });
        }
        Ok(Timestamp(millis))
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms).min(Self::MAX.0))
    }

    /// `self - d`, saturating at [`Timestamp::EPOCH`].
    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(ms).max(0))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0 - earlier.0).unwrap_or(0))
    }

    fn to_jiff(self) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(self.0).expect("range checked at construction")
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with millisecond precision.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}", self.to_jiff())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    /// Parses RFC 3339 with an offset (`Z` or `+09:00`); sub-millisecond digits are truncated.
    fn from_str(s: &str) -> Result<Self, TimestampError> {
        let t: jiff::Timestamp = s
            .parse()
            .map_err(|e: jiff::Error| TimestampError::Parse(e.to_string()))?;
        Timestamp::from_millis(t.as_millisecond())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A source of the current time. Implementations must be cheap and never block.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(Timestamp::MAX.0))
            .unwrap_or(0);
        Timestamp(ms.clamp(0, Timestamp::MAX.0))
    }
}

/// A clock that moves only when told to: deterministic tests of timeouts and leases.
///
/// Clones share the same time.
///
/// ```
/// use hub_core::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
/// let clock = ManualClock::new(Timestamp::from_millis(1_000)?);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now().as_millis(), 3_000);
/// # Ok::<(), hub_core::TimestampError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(start.0)))
    }

    /// Moves the clock forward by `d` (saturating at [`Timestamp::MAX`]).
    pub fn advance(&self, d: Duration) {
        let now = self.now().saturating_add(d);
        self.0.store(now.0, Ordering::SeqCst);
    }

    /// Sets the clock, backwards too: wall clocks do jump, and components must cope.
    pub fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_keeps_milliseconds() {
        let t = Timestamp::from_millis(1_764_649_594_123).unwrap();
        let text = t.to_string();
        assert_eq!(text, "2025-12-02T04:26:34.123Z");
        assert_eq!(text.parse::<Timestamp>().unwrap(), t);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t: Timestamp = "2026-12-02T13:00:00+09:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-12-02T04:00:00.000Z");
    }

    #[test]
    fn out_of_range_and_garbage_are_rejected() {
        assert!(Timestamp::from_millis(-1).is_err());
        assert!(Timestamp::from_millis(Timestamp::MAX.as_millis() + 1).is_err());
        assert!("1969-12-31T23:59:59Z".parse::<Timestamp>().is_err());
        assert!("yesterday".parse::<Timestamp>().is_err());
        assert!(
            "2026-12-02T04:00:00".parse::<Timestamp>().is_err(),
            "offset required"
        );
    }

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            Timestamp::MAX.saturating_add(Duration::from_secs(1)),
            Timestamp::MAX
        );
        assert_eq!(
            Timestamp::EPOCH.saturating_sub(Duration::from_secs(1)),
            Timestamp::EPOCH
        );
        let a = Timestamp::from_millis(5_000).unwrap();
        let b = Timestamp::from_millis(2_000).unwrap();
        assert_eq!(a.duration_since(b), Duration::from_secs(3));
        assert_eq!(b.duration_since(a), Duration::ZERO);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let c = ManualClock::new(Timestamp::EPOCH);
        let c2 = c.clone();
        c.advance(Duration::from_millis(1500));
        assert_eq!(c2.now().as_millis(), 1500);
        c2.set(Timestamp::from_millis(10).unwrap());
        assert_eq!(c.now().as_millis(), 10);
    }
}
