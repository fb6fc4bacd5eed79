//! Who is acting: principals, scopes and roles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::{ClientId, DeviceId, GroupPath, TenantId, UserId};

macro_rules! scopes {
    ($($(#[$meta:meta])* $variant:ident = $bit:literal, $name:literal;)*) => {
        /// A permission an OAuth token or a role can carry. Scopes say *what* may be done; the
        /// principal's group says *where*.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Scope {
            $($(#[$meta])* $variant = $bit,)*
        }

        impl Scope {
            /// Every scope.
            pub const ALL: &'static [Scope] = &[$(Scope::$variant,)*];

            /// The OAuth scope string, e.g. `jobs:write`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Scope::$variant => $name,)*
                }
            }
        }

        impl FromStr for Scope {
            type Err = UnknownScope;
            fn from_str(s: &str) -> Result<Self, UnknownScope> {
                match s {
                    $($name => Ok(Scope::$variant),)*
                    _ => Err(UnknownScope(s.chars().take(64).collect())),
                }
            }
        }
    };
}

scopes! {
    /// See devices, their attributes and presence.
    DevicesRead = 0, "devices:read";
    /// Register, change, move and remove devices; manage their credentials.
    DevicesWrite = 1, "devices:write";
    /// See jobs and their results.
    JobsRead = 2, "jobs:read";
    /// Create and cancel jobs, take exclusive control of devices.
    JobsWrite = 3, "jobs:write";
    /// Read measurement series and statistics.
    MeasurementsRead = 4, "measurements:read";
    /// Write measurements on a device's behalf.
    MeasurementsWrite = 5, "measurements:write";
    /// Read artifacts (firmware, packages, configuration backups, logs).
    ArtifactsRead = 6, "artifacts:read";
    /// Upload and delete artifacts.
    ArtifactsWrite = 7, "artifacts:write";
    /// Manage groups, users, OAuth clients and enrollments.
    GroupsAdmin = 8, "groups:admin";
    /// Read the audit log.
    AuditRead = 9, "audit:read";
}

/// A scope string the hub does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope {0:?}")]
pub struct UnknownScope(pub String);

impl From<UnknownScope> for crate::Error {
    fn from(e: UnknownScope) -> Self {
        crate::Error::invalid_input(e.to_string())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes. Serialized as an OAuth scope string: names separated by single spaces.
///
/// ```
/// use hub_core::{Scope, ScopeSet};
/// let s: ScopeSet = "jobs:read jobs:write".parse()?;
/// assert!(s.contains(Scope::JobsWrite));
/// assert_eq!(s.to_string(), "jobs:read jobs:write");
/// # Ok::<(), hub_core::UnknownScope>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ScopeSet(u32);

impl ScopeSet {
    /// No scope.
    pub const EMPTY: ScopeSet = ScopeSet(0);

    /// Every scope.
    pub fn all() -> Self {
        Scope::ALL.iter().copied().collect()
    }

    /// A set with one scope.
    pub const fn only(scope: Scope) -> Self {
        ScopeSet(1 << scope as u32)
    }

    /// Whether `scope` is in the set.
    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & (1 << scope as u32) != 0
    }

    /// Adds a scope.
    pub const fn with(self, scope: Scope) -> Self {
        ScopeSet(self.0 | (1 << scope as u32))
    }

    /// The scopes in both sets: what a delegate may keep of what it asked for.
    pub const fn intersection(self, other: ScopeSet) -> Self {
        ScopeSet(self.0 & other.0)
    }

    /// The scopes in either set.
    pub const fn union(self, other: ScopeSet) -> Self {
        ScopeSet(self.0 | other.0)
    }

    /// Whether every scope of `self` is also in `other`.
    pub const fn is_subset_of(self, other: ScopeSet) -> bool {
        self.0 & !other.0 == 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .iter()
            .copied()
            .filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        iter.into_iter().fold(ScopeSet::EMPTY, ScopeSet::with)
    }
}

impl FromStr for ScopeSet {
    type Err = UnknownScope;
    /// Parses an OAuth scope string; any run of spaces separates names.
    fn from_str(s: &str) -> Result<Self, UnknownScope> {
        s.split(' ')
            .filter(|w| !w.is_empty())
            .map(Scope::from_str)
            .collect()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeSet({:?})", self.to_string())
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A named bundle of scopes given to users in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Role {
    /// Reads devices, jobs, measurements and artifacts.
    Viewer,
    /// A viewer who also controls devices: jobs, device changes, artifacts.
    Operator,
    /// Everything, including groups, users, clients and the audit log, within the group's subtree.
    Admin,
}

impl Role {
    /// The scopes the role grants.
    pub fn scopes(self) -> ScopeSet {
        use Scope::*;
        let viewer: ScopeSet = [DevicesRead, JobsRead, MeasurementsRead, ArtifactsRead]
            .into_iter()
            .collect();
        match self {
            Role::Viewer => viewer,
            Role::Operator => viewer
                .with(DevicesWrite)
                .with(JobsWrite)
                .with(MeasurementsWrite)
                .with(ArtifactsWrite),
            Role::Admin => ScopeSet::all(),
        }
    }
}

/// A person with an account in a group. Acts within the group's subtree with its scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPrincipal {
    /// The user.
    pub id: UserId,
    /// The group the user belongs to: the root of everything it may reach.
    pub group: GroupPath,
    /// What the user may do there.
    pub scopes: ScopeSet,
}

/// A device, authenticated by its own credential. Acts only on itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePrincipal {
    /// The device.
    pub id: DeviceId,
    /// The group the device is in; its first segment is the device's tenant.
    pub group: GroupPath,
}

impl DevicePrincipal {
    /// The device's tenant.
    pub fn tenant(&self) -> TenantId {
        self.group.tenant()
    }
}

/// An application acting for a user with a token (OAuth delegation).
///
/// The fields are private so that the one way to build it, [`AppPrincipal::new`], enforces that
/// the app's scopes never exceed the user's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppPrincipal {
    client: ClientId,
    user: UserPrincipal,
    scopes: ScopeSet,
}

impl AppPrincipal {
    /// An app acting for `user` with the scopes it was granted, cut down to the user's own.
    pub fn new(client: ClientId, user: UserPrincipal, granted: ScopeSet) -> Self {
        let scopes = granted.intersection(user.scopes);
        Self {
            client,
            user,
            scopes,
        }
    }

    /// The OAuth client.
    pub fn client(&self) -> &ClientId {
        &self.client
    }

    /// The user the app acts for.
    pub fn user(&self) -> &UserPrincipal {
        &self.user
    }

    /// The delegated scopes: a subset of the user's when built with [`AppPrincipal::new`]. A
    /// value deserialized from elsewhere may carry more; [`authorize`](crate::authorize)
    /// intersects again, so they never take effect.
    pub fn scopes(&self) -> ScopeSet {
        self.scopes
    }
}

/// A non-human caller: another service, or an OAuth client acting for itself (client credentials
/// grant). Confined to `root`'s subtree, or hub-wide when `root` is `None` (internal components
/// such as the job timer only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePrincipal {
    /// A name for logs and the audit trail.
    pub name: String,
    /// The subtree the service may reach; `None` means every tenant.
    pub root: Option<GroupPath>,
    /// What the service may do there.
    pub scopes: ScopeSet,
}

/// Whoever is making a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Principal {
    /// A person.
    User(UserPrincipal),
    /// A device.
    Device(DevicePrincipal),
    /// An application acting for a person.
    App(AppPrincipal),
    /// A service or a client acting for itself.
    Service(ServicePrincipal),
}

impl Principal {
    /// A short description for logs, audit records and lease holders, e.g.
    /// `user:alice@acme/plant-1`. Two different principals never share a description: user and
    /// device ids cannot contain `/`, groups cannot contain `@`, and service names are quoted.
    pub fn describe(&self) -> String {
        match self {
            Principal::User(u) => format!("user:{}@{}", u.id, u.group),
            Principal::Device(d) => format!("device:{}@{}", d.id, d.group),
            Principal::App(a) => format!("app:{}/user:{}@{}", a.client, a.user.id, a.user.group),
            // The free-form service name is quoted, so that no name can imitate another
            // service's name and root (`ops@acme` at the top versus `ops` at `acme`).
            Principal::Service(s) => match &s.root {
                Some(root) => format!("service:{:?}@{}", s.name, root),
                None => format!("service:{:?}", s.name),
            },
        }
    }
}
