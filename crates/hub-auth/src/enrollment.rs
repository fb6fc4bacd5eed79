//! Zero-touch enrollment: a device obtains its own access key on first contact.
//!
//! An administrator creates an enrollment for a group: a shared secret
//! `he_<enrollment id>_<secret>` (the same shape as an access key: a public id for lookup and 256
//! random bits, stored only as SHA-256), usable by at most `max_uses` devices until it expires.
//! The secret is baked into a production batch's firmware; each device, on first contact, sends
//! it with its own device id (`POST /v1/enroll`) and receives its registration in the
//! enrollment's group and its own access key, shown once.
//!
//! Uses are counted atomically in the store: of many devices enrolling at once, no more than
//! `max_uses` succeed. A use is counted before the device is created, so a device whose creation
//! then fails (its id taken by a concurrent enrollment) still spends a use; nothing is counted
//! for a wrong secret, an expired or used-up enrollment, or an id that is already registered.
//! Every failure of the secret itself is the same `Unauthenticated` error.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use hub_core::{Clock, DeviceId, Error, GroupPath, Result, Secret, Timestamp};
use hub_store::{CredentialStore, Device, EnrollmentRecord, NewDevice, RegistryStore, Stores};

use crate::access_keys::{AccessKeys, IssuedAccessKey, KEY_ID_LEN, SECRET_LEN};
use crate::secrets::{random_base32, random_secret, sha256_hash, verify_sha256};

/// What every enrollment secret starts with.
pub const ENROLLMENT_PREFIX: &str = "he_";

fn rejected() -> Error {
    Error::unauthenticated("the enrollment is not valid")
}

/// Splits `he_<id>_<secret>` into its id, checking the shape; `None` for anything else.
fn enrollment_id(s: &str) -> Option<&str> {
    let rest = s.strip_prefix(ENROLLMENT_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    let secret_ok = secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some(id)
}

/// The limits of enrollments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentConfig {
    /// The most devices one enrollment may admit.
    pub max_uses: u32,
    /// The longest an enrollment may live.
    pub max_lifetime: Duration,
    /// How long an enrollment lives when its creator does not say.
    pub default_lifetime: Duration,
}

impl Default for EnrollmentConfig {
    /// At most 100 000 devices and one year; a week by default.
    fn default() -> Self {
        Self {
            max_uses: 100_000,
            max_lifetime: Duration::from_secs(365 * 24 * 3600),
            default_lifetime: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// An enrollment as listings show it: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "http", derive(utoipa::ToSchema))]
pub struct EnrollmentInfo {
    /// The public id.
    pub id: String,
    /// The group enrolled devices go to.
    #[cfg_attr(feature = "http", schema(value_type = String))]
    pub group: GroupPath,
    /// How many devices it may admit.
    pub max_uses: u32,
    /// How many it has.
    pub uses: u32,
    /// When it stops working.
    #[cfg_attr(feature = "http", schema(value_type = String, format = DateTime))]
    pub expires_at: Timestamp,
    /// When it was created.
    #[cfg_attr(feature = "http", schema(value_type = String, format = DateTime))]
    pub created_at: Timestamp,
    /// Whether one more device may enroll now.
    pub usable: bool,
}

impl EnrollmentInfo {
    fn new(r: &EnrollmentRecord, now: Timestamp) -> Self {
        Self {
            id: r.id.clone(),
            group: r.group.clone(),
            max_uses: r.max_uses,
            uses: r.uses,
            expires_at: r.expires_at,
            created_at: r.created_at,
            usable: r.is_usable(now),
        }
    }
}

/// An enrollment just created: the only time its secret is seen.
#[derive(Debug, Clone)]
pub struct CreatedEnrollment {
    /// The enrollment.
    pub info: EnrollmentInfo,
    /// The shared secret, `he_<id>_<secret>`.
    pub secret: Secret,
}

/// A device that just enrolled, with its access key.
#[derive(Debug, Clone)]
pub struct EnrolledDevice {
    /// The device as registered.
    pub device: Device,
    /// Its first access key.
    pub key: IssuedAccessKey,
}

/// Creates, lists and deletes enrollments, and enrolls devices with them.
pub struct Enrollments {
    registry: Arc<dyn RegistryStore>,
    credentials: Arc<dyn CredentialStore>,
    keys: Arc<AccessKeys>,
    clock: Arc<dyn Clock>,
    config: EnrollmentConfig,
}

impl fmt::Debug for Enrollments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrollments")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Enrollments {
    /// Enrollments kept in `stores`; enrolled devices get their keys from `keys`.
    pub fn new(
        stores: &Stores,
        keys: Arc<AccessKeys>,
        clock: Arc<dyn Clock>,
        config: EnrollmentConfig,
    ) -> Self {
        Self {
            registry: stores.registry.clone(),
            credentials: stores.credentials.clone(),
            keys,
            clock,
            config,
        }
    }

    /// Creates an enrollment for an existing group. [`InvalidInput`](hub_core::ErrorKind) for
    /// zero uses or uses or a lifetime above the limits, `NotFound` for a missing group.
    pub async fn create(
        &self,
        group: &GroupPath,
        max_uses: u32,
        lifetime: Option<Duration>,
    ) -> Result<CreatedEnrollment> {
        if max_uses == 0 || max_uses > self.config.max_uses {
            return Err(Error::invalid_input(format!(
                "max_uses must be between 1 and {}",
                self.config.max_uses
            )));
        }
        let lifetime = lifetime.unwrap_or(self.config.default_lifetime);
        if lifetime.is_zero() || lifetime > self.config.max_lifetime {
            return Err(Error::invalid_input(format!(
                "an enrollment lives between 1 and {} seconds",
                self.config.max_lifetime.as_secs()
            )));
        }
        if self.registry.get_group(group).await?.is_none() {
            return Err(Error::not_found(format!("group {group} does not exist")));
        }
        let now = self.clock.now();
        let id = random_base32(KEY_ID_LEN)?;
        let secret = format!("{ENROLLMENT_PREFIX}{id}_{}", random_secret()?);
        let record = EnrollmentRecord {
            id,
            group: group.clone(),
            hash: sha256_hash(&secret),
            max_uses,
            uses: 0,
            expires_at: now.saturating_add(lifetime),
            created_at: now,
        };
        let info = EnrollmentInfo::new(&record, now);
        self.credentials.put_enrollment(record).await?;
        Ok(CreatedEnrollment {
            info,
            secret: Secret::new(secret),
        })
    }

    /// The enrollments of `root`'s subtree, by id.
    pub async fn list(&self, root: &GroupPath) -> Result<Vec<EnrollmentInfo>> {
        let now = self.clock.now();
        Ok(self
            .credentials
            .list_enrollments(root)
            .await?
            .iter()
            .map(|r| EnrollmentInfo::new(r, now))
            .collect())
    }

    /// One enrollment.
    pub async fn get(&self, id: &str) -> Result<Option<EnrollmentInfo>> {
        let now = self.clock.now();
        Ok(self
            .credentials
            .get_enrollment(id)
            .await?
            .map(|r| EnrollmentInfo::new(&r, now)))
    }

    /// Deletes an enrollment: no device can enroll with it any more.
    pub async fn delete(&self, id: &str) -> Result<()> {
        self.credentials.delete_enrollment(id).await
    }

    /// Enrolls `device` with the shared secret `enrollment`: registers it in the enrollment's
    /// group and issues its first access key.
    ///
    /// `Unauthenticated` (always the same) for a wrong, unknown, expired or used-up enrollment;
    /// [`Conflict`](hub_core::ErrorKind::Conflict) when the device id is registered already.
    pub async fn enroll(
        &self,
        enrollment: &str,
        device: &DeviceId,
        display_name: String,
        attributes: Option<serde_json::Value>,
    ) -> Result<EnrolledDevice> {
        let id = enrollment_id(enrollment).ok_or_else(rejected)?;
        let now = self.clock.now();
        let record = self.credentials.get_enrollment(id).await?;
        let Some(record) = record.filter(|r| verify_sha256(&r.hash, enrollment)) else {
            return Err(rejected());
        };
        if !record.is_usable(now) {
            return Err(rejected());
        }
        let tenant = record.group.tenant();
        if self.registry.get_device(&tenant, device).await?.is_some() {
            return Err(Error::conflict(format!(
                "device {device} is registered already"
            )));
        }
        let Some(record) = self.credentials.use_enrollment(id, now).await? else {
            // Used up or expired since the read.
            return Err(rejected());
        };
        let new = NewDevice {
            id: device.clone(),
            group: record.group,
            display_name,
            attributes: attributes.unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        };
        let device = self.registry.create_device(new, now).await?;
        let key = match self.keys.issue_unchecked(&tenant, &device.id, &[]).await {
            Ok(k) => k,
            Err(e) => {
                // No registered device without a key: undo, report the first failure.
                let _ = self.registry.delete_device(&tenant, &device.id).await;
                return Err(e);
            }
        };
        Ok(EnrolledDevice { device, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn only_well_formed_secrets_have_an_id() {
        let s = format!("he_{}_{}", "a".repeat(16), "B".repeat(43));
        assert_eq!(enrollment_id(&s), Some("a".repeat(16).as_str()));
        assert_eq!(enrollment_id(&s.replacen("he_", "hk_", 1)), None);
        assert_eq!(enrollment_id(&s[..s.len() - 1]), None);
        assert_eq!(enrollment_id(""), None);
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "(he_)?[a-z2-7_]{0,20}[A-Za-z0-9_é-]{0,50}") {
            let _ = enrollment_id(&s);
        }
    }
}
