//! Typed, validated identifiers.
//!
//! Every identifier is checked once, when it is parsed, so the rest of the SDK can rely on its shape:
//! a [`DeviceId`] never contains an MQTT wildcard or a `/`, a [`GroupPath`] is always a well-formed
//! path whose first segment is its tenant. Parsing failures are [`IdError`]s that say which
//! identifier was wrong, where and why.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::time::Timestamp;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdErrorReason {
    /// The string is empty.
    #[error("it is empty")]
    Empty,
    /// The string is longer than the identifier allows.
    #[error("it is {len} bytes long, at most {max} are allowed")]
    TooLong {
        /// The length of the rejected string, in bytes.
        len: usize,
        /// The largest length allowed, in bytes.
        max: usize,
    },
    /// A character outside the identifier's alphabet.
    #[error("character {ch:?} at byte {position} is not allowed (allowed: {allowed})")]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// Its byte offset in the string.
        position: usize,
        /// A human description of the allowed alphabet.
        allowed: &'static str,
    },
    /// The first or last character must be a letter or digit.
    #[error("it must start and end with a letter or digit")]
    BadEdge,
    /// A group path has an empty segment (`a//b`, a leading or trailing `/`).
    #[error("segment {index} is empty")]
    EmptySegment {
        /// The zero-based index of the empty segment.
        index: usize,
    },
    /// A group path has more segments than allowed.
    #[error("it has {depth} segments, at most {max} are allowed")]
    TooDeep {
        /// The number of segments found.
        depth: usize,
        /// The largest number of segments allowed.
        max: usize,
    },
    /// A segment of a group path is not valid.
    #[error("segment {index} ({segment:?}): {reason}")]
    BadSegment {
        /// The zero-based index of the segment.
        index: usize,
        /// The segment as given.
        segment: String,
        /// Why it is rejected.
        reason: Box<IdErrorReason>,
    },
    /// The string is not a UUID of the expected version.
    #[error("it is not a version 7 UUID")]
    NotUuidV7,
}

/// A string that is not a valid identifier of the named kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {input:?}: {reason}")]
pub struct IdError {
    /// Which identifier was being parsed, e.g. `"device id"`.
    pub kind: &'static str,
    /// The rejected input, cut to 80 characters so that an error never echoes a huge payload.
    pub input: String,
    /// Why it was rejected.
    pub reason: IdErrorReason,
}

impl IdError {
    fn new(kind: &'static str, input: &str, reason: IdErrorReason) -> Self {
        let input = input.chars().take(80).collect();
        Self {
            kind,
            input,
            reason,
        }
    }
}

impl From<IdError> for crate::Error {
    fn from(e: IdError) -> Self {
        crate::Error::invalid_input(e.to_string())
    }
}

/// The alphabet rules shared by the string identifiers.
#[derive(Clone, Copy)]
struct Alphabet {
    max_len: usize,
    allowed: &'static str,
    accepts: fn(u8) -> bool,
}

/// Lowercase DNS-label alphabet: tenants and group segments appear in URLs and topics.
const LABEL: Alphabet = Alphabet {
    max_len: 63,
    allowed: "a-z, 0-9 and '-'",
    accepts: |b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-',
};

/// Device ids are chosen by manufacturers (serial numbers, MAC addresses), so case, `.`, `_` and
/// `:` are allowed; `/`, `+` and `#` are not, because device ids are MQTT topic levels.
const DEVICE: Alphabet = Alphabet {
    max_len: 128,
    allowed: "A-Z, a-z, 0-9, '.', '_', ':' and '-'",
    accepts: |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'),
};

/// User names are often e-mail addresses.
const USER: Alphabet = Alphabet {
    max_len: 128,
    allowed: "A-Z, a-z, 0-9, '.', '_', '@', '+' and '-'",
    accepts: |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'+' | b'-'),
};

const CLIENT: Alphabet = Alphabet {
    max_len: 128,
    allowed: "A-Z, a-z, 0-9, '.', '_' and '-'",
    accepts: |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'),
};

fn check(kind: &'static str, s: &str, alphabet: Alphabet) -> Result<(), IdError> {
    check_reason(s, alphabet).map_err(|reason| IdError::new(kind, s, reason))
}

fn check_reason(s: &str, alphabet: Alphabet) -> Result<(), IdErrorReason> {
    if s.is_empty() {
        return Err(IdErrorReason::Empty);
    }
    if s.len() > alphabet.max_len {
        return Err(IdErrorReason::TooLong {
            len: s.len(),
            max: alphabet.max_len,
        });
    }
    if let Some((position, ch)) = s
        .char_indices()
        .find(|&(_, c)| !c.is_ascii() || !(alphabet.accepts)(c as u8))
    {
        return Err(IdErrorReason::InvalidChar {
            ch,
            position,
            allowed: alphabet.allowed,
        });
    }
    let bytes = s.as_bytes();
    let edge_ok = |b: u8| b.is_ascii_alphanumeric();
    if !edge_ok(bytes[0]) || !edge_ok(bytes[bytes.len() - 1]) {
        return Err(IdErrorReason::BadEdge);
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $alphabet:expr) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses and validates an identifier.
            pub fn new(s: &str) -> Result<Self, IdError> {
                check($kind, s, $alphabet)?;
                Ok(Self(Arc::from(s)))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A tenant: the root of one customer's group tree (a DNS label: `a-z`, `0-9`, `-`, at most
    /// 63 bytes, starting and ending with a letter or digit).
    ///
    /// ```
    /// use hub_core::TenantId;
    /// let acme: TenantId = "acme".parse()?;
    /// assert_eq!(acme.as_str(), "acme");
    /// assert!("Acme".parse::<TenantId>().is_err());
    /// # Ok::<(), hub_core::IdError>(())
    /// ```
    TenantId,
    "tenant id",
    LABEL
);

string_id!(
    /// A device, unique within its tenant. Up to 128 bytes of `A-Z a-z 0-9 . _ : -`, starting and
    /// ending with a letter or digit, so serial numbers and MAC addresses fit, while `/`, `+` and
    /// `#` (MQTT topic separators and wildcards) never do.
    DeviceId,
    "device id",
    DEVICE
);

string_id!(
    /// A user, unique within its tenant. Up to 128 bytes of `A-Z a-z 0-9 . _ @ + -`, so e-mail
    /// addresses fit.
    UserId,
    "user id",
    USER
);

string_id!(
    /// An OAuth client (an application registered with the hub). Up to 128 bytes of
    /// `A-Z a-z 0-9 . _ -`.
    ClientId,
    "client id",
    CLIENT
);

/// The most segments a [`GroupPath`] may have, the tenant included.
pub const MAX_GROUP_DEPTH: usize = 8;

/// A group in a tenant's hierarchy: `/`-separated segments, the first of which is the tenant.
///
/// `acme` is the tenant's root group; `acme/plant-3/line-2` is a group two levels below it. Each
/// segment follows the [`TenantId`] rules; at most [`MAX_GROUP_DEPTH`] segments.
///
/// Containment is by whole segments: a group contains itself and everything below it, never a
/// sibling whose name merely starts with the same letters.
///
/// ```
/// use hub_core::GroupPath;
/// let plant1: GroupPath = "acme/plant-1".parse()?;
/// assert!(plant1.contains(&"acme/plant-1/line-2".parse()?));
/// assert!(!plant1.contains(&"acme/plant-10".parse()?));
/// assert_eq!(plant1.tenant().as_str(), "acme");
/// # Ok::<(), hub_core::IdError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupPath(Arc<str>);

impl GroupPath {
    const KIND: &'static str = "group path";

    /// Parses and validates a group path.
    pub fn new(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Err(IdError::new(Self::KIND, s, IdErrorReason::Empty));
        }
        let max_len = MAX_GROUP_DEPTH * (LABEL.max_len + 1);
        if s.len() > max_len {
            return Err(IdError::new(
                Self::KIND,
                s,
                IdErrorReason::TooLong {
                    len: s.len(),
                    max: max_len,
                },
            ));
        }
        let mut depth = 0;
        for (index, segment) in s.split('/').enumerate() {
            depth += 1;
            if segment.is_empty() {
                return Err(IdError::new(
                    Self::KIND,
                    s,
                    IdErrorReason::EmptySegment { index },
                ));
            }
            if let Err(reason) = check_reason(segment, LABEL) {
                return Err(IdError::new(
                    Self::KIND,
                    s,
                    IdErrorReason::BadSegment {
                        index,
                        segment: segment.to_owned(),
                        reason: Box::new(reason),
                    },
                ));
            }
        }
        if depth > MAX_GROUP_DEPTH {
            return Err(IdError::new(
                Self::KIND,
                s,
                IdErrorReason::TooDeep {
                    depth,
                    max: MAX_GROUP_DEPTH,
                },
            ));
        }
        Ok(Self(Arc::from(s)))
    }

    /// The root group of a tenant.
    pub fn root(tenant: &TenantId) -> Self {
        Self(Arc::from(tenant.as_str()))
    }

    /// The path as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The tenant this group belongs to (its first segment).
    pub fn tenant(&self) -> TenantId {
        let first = self.0.split('/').next().unwrap_or(&self.0);
        // Every segment was validated with the tenant alphabet.
        TenantId(Arc::from(first))
    }

    /// The segments from the tenant down.
    pub fn segments(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split('/')
    }

    /// The number of segments; a tenant's root group has depth 1.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }

    /// Whether this is a tenant's root group.
    pub fn is_root(&self) -> bool {
        !self.0.contains('/')
    }

    /// The group directly above, or `None` for a tenant's root group.
    pub fn parent(&self) -> Option<GroupPath> {
        self.0
            .rfind('/')
            .map(|i| GroupPath(Arc::from(&self.0[..i])))
    }

    /// A child group with one more segment; `segment` must be a single segment.
    pub fn child(&self, segment: &str) -> Result<GroupPath, IdError> {
        check(Self::KIND, segment, LABEL)?;
        GroupPath::new(&format!("{}/{}", self.0, segment))
    }

    /// The containment rule of the hierarchy: `self` contains `other` when they are equal or
    /// `other` lies below `self`, comparing whole segments.
    pub fn contains(&self, other: &GroupPath) -> bool {
        let (outer, inner) = (self.as_str(), other.as_str());
        match inner.strip_prefix(outer) {
            Some("") => true,
            Some(rest) => rest.starts_with('/'),
            None => false,
        }
    }

    /// `self` with the prefix `from` replaced by `to`, used when a subtree moves; `None` when
    /// `from` does not contain `self` or the result would be too deep.
    pub fn rebase(&self, from: &GroupPath, to: &GroupPath) -> Option<GroupPath> {
        if !from.contains(self) {
            return None;
        }
        let rest = &self.0[from.0.len()..];
        GroupPath::new(&format!("{}{}", to.0, rest)).ok()
    }
}

impl From<TenantId> for GroupPath {
    fn from(t: TenantId) -> Self {
        GroupPath(t.0)
    }
}

impl FromStr for GroupPath {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl TryFrom<&str> for GroupPath {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl fmt::Display for GroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupPath({:?})", &*self.0)
    }
}

impl AsRef<str> for GroupPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for GroupPath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for GroupPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

macro_rules! uuid_v7_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// A new id for the given creation time; ids made at later milliseconds sort later.
            /// The remaining 74 bits are random.
            pub fn new(created: Timestamp) -> Self {
                let random: [u8; 10] = *uuid::Uuid::new_v4()
                    .as_bytes()
                    .first_chunk()
                    .expect("a UUID has 16 bytes");
                Self::from_parts(created, random)
            }

            /// A deterministic id from a creation time and caller-supplied random bits (tests,
            /// simulations).
            pub fn from_parts(created: Timestamp, random: [u8; 10]) -> Self {
                let millis = u64::try_from(created.as_millis()).unwrap_or(0);
                Self(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
            }

            /// Parses a hyphenated version 7 UUID.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let reason = match uuid::Uuid::try_parse(s) {
                    Ok(u) if u.get_version_num() == 7 => return Ok(Self(u)),
                    _ => IdErrorReason::NotUuidV7,
                };
                Err(IdError::new($kind, s, reason))
            }

            /// Wraps a UUID read back from storage; `None` unless it is version 7.
            pub fn from_uuid(u: uuid::Uuid) -> Option<Self> {
                (u.get_version_num() == 7).then_some(Self(u))
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> uuid::Uuid {
                self.0
            }

            /// The creation time embedded in the id, to the millisecond.
            pub fn created(&self) -> Timestamp {
                let (secs, nanos) = self
                    .0
                    .get_timestamp()
                    .map(|t| t.to_unix())
                    .unwrap_or((0, 0));
                let millis = i64::try_from(secs).unwrap_or(0) * 1000 + i64::from(nanos / 1_000_000);
                Timestamp::from_millis(millis).unwrap_or(Timestamp::EPOCH)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.hyphenated())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0.hyphenated())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_v7_id!(
    /// A job: a UUIDv7, so ids sort by creation time and leak nothing but it.
    ///
    /// ```
    /// use hub_core::{JobId, Timestamp};
    /// let t = Timestamp::from_millis(1_700_000_000_000)?;
    /// let id = JobId::new(t);
    /// assert_eq!(id.created(), t);
    /// assert_eq!(id.to_string().parse::<JobId>()?, id);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    JobId,
    "job id"
);

uuid_v7_id!(
    /// A bulk job (one job document sent to many devices): a UUIDv7.
    BulkJobId,
    "bulk job id"
);

string_id!(
    /// A hub node in a cluster (what the rendezvous service hands out). Up to 128 bytes of
    /// `A-Z a-z 0-9 . _ : -`.
    NodeId,
    "node id",
    DEVICE
);
