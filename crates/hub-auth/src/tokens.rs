//! JSON Web Tokens: the access and ID tokens the hub signs, and the [`TokenValidator`] that turns
//! a bearer token (the hub's own or an external identity provider's) into a [`Principal`].
//!
//! Hardening (RFC 8725, RFC 9700): the key decides the algorithm (a token's `alg` must equal its
//! key's, so `none` and HMAC-with-a-public-key never verify); keys are looked up by `kid` among
//! the keys of the issuer the token names, never fetched from `jku`/`x5u`/`jwk` headers; a `crit`
//! header is refused; issuer and audience must match exactly; `exp` is required and `exp`/`nbf`
//! get a bounded leeway; tokens are size-limited before any parsing.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use hub_auth::keys::{Algorithm, KeySet, SharedKeys};
//! use hub_auth::tokens::{AccessClaims, TokenValidator, ValidatorConfig};
//! use hub_core::{ManualClock, Principal, ServicePrincipal, ScopeSet, Timestamp};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
//! let now = Timestamp::from_millis(1_700_000_000_000)?;
//! let keys = SharedKeys::new(KeySet::generate(Algorithm::EdDsa, now)?);
//! let service = Principal::Service(ServicePrincipal {
//!     name: "reporting".into(),
//!     root: Some("acme/plant-1".parse()?),
//!     scopes: "jobs:read".parse()?,
//! });
//! let claims = AccessClaims::for_principal(
//!     "https://hub.example", "https://hub.example", &service, "reporting", now,
//!     Duration::from_secs(300))?;
//! let token = claims.sign(&keys.snapshot())?;
//!
//! let validator = TokenValidator::new(
//!     ValidatorConfig::new("https://hub.example"), Arc::new(ManualClock::new(now)))
//!     .with_local_issuer("https://hub.example", keys);
//! assert_eq!(validator.validate(&token).await?.principal, service);
//! # Ok::<(), Box<dyn std::error::Error>>(()) })
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use hub_core::{
    AppPrincipal, BoxFuture, ClientId, Clock, Error, GroupPath, Principal, Result, ScopeSet,
    ServicePrincipal, Timestamp, UserId, UserPrincipal,
};

use crate::keys::{Jwks, KeySet, SharedKeys, VerifyingKey};
use crate::secrets::{random_token, sha256};

/// The largest leeway a validator grants on `exp` and `nbf`, whatever it is configured with.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// The `typ` header of the hub's access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// What kind of principal an access token stands for (the `hub_typ` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalType {
    /// A person acting directly.
    User,
    /// An application acting for a person (`sub` is the user, `client_id` the app).
    App,
    /// A client acting for itself (`sub` is the client).
    Service,
}

/// The claims of an access token the hub issues: RFC 9068 plus what rebuilds the principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Subject: the user, or the client for a service.
    pub sub: String,
    /// Audience: the resource server (the hub's Web API).
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// The token's id (revocation uses it).
    pub jti: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The client the token was issued to.
    pub client_id: String,
    /// The principal's type.
    pub hub_typ: PrincipalType,
    /// The group the principal acts within (for a service, its root).
    pub hub_grp: GroupPath,
    /// For an app, the scopes of the user it acts for (its own are `scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_usc: Option<ScopeSet>,
}

fn secs(t: Timestamp) -> i64 {
    t.as_millis().div_euclid(1000)
}

fn from_secs(s: i64) -> Timestamp {
    Timestamp::from_millis(s.saturating_mul(1000)).unwrap_or(if s < 0 {
        Timestamp::EPOCH
    } else {
        Timestamp::MAX
    })
}

impl AccessClaims {
    /// The claims of a token for `principal`, issued to `client_id` at `now` for `ttl`.
    /// Devices do not get tokens (they use access keys); a service needs a root group.
    pub fn for_principal(
        issuer: &str,
        audience: &str,
        principal: &Principal,
        client_id: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Self> {
        let user_scopes = match principal {
            Principal::App(a) => Some(a.user().scopes),
            _ => None,
        };
        let (typ, sub, grp, scopes) = match principal {
            Principal::User(u) => (
                PrincipalType::User,
                u.id.to_string(),
                u.group.clone(),
                u.scopes,
            ),
            Principal::App(a) => (
                PrincipalType::App,
                a.user().id.to_string(),
                a.user().group.clone(),
                a.scopes(),
            ),
            Principal::Service(s) => (
                PrincipalType::Service,
                s.name.clone(),
                s.root
                    .clone()
                    .ok_or_else(|| Error::invalid_input("a hub-wide service gets no token"))?,
                s.scopes,
            ),
            Principal::Device(_) => {
                return Err(Error::invalid_input(
                    "devices authenticate with access keys, not tokens",
                ));
            }
        };
        Ok(Self {
            iss: issuer.to_owned(),
            sub,
            aud: audience.to_owned(),
            exp: secs(now.saturating_add(ttl)),
            iat: secs(now),
            nbf: secs(now),
            jti: random_token(16)?,
            scope: scopes.to_string(),
            client_id: client_id.to_owned(),
            hub_typ: typ,
            hub_grp: grp,
            hub_usc: user_scopes,
        })
    }

    /// Signs the claims with the key set's current key.
    pub fn sign(&self, keys: &KeySet) -> Result<String> {
        sign(keys, ACCESS_TOKEN_TYP, self)
    }

    /// The principal the token stands for.
    pub fn principal(&self) -> Result<Principal> {
        let bad = |what: &str| Error::unauthenticated(format!("the token's {what} is not valid"));
        let scopes = parse_scopes_lenient(&self.scope);
        Ok(match self.hub_typ {
            PrincipalType::User => Principal::User(UserPrincipal {
                id: UserId::new(&self.sub).map_err(|_| bad("sub"))?,
                group: self.hub_grp.clone(),
                scopes,
            }),
            PrincipalType::App => {
                let user = UserPrincipal {
                    id: UserId::new(&self.sub).map_err(|_| bad("sub"))?,
                    group: self.hub_grp.clone(),
                    scopes: self.hub_usc.unwrap_or(scopes),
                };
                let client = ClientId::new(&self.client_id).map_err(|_| bad("client_id"))?;
                Principal::App(AppPrincipal::new(client, user, scopes))
            }
            PrincipalType::Service => Principal::Service(ServicePrincipal {
                name: self.sub.clone(),
                root: Some(self.hub_grp.clone()),
                scopes,
            }),
        })
    }

    /// Expiry as a timestamp.
    pub fn expires_at(&self) -> Timestamp {
        from_secs(self.exp)
    }
}

/// Keeps the scopes the hub knows and drops other names (`openid`, an IdP's own scopes).
pub fn parse_scopes_lenient(s: &str) -> ScopeSet {
    s.split(' ').filter_map(|w| w.parse().ok()).collect()
}

/// The claims of an OpenID Connect ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    /// Issuer.
    pub iss: String,
    /// The user.
    pub sub: String,
    /// The client.
    pub aud: String,
    /// Expiry.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// When the user signed in.
    pub auth_time: i64,
    /// The nonce of the authorization request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The user's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The user's e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's group (hub claim).
    pub hub_grp: GroupPath,
}

impl IdClaims {
    /// Signs the claims with the key set's current key.
    pub fn sign(&self, keys: &KeySet) -> Result<String> {
        sign(keys, "JWT", self)
    }
}

/// Signs `claims` as a compact JWS with the current key of `keys`.
pub fn sign(keys: &KeySet, typ: &str, claims: &impl Serialize) -> Result<String> {
    let key = keys.signing_key();
    let header = serde_json::json!({"alg": key.algorithm().as_str(), "typ": typ, "kid": key.kid()});
    let mut out = B64.encode(header.to_string());
    out.push('.');
    out.push_str(&B64.encode(serde_json::to_vec(claims).map_err(Error::internal)?));
    let signature = key.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&B64.encode(signature));
    Ok(out)
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

struct Parsed<'a> {
    header: Header,
    claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

fn invalid(why: &str) -> Error {
    Error::unauthenticated(format!("the bearer token is not valid: {why}"))
}

fn parse(token: &str) -> Result<Parsed<'_>> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("not a compact JWS"));
    };
    let header_bytes = B64.decode(h).map_err(|_| invalid("bad header encoding"))?;
    let header: Header =
        serde_json::from_slice(&header_bytes).map_err(|_| invalid("bad header"))?;
    if header.crit.is_some() {
        return Err(invalid("critical header extensions are not supported"));
    }
    let payload = B64.decode(p).map_err(|_| invalid("bad payload encoding"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&payload)
        .map_err(|_| invalid("the payload is not a JSON object"))?;
    let signature = B64
        .decode(s)
        .map_err(|_| invalid("bad signature encoding"))?;
    Ok(Parsed {
        header,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

/// How a validator behaves.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    /// The audience tokens must name (the hub's Web API identifier).
    pub audience: String,
    /// Leeway on `exp` and `nbf`, capped at [`MAX_LEEWAY`]. Default 30 s.
    pub leeway: Duration,
    /// Longer tokens are refused unread. Default 8 KiB.
    pub max_token_bytes: usize,
    /// How many validated tokens are remembered. Default 100,000.
    pub cache_capacity: usize,
    /// An external issuer's JWKS is fetched at most this often (unknown-kid floods). Default 30 s.
    pub jwks_min_refresh: Duration,
    /// An external issuer's JWKS is refreshed when older than this. Default 1 h.
    pub jwks_max_age: Duration,
}

impl ValidatorConfig {
    /// The defaults, for tokens addressed to `audience`.
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            leeway: Duration::from_secs(30),
            max_token_bytes: 8 * 1024,
            cache_capacity: 100_000,
            jwks_min_refresh: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(3600),
        }
    }
}

/// Fetches an external identity provider's JWKS document. The application supplies it (over its
/// own HTTPS client), so that this crate opens no connections of its own and follows no URL a
/// token names.
pub trait JwksFetcher: Send + Sync + fmt::Debug + 'static {
    /// Fetches the JWKS at `url`.
    fn fetch<'a>(&'a self, url: &'a str) -> BoxFuture<'a, Result<Jwks>>;
}

/// What an external identity provider's tokens become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappedKind {
    /// A [`Principal::User`] whose id is the subject claim.
    User,
    /// A [`Principal::Service`] named by the subject claim.
    Service,
}

/// How an external token's claims map to a hub principal.
#[derive(Debug, Clone)]
pub struct ClaimMapping {
    /// The group the provider's principals act within.
    pub group: GroupPath,
    /// The claim holding the user id or service name. Default `sub`.
    pub subject_claim: String,
    /// The claim holding the scopes (a space-separated string or an array). Default `scope`.
    pub scope_claim: String,
    /// The most the provider may grant; other scopes are dropped.
    pub max_scopes: ScopeSet,
    /// The kind of principal.
    pub kind: MappedKind,
}

impl ClaimMapping {
    /// Users in `group` with at most `max_scopes`, identified by `sub`, scopes in `scope`.
    pub fn users(group: GroupPath, max_scopes: ScopeSet) -> Self {
        Self {
            group,
            subject_claim: "sub".into(),
            scope_claim: "scope".into(),
            max_scopes,
            kind: MappedKind::User,
        }
    }
}

/// An external identity provider whose tokens the hub accepts.
#[derive(Debug, Clone)]
pub struct ExternalIssuer {
    /// The exact `iss` value.
    pub issuer: String,
    /// Where its JWKS is (configured here; never taken from a token).
    pub jwks_url: String,
    /// The audience its tokens must name; the validator's when `None`.
    pub audience: Option<String>,
    /// How its claims become a principal.
    pub mapping: ClaimMapping,
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    /// Who the token stands for.
    pub principal: Principal,
    /// Its issuer.
    pub issuer: String,
    /// Its subject.
    pub subject: String,
    /// The client it was issued to, if it says.
    pub client_id: Option<String>,
    /// The hub scopes it grants.
    pub scopes: ScopeSet,
    /// Its id.
    pub jti: Option<String>,
    /// When it expires.
    pub expires_at: Timestamp,
    /// When it was issued.
    pub issued_at: Option<Timestamp>,
}

/// Revoked token ids, remembered until the tokens would have expired anyway. Shared between the
/// revocation endpoint and the validators.
#[derive(Debug, Clone, Default)]
pub struct Revocations(Arc<RevocationList>);

#[derive(Debug, Default)]
struct RevocationList {
    map: Mutex<HashMap<String, Timestamp>>,
    /// How many ids are held: the cached path skips the lock while none are.
    len: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Revocations {
    /// Revokes the token `jti` until `until` (its expiry).
    pub fn revoke(&self, jti: &str, until: Timestamp, now: Timestamp) {
        let mut map = lock(&self.0.map);
        if map.len() >= 1024 {
            map.retain(|_, t| now < *t);
        }
        map.insert(jti.to_owned(), until);
        self.0.len.store(map.len(), Ordering::Release);
    }

    /// Whether `jti` is revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.0.len.load(Ordering::Acquire) > 0 && lock(&self.0.map).contains_key(jti)
    }
}

struct JwksState {
    keys: HashMap<String, VerifyingKey>,
    fetched_at: Option<Timestamp>,
    last_attempt: Option<Timestamp>,
}

struct External {
    config: ExternalIssuer,
    fetcher: Arc<dyn JwksFetcher>,
    state: Mutex<JwksState>,
}

/// The most keys taken from one external JWKS.
const MAX_EXTERNAL_KEYS: usize = 64;

impl External {
    async fn key(&self, kid: &str, now: Timestamp, cfg: &ValidatorConfig) -> Result<VerifyingKey> {
        let (found, fetch) = {
            let mut st = lock(&self.state);
            let found = st.keys.get(kid).cloned();
            let stale = st
                .fetched_at
                .is_none_or(|f| now >= f.saturating_add(cfg.jwks_max_age));
            let may = st
                .last_attempt
                .is_none_or(|a| now >= a.saturating_add(cfg.jwks_min_refresh));
            let fetch = may && (found.is_none() || stale);
            if fetch {
                // Claimed under the lock: of concurrent callers only one fetches.
                st.last_attempt = Some(now);
            }
            (found, fetch)
        };
        if !fetch {
            return found.ok_or_else(|| invalid("unknown key id"));
        }
        match self.fetcher.fetch(&self.config.jwks_url).await {
            Ok(jwks) => {
                let keys: HashMap<_, _> = jwks
                    .keys
                    .iter()
                    .filter_map(|k| VerifyingKey::from_jwk(k).ok())
                    .take(MAX_EXTERNAL_KEYS)
                    .map(|k| (k.kid().to_owned(), k))
                    .collect();
                let mut st = lock(&self.state);
                st.keys = keys;
                st.fetched_at = Some(now);
                st.keys
                    .get(kid)
                    .cloned()
                    .ok_or_else(|| invalid("unknown key id"))
            }
            Err(e) => {
                // Stale while error: the keys we had keep working.
                tracing::warn!(issuer = %self.config.issuer, error = %e, "JWKS refresh failed");
                found.ok_or_else(|| invalid("unknown key id"))
            }
        }
    }
}

const SHARDS: usize = 16;

/// Cache keys are SHA-256 digests already: their bytes are the hash, no need to hash again.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut b = [0u8; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[bytes.len() - n..]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
    }
}

type Shard = Mutex<HashMap<[u8; 32], Arc<Validated>, BuildHasherDefault<DigestHasher>>>;

/// Validates bearer JWTs and remembers valid ones (keyed by the SHA-256 of the token) until they
/// expire or are revoked.
pub struct TokenValidator {
    config: ValidatorConfig,
    clock: Arc<dyn Clock>,
    local: Option<(String, SharedKeys)>,
    external: Vec<External>,
    revocations: Revocations,
    cache: Vec<Shard>,
}

impl fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenValidator")
            .field("config", &self.config)
            .field("local", &self.local.as_ref().map(|l| &l.0))
            .field(
                "external",
                &self
                    .external
                    .iter()
                    .map(|e| &e.config.issuer)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl TokenValidator {
    /// A validator with no issuer yet.
    pub fn new(mut config: ValidatorConfig, clock: Arc<dyn Clock>) -> Self {
        config.leeway = config.leeway.min(MAX_LEEWAY);
        Self {
            config,
            clock,
            local: None,
            external: Vec::new(),
            revocations: Revocations::default(),
            cache: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
        }
    }

    /// Accepts the hub's own access tokens: issuer `issuer`, signed by `keys`.
    pub fn with_local_issuer(mut self, issuer: impl Into<String>, keys: SharedKeys) -> Self {
        self.local = Some((issuer.into(), keys));
        self
    }

    /// Accepts tokens of an external identity provider.
    pub fn with_external_issuer(
        mut self,
        issuer: ExternalIssuer,
        fetcher: Arc<dyn JwksFetcher>,
    ) -> Self {
        self.external.push(External {
            config: issuer,
            fetcher,
            state: Mutex::new(JwksState {
                keys: HashMap::new(),
                fetched_at: None,
                last_attempt: None,
            }),
        });
        self
    }

    /// Shares a revocation list (the authorization server's).
    pub fn with_revocations(mut self, revocations: Revocations) -> Self {
        self.revocations = revocations;
        self
    }

    /// The revocation list this validator honours.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    /// The configuration.
    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    fn shard(&self, digest: &[u8; 32]) -> &Shard {
        &self.cache[digest[0] as usize % SHARDS]
    }

    fn alive(&self, v: &Validated, now: Timestamp) -> bool {
        now < v.expires_at.saturating_add(self.config.leeway)
    }

    /// Validates `token` and returns what it says. Failures are
    /// [`Unauthenticated`](hub_core::ErrorKind::Unauthenticated).
    pub async fn validate(&self, token: &str) -> Result<Arc<Validated>> {
        if token.len() > self.config.max_token_bytes {
            return Err(invalid("too long"));
        }
        let now = self.clock.now();
        let digest = sha256(token.as_bytes());
        let hit = lock(self.shard(&digest)).get(&digest).cloned();
        if let Some(v) = hit {
            if self.alive(&v, now)
                && !v
                    .jti
                    .as_deref()
                    .is_some_and(|j| self.revocations.is_revoked(j))
            {
                return Ok(v);
            }
            lock(self.shard(&digest)).remove(&digest);
        }
        let v = Arc::new(self.validate_uncached(token, now).await?);
        let mut shard = lock(self.shard(&digest));
        if shard.len() >= self.config.cache_capacity.div_ceil(SHARDS) {
            shard.retain(|_, v| now < v.expires_at.saturating_add(self.config.leeway));
            if shard.len() >= self.config.cache_capacity.div_ceil(SHARDS) {
                // Still full of live tokens: start over rather than grow.
                shard.clear();
            }
        }
        if self.config.cache_capacity > 0 {
            shard.insert(digest, v.clone());
        }
        Ok(v)
    }

    async fn validate_uncached(&self, token: &str, now: Timestamp) -> Result<Validated> {
        let parsed = parse(token)?;
        let iss = parsed
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no issuer"))?;
        let kid = parsed
            .header
            .kid
            .as_deref()
            .ok_or_else(|| invalid("no key id"))?;
        if let Some((local_iss, keys)) = &self.local
            && iss == local_iss
        {
            if parsed.header.typ.as_deref() != Some(ACCESS_TOKEN_TYP) {
                return Err(invalid("not an access token"));
            }
            let key = keys
                .snapshot()
                .verifying_key(kid)
                .cloned()
                .ok_or_else(|| invalid("unknown key id"))?;
            self.check(&parsed, &key, &self.config.audience, now)?;
            let claims: AccessClaims = serde_json::from_value(Value::Object(parsed.claims))
                .map_err(|_| invalid("the claims are not the hub's"))?;
            let principal = claims.principal()?;
            let v = Validated {
                scopes: parse_scopes_lenient(&claims.scope),
                principal,
                issuer: claims.iss,
                subject: claims.sub,
                client_id: Some(claims.client_id),
                jti: Some(claims.jti),
                expires_at: from_secs(claims.exp),
                issued_at: Some(from_secs(claims.iat)),
            };
            return self.not_revoked(v);
        }
        let ext = self
            .external
            .iter()
            .find(|e| e.config.issuer == iss)
            .ok_or_else(|| invalid("unknown issuer"))?;
        let key = ext.key(kid, now, &self.config).await?;
        let aud = ext
            .config
            .audience
            .as_deref()
            .unwrap_or(&self.config.audience);
        self.check(&parsed, &key, aud, now)?;
        let v = map_external(&ext.config, &parsed.claims)?;
        self.not_revoked(v)
    }

    fn not_revoked(&self, v: Validated) -> Result<Validated> {
        match &v.jti {
            Some(j) if self.revocations.is_revoked(j) => Err(invalid("revoked")),
            _ => Ok(v),
        }
    }

    fn check(
        &self,
        p: &Parsed<'_>,
        key: &VerifyingKey,
        audience: &str,
        now: Timestamp,
    ) -> Result<()> {
        if !key.verify(&p.header.alg, p.signing_input.as_bytes(), &p.signature) {
            return Err(invalid("bad signature"));
        }
        let aud_ok = match p.claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(invalid("wrong audience"));
        }
        let leeway = self.config.leeway;
        let exp = p
            .claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| invalid("no expiry"))?;
        if now >= from_secs(exp).saturating_add(leeway) {
            return Err(invalid("expired"));
        }
        if let Some(nbf) = p.claims.get("nbf") {
            let nbf = nbf.as_i64().ok_or_else(|| invalid("bad nbf"))?;
            if now.saturating_add(leeway) < from_secs(nbf) {
                return Err(invalid("not yet valid"));
            }
        }
        Ok(())
    }
}

fn map_external(cfg: &ExternalIssuer, claims: &Map<String, Value>) -> Result<Validated> {
    let m = &cfg.mapping;
    let subject = claims
        .get(&m.subject_claim)
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("no subject"))?
        .to_owned();
    let granted = match claims.get(&m.scope_claim) {
        Some(Value::String(s)) => parse_scopes_lenient(s),
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str()?.parse().ok()).collect(),
        _ => ScopeSet::EMPTY,
    };
    let scopes = granted.intersection(m.max_scopes);
    let principal = match m.kind {
        MappedKind::User => Principal::User(UserPrincipal {
            id: UserId::new(&subject).map_err(|_| invalid("the subject is not a user id"))?,
            group: m.group.clone(),
            scopes,
        }),
        MappedKind::Service => Principal::Service(ServicePrincipal {
            name: format!("{}#{}", cfg.issuer, subject),
            root: Some(m.group.clone()),
            scopes,
        }),
    };
    Ok(Validated {
        principal,
        issuer: cfg.issuer.clone(),
        subject,
        client_id: claims
            .get("client_id")
            .or_else(|| claims.get("azp"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        scopes,
        jti: claims.get("jti").and_then(Value::as_str).map(str::to_owned),
        expires_at: from_secs(claims.get("exp").and_then(Value::as_i64).unwrap_or(0)),
        issued_at: claims.get("iat").and_then(Value::as_i64).map(from_secs),
    })
}
