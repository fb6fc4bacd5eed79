//! The one access-control decision of the hub: [`authorize`].
//!
//! Every crate asks this function, and only this function, whether a principal may perform an
//! action on a resource. It is pure: no I/O, no clock, no configuration, so it can be tested from
//! every side. The rules:
//!
//! 1. A **device** acts only on itself ([`Action::is_device_self_service`]), and may read the
//!    artifacts published at its own group or any group above it (firmware is usually published
//!    at a tenant or plant and applies to everything below). Nothing else.
//! 2. **Device-only actions** (receiving jobs, reporting their progress) are refused to everyone
//!    else, so a user's token cannot impersonate a device.
//! 3. Everyone else reaches the **subtree** of one group: a user its own group, an app the group of
//!    the user it acts for, a service its configured root (hub-wide only for internal services).
//!    [`Action::ManageGroup`] needs the target strictly below that group: nobody renames, moves or
//!    deletes the group that anchors their own reach.
//! 4. Within reach, the principal needs the action's **scope**. An app's scopes are the
//!    intersection of what it was granted and what its user holds, so delegation never widens.
//!
//! A refusal because the resource lies outside the principal's reach becomes
//! [`ErrorKind::NotFound`](crate::ErrorKind::NotFound) when turned into an [`Error`]: a tenant
//! must not learn that another tenant's device exists.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::{DeviceId, GroupPath};
use crate::principal::{Principal, Scope, ScopeSet};

/// Something a principal wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Action {
    /// See a device, its attributes and presence.
    ReadDevice,
    /// Register, change, move or remove a device.
    ManageDevice,
    /// Issue, rotate or revoke a device's credentials.
    ManageDeviceCredentials,
    /// See a group and list what is in it.
    ReadGroup,
    /// Create, rename, move or delete a group (the resource is the group being changed).
    ManageGroup,
    /// Manage users in a group.
    ManageUsers,
    /// Manage OAuth clients and enrollments in a group.
    ManageClients,
    /// See jobs and their results.
    ReadJobs,
    /// Create a job for a device or a group.
    CreateJob,
    /// Cancel a job.
    CancelJob,
    /// Take exclusive control of a device.
    ControlDevice,
    /// Device only: be told of and claim the next job.
    ReceiveJobs,
    /// Device only: report a job's progress or result.
    ReportJobProgress,
    /// Read measurement series and statistics.
    ReadMeasurements,
    /// Write measurements.
    WriteMeasurements,
    /// Download an artifact.
    ReadArtifact,
    /// Upload or delete an artifact.
    WriteArtifact,
    /// Read the audit log.
    ReadAudit,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 18] = [
        Action::ReadDevice,
        Action::ManageDevice,
        Action::ManageDeviceCredentials,
        Action::ReadGroup,
        Action::ManageGroup,
        Action::ManageUsers,
        Action::ManageClients,
        Action::ReadJobs,
        Action::CreateJob,
        Action::CancelJob,
        Action::ControlDevice,
        Action::ReceiveJobs,
        Action::ReportJobProgress,
        Action::ReadMeasurements,
        Action::WriteMeasurements,
        Action::ReadArtifact,
        Action::WriteArtifact,
        Action::ReadAudit,
    ];

    /// The scope a user, app or service needs; `None` for device-only actions.
    pub const fn required_scope(self) -> Option<Scope> {
        Some(match self {
            Action::ReadDevice | Action::ReadGroup => Scope::DevicesRead,
            Action::ManageDevice | Action::ManageDeviceCredentials => Scope::DevicesWrite,
            Action::ManageGroup | Action::ManageUsers | Action::ManageClients => Scope::GroupsAdmin,
            Action::ReadJobs => Scope::JobsRead,
            Action::CreateJob | Action::CancelJob | Action::ControlDevice => Scope::JobsWrite,
            Action::ReadMeasurements => Scope::MeasurementsRead,
            Action::WriteMeasurements => Scope::MeasurementsWrite,
            Action::ReadArtifact => Scope::ArtifactsRead,
            Action::WriteArtifact => Scope::ArtifactsWrite,
            Action::ReadAudit => Scope::AuditRead,
            Action::ReceiveJobs | Action::ReportJobProgress => return None,
        })
    }

    /// Whether only devices may perform the action.
    pub const fn is_device_only(self) -> bool {
        self.required_scope().is_none()
    }

    /// Whether a device may perform the action on itself.
    pub const fn is_device_self_service(self) -> bool {
        matches!(
            self,
            Action::ReadDevice
                | Action::ReceiveJobs
                | Action::ReportJobProgress
                | Action::WriteMeasurements
                | Action::WriteArtifact
        )
    }
}

/// What an action is performed on: a group, or a device in a group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resource {
    /// The group the resource lives in (for a group itself, its own path).
    pub group: GroupPath,
    /// The device, when the resource is a device or belongs to one (its jobs, its measurements).
    pub device: Option<DeviceId>,
}

impl Resource {
    /// A group, or something that belongs to a group rather than a device.
    pub fn group(group: GroupPath) -> Self {
        Self {
            group,
            device: None,
        }
    }

    /// A device (or its jobs, measurements, artifacts) in its current group.
    pub fn device(group: GroupPath, device: DeviceId) -> Self {
        Self {
            group,
            device: Some(device),
        }
    }
}

/// Why [`authorize`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// The resource lies outside the principal's reach (another subtree or tenant).
    #[error("the resource is outside the principal's groups")]
    OutsideReach,
    /// The principal lacks the action's scope.
    #[error("the scope {0} is required")]
    MissingScope(Scope),
    /// Only devices may perform this action.
    #[error("only devices may do this")]
    DeviceOnly,
    /// Devices may not perform this action.
    #[error("devices may not do this")]
    NotForDevices,
    /// A device tried to act on another device.
    #[error("a device may act only on itself")]
    NotSelf,
    /// Nobody may change the group that anchors their own reach.
    #[error("a principal may not change the group that anchors its own reach")]
    OwnRootGroup,
}

impl From<Denied> for Error {
    fn from(d: Denied) -> Self {
        match d {
            // Do not confirm that something exists outside the caller's reach.
            Denied::OutsideReach | Denied::NotSelf => Error::not_found("no such resource"),
            other => Error::forbidden(other.to_string()),
        }
    }
}

/// Decides whether `principal` may perform `action` on `resource`. See the module docs for the
/// rules.
///
/// ```
/// use hub_core::{authorize, Action, Denied, Principal, Resource, Role, UserPrincipal};
/// let alice = Principal::User(UserPrincipal {
///     id: "alice".parse()?,
///     group: "acme/plant-1".parse()?,
///     scopes: Role::Operator.scopes(),
/// });
/// let dev = |g: &str| -> Result<Resource, hub_core::IdError> {
///     Ok(Resource::device(g.parse()?, "pump-7".parse()?))
/// };
/// assert_eq!(authorize(&alice, Action::CreateJob, &dev("acme/plant-1/line-2")?), Ok(()));
/// assert_eq!(
///     authorize(&alice, Action::CreateJob, &dev("acme/plant-10")?),
///     Err(Denied::OutsideReach)
/// );
/// # Ok::<(), hub_core::IdError>(())
/// ```
pub fn authorize(principal: &Principal, action: Action, resource: &Resource) -> Result<(), Denied> {
    let (root, scopes): (Option<&GroupPath>, ScopeSet) = match principal {
        Principal::Device(device) => {
            let is_self = resource.device.as_ref() == Some(&device.id);
            if action.is_device_self_service() {
                return if is_self && resource.group == device.group {
                    Ok(())
                } else {
                    Err(Denied::NotSelf)
                };
            }
            if action == Action::ReadArtifact {
                // Published at the device's group or above, and not another device's own artifact.
                let published_above = resource.group.contains(&device.group);
                return if published_above && (resource.device.is_none() || is_self) {
                    Ok(())
                } else {
                    Err(Denied::OutsideReach)
                };
            }
            // Refused either way; but a device must not learn from the status whether another
            // device or group exists, so only a refusal about itself says "not for devices".
            return if is_self && resource.group == device.group {
                Err(Denied::NotForDevices)
            } else {
                Err(Denied::NotSelf)
            };
        }
        Principal::User(user) => (Some(&user.group), user.scopes),
        // Intersect again: the invariant is enforced at construction, and this costs nothing.
        Principal::App(app) => (
            Some(&app.user().group),
            app.scopes().intersection(app.user().scopes),
        ),
        Principal::Service(service) => (service.root.as_ref(), service.scopes),
    };
    let Some(required) = action.required_scope() else {
        return Err(Denied::DeviceOnly);
    };
    if let Some(root) = root {
        if !root.contains(&resource.group) {
            return Err(Denied::OutsideReach);
        }
        if action == Action::ManageGroup && *root == resource.group {
            return Err(Denied::OwnRootGroup);
        }
    }
    if !scopes.contains(required) {
        return Err(Denied::MissingScope(required));
    }
    Ok(())
}
