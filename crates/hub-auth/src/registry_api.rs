//! The registry REST API (feature `http`): tenants, groups, devices and their access keys,
//! users, OAuth clients.
//!
//! [`router`] mounts the routes below; [`openapi`] describes exactly them. Every handler takes
//! the caller's [`Principal`] (put into the request by the authentication layer) and asks
//! [`hub_core::authorize`] with the action and the resource it touches; a resource outside the
//! caller's reach, or in another tenant, is 404 whether it exists or not. Errors are
//! `application/problem+json`.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/tenants` | create a tenant (hub-wide administrators only) |
//! | `GET, POST /v1/tenants/{tenant}/groups` | list a subtree (`?under=`), create a group |
//! | `GET, DELETE /v1/tenants/{tenant}/groups/{*path}` | one group, by its path below the tenant (`plant-1/line-2`) |
//! | `GET, POST /v1/tenants/{tenant}/devices` | list (`?group=`), register (201 with the device's first access key, shown once) |
//! | `GET, PATCH, DELETE /v1/tenants/{tenant}/devices/{device}` | one device (`ETag`, `If-Match`); deleting it deletes its keys |
//! | `GET, POST /v1/tenants/{tenant}/devices/{device}/access-keys` | list without secrets, rotate (new key shown once, old keys overlap) |
//! | `DELETE /v1/tenants/{tenant}/devices/{device}/access-keys/{key_id}` | revoke |
//! | `GET, POST /v1/tenants/{tenant}/users`, `GET, DELETE .../users/{user}` | users with an argon2id password hash; the role gives the scopes |
//! | `GET, POST /v1/tenants/{tenant}/clients`, `GET, DELETE .../clients/{client}` | OAuth clients; a confidential client's secret is shown once |
//! | `GET, POST /v1/tenants/{tenant}/enrollments`, `DELETE .../enrollments/{id}` | group enrollments; the shared secret is shown once |
//! | `POST /v1/enroll` | a device enrolls itself with a shared secret (no principal needed) |
//!
//! Group paths in bodies and queries are whole paths (`acme/plant-1`); in the URL, below
//! `/groups/`, they are relative to the tenant (`plant-1`).
//!
//! Nobody hands out more than they hold: a user's role and a client's scopes must be a subset of
//! the caller's own scopes (403 otherwise).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use hub_core::http::{IfMatch, Json, parse_json, with_etag};
use hub_core::{
    Action, ClientId, Clock, DeviceId, Error, GroupPath, Principal, Resource, Result, Role,
    ScopeSet, TenantId, UserId, authorize,
};
use hub_store::{
    Device, DevicePatch, Group, Lifecycle, NewDevice, NewUser, OAuthClient, Page, PageRequest,
    Stores, User,
};

use crate::access_keys::{AccessKeyInfo, AccessKeys, IssuedAccessKey, lifecycle_allows_connect};
use crate::client_secrets::generate_client_secret;
use crate::enrollment::{EnrollmentConfig, EnrollmentInfo, Enrollments};
use crate::password::PasswordPolicy;
use crate::secrets::random_base32;

/// What the registry routes share.
#[derive(Debug, Clone)]
pub struct RegistryState {
    /// The stores.
    pub stores: Stores,
    /// Access keys (shared with the transport's authenticator, so that revocations here reach
    /// its cache at once).
    pub keys: Arc<AccessKeys>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The rules for user passwords.
    pub passwords: PasswordPolicy,
    /// Group enrollments (zero-touch registration).
    pub enrollments: Arc<Enrollments>,
}

impl RegistryState {
    /// State over `stores` with the default password policy and enrollment limits.
    pub fn new(stores: Stores, keys: Arc<AccessKeys>, clock: Arc<dyn Clock>) -> Self {
        let enrollments = Arc::new(Enrollments::new(
            &stores,
            keys.clone(),
            clock.clone(),
            EnrollmentConfig::default(),
        ));
        Self {
            stores,
            keys,
            clock,
            passwords: PasswordPolicy::default(),
            enrollments,
        }
    }
}

/// The registry routes.
pub fn router(state: RegistryState) -> Router {
    Router::new()
        .route("/v1/tenants", post(create_tenant))
        .route(
            "/v1/tenants/{tenant}/groups",
            get(list_groups).post(create_group),
        )
        .route(
            "/v1/tenants/{tenant}/groups/{*path}",
            get(get_group).delete(delete_group),
        )
        .route(
            "/v1/tenants/{tenant}/devices",
            get(list_devices).post(register_device),
        )
        .route(
            "/v1/tenants/{tenant}/devices/{device}",
            get(get_device).patch(patch_device).delete(delete_device),
        )
        .route(
            "/v1/tenants/{tenant}/devices/{device}/access-keys",
            get(list_keys).post(rotate_keys),
        )
        .route(
            "/v1/tenants/{tenant}/devices/{device}/access-keys/{key_id}",
            delete(revoke_key),
        )
        .route(
            "/v1/tenants/{tenant}/users",
            get(list_users).post(create_user),
        )
        .route(
            "/v1/tenants/{tenant}/users/{user}",
            get(get_user).delete(delete_user),
        )
        .route(
            "/v1/tenants/{tenant}/clients",
            get(list_clients).post(create_client),
        )
        .route(
            "/v1/tenants/{tenant}/clients/{client}",
            get(get_client).delete(delete_client),
        )
        .route(
            "/v1/tenants/{tenant}/enrollments",
            get(list_enrollments).post(create_enrollment),
        )
        .route(
            "/v1/tenants/{tenant}/enrollments/{id}",
            delete(delete_enrollment),
        )
        .route("/v1/enroll", post(enroll))
        .with_state(state)
}

#[derive(OpenApi)]
#[openapi(
    paths(
        create_tenant,
        list_groups,
        create_group,
        get_group,
        delete_group,
        list_devices,
        register_device,
        get_device,
        patch_device,
        delete_device,
        list_keys,
        rotate_keys,
        revoke_key,
        list_users,
        create_user,
        get_user,
        delete_user,
        list_clients,
        create_client,
        get_client,
        delete_client,
        list_enrollments,
        create_enrollment,
        delete_enrollment,
        enroll,
    ),
    components(schemas(
        NewTenantBody,
        NewGroupBody,
        GroupView,
        GroupPage,
        NewDeviceBody,
        DevicePatchBody,
        DeviceView,
        DevicePage,
        RegisteredDevice,
        RotateBody,
        IssuedKeyView,
        AccessKeyInfo,
        NewUserBody,
        UserView,
        UserPage,
        NewClientBody,
        ClientView,
        ClientPage,
        CreatedClient,
        NewEnrollmentBody,
        EnrollmentInfo,
        CreatedEnrollmentView,
        EnrollBody,
    )),
    tags((name = "registry", description = "Tenants, groups, devices and their credentials, users, OAuth clients"))
)]
struct RegistryApi;

/// The OpenAPI description of exactly the routes [`router`] mounts.
pub fn openapi() -> utoipa::openapi::OpenApi {
    RegistryApi::openapi()
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn check(principal: &Principal, action: Action, resource: &Resource) -> Result<()> {
    authorize(principal, action, resource).map_err(Error::from)
}

/// A group named in a body or query must be in the URL's tenant; elsewhere it is "not found".
fn in_tenant(tenant: &TenantId, group: &GroupPath) -> Result<()> {
    if group.tenant() == *tenant {
        Ok(())
    } else {
        Err(Error::not_found("no such resource"))
    }
}

/// The group a listing starts from when the caller names none: its own reach within the tenant.
fn default_root(principal: &Principal, tenant: &TenantId) -> GroupPath {
    let reach = match principal {
        Principal::User(u) => Some(&u.group),
        Principal::App(a) => Some(&a.user().group),
        Principal::Service(s) => s.root.as_ref(),
        Principal::Device(d) => Some(&d.group),
    };
    match reach {
        Some(g) if g.tenant() == *tenant => g.clone(),
        _ => GroupPath::root(tenant),
    }
}

/// The scopes a principal holds, for the rule that nobody hands out more.
fn held_scopes(principal: &Principal) -> ScopeSet {
    match principal {
        Principal::User(u) => u.scopes,
        Principal::App(a) => a.scopes().intersection(a.user().scopes),
        Principal::Service(s) => s.scopes,
        Principal::Device(_) => ScopeSet::EMPTY,
    }
}

fn no_escalation(principal: &Principal, granted: ScopeSet) -> Result<()> {
    if granted.is_subset_of(held_scopes(principal)) {
        Ok(())
    } else {
        Err(Error::forbidden(
            "nobody may grant scopes they do not hold themselves",
        ))
    }
}

fn ts(t: hub_core::Timestamp) -> String {
    t.to_string()
}

/// The paging parameters of every listing.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Paging {
    /// The most items wanted (the server caps it).
    #[serde(default)]
    limit: Option<u32>,
    /// The `next` cursor of the previous page.
    #[serde(default)]
    after: Option<String>,
}

impl Paging {
    fn request(&self) -> PageRequest {
        PageRequest {
            limit: self.limit.unwrap_or(0),
            after: self.after.clone(),
        }
    }
}

/// The caller's tenant path segment, parsed (a malformed one names nothing that exists).
fn tenant_of(raw: &str) -> Result<TenantId> {
    TenantId::new(raw).map_err(|_| Error::not_found("no such resource"))
}

fn created<T: Serialize>(body: T) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------------------------------------
// Views: what the API shows. Secrets appear only in the 201 answers that issue them.

/// A group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupView {
    /// The whole path, tenant first.
    pub path: String,
    /// A human name.
    pub display_name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<Group> for GroupView {
    fn from(g: Group) -> Self {
        Self {
            path: g.path.to_string(),
            display_name: g.display_name,
            created_at: ts(g.created_at),
            updated_at: ts(g.updated_at),
        }
    }
}

/// A page of groups.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupPage {
    /// The groups, by path.
    pub items: Vec<GroupView>,
    /// The cursor of the next page.
    pub next: Option<String>,
}

/// A device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    /// The device id.
    pub id: String,
    /// Its group (whole path).
    pub group: String,
    /// A human name.
    pub display_name: String,
    /// Schemaless attributes.
    pub attributes: serde_json::Value,
    /// `provisioned`, `active`, `suspended` or `decommissioned`.
    pub lifecycle: String,
    /// Whether it may connect (provisioned or active).
    pub enabled: bool,
    /// The version, also the ETag.
    pub version: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl From<Device> for DeviceView {
    fn from(d: Device) -> Self {
        Self {
            id: d.id.to_string(),
            group: d.group.to_string(),
            display_name: d.display_name,
            attributes: d.attributes,
            lifecycle: d.lifecycle.as_str().to_owned(),
            enabled: lifecycle_allows_connect(d.lifecycle),
            version: d.version,
            created_at: ts(d.created_at),
            updated_at: ts(d.updated_at),
        }
    }
}

/// A page of devices.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DevicePage {
    /// The devices, by id.
    pub items: Vec<DeviceView>,
    /// The cursor of the next page.
    pub next: Option<String>,
}

/// A key just issued. The only answer that carries its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IssuedKeyView {
    /// The whole key, `hk_<key id>_<secret>`: store it now, it is never shown again.
    pub access_key: String,
    /// The key as listings show it.
    pub key: AccessKeyInfo,
}

impl From<IssuedAccessKey> for IssuedKeyView {
    fn from(k: IssuedAccessKey) -> Self {
        Self {
            access_key: k.access_key.expose().to_owned(),
            key: k.info,
        }
    }
}

/// A device just registered, with its first access key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RegisteredDevice {
    /// The device.
    pub device: DeviceView,
    /// The whole key, `hk_<key id>_<secret>`: store it now, it is never shown again.
    pub access_key: String,
    /// The key as listings show it.
    pub key: AccessKeyInfo,
}

/// A user. The password hash is never shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    /// The user id.
    pub id: String,
    /// Its group (whole path).
    pub group: String,
    /// A human name.
    pub display_name: String,
    /// A contact address.
    pub email: Option<String>,
    /// `viewer`, `operator` or `admin`.
    pub role: String,
    /// The scopes the role gives, as an OAuth scope string.
    pub scopes: String,
    /// A disabled user may not sign in.
    pub disabled: bool,
    /// The version.
    pub version: u64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

fn role_name(role: Role) -> String {
    match serde_json::to_value(role) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        Self {
            id: u.id.to_string(),
            group: u.group.to_string(),
            display_name: u.display_name,
            email: u.email,
            role: role_name(u.role),
            scopes: u.role.scopes().to_string(),
            disabled: u.disabled,
            version: u.version,
            created_at: ts(u.created_at),
            updated_at: ts(u.updated_at),
        }
    }
}

/// A page of users.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    /// The users, by id.
    pub items: Vec<UserView>,
    /// The cursor of the next page.
    pub next: Option<String>,
}

/// An OAuth client. Its secret hash is never shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClientView {
    /// The client id (hub-wide).
    pub id: String,
    /// The group that owns it (whole path).
    pub group: String,
    /// A human name.
    pub display_name: String,
    /// Whether it authenticates with a secret.
    pub confidential: bool,
    /// The exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// The grant types it may use.
    pub grant_types: Vec<String>,
    /// The most it may ask for, as an OAuth scope string.
    pub scopes: String,
    /// RFC 3339.
    pub created_at: String,
}

impl From<OAuthClient> for ClientView {
    fn from(c: OAuthClient) -> Self {
        Self {
            id: c.id.to_string(),
            group: c.group.to_string(),
            display_name: c.display_name,
            confidential: c.secret_hash.is_some(),
            redirect_uris: c.redirect_uris,
            grant_types: c.grant_types,
            scopes: c.scopes.to_string(),
            created_at: ts(c.created_at),
        }
    }
}

/// A page of OAuth clients.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClientPage {
    /// The clients, by id.
    pub items: Vec<ClientView>,
    /// The cursor of the next page.
    pub next: Option<String>,
}

/// A client just created; a confidential client's secret is shown here once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedClient {
    /// The client.
    pub client: ClientView,
    /// The client secret (confidential clients only): store it now, it is never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

fn page<T, V: From<T>>(p: Page<T>) -> (Vec<V>, Option<String>) {
    (p.items.into_iter().map(V::from).collect(), p.next)
}

// ---------------------------------------------------------------------------------------------
// Tenants and groups

/// A new tenant.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewTenantBody {
    /// The tenant id (a DNS label).
    id: String,
    /// A human name (defaults to the id).
    #[serde(default)]
    display_name: Option<String>,
}

/// Creates a tenant (its root group). Hub-wide administrators only.
#[utoipa::path(post, path = "/v1/tenants", tag = "registry", request_body = NewTenantBody,
    responses((status = 201, body = GroupView), (status = 409, description = "the tenant exists")))]
async fn create_tenant(
    State(s): State<RegistryState>,
    principal: Principal,
    Json(body): Json<NewTenantBody>,
) -> Result<Response> {
    let tenant = TenantId::new(&body.id)?;
    check(
        &principal,
        Action::ManageGroup,
        &Resource::group(GroupPath::root(&tenant)),
    )?;
    let name = body.display_name.unwrap_or_else(|| tenant.to_string());
    let g = s
        .stores
        .registry
        .create_tenant(&tenant, &name, s.clock.now())
        .await?;
    Ok(created(GroupView::from(g)))
}

/// Which subtree to list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct UnderQuery {
    /// The group whose subtree is listed (whole path); the caller's own reach by default.
    #[serde(default)]
    under: Option<String>,
}

/// Lists the groups of a subtree.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/groups", tag = "registry",
    params(("tenant" = String, Path), UnderQuery, Paging),
    responses((status = 200, body = GroupPage)))]
async fn list_groups(
    State(s): State<RegistryState>,
    principal: Principal,
    Path(tenant): Path<String>,
    Query(q): Query<UnderQuery>,
    Query(paging): Query<Paging>,
) -> Result<Json<GroupPage>> {
    let tenant = tenant_of(&tenant)?;
    let root = match q.under {
        Some(g) => GroupPath::new(&g)?,
        None => default_root(&principal, &tenant),
    };
    in_tenant(&tenant, &root)?;
    check(
        &principal,
        Action::ReadGroup,
        &Resource::group(root.clone()),
    )?;
    let (items, next) = page(
        s.stores
            .registry
            .list_groups(&root, paging.request())
            .await?,
    );
    Ok(Json(GroupPage { items, next }))
}

/// A new group.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewGroupBody {
    /// The whole path, e.g. `acme/plant-1`; the parent must exist.
    path: String,
    /// A human name (defaults to the last segment).
    #[serde(default)]
    display_name: Option<String>,
}

/// Creates a group below an existing one.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/groups", tag = "registry",
    params(("tenant" = String, Path)), request_body = NewGroupBody,
    responses((status = 201, body = GroupView)))]
async fn create_group(
    State(s): State<RegistryState>,
    principal: Principal,
    Path(tenant): Path<String>,
    Json(body): Json<NewGroupBody>,
) -> Result<Response> {
    let tenant = tenant_of(&tenant)?;
    let path = GroupPath::new(&body.path)?;
    in_tenant(&tenant, &path)?;
    check(
        &principal,
        Action::ManageGroup,
        &Resource::group(path.clone()),
    )?;
    let name = body
        .display_name
        .unwrap_or_else(|| path.segments().last().unwrap_or_default().to_owned());
    let g = s
        .stores
        .registry
        .create_group(&path, &name, s.clock.now())
        .await?;
    Ok(created(GroupView::from(g)))
}

fn group_path(tenant: &TenantId, rel: &str) -> Result<GroupPath> {
    GroupPath::new(&format!("{tenant}/{}", rel.trim_matches('/')))
        .map_err(|_| Error::not_found("no such resource"))
}

/// One group, by its path below the tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/groups/{path}", tag = "registry",
    params(("tenant" = String, Path), ("path" = String, Path, description = "the path below the tenant, e.g. plant-1/line-2")),
    responses((status = 200, body = GroupView), (status = 404)))]
async fn get_group(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, rel)): Path<(String, String)>,
) -> Result<Json<GroupView>> {
    let tenant = tenant_of(&tenant)?;
    let path = group_path(&tenant, &rel)?;
    check(
        &principal,
        Action::ReadGroup,
        &Resource::group(path.clone()),
    )?;
    let g = s
        .stores
        .registry
        .get_group(&path)
        .await?
        .ok_or_else(|| Error::not_found(format!("group {path} does not exist")))?;
    Ok(Json(g.into()))
}

/// Deletes an empty group.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/groups/{path}", tag = "registry",
    params(("tenant" = String, Path), ("path" = String, Path, description = "the path below the tenant")),
    responses((status = 204), (status = 404), (status = 409, description = "the group is not empty")))]
async fn delete_group(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, rel)): Path<(String, String)>,
) -> Result<Response> {
    let tenant = tenant_of(&tenant)?;
    let path = group_path(&tenant, &rel)?;
    check(
        &principal,
        Action::ManageGroup,
        &Resource::group(path.clone()),
    )?;
    if s.stores.registry.get_group(&path).await?.is_none() {
        return Err(Error::not_found(format!("group {path} does not exist")));
    }
    s.stores.registry.delete_group(&path).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Devices

/// Which devices to list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct GroupQuery {
    /// The group whose subtree is listed (whole path); the caller's own reach by default.
    #[serde(default)]
    group: Option<String>,
}

/// Lists the devices of a group's subtree.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/devices", tag = "registry",
    params(("tenant" = String, Path), GroupQuery, Paging),
    responses((status = 200, body = DevicePage)))]
async fn list_devices(
    State(s): State<RegistryState>,
    principal: Principal,
    Path(tenant): Path<String>,
    Query(q): Query<GroupQuery>,
    Query(paging): Query<Paging>,
) -> Result<Json<DevicePage>> {
    let tenant = tenant_of(&tenant)?;
    let root = match q.group {
        Some(g) => GroupPath::new(&g)?,
        None => default_root(&principal, &tenant),
    };
    in_tenant(&tenant, &root)?;
    check(
        &principal,
        Action::ReadDevice,
        &Resource::group(root.clone()),
    )?;
    let (items, next) = page(
        s.stores
            .registry
            .list_devices(&root, None, paging.request())
            .await?,
    );
    Ok(Json(DevicePage { items, next }))
}

/// A device to register.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewDeviceBody {
    /// The device id, unique in the tenant.
    id: String,
    /// Its group (whole path; must exist).
    group: String,
    /// A human name.
    #[serde(default)]
    display_name: String,
    /// Attributes (a JSON object).
    #[serde(default)]
    attributes: Option<serde_json::Value>,
}

/// Registers a device and issues its first access key, shown once.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/devices", tag = "registry",
    params(("tenant" = String, Path)), request_body = NewDeviceBody,
    responses((status = 201, body = RegisteredDevice), (status = 409, description = "the id is taken")))]
async fn register_device(
    State(s): State<RegistryState>,
    principal: Principal,
    Path(tenant): Path<String>,
    Json(body): Json<NewDeviceBody>,
) -> Result<Response> {
    let tenant = tenant_of(&tenant)?;
    let id = DeviceId::new(&body.id)?;
    let group = GroupPath::new(&body.group)?;
    in_tenant(&tenant, &group)?;
    check(
        &principal,
        Action::ManageDevice,
        &Resource::device(group.clone(), id.clone()),
    )?;
    let new = NewDevice {
        id: id.clone(),
        group,
        display_name: body.display_name,
        attributes: body
            .attributes
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
    };
    let device = s.stores.registry.create_device(new, s.clock.now()).await?;
    let issued = match s.keys.issue_unchecked(&tenant, &id, &[]).await {
        Ok(k) => k,
        Err(e) => {
            // No half-registered device without a key: undo, and report the first failure.
            let _ = s.stores.registry.delete_device(&tenant, &id).await;
            return Err(e);
        }
    };
    Ok(created(RegisteredDevice {
        device: device.into(),
        access_key: issued.access_key.expose().to_owned(),
        key: issued.info,
    }))
}

/// Reads a device the caller may act on with `action`; 404 whether it is missing or out of reach.
async fn device_for(
    s: &RegistryState,
    principal: &Principal,
    tenant: &str,
    device: &str,
    action: Action,
) -> Result<(TenantId, Device)> {
    let tenant = tenant_of(tenant)?;
    let id = DeviceId::new(device).map_err(|_| Error::not_found("no such resource"))?;
    let d = s
        .stores
        .registry
        .get_device(&tenant, &id)
        .await?
        .ok_or_else(|| Error::not_found(format!("device {id} does not exist")))?;
    check(
        principal,
        action,
        &Resource::device(d.group.clone(), d.id.clone()),
    )?;
    Ok((tenant, d))
}

/// One device, with its version as ETag.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/devices/{device}", tag = "registry",
    params(("tenant" = String, Path), ("device" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 404)))]
async fn get_device(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, device)): Path<(String, String)>,
) -> Result<Response> {
    let (_, d) = device_for(&s, &principal, &tenant, &device, Action::ReadDevice).await?;
    Ok(with_etag(d.version, Json(DeviceView::from(d))))
}

/// A change to a device; absent fields stay.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DevicePatchBody {
    /// A new human name.
    #[serde(default)]
    display_name: Option<String>,
    /// New attributes, replacing the old ones whole.
    #[serde(default)]
    attributes: Option<serde_json::Value>,
    /// `false` suspends the device (it can no longer connect), `true` puts it back in service.
    #[serde(default)]
    enabled: Option<bool>,
}

/// Changes a device's name, attributes or whether it may connect (`If-Match` optional).
#[utoipa::path(patch, path = "/v1/tenants/{tenant}/devices/{device}", tag = "registry",
    params(("tenant" = String, Path), ("device" = String, Path)), request_body = DevicePatchBody,
    responses((status = 200, body = DeviceView), (status = 404), (status = 412)))]
async fn patch_device(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, device)): Path<(String, String)>,
    IfMatch(expected): IfMatch,
    Json(body): Json<DevicePatchBody>,
) -> Result<Response> {
    let (tenant, d) = device_for(&s, &principal, &tenant, &device, Action::ManageDevice).await?;
    let lifecycle = match (body.enabled, d.lifecycle) {
        (None, _) => None,
        (Some(_), Lifecycle::Decommissioned) => {
            return Err(Error::conflict(
                "a decommissioned device stays out of service",
            ));
        }
        (Some(false), _) => Some(Lifecycle::Suspended),
        (Some(true), Lifecycle::Suspended) => Some(Lifecycle::Active),
        (Some(true), _) => None,
    };
    let patch = DevicePatch {
        display_name: body.display_name,
        attributes: body.attributes,
        lifecycle,
    };
    let d = s
        .stores
        .registry
        .update_device(&tenant, &d.id, patch, expected, s.clock.now())
        .await?;
    s.keys.forget_device(&tenant, &d.id);
    Ok(with_etag(d.version, Json(DeviceView::from(d))))
}

/// Deletes a device and its access keys.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/devices/{device}", tag = "registry",
    params(("tenant" = String, Path), ("device" = String, Path)),
    responses((status = 204), (status = 404)))]
async fn delete_device(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, device)): Path<(String, String)>,
) -> Result<Response> {
    let (tenant, d) = device_for(&s, &principal, &tenant, &device, Action::ManageDevice).await?;
    s.stores.registry.delete_device(&tenant, &d.id).await?;
    s.keys.forget_device(&tenant, &d.id);
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Access keys

/// How to rotate.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// How long the device's current keys keep working, seconds (the server's default when
    /// absent; 0 ends them at once).
    #[serde(default)]
    overlap_seconds: Option<u64>,
}

/// Issues a new key (shown once); the device's current keys keep working for the overlap.
/// The body is optional.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/devices/{device}/access-keys", tag = "registry",
    params(("tenant" = String, Path), ("device" = String, Path)), request_body(content = Option<RotateBody>),
    responses((status = 201, body = IssuedKeyView), (status = 404), (status = 409, description = "too many usable keys")))]
async fn rotate_keys(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, device)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response> {
    let (tenant, d) = device_for(
        &s,
        &principal,
        &tenant,
        &device,
        Action::ManageDeviceCredentials,
    )
    .await?;
    let body: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        parse_json(&body)?
    };
    let issued = s
        .keys
        .rotate(
            &tenant,
            &d.id,
            body.overlap_seconds.map(Duration::from_secs),
        )
        .await?;
    Ok(created(IssuedKeyView::from(issued)))
}

/// A device's keys, newest first, without secrets.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/devices/{device}/access-keys", tag = "registry",
    params(("tenant" = String, Path), ("device" = String, Path)),
    responses((status = 200, body = Vec<AccessKeyInfo>), (status = 404)))]
async fn list_keys(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, device)): Path<(String, String)>,
) -> Result<Json<Vec<AccessKeyInfo>>> {
    let (tenant, d) = device_for(
        &s,
        &principal,
        &tenant,
        &device,
        Action::ManageDeviceCredentials,
    )
    .await?;
    Ok(Json(s.keys.list(&tenant, &d.id).await?))
}

/// Revokes one key at once.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/devices/{device}/access-keys/{key_id}", tag = "registry",
    params(("tenant" = String, Path), ("device" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 404)))]
async fn revoke_key(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, device, key_id)): Path<(String, String, String)>,
) -> Result<Response> {
    let (tenant, d) = device_for(
        &s,
        &principal,
        &tenant,
        &device,
        Action::ManageDeviceCredentials,
    )
    .await?;
    s.keys.revoke(&tenant, &d.id, &key_id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Users

/// Lists the users of a group's subtree.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/users", tag = "registry",
    params(("tenant" = String, Path), GroupQuery, Paging),
    responses((status = 200, body = UserPage)))]
async fn list_users(
    State(s): State<RegistryState>,
    principal: Principal,
    Path(tenant): Path<String>,
    Query(q): Query<GroupQuery>,
    Query(paging): Query<Paging>,
) -> Result<Json<UserPage>> {
    let tenant = tenant_of(&tenant)?;
    let root = match q.group {
        Some(g) => GroupPath::new(&g)?,
        None => default_root(&principal, &tenant),
    };
    in_tenant(&tenant, &root)?;
    check(
        &principal,
        Action::ManageUsers,
        &Resource::group(root.clone()),
    )?;
    let (items, next) = page(
        s.stores
            .registry
            .list_users(&root, paging.request())
            .await?,
    );
    Ok(Json(UserPage { items, next }))
}

/// A new user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    /// The user id, unique in the tenant.
    id: String,
    /// Its group (whole path; must exist).
    group: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(value_type = String)]
    role: Role,
    /// The password (hashed with argon2id; never stored or shown).
    password: String,
    /// A human name.
    #[serde(default)]
    display_name: String,
    /// A contact address.
    #[serde(default)]
    email: Option<String>,
}

impl std::fmt::Debug for NewUserBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUserBody")
            .field("id", &self.id)
            .field("group", &self.group)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Creates a user with a password. The role may not exceed the caller's scopes.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/users", tag = "registry",
    params(("tenant" = String, Path)), request_body = NewUserBody,
    responses((status = 201, body = UserView), (status = 400, description = "password too short or too long"), (status = 409)))]
async fn create_user(
    State(s): State<RegistryState>,
    principal: Principal,
    Path(tenant): Path<String>,
    Json(body): Json<NewUserBody>,
) -> Result<Response> {
    let tenant = tenant_of(&tenant)?;
    let id = UserId::new(&body.id)?;
    let group = GroupPath::new(&body.group)?;
    in_tenant(&tenant, &group)?;
    check(
        &principal,
        Action::ManageUsers,
        &Resource::group(group.clone()),
    )?;
    no_escalation(&principal, body.role.scopes())?;
    // argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    let policy = s.passwords;
    let password = body.password;
    let hash = tokio::task::spawn_blocking(move || policy.hash(&password))
        .await
        .map_err(Error::internal)??;
    let new = NewUser {
        id: id.clone(),
        group,
        display_name: body.display_name,
        email: body.email,
        role: body.role,
    };
    let user = s.stores.registry.create_user(new, s.clock.now()).await?;
    if let Err(e) = s
        .stores
        .credentials
        .set_password_hash(&tenant, &id, hash)
        .await
    {
        let _ = s.stores.registry.delete_user(&tenant, &id).await;
        return Err(e);
    }
    Ok(created(UserView::from(user)))
}

async fn user_for(
    s: &RegistryState,
    principal: &Principal,
    tenant: &str,
    user: &str,
) -> Result<(TenantId, User)> {
    let tenant = tenant_of(tenant)?;
    let id = UserId::new(user).map_err(|_| Error::not_found("no such resource"))?;
    let u = s
        .stores
        .registry
        .get_user(&tenant, &id)
        .await?
        .ok_or_else(|| Error::not_found(format!("user {id} does not exist")))?;
    check(
        principal,
        Action::ManageUsers,
        &Resource::group(u.group.clone()),
    )?;
    Ok((tenant, u))
}

/// One user.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/users/{user}", tag = "registry",
    params(("tenant" = String, Path), ("user" = String, Path)),
    responses((status = 200, body = UserView), (status = 404)))]
async fn get_user(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Response> {
    let (_, u) = user_for(&s, &principal, &tenant, &user).await?;
    Ok(with_etag(u.version, Json(UserView::from(u))))
}

/// Deletes a user and its password hash.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/users/{user}", tag = "registry",
    params(("tenant" = String, Path), ("user" = String, Path)),
    responses((status = 204), (status = 404)))]
async fn delete_user(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, user)): Path<(String, String)>,
) -> Result<Response> {
    let (tenant, u) = user_for(&s, &principal, &tenant, &user).await?;
    s.stores.registry.delete_user(&tenant, &u.id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// OAuth clients

/// The grant types a client may be given.
const GRANT_TYPES: &[&str] = &[
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "urn:ietf:params:oauth:grant-type:device_code",
];

/// Lists the OAuth clients of a group's subtree.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/clients", tag = "registry",
    params(("tenant" = String, Path), GroupQuery, Paging),
    responses((status = 200, body = ClientPage)))]
async fn list_clients(
    State(s): State<RegistryState>,
    principal: Principal,
    Path(tenant): Path<String>,
    Query(q): Query<GroupQuery>,
    Query(paging): Query<Paging>,
) -> Result<Json<ClientPage>> {
    let tenant = tenant_of(&tenant)?;
    let root = match q.group {
        Some(g) => GroupPath::new(&g)?,
        None => default_root(&principal, &tenant),
    };
    in_tenant(&tenant, &root)?;
    check(
        &principal,
        Action::ManageClients,
        &Resource::group(root.clone()),
    )?;
    let (items, next) = page(
        s.stores
            .registry
            .list_clients(&root, paging.request())
            .await?,
    );
    Ok(Json(ClientPage { items, next }))
}

fn default_true() -> bool {
    true
}

/// A new OAuth client.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewClientBody {
    /// The client id, unique hub-wide (generated when absent).
    #[serde(default)]
    id: Option<String>,
    /// The owning group (whole path; must exist).
    group: String,
    /// A human name, shown on the consent page.
    #[serde(default)]
    display_name: String,
    /// Confidential (with a generated secret, the default) or public (PKCE only).
    #[serde(default = "default_true")]
    confidential: bool,
    /// Exact redirect URIs.
    #[serde(default)]
    redirect_uris: Vec<String>,
    /// Grant types: `authorization_code`, `refresh_token`, `client_credentials`,
    /// `urn:ietf:params:oauth:grant-type:device_code`.
    grant_types: Vec<String>,
    /// The most it may ask for, as an OAuth scope string; no more than the caller holds.
    scopes: String,
}

/// Registers an OAuth client; a confidential client's secret is generated and shown once.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/clients", tag = "registry",
    params(("tenant" = String, Path)), request_body = NewClientBody,
    responses((status = 201, body = CreatedClient), (status = 409)))]
async fn create_client(
    State(s): State<RegistryState>,
    principal: Principal,
    Path(tenant): Path<String>,
    Json(body): Json<NewClientBody>,
) -> Result<Response> {
    let tenant = tenant_of(&tenant)?;
    let group = GroupPath::new(&body.group)?;
    in_tenant(&tenant, &group)?;
    check(
        &principal,
        Action::ManageClients,
        &Resource::group(group.clone()),
    )?;
    let scopes: ScopeSet = body.scopes.parse()?;
    no_escalation(&principal, scopes)?;
    if body.grant_types.is_empty() {
        return Err(Error::invalid_input(
            "a client needs at least one grant type",
        ));
    }
    if let Some(g) = body
        .grant_types
        .iter()
        .find(|g| !GRANT_TYPES.contains(&g.as_str()))
    {
        return Err(Error::invalid_input(format!("unknown grant type {g:?}")));
    }
    if !body.confidential && body.grant_types.iter().any(|g| g == "client_credentials") {
        return Err(Error::invalid_input(
            "a public client cannot use client_credentials",
        ));
    }
    let id = match body.id {
        Some(id) => ClientId::new(&id)?,
        None => ClientId::new(&format!("c-{}", random_base32(16)?))?,
    };
    let (secret, secret_hash) = if body.confidential {
        let (secret, hash) = generate_client_secret()?;
        (Some(secret), Some(hash))
    } else {
        (None, None)
    };
    let client = OAuthClient {
        id,
        group,
        display_name: body.display_name,
        redirect_uris: body.redirect_uris,
        secret_hash,
        grant_types: body.grant_types,
        scopes,
        created_at: s.clock.now(),
    };
    let client = s.stores.registry.create_client(client).await?;
    Ok(created(CreatedClient {
        client: client.into(),
        client_secret: secret.map(|s| s.expose().to_owned()),
    }))
}

async fn client_for(
    s: &RegistryState,
    principal: &Principal,
    tenant: &str,
    client: &str,
) -> Result<OAuthClient> {
    let tenant = tenant_of(tenant)?;
    let id = ClientId::new(client).map_err(|_| Error::not_found("no such resource"))?;
    let c = s
        .stores
        .registry
        .get_client(&id)
        .await?
        .filter(|c| c.tenant() == tenant)
        .ok_or_else(|| Error::not_found(format!("client {id} does not exist")))?;
    check(
        principal,
        Action::ManageClients,
        &Resource::group(c.group.clone()),
    )?;
    Ok(c)
}

/// One OAuth client.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/clients/{client}", tag = "registry",
    params(("tenant" = String, Path), ("client" = String, Path)),
    responses((status = 200, body = ClientView), (status = 404)))]
async fn get_client(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, client)): Path<(String, String)>,
) -> Result<Json<ClientView>> {
    Ok(Json(
        client_for(&s, &principal, &tenant, &client).await?.into(),
    ))
}

/// Deletes an OAuth client.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/clients/{client}", tag = "registry",
    params(("tenant" = String, Path), ("client" = String, Path)),
    responses((status = 204), (status = 404)))]
async fn delete_client(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, client)): Path<(String, String)>,
) -> Result<Response> {
    let c = client_for(&s, &principal, &tenant, &client).await?;
    s.stores.registry.delete_client(&c.id).await?;
    Ok(no_content())
}

// ---------------------------------------------------------------------------------------------
// Enrollments

/// Lists the enrollments of a group's subtree (no secrets).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/enrollments", tag = "registry",
    params(("tenant" = String, Path), GroupQuery),
    responses((status = 200, body = Vec<EnrollmentInfo>)))]
async fn list_enrollments(
    State(s): State<RegistryState>,
    principal: Principal,
    Path(tenant): Path<String>,
    Query(q): Query<GroupQuery>,
) -> Result<Json<Vec<EnrollmentInfo>>> {
    let tenant = tenant_of(&tenant)?;
    let root = match q.group {
        Some(g) => GroupPath::new(&g)?,
        None => default_root(&principal, &tenant),
    };
    in_tenant(&tenant, &root)?;
    check(
        &principal,
        Action::ManageClients,
        &Resource::group(root.clone()),
    )?;
    Ok(Json(s.enrollments.list(&root).await?))
}

/// A new enrollment.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEnrollmentBody {
    /// The group enrolled devices go to (whole path; must exist).
    group: String,
    /// How many devices may enroll with it.
    max_uses: u32,
    /// How long it works, seconds (the server's default when absent).
    #[serde(default)]
    expires_in_seconds: Option<u64>,
}

/// An enrollment just created, with its shared secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedEnrollmentView {
    /// The shared secret, `he_<id>_<secret>`: store it now, it is never shown again.
    pub enrollment: String,
    /// The enrollment as listings show it.
    pub info: EnrollmentInfo,
}

/// Creates an enrollment for a group; the shared secret is shown once. The caller must be
/// allowed to manage clients and enrollments and to register devices in the group.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/enrollments", tag = "registry",
    params(("tenant" = String, Path)), request_body = NewEnrollmentBody,
    responses((status = 201, body = CreatedEnrollmentView)))]
async fn create_enrollment(
    State(s): State<RegistryState>,
    principal: Principal,
    Path(tenant): Path<String>,
    Json(body): Json<NewEnrollmentBody>,
) -> Result<Response> {
    let tenant = tenant_of(&tenant)?;
    let group = GroupPath::new(&body.group)?;
    in_tenant(&tenant, &group)?;
    let resource = Resource::group(group.clone());
    check(&principal, Action::ManageClients, &resource)?;
    // It registers devices: the caller must be allowed to do that itself.
    check(&principal, Action::ManageDevice, &resource)?;
    let created_enrollment = s
        .enrollments
        .create(
            &group,
            body.max_uses,
            body.expires_in_seconds.map(Duration::from_secs),
        )
        .await?;
    Ok(created(CreatedEnrollmentView {
        enrollment: created_enrollment.secret.expose().to_owned(),
        info: created_enrollment.info,
    }))
}

/// Deletes an enrollment.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/enrollments/{id}", tag = "registry",
    params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 404)))]
async fn delete_enrollment(
    State(s): State<RegistryState>,
    principal: Principal,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response> {
    let tenant = tenant_of(&tenant)?;
    let e = s
        .enrollments
        .get(&id)
        .await?
        .filter(|e| e.group.tenant() == tenant)
        .ok_or_else(|| Error::not_found(format!("enrollment {id:?} does not exist")))?;
    check(&principal, Action::ManageClients, &Resource::group(e.group))?;
    s.enrollments.delete(&id).await?;
    Ok(no_content())
}

/// A device enrolling itself.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct EnrollBody {
    /// The shared secret of the enrollment, `he_<id>_<secret>`.
    enrollment: String,
    /// The device's own id (its serial number, say).
    device_id: String,
    /// A human name.
    #[serde(default)]
    display_name: String,
    /// Attributes (a JSON object).
    #[serde(default)]
    attributes: Option<serde_json::Value>,
}

impl std::fmt::Debug for EnrollBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollBody")
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// A device enrolls itself with an enrollment's shared secret: it is registered in the
/// enrollment's group and receives its own access key, shown once. Needs no principal.
#[utoipa::path(post, path = "/v1/enroll", tag = "registry", request_body = EnrollBody,
    responses((status = 201, body = RegisteredDevice),
        (status = 401, description = "wrong, expired or used-up enrollment"),
        (status = 409, description = "the device id is registered already")))]
async fn enroll(State(s): State<RegistryState>, Json(body): Json<EnrollBody>) -> Result<Response> {
    let device = DeviceId::new(&body.device_id)?;
    let enrolled = s
        .enrollments
        .enroll(
            &body.enrollment,
            &device,
            body.display_name,
            body.attributes,
        )
        .await?;
    Ok(created(RegisteredDevice {
        device: enrolled.device.into(),
        access_key: enrolled.key.access_key.expose().to_owned(),
        key: enrolled.key.info,
    }))
}
