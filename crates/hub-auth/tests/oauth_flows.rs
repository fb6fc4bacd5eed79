//! The authorization server served on 127.0.0.1, driven by the `oauth2` crate (over a hyper
//! HTTP/1 client) and by hand where a client library would refuse to misbehave.

mod common;

use common::{PASSWORD, SECRET, location_params, oauth_client, request, send, sign_in, start};
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, DeviceAuthorizationUrl,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    StandardDeviceAuthorizationResponse, TokenResponse, TokenUrl,
};
use serde_json::Value;

const REDIRECT: &str = "http://127.0.0.1:8765/callback";

fn json(res: &common::HttpResponse) -> Value {
    serde_json::from_slice(res.body()).unwrap_or(Value::Null)
}

fn oauth_error<T: std::fmt::Debug>(
    r: Result<
        T,
        RequestTokenError<std::io::Error, oauth2::StandardErrorResponse<BasicErrorResponseType>>,
    >,
) -> BasicErrorResponseType {
    match r {
        Err(RequestTokenError::ServerResponse(e)) => e.error().clone(),
        other => panic!("expected an OAuth error response, got {other:?}"),
    }
}

async fn get_with_token(base: &str, token: &str) -> common::HttpResponse {
    let auth = format!("Bearer {token}");
    send(request(
        "GET",
        &format!("{base}/v1/tenants/acme/devices/pump-7/jobs"),
        None,
        &[("authorization", &auth)],
    ))
    .await
    .unwrap()
}

#[tokio::test]
async fn authorization_code_with_pkce_refresh_rotation_and_reuse_detection() {
    let hub = start().await;
    let b = &hub.base;
    let client = BasicClient::new(ClientId::new("dashboard".into()))
        .set_auth_uri(AuthUrl::new(format!("{b}/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(format!("{b}/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("openid".into()))
        .add_scope(Scope::new("jobs:read".into()))
        .set_pkce_challenge(challenge)
        .add_extra_param("nonce", "n-0S6_WzA2Mj")
        .url();
    let res = sign_in(url.as_str(), "alice", PASSWORD).await;
    assert_eq!(res.status(), 303);
    let p = location_params(&res);
    assert_eq!(p["state"], *state.secret());
    assert_eq!(p["iss"], *b);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(REDIRECT)
    );
    let code = p["code"].clone();

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier)
        .request_async(&oauth_client)
        .await
        .unwrap();
    let access = tokens.access_token().secret().clone();
    let res = get_with_token(b, &access).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        String::from_utf8_lossy(res.body()),
        "app:dashboard/user:alice@acme/plant-1"
    );

    // userinfo names the user.
    let auth = format!("Bearer {access}");
    let info = send(request(
        "GET",
        &format!("{b}/oauth/userinfo"),
        None,
        &[("authorization", &auth)],
    ))
    .await
    .unwrap();
    assert_eq!(info.status(), 200);
    assert_eq!(json(&info)["sub"], "alice");

    // Rotation: the old refresh token works once; presenting it again revokes the family.
    let r1 = tokens.refresh_token().unwrap().clone();
    let t2 = client
        .exchange_refresh_token(&r1)
        .request_async(&oauth_client)
        .await
        .unwrap();
    let r2 = t2.refresh_token().unwrap().clone();
    assert_ne!(r1.secret(), r2.secret());
    assert_eq!(
        get_with_token(b, t2.access_token().secret()).await.status(),
        200
    );
    let replay = client
        .exchange_refresh_token(&r1)
        .request_async(&oauth_client)
        .await;
    assert_eq!(oauth_error(replay), BasicErrorResponseType::InvalidGrant);
    let after = client
        .exchange_refresh_token(&r2)
        .request_async(&oauth_client)
        .await;
    assert_eq!(
        oauth_error(after),
        BasicErrorResponseType::InvalidGrant,
        "the family is revoked"
    );
    let bogus = client
        .exchange_refresh_token(&RefreshToken::new("nope".into()))
        .request_async(&oauth_client)
        .await;
    assert_eq!(oauth_error(bogus), BasicErrorResponseType::InvalidGrant);
}

#[tokio::test]
async fn a_replayed_code_fails_and_revokes_what_it_gave() {
    let hub = start().await;
    let b = &hub.base;
    let client = BasicClient::new(ClientId::new("dashboard".into()))
        .set_auth_uri(AuthUrl::new(format!("{b}/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(format!("{b}/oauth/token")).unwrap())
        .set_redirect_uri(RedirectUrl::new(REDIRECT.into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let verifier_copy = PkceCodeVerifier::new(verifier.secret().clone());
    let (url, _) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("jobs:read".into()))
        .set_pkce_challenge(challenge)
        .url();
    let code = location_params(&sign_in(url.as_str(), "alice", PASSWORD).await)["code"].clone();
    let tokens = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier)
        .request_async(&oauth_client)
        .await
        .unwrap();
    assert_eq!(
        get_with_token(b, tokens.access_token().secret())
            .await
            .status(),
        200
    );
    // An attacker replays the code, even with the right verifier.
    let again = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(verifier_copy)
        .request_async(&oauth_client)
        .await;
    assert_eq!(oauth_error(again), BasicErrorResponseType::InvalidGrant);
    assert_eq!(
        get_with_token(b, tokens.access_token().secret())
            .await
            .status(),
        401
    );
    let refresh = client
        .exchange_refresh_token(tokens.refresh_token().unwrap())
        .request_async(&oauth_client)
        .await;
    assert_eq!(oauth_error(refresh), BasicErrorResponseType::InvalidGrant);
}

#[tokio::test]
async fn the_id_token_carries_the_nonce_and_verifies_with_the_jwks() {
    let hub = start().await;
    let b = &hub.base;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let url = format!(
        "{b}/oauth/authorize?response_type=code&client_id=dashboard&redirect_uri={}&scope=openid%20profile&state=s1&nonce=abc123&code_challenge={}&code_challenge_method=S256",
        urlenc(REDIRECT),
        challenge.as_str()
    );
    let res = sign_in(&url, "alice", PASSWORD).await;
    let code = location_params(&res)["code"].clone();
    let res = send(request(
        "POST",
        &format!("{b}/oauth/token"),
        Some(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "dashboard"),
            ("code_verifier", verifier.secret()),
        ]),
        &[],
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200, "{}", String::from_utf8_lossy(res.body()));
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body = json(&res);
    let id_token = body["id_token"].as_str().unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(
        send(request("GET", &format!("{b}/oauth/jwks"), None, &[]))
            .await
            .unwrap()
            .body(),
    )
    .unwrap();
    let kid = jsonwebtoken::decode_header(id_token).unwrap().kid.unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    v.set_audience(&["dashboard"]);
    v.set_issuer(&[b]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["nonce"], "abc123");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["name"], "ALICE");
    // The client may refresh, so it gets a refresh token too.
    assert!(body["refresh_token"].is_string());
}

fn urlenc(s: &str) -> String {
    oauth2::url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn authorize_url(b: &str, redirect: &str, method: &str, challenge: &str) -> String {
    format!(
        "{b}/oauth/authorize?response_type=code&client_id=dashboard&redirect_uri={}&scope=jobs%3Aread&state=xyz&code_challenge={}&code_challenge_method={method}",
        urlenc(redirect),
        urlenc(challenge)
    )
}

#[tokio::test]
async fn redirect_uri_variations_are_refused_without_redirecting() {
    let hub = start().await;
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    for variant in [
        "http://127.0.0.1:8765/callback/",
        "http://127.0.0.1:8765/CALLBACK",
        "HTTP://127.0.0.1:8765/callback",
        "http://127.0.0.1:8765/callback/extra",
        "http://127.0.0.1:8765/callback?x=1",
        "http://127.0.0.1:8766/callback",
        "http://localhost:8765/callback",
        "https://127.0.0.1:8765/callback",
        "http://127.0.0.1:8765/callback#frag",
    ] {
        let res = send(request(
            "GET",
            &authorize_url(&hub.base, variant, "S256", challenge.as_str()),
            None,
            &[],
        ))
        .await
        .unwrap();
        assert_eq!(res.status(), 400, "{variant}");
        assert!(res.headers().get("location").is_none(), "{variant}");
    }
    let res = send(request(
        "GET",
        &authorize_url(&hub.base, REDIRECT, "S256", challenge.as_str()),
        None,
        &[],
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-frame-options"], "DENY");
}

#[tokio::test]
async fn pkce_is_required_plain_is_refused_and_a_wrong_verifier_burns_the_code() {
    let hub = start().await;
    let b = &hub.base;
    // Plain (the challenge is the verifier itself) and a missing method are refused at once.
    let verifier = "a".repeat(43);
    for method in ["plain", ""] {
        let res = send(request(
            "GET",
            &authorize_url(b, REDIRECT, method, &verifier),
            None,
            &[],
        ))
        .await
        .unwrap();
        assert_eq!(res.status(), 303);
        let p = location_params(&res);
        assert_eq!(p["error"], "invalid_request");
        assert_eq!(p["state"], "xyz");
    }
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let res = sign_in(
        &authorize_url(b, REDIRECT, "S256", challenge.as_str()),
        "alice",
        PASSWORD,
    )
    .await;
    let code = location_params(&res)["code"].clone();
    let exchange = |code: String, v: String, redirect: &'static str| {
        let b = b.clone();
        async move {
            send(request(
                "POST",
                &format!("{b}/oauth/token"),
                Some(&[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", redirect),
                    ("client_id", "dashboard"),
                    ("code_verifier", &v),
                ]),
                &[],
            ))
            .await
            .unwrap()
        }
    };
    let wrong = exchange(code.clone(), "b".repeat(43), REDIRECT).await;
    assert_eq!(wrong.status(), 400);
    assert_eq!(json(&wrong)["error"], "invalid_grant");
    let right_too_late = exchange(code, verifier.secret().clone(), REDIRECT).await;
    assert_eq!(json(&right_too_late)["error"], "invalid_grant");

    // A redirect URI other than the authorized one fails the exchange.
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let res = sign_in(
        &authorize_url(b, REDIRECT, "S256", challenge.as_str()),
        "alice",
        PASSWORD,
    )
    .await;
    let code = location_params(&res)["code"].clone();
    let res = exchange(
        code,
        verifier.secret().clone(),
        "http://127.0.0.1:8765/callback/",
    )
    .await;
    assert_eq!(json(&res)["error"], "invalid_grant");
}

#[tokio::test]
async fn device_flow_via_the_oauth2_crate() {
    let hub = start().await;
    let b = &hub.base;
    let client = BasicClient::new(ClientId::new("cli".into()))
        .set_auth_uri(AuthUrl::new(format!("{b}/oauth/authorize")).unwrap())
        .set_token_uri(TokenUrl::new(format!("{b}/oauth/token")).unwrap())
        .set_device_authorization_url(
            DeviceAuthorizationUrl::new(format!("{b}/oauth/device_authorization")).unwrap(),
        );
    let details: StandardDeviceAuthorizationResponse = client
        .exchange_device_code()
        .add_scope(Scope::new("jobs:read".into()))
        .request_async(&oauth_client)
        .await
        .unwrap();
    assert_eq!(
        details.verification_uri().as_str(),
        format!("{b}/oauth/device")
    );

    // Polling before the user answers: pending, then slow_down when too fast.
    let poll = || {
        let b = b.clone();
        let code = details.device_code().secret().clone();
        async move {
            json(
                &send(request(
                    "POST",
                    &format!("{b}/oauth/token"),
                    Some(&[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                        ("device_code", &code),
                        ("client_id", "cli"),
                    ]),
                    &[],
                ))
                .await
                .unwrap(),
            )
        }
    };
    assert_eq!(poll().await["error"], "authorization_pending");
    assert_eq!(poll().await["error"], "slow_down");

    // The user enters the code (in lower case, without the dash) and signs in.
    let page = send(request("GET", &format!("{b}/oauth/device"), None, &[]))
        .await
        .unwrap();
    let csrf = common::csrf_of(&page);
    let typed = details.user_code().secret().replace('-', "").to_lowercase();
    let cookie = format!("hub_csrf={csrf}");
    // Without the CSRF cookie the form is refused.
    let forged = send(request(
        "POST",
        &format!("{b}/oauth/device"),
        Some(&[
            ("user_code", &typed),
            ("csrf", &csrf),
            ("username", "alice"),
            ("password", PASSWORD),
            ("action", "approve"),
        ]),
        &[],
    ))
    .await
    .unwrap();
    assert_eq!(forged.status(), 400);
    let res = send(request(
        "POST",
        &format!("{b}/oauth/device"),
        Some(&[
            ("user_code", &typed),
            ("csrf", &csrf),
            ("username", "alice"),
            ("password", PASSWORD),
            ("action", "approve"),
        ]),
        &[("cookie", &cookie)],
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200, "{}", String::from_utf8_lossy(res.body()));

    let token = client
        .exchange_device_access_token(&details)
        .request_async(&oauth_client, tokio::time::sleep, None)
        .await
        .unwrap();
    let res = get_with_token(b, token.access_token().secret()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        String::from_utf8_lossy(res.body()),
        "app:cli/user:alice@acme/plant-1"
    );
    // The device code is single-use.
    assert_eq!(poll().await["error"], "expired_token");
}

#[tokio::test]
async fn client_credentials_and_tenant_isolation() {
    let hub = start().await;
    let b = &hub.base;
    let cc = |id: &str, secret: &str| {
        BasicClient::new(ClientId::new(id.into()))
            .set_client_secret(ClientSecret::new(secret.into()))
            .set_token_uri(TokenUrl::new(format!("{b}/oauth/token")).unwrap())
    };
    let t = cc("reporter", SECRET)
        .exchange_client_credentials()
        .add_scope(Scope::new("jobs:read".into()))
        .request_async(&oauth_client)
        .await
        .unwrap();
    let res = get_with_token(b, t.access_token().secret()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        String::from_utf8_lossy(res.body()),
        "service:\"reporter\"@acme/plant-1"
    );

    // Another tenant's service cannot see acme's device: 404, not 403.
    let g = cc("globex-reporter", SECRET)
        .exchange_client_credentials()
        .request_async(&oauth_client)
        .await
        .unwrap();
    assert_eq!(
        get_with_token(b, g.access_token().secret()).await.status(),
        404
    );

    // Wrong secret, a scope beyond the client's, and client_secret_post.
    let bad = cc("reporter", "wrong")
        .exchange_client_credentials()
        .request_async(&oauth_client)
        .await;
    assert_eq!(oauth_error(bad), BasicErrorResponseType::InvalidClient);
    let wide = cc("reporter", SECRET)
        .exchange_client_credentials()
        .add_scope(Scope::new("groups:admin".into()))
        .request_async(&oauth_client)
        .await;
    assert_eq!(oauth_error(wide), BasicErrorResponseType::InvalidScope);
    let post = send(request(
        "POST",
        &format!("{b}/oauth/token"),
        Some(&[
            ("grant_type", "client_credentials"),
            ("client_id", "reporter"),
            ("client_secret", SECRET),
        ]),
        &[],
    ))
    .await
    .unwrap();
    assert_eq!(post.status(), 200);
    // A public client cannot use client credentials.
    let public = send(request(
        "POST",
        &format!("{b}/oauth/token"),
        Some(&[
            ("grant_type", "client_credentials"),
            ("client_id", "dashboard"),
        ]),
        &[],
    ))
    .await
    .unwrap();
    assert_eq!(public.status(), 401);

    // A user of another tenant cannot sign in through acme's client, nor acme's user through globex's.
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let res = sign_in(
        &authorize_url(b, REDIRECT, "S256", challenge.as_str()),
        "bob",
        PASSWORD,
    )
    .await;
    assert_eq!(res.status(), 401);
    let url = authorize_url(b, REDIRECT, "S256", challenge.as_str())
        .replace("client_id=dashboard", "client_id=globex-app");
    let res = sign_in(&url, "alice", PASSWORD).await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn sign_in_is_throttled_after_repeated_failures() {
    let hub = start().await;
    let (challenge, _) = PkceCodeChallenge::new_random_sha256();
    let url = authorize_url(&hub.base, REDIRECT, "S256", challenge.as_str());
    for _ in 0..5 {
        assert_eq!(sign_in(&url, "alice", "guess").await.status(), 401);
    }
    // Locked: even the right password is refused for now.
    let res = sign_in(&url, "alice", PASSWORD).await;
    assert_eq!(res.status(), 429);
    assert!(String::from_utf8_lossy(res.body()).contains("Too many"));
}

#[tokio::test]
async fn revocation_and_introspection() {
    let hub = start().await;
    let b = &hub.base;
    let token_for = |id: &'static str| {
        let b = b.clone();
        async move {
            let res = send(request(
                "POST",
                &format!("{b}/oauth/token"),
                Some(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", id),
                    ("client_secret", SECRET),
                ]),
                &[],
            ))
            .await
            .unwrap();
            json(&res)["access_token"].as_str().unwrap().to_owned()
        }
    };
    let introspect = |by: &'static str, token: String| {
        let b = b.clone();
        async move {
            json(
                &send(request(
                    "POST",
                    &format!("{b}/oauth/introspect"),
                    Some(&[
                        ("token", &token),
                        ("client_id", by),
                        ("client_secret", SECRET),
                    ]),
                    &[],
                ))
                .await
                .unwrap(),
            )
        }
    };
    let t = token_for("reporter").await;
    let i = introspect("reporter", t.clone()).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["client_id"], "reporter");
    assert_eq!(
        introspect("globex-reporter", t.clone()).await["active"],
        false,
        "another tenant learns nothing"
    );
    assert_eq!(
        introspect("reporter", "garbage".into()).await["active"],
        false
    );

    // Another client's revocation is ignored; the owner's works at once.
    let res = send(request(
        "POST",
        &format!("{b}/oauth/revoke"),
        Some(&[
            ("token", &t),
            ("client_id", "globex-reporter"),
            ("client_secret", SECRET),
        ]),
        &[],
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(get_with_token(b, &t).await.status(), 200);
    let res = send(request(
        "POST",
        &format!("{b}/oauth/revoke"),
        Some(&[
            ("token", &t),
            ("client_id", "reporter"),
            ("client_secret", SECRET),
        ]),
        &[],
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    let res = get_with_token(b, &t).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(introspect("reporter", t).await["active"], false);
}

#[tokio::test]
async fn discovery_jwks_and_the_auth_layer() {
    let hub = start().await;
    let b = &hub.base;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let d = json(
            &send(request("GET", &format!("{b}{path}"), None, &[]))
                .await
                .unwrap(),
        );
        assert_eq!(d["issuer"], *b);
        assert_eq!(
            d["code_challenge_methods_supported"],
            serde_json::json!(["S256"])
        );
        assert_eq!(d["token_endpoint"], format!("{b}/oauth/token"));
    }
    let jwks = json(
        &send(request("GET", &format!("{b}/oauth/jwks"), None, &[]))
            .await
            .unwrap(),
    );
    assert_eq!(
        jwks["keys"][0]["kid"],
        hub.keys.snapshot().signing_key().kid()
    );
    assert!(jwks["keys"][0].get("d").is_none(), "no private parts");

    let url = format!("{b}/v1/tenants/acme/devices/pump-7/jobs");
    // No credentials: the handler's extractor answers 401 with a plain Bearer challenge.
    let res = send(request("GET", &url, None, &[])).await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    for bad in [
        "Bearer not-a-jwt",
        "Basic YTpi",
        "Bearer hk_abc_def",
        "Bearer ",
    ] {
        let res = send(request("GET", &url, None, &[("authorization", bad)]))
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{bad}");
        assert_eq!(
            res.headers()["www-authenticate"],
            "Bearer error=\"invalid_token\"",
            "{bad}"
        );
        assert_eq!(json(&res)["status"], 401);
    }
    let doc = hub_auth::oauth::openapi();
    assert!(doc.paths.paths.contains_key("/oauth/token"));
    assert!(doc.paths.paths["/oauth/authorize"].get.is_some());
    assert!(doc.paths.paths["/oauth/authorize"].post.is_some());
}
