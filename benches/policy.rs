//! The policy decision sits on every request and every MQTT publish: it must cost nanoseconds.
//!
//! `cargo bench --bench policy`

use criterion::{Criterion, criterion_group, criterion_main};
use hub_core::{
    Action, AppPrincipal, GroupPath, Principal, Resource, Role, UserPrincipal, authorize,
};
use std::hint::black_box;

fn bench_policy(c: &mut Criterion) {
    let user = UserPrincipal {
        id: "alice".parse().unwrap(),
        group: "acme/plant-3".parse().unwrap(),
        scopes: Role::Operator.scopes(),
    };
    let app = Principal::App(AppPrincipal::new(
        "dashboard".parse().unwrap(),
        user.clone(),
        Role::Viewer.scopes(),
    ));
    let user = Principal::User(user);
    let inside = Resource::device(
        "acme/plant-3/line-2/cell-9".parse().unwrap(),
        "pump-7".parse().unwrap(),
    );
    let sibling = Resource::device("acme/plant-30".parse().unwrap(), "pump-7".parse().unwrap());

    c.bench_function("authorize/user/allowed", |b| {
        b.iter(|| authorize(black_box(&user), Action::CreateJob, black_box(&inside)))
    });
    c.bench_function("authorize/user/outside", |b| {
        b.iter(|| authorize(black_box(&user), Action::CreateJob, black_box(&sibling)))
    });
    c.bench_function("authorize/app/allowed", |b| {
        b.iter(|| {
            authorize(
                black_box(&app),
                Action::ReadMeasurements,
                black_box(&inside),
            )
        })
    });
    c.bench_function("group_path/parse_depth_4", |b| {
        b.iter(|| black_box("acme/plant-3/line-2/cell-9").parse::<GroupPath>())
    });
}

criterion_group!(benches, bench_policy);
criterion_main!(benches);
