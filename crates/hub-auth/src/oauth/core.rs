//! The sans-IO rules of the authorization server: PKCE, redirect URI matching, scope requests,
//! user codes, and brute-force throttling. Pure functions and a state machine that takes `now`.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use hub_core::{ScopeSet, Timestamp};

use crate::secrets::{ct_eq, sha256};

/// Whether `verifier` (RFC 7636: 43 to 128 unreserved characters) hashes to `challenge` with
/// S256. The plain method is never accepted.
pub fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed
        && ct_eq(
            B64.encode(sha256(verifier.as_bytes())).as_bytes(),
            challenge.as_bytes(),
        )
}

/// Whether `requested` is one of `registered`, compared exactly, byte for byte (RFC 9700 4.1.3):
/// no normalization of case, trailing slashes, ports, paths or queries.
pub fn redirect_uri_allowed(registered: &[String], requested: &str) -> bool {
    registered.iter().any(|r| r == requested)
}

/// The OpenID Connect scopes the hub understands besides its own.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// A parsed `scope` request: the hub scopes and the OpenID Connect ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeRequest {
    /// Hub scopes.
    pub hub: ScopeSet,
    /// OpenID Connect scopes present, space-separated, in [`OIDC_SCOPES`] order.
    pub oidc: Vec<&'static str>,
}

impl ScopeRequest {
    /// Parses a scope string; an unknown name is an error (`invalid_scope`).
    pub fn parse(s: Option<&str>) -> Result<Self, String> {
        let mut out = ScopeRequest::default();
        for word in s.unwrap_or("").split(' ').filter(|w| !w.is_empty()) {
            if let Some(o) = OIDC_SCOPES.iter().find(|o| **o == word) {
                if !out.oidc.contains(o) {
                    out.oidc.push(o);
                }
            } else {
                let scope = word.parse().map_err(|_| {
                    format!(
                        "unknown scope {:?}",
                        word.chars().take(64).collect::<String>()
                    )
                })?;
                out.hub = out.hub.with(scope);
            }
        }
        Ok(out)
    }

    /// The hub scopes to grant a client allowed `allowed`: what it asked for (all it may have
    /// when it asked for none); asking beyond `allowed` is an error.
    pub fn grant(&self, allowed: ScopeSet) -> Result<ScopeSet, String> {
        if self.hub.is_empty() {
            return Ok(allowed);
        }
        if !self.hub.is_subset_of(allowed) {
            return Err("the client may not ask for these scopes".into());
        }
        Ok(self.hub)
    }

    /// Whether `openid` was asked for.
    pub fn openid(&self) -> bool {
        self.oidc.contains(&"openid")
    }

    /// The OIDC scopes as a string.
    pub fn oidc_string(&self) -> String {
        self.oidc.join(" ")
    }
}

/// The letters of user codes: consonants only (no vowels, so no words), no look-alikes
/// (RFC 8628 section 6.1).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

/// An eight-letter user code from random bytes (20^8, about 34 bits).
pub fn user_code(random: &[u8; 8]) -> String {
    random
        .iter()
        .map(|b| USER_CODE_ALPHABET[*b as usize % USER_CODE_ALPHABET.len()] as char)
        .collect()
}

/// A user code as typed (any case, with dashes or spaces) in its stored form.
pub fn normalize_user_code(typed: &str) -> String {
    typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .take(16)
        .collect()
}

/// A user code as shown: `BDFG-HJKL`.
pub fn display_user_code(code: &str) -> String {
    if code.len() == 8 {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_owned()
    }
}

/// Limits of the brute-force throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Failures allowed before a key is locked.
    pub max_failures: u32,
    /// The first lock's length; each further failure doubles it.
    pub base_lock: Duration,
    /// The longest lock.
    pub max_lock: Duration,
    /// Failures older than this are forgotten.
    pub window: Duration,
    /// The most keys remembered (oldest forgotten first).
    pub max_keys: usize,
}

impl Default for ThrottleConfig {
    /// Five failures, then 30 s locks doubling up to 15 minutes; a 15-minute window.
    fn default() -> Self {
        Self {
            max_failures: 5,
            base_lock: Duration::from_secs(30),
            max_lock: Duration::from_secs(900),
            window: Duration::from_secs(900),
            max_keys: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Timestamp,
    locked_until: Option<Timestamp>,
}

/// Counts failed sign-ins per key (a user, a client address) and locks a key after too many.
#[derive(Debug, Clone)]
pub struct Throttle {
    config: ThrottleConfig,
    entries: HashMap<String, Entry>,
}

impl Throttle {
    /// A throttle with `config`.
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            entries: HashMap::new(),
        }
    }

    /// `Err(retry_after)` while `key` is locked.
    pub fn check(&self, key: &str, now: Timestamp) -> Result<(), Duration> {
        match self.entries.get(key).and_then(|e| e.locked_until) {
            Some(until) if now < until => Err(until.duration_since(now)),
            _ => Ok(()),
        }
    }

    /// Records a failed attempt for `key`.
    pub fn failure(&mut self, key: &str, now: Timestamp) {
        if self.entries.len() >= self.config.max_keys && !self.entries.contains_key(key) {
            let window = self.config.window;
            self.entries
                .retain(|_, e| now < e.last_failure.saturating_add(window));
            if self.entries.len() >= self.config.max_keys {
                // Forget the oldest to stay bounded.
                if let Some(k) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last_failure)
                    .map(|(k, _)| k.clone())
                {
                    self.entries.remove(&k);
                }
            }
        }
        let c = self.config;
        let e = self.entries.entry(key.to_owned()).or_insert(Entry {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        if now >= e.last_failure.saturating_add(c.window) {
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        e.last_failure = now;
        if e.failures >= c.max_failures {
            let doublings = (e.failures - c.max_failures).min(20);
            let lock = c.base_lock.saturating_mul(1 << doublings).min(c.max_lock);
            e.locked_until = Some(now.saturating_add(lock));
        }
    }

    /// A successful sign-in clears `key`.
    pub fn success(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::EPOCH.saturating_add(Duration::from_secs(s))
    }

    #[test]
    fn pkce_rfc7636_example() {
        // RFC 7636 appendix B.
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(pkce_s256_matches(
            v,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_s256_matches(v, v), "plain is refused");
        assert!(!pkce_s256_matches(
            "short",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }

    #[test]
    fn scope_requests() {
        let r = ScopeRequest::parse(Some("openid jobs:read  email")).unwrap();
        assert!(r.openid());
        assert_eq!(r.hub.to_string(), "jobs:read");
        assert!(ScopeRequest::parse(Some("jobs:read admin")).is_err());
        let allowed: ScopeSet = "jobs:read devices:read".parse().unwrap();
        assert_eq!(r.grant(allowed).unwrap().to_string(), "jobs:read");
        assert!(
            ScopeRequest::parse(Some("jobs:write"))
                .unwrap()
                .grant(allowed)
                .is_err()
        );
        assert_eq!(ScopeRequest::default().grant(allowed).unwrap(), allowed);
    }

    #[test]
    fn user_codes_normalize() {
        let c = user_code(&[0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(c.len(), 8);
        assert_eq!(
            normalize_user_code(&display_user_code(&c).to_lowercase()),
            c
        );
    }

    #[test]
    fn throttle_locks_after_five_failures_and_backs_off() {
        let mut th = Throttle::new(ThrottleConfig::default());
        for i in 0..4 {
            th.failure("u", t(i));
            assert!(th.check("u", t(i)).is_ok());
        }
        th.failure("u", t(4));
        assert_eq!(th.check("u", t(4)), Err(Duration::from_secs(30)));
        assert!(th.check("u", t(34)).is_ok());
        th.failure("u", t(34));
        assert_eq!(th.check("u", t(34)), Err(Duration::from_secs(60)));
        assert!(th.check("other", t(34)).is_ok());
        th.success("u");
        assert!(th.check("u", t(35)).is_ok());
    }

    proptest! {
        #[test]
        fn only_exact_redirect_uris_match(base in "https://[a-z]{1,8}\\.example(:[0-9]{2,4})?/[a-z]{0,6}",
                                         tweak in 0usize..6) {
            let registered = vec![base.clone()];
            prop_assert!(redirect_uri_allowed(&registered, &base));
            let variant = match tweak {
                0 => format!("{base}/"),
                1 => base.to_uppercase(),
                2 => format!("{base}x"),
                3 => format!("{base}?a=1"),
                4 => base.replacen("https://", "http://", 1),
                _ => format!("{base}#f"),
            };
            prop_assume!(variant != base);
            prop_assert!(!redirect_uri_allowed(&registered, &variant));
        }

        #[test]
        fn throttle_never_locks_below_the_limit(n in 0u32..5, gaps in proptest::collection::vec(0u64..100, 5)) {
            let mut th = Throttle::new(ThrottleConfig::default());
            let mut now = t(0);
            for g in gaps.iter().take(n as usize) {
                now = now.saturating_add(Duration::from_secs(*g));
                th.failure("k", now);
            }
            prop_assert!(th.check("k", now).is_ok());
        }

        #[test]
        fn throttle_stays_bounded(keys in proptest::collection::vec("[a-z]{1,4}", 1..200)) {
            let mut th = Throttle::new(ThrottleConfig { max_keys: 16, ..ThrottleConfig::default() });
            for k in &keys {
                th.failure(k, t(0));
            }
            prop_assert!(th.entries.len() <= 16);
        }
    }
}
