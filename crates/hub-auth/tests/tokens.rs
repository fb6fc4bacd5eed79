//! The token validator against forged, stale and misaddressed tokens, checked against an
//! independent JWT implementation (jsonwebtoken) in both directions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hub_auth::HubAuthenticator;
use hub_auth::keys::{Algorithm, Jwk, Jwks, KeySet, SharedKeys};
use hub_auth::tokens::{
    AccessClaims, ClaimMapping, ExternalIssuer, JwksFetcher, TokenValidator, ValidatorConfig,
};
use hub_core::{
    AppPrincipal, Authenticator, BoxFuture, Credentials, Error, ErrorKind, ManualClock, Principal,
    Role, Secret, Timestamp, UserPrincipal,
};

const ISS: &str = "https://hub.example";
const AUD: &str = "https://hub.example/api";

fn t0() -> Timestamp {
    Timestamp::from_millis(1_800_000_000_000).unwrap()
}

fn app() -> Principal {
    let user = UserPrincipal {
        id: "alice".parse().unwrap(),
        group: "acme/plant-1".parse().unwrap(),
        scopes: Role::Operator.scopes(),
    };
    Principal::App(AppPrincipal::new(
        "dashboard".parse().unwrap(),
        user,
        "jobs:read jobs:write".parse().unwrap(),
    ))
}

struct Fixture {
    clock: ManualClock,
    keys: SharedKeys,
    validator: TokenValidator,
}

fn fixture(alg: Algorithm) -> Fixture {
    let clock = ManualClock::new(t0());
    let keys = SharedKeys::new(KeySet::generate(alg, t0()).unwrap());
    let validator = TokenValidator::new(ValidatorConfig::new(AUD), Arc::new(clock.clone()))
        .with_local_issuer(ISS, keys.clone());
    Fixture {
        clock,
        keys,
        validator,
    }
}

fn claims() -> AccessClaims {
    AccessClaims::for_principal(
        ISS,
        AUD,
        &app(),
        "dashboard",
        t0(),
        Duration::from_secs(600),
    )
    .unwrap()
}

fn unauth(r: Result<impl std::fmt::Debug, Error>) -> String {
    let e = r.expect_err("the token must be refused");
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    e.detail().to_owned()
}

/// A token with a hand-made header and payload, signed by `sign` over the signing input.
fn forge(
    header: serde_json::Value,
    claims: &impl serde::Serialize,
    sig: &dyn Fn(&[u8]) -> Vec<u8>,
) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(serde_json::to_vec(claims).unwrap())
    );
    let s = sig(input.as_bytes());
    format!("{input}.{}", B64.encode(s))
}

#[tokio::test]
async fn valid_tokens_of_both_algorithms_become_their_principal() {
    for alg in [Algorithm::Es256, Algorithm::EdDsa] {
        let f = fixture(alg);
        let token = claims().sign(&f.keys.snapshot()).unwrap();
        let v = f.validator.validate(&token).await.unwrap();
        assert_eq!(v.principal, app());
        assert_eq!(v.client_id.as_deref(), Some("dashboard"));
    }
}

#[tokio::test]
async fn a_tampered_payload_or_signature_is_refused() {
    let f = fixture(Algorithm::Es256);
    let token = claims().sign(&f.keys.snapshot()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c.scope = "groups:admin".into();
    let forged_payload = B64.encode(serde_json::to_vec(&c).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert!(unauth(f.validator.validate(&tampered).await).contains("signature"));
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let tampered = format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig));
    unauth(f.validator.validate(&tampered).await);
}

#[tokio::test]
async fn alg_none_and_hmac_with_the_public_key_are_refused() {
    let f = fixture(Algorithm::Es256);
    let snapshot = f.keys.snapshot();
    let kid = snapshot.signing_key().kid().to_owned();
    let none = forge(
        serde_json::json!({"alg": "none", "typ": "at+jwt", "kid": kid}),
        &claims(),
        &|_| Vec::new(),
    );
    unauth(f.validator.validate(&none).await);
    // The classic confusion: HS256 keyed with the public key the JWKS publishes.
    let jwk = serde_json::to_vec(&snapshot.jwks().keys[0]).unwrap();
    let x = B64
        .decode(snapshot.jwks().keys[0].x.clone().unwrap())
        .unwrap();
    for secret in [jwk, x] {
        let hs = forge(
            serde_json::json!({"alg": "HS256", "typ": "at+jwt", "kid": kid}),
            &claims(),
            &|m| {
                let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
                aws_lc_rs::hmac::sign(&k, m).as_ref().to_vec()
            },
        );
        assert!(unauth(f.validator.validate(&hs).await).contains("signature"));
    }
    // An ES256 signature presented as EdDSA (another algorithm on the same kid).
    let good = claims().sign(&snapshot).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let header =
        B64.encode(serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": kid}).to_string());
    unauth(
        f.validator
            .validate(&format!("{header}.{}.{}", parts[1], parts[2]))
            .await,
    );
}

#[tokio::test]
async fn jku_and_crit_headers_are_not_followed() {
    let f = fixture(Algorithm::Es256);
    let attacker = KeySet::generate(Algorithm::Es256, t0()).unwrap();
    // Signed by the attacker's key, announcing it through jku / jwk: never trusted.
    let token = forge(
        serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": attacker.signing_key().kid(),
                           "jku": "https://evil.example/jwks", "jwk": attacker.jwks().keys[0]}),
        &claims(),
        &|m| attacker.signing_key().sign(m).unwrap(),
    );
    assert!(unauth(f.validator.validate(&token).await).contains("unknown key"));
    let k = f.keys.snapshot();
    let crit = forge(
        serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": k.signing_key().kid(), "crit": ["exp"]}),
        &claims(),
        &|m| k.signing_key().sign(m).unwrap(),
    );
    unauth(f.validator.validate(&crit).await);
}

#[tokio::test]
async fn expiry_and_not_before_have_a_bounded_leeway() {
    let mut config = ValidatorConfig::new(AUD);
    config.leeway = Duration::from_secs(3600); // capped at 300 s
    let clock = ManualClock::new(t0());
    let keys = SharedKeys::new(KeySet::generate(Algorithm::EdDsa, t0()).unwrap());
    let v =
        TokenValidator::new(config, Arc::new(clock.clone())).with_local_issuer(ISS, keys.clone());
    let token = claims().sign(&keys.snapshot()).unwrap();
    v.validate(&token).await.unwrap();
    // Cached, and still within the leeway after expiry.
    clock.set(t0().saturating_add(Duration::from_secs(600 + 299)));
    v.validate(&token).await.unwrap();
    clock.set(t0().saturating_add(Duration::from_secs(600 + 300)));
    assert!(unauth(v.validate(&token).await).contains("expired"));

    let f = fixture(Algorithm::Es256);
    let mut early = claims();
    early.nbf = early.iat + 120; // 90 s beyond the default 30 s leeway
    let token = early.sign(&f.keys.snapshot()).unwrap();
    assert!(unauth(f.validator.validate(&token).await).contains("not yet"));
    f.clock.advance(Duration::from_secs(90));
    f.validator.validate(&token).await.unwrap();
    let mut no_exp = serde_json::to_value(claims()).unwrap();
    no_exp.as_object_mut().unwrap().remove("exp");
    let k = f.keys.snapshot();
    let token = forge(
        serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": k.signing_key().kid()}),
        &no_exp,
        &|m| k.signing_key().sign(m).unwrap(),
    );
    unauth(f.validator.validate(&token).await);
}

#[tokio::test]
async fn wrong_audience_issuer_or_key_are_refused() {
    let f = fixture(Algorithm::Es256);
    let mut c = claims();
    c.aud = "https://other.example".into();
    assert!(
        unauth(
            f.validator
                .validate(&c.sign(&f.keys.snapshot()).unwrap())
                .await
        )
        .contains("audience")
    );
    let mut c = claims();
    c.iss = "https://evil.example".into();
    assert!(
        unauth(
            f.validator
                .validate(&c.sign(&f.keys.snapshot()).unwrap())
                .await
        )
        .contains("issuer")
    );
    let other = KeySet::generate(Algorithm::Es256, t0()).unwrap();
    unauth(f.validator.validate(&claims().sign(&other).unwrap()).await);
    // An ID token (typ JWT) is not an access token, even with the right audience.
    let k = f.keys.snapshot();
    let id = hub_auth::tokens::sign(&k, "JWT", &claims()).unwrap();
    assert!(unauth(f.validator.validate(&id).await).contains("access token"));
    unauth(f.validator.validate("a.b").await);
    unauth(f.validator.validate(&"x".repeat(10_000)).await);
}

#[tokio::test]
async fn revoked_tokens_stop_working_even_when_cached() {
    let f = fixture(Algorithm::EdDsa);
    let c = claims();
    let token = c.sign(&f.keys.snapshot()).unwrap();
    f.validator.validate(&token).await.unwrap();
    f.validator
        .revocations()
        .revoke(&c.jti, c.expires_at(), t0());
    assert!(unauth(f.validator.validate(&token).await).contains("revoked"));
}

#[tokio::test]
async fn rotated_keys_keep_verifying_old_tokens() {
    let f = fixture(Algorithm::Es256);
    let old = claims().sign(&f.keys.snapshot()).unwrap();
    f.keys
        .rotate(Algorithm::EdDsa, t0(), Duration::from_secs(900))
        .unwrap();
    let new = claims().sign(&f.keys.snapshot()).unwrap();
    f.validator.validate(&old).await.unwrap();
    f.validator.validate(&new).await.unwrap();
}

// ---- Independent implementation: jsonwebtoken.

#[test]
fn jsonwebtoken_verifies_what_the_hub_signs() {
    for (alg, jalg) in [
        (Algorithm::Es256, jsonwebtoken::Algorithm::ES256),
        (Algorithm::EdDsa, jsonwebtoken::Algorithm::EdDSA),
    ] {
        let keys = KeySet::generate(alg, t0()).unwrap();
        let now = Timestamp::from_millis(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64,
        )
        .unwrap();
        let c = AccessClaims::for_principal(
            ISS,
            AUD,
            &app(),
            "dashboard",
            now,
            Duration::from_secs(600),
        )
        .unwrap();
        let token = c.sign(&keys).unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(serde_json::to_value(keys.jwks()).unwrap()).unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(keys.signing_key().kid()));
        let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(keys.signing_key().kid()).unwrap())
            .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jalg);
        validation.set_audience(&[AUD]);
        validation.set_issuer(&[ISS]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["hub_typ"], "app");
        // And a tampered one fails there too.
        let bad = format!("{}x", &token[..token.len() - 1]);
        assert!(jsonwebtoken::decode::<serde_json::Value>(&bad, &key, &validation).is_err());
    }
}

#[derive(Debug)]
struct CountingFetcher {
    jwks: Jwks,
    calls: AtomicUsize,
    fail: AtomicBool,
}

impl JwksFetcher for CountingFetcher {
    fn fetch<'a>(&'a self, _url: &'a str) -> BoxFuture<'a, hub_core::Result<Jwks>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let r = if self.fail.load(Ordering::SeqCst) {
            Err(Error::unavailable("the identity provider is down"))
        } else {
            Ok(self.jwks.clone())
        };
        Box::pin(async move { r })
    }
}

const IDP: &str = "https://idp.example";

/// An external IdP key made with aws-lc-rs; tokens are signed by jsonwebtoken.
fn idp_key() -> (Vec<u8>, Jwk) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let p = pair.public_key().as_ref();
    let jwk = Jwk {
        kty: "EC".into(),
        kid: Some("idp-1".into()),
        crv: Some("P-256".into()),
        x: Some(B64.encode(&p[1..33])),
        y: Some(B64.encode(&p[33..65])),
        ..Jwk::default()
    };
    (pkcs8.as_ref().to_vec(), jwk)
}

fn idp_token(pkcs8: &[u8], kid: &str, exp: i64) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    let claims = serde_json::json!({
        "iss": IDP, "aud": AUD, "sub": "erin", "exp": exp, "iat": exp - 600,
        "scope": "openid jobs:read groups:admin",
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_der(pkcs8),
    )
    .unwrap()
}

fn idp_validator(clock: &ManualClock, fetcher: Arc<CountingFetcher>) -> TokenValidator {
    TokenValidator::new(ValidatorConfig::new(AUD), Arc::new(clock.clone())).with_external_issuer(
        ExternalIssuer {
            issuer: IDP.into(),
            jwks_url: "https://idp.example/jwks".into(),
            audience: None,
            mapping: ClaimMapping::users(
                "acme/field".parse().unwrap(),
                "jobs:read devices:read".parse().unwrap(),
            ),
        },
        fetcher,
    )
}

#[tokio::test]
async fn external_tokens_signed_by_jsonwebtoken_map_to_principals() {
    let (pkcs8, jwk) = idp_key();
    let fetcher = Arc::new(CountingFetcher {
        jwks: Jwks { keys: vec![jwk] },
        calls: AtomicUsize::new(0),
        fail: AtomicBool::new(false),
    });
    let clock = ManualClock::new(t0());
    let v = idp_validator(&clock, fetcher.clone());
    let exp = t0().as_millis() / 1000 + 600;
    let token = idp_token(&pkcs8, "idp-1", exp);
    let got = v.validate(&token).await.unwrap();
    assert_eq!(
        got.principal,
        Principal::User(UserPrincipal {
            id: "erin".parse().unwrap(),
            group: "acme/field".parse().unwrap(),
            // groups:admin is beyond what the provider may grant.
            scopes: "jobs:read".parse().unwrap(),
        })
    );
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unknown_kid_floods_fetch_the_jwks_at_most_once_per_interval() {
    let (pkcs8, jwk) = idp_key();
    let fetcher = Arc::new(CountingFetcher {
        jwks: Jwks { keys: vec![jwk] },
        calls: AtomicUsize::new(0),
        fail: AtomicBool::new(false),
    });
    let clock = ManualClock::new(t0());
    let v = idp_validator(&clock, fetcher.clone());
    let exp = t0().as_millis() / 1000 + 3 * 3600;
    for i in 0..200 {
        unauth(
            v.validate(&idp_token(&pkcs8, &format!("flood-{i}"), exp))
                .await,
        );
    }
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1);
    // The known key works without another fetch.
    v.validate(&idp_token(&pkcs8, "idp-1", exp)).await.unwrap();
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(30));
    unauth(v.validate(&idp_token(&pkcs8, "flood-x", exp)).await);
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 2);

    // Stale while error: the provider is down and the keys are old, known keys still verify.
    fetcher.fail.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(2 * 3600));
    v.validate(&idp_token(&pkcs8, "idp-1", exp - 1))
        .await
        .unwrap();
    assert_eq!(fetcher.calls.load(Ordering::SeqCst), 3);
}

#[derive(Debug)]
struct KeyAuth;

impl Authenticator for KeyAuth {
    fn authenticate<'a>(&'a self, c: &'a Credentials) -> BoxFuture<'a, Result<Principal, Error>> {
        Box::pin(async move {
            match c {
                Credentials::AccessKey { key, .. } if key.expose() == "hk_k1_good" => {
                    Ok(Principal::Device(hub_core::DevicePrincipal {
                        id: "pump-7".parse().unwrap(),
                        group: "acme/plant-1".parse().unwrap(),
                    }))
                }
                _ => Err(Error::unauthenticated("bad key")),
            }
        })
    }
}

#[tokio::test]
async fn the_hub_authenticator_routes_tokens_and_access_keys() {
    let f = fixture(Algorithm::Es256);
    let token = claims().sign(&f.keys.snapshot()).unwrap();
    let a = HubAuthenticator::new(Arc::new(f.validator));
    let key = Credentials::AccessKey {
        device: None,
        key: Secret::new("hk_k1_good"),
    };
    assert!(
        a.authenticate(&key).await.is_err(),
        "no key authenticator yet"
    );
    let a = a.with_access_keys(Arc::new(KeyAuth));
    assert!(matches!(
        a.authenticate(&key).await.unwrap(),
        Principal::Device(_)
    ));
    assert_eq!(
        a.authenticate(&Credentials::Bearer(Secret::new(token)))
            .await
            .unwrap(),
        app()
    );
    assert!(
        a.authenticate(&Credentials::Bearer(Secret::new("hk_k1_good")))
            .await
            .is_err()
    );
}

mod mutations {
    use super::*;
    use proptest::prelude::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Changing any one character of a valid token (header, claims or signature) makes it
        /// invalid: nothing in a token is outside the signature's protection.
        #[test]
        fn any_changed_character_is_refused(pos in any::<prop::sample::Index>(), c in "[A-Za-z0-9_.-]") {
            let f = fixture(Algorithm::Es256);
            let token = claims().sign(&f.keys.snapshot()).unwrap();
            let i = pos.index(token.len());
            let mut bytes = token.clone().into_bytes();
            bytes[i] = c.as_bytes()[0];
            let mutated = String::from_utf8(bytes).unwrap();
            prop_assume!(mutated != token);
            let r = block_on(f.validator.validate(&mutated));
            // Base64url's last character can carry unused bits: a change there may decode to the
            // same bytes, and then it is the same token.
            let same_bytes = {
                let parts: Vec<_> = mutated.split('.').collect();
                let orig: Vec<_> = token.split('.').collect();
                parts.len() == 3
                    && (0..3).all(|k| B64.decode(parts[k]).ok() == B64.decode(orig[k]).ok())
            };
            prop_assert!(r.is_err() || same_bytes, "accepted {mutated}");
        }
    }
}
