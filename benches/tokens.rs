//! Bearer-token validation sits on every HTTP request and every MQTT CONNECT of an app: how many
//! tokens one core validates per second, with a full signature check and from the cache.
//!
//! `cargo bench -p hub-benches --bench tokens -- --warm-up-time 1 --measurement-time 3`

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hub_auth::keys::{Algorithm, KeySet, SharedKeys};
use hub_auth::tokens::{AccessClaims, TokenValidator, ValidatorConfig};
use hub_core::{AppPrincipal, ManualClock, Principal, Role, Timestamp, UserPrincipal};

const ISS: &str = "https://hub.example";

/// Validation of the hub's own tokens never waits: poll it once, without a runtime's overhead.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("local token validation does not wait"),
    }
}

fn setup(alg: Algorithm, cache_capacity: usize) -> (TokenValidator, String) {
    let now = Timestamp::from_millis(1_800_000_000_000).unwrap();
    let keys = SharedKeys::new(KeySet::generate(alg, now).unwrap());
    let user = UserPrincipal {
        id: "alice".parse().unwrap(),
        group: "acme/plant-1".parse().unwrap(),
        scopes: Role::Operator.scopes(),
    };
    let app = Principal::App(AppPrincipal::new(
        "dashboard".parse().unwrap(),
        user,
        "jobs:read jobs:write".parse().unwrap(),
    ));
    let token =
        AccessClaims::for_principal(ISS, ISS, &app, "dashboard", now, Duration::from_secs(600))
            .unwrap()
            .sign(&keys.snapshot())
            .unwrap();
    let mut config = ValidatorConfig::new(ISS);
    config.cache_capacity = cache_capacity;
    let v =
        TokenValidator::new(config, Arc::new(ManualClock::new(now))).with_local_issuer(ISS, keys);
    (v, token)
}

fn bench_tokens(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(1));
    for (name, alg) in [
        ("uncached/ES256", Algorithm::Es256),
        ("uncached/EdDSA", Algorithm::EdDsa),
    ] {
        let (v, token) = setup(alg, 0);
        ready(v.validate(&token)).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| ready(v.validate(black_box(&token))).unwrap())
        });
    }
    let (v, token) = setup(Algorithm::Es256, 100_000);
    ready(v.validate(&token)).unwrap();
    g.bench_function("cached", |b| {
        b.iter(|| ready(v.validate(black_box(&token))).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_tokens);
criterion_main!(benches);
