//! Containment and the policy function, attacked from every side.
//!
//! Group names come from a tiny alphabet on purpose (`t1`/`t10`, `a`/`a1`/`ab`), so generated
//! paths share prefixes and siblings often look alike: the classic confusion is
//! `acme/plant-1` "containing" `acme/plant-10`.

use hub_core::{
    Action, AppPrincipal, Denied, DevicePrincipal, ErrorKind, GroupPath, Principal, Resource, Role,
    Scope, ScopeSet, ServicePrincipal, UserPrincipal, authorize,
};
use proptest::prelude::*;

fn group() -> impl Strategy<Value = GroupPath> {
    (
        prop::sample::select(vec!["t1", "t10", "t2"]),
        prop::collection::vec(
            prop::sample::select(vec!["a", "a1", "ab", "a-b", "b"]),
            0..4,
        ),
    )
        .prop_map(|(t, segs)| {
            let mut s = t.to_owned();
            for seg in segs {
                s.push('/');
                s.push_str(seg);
            }
            s.parse().unwrap()
        })
}

fn scopes() -> impl Strategy<Value = ScopeSet> {
    prop::collection::vec(prop::sample::select(Scope::ALL.to_vec()), 0..6)
        .prop_map(|v| v.into_iter().collect())
}

fn device_id() -> impl Strategy<Value = hub_core::DeviceId> {
    prop::sample::select(vec!["d1", "d10", "D1", "d2"]).prop_map(|s| s.parse().unwrap())
}

fn user() -> impl Strategy<Value = UserPrincipal> {
    (group(), scopes()).prop_map(|(group, scopes)| UserPrincipal {
        id: "u".parse().unwrap(),
        group,
        scopes,
    })
}

fn principal() -> impl Strategy<Value = Principal> {
    prop_oneof![
        user().prop_map(Principal::User),
        (group(), device_id())
            .prop_map(|(group, id)| Principal::Device(DevicePrincipal { id, group })),
        (user(), scopes()).prop_map(|(u, granted)| Principal::App(AppPrincipal::new(
            "app".parse().unwrap(),
            u,
            granted
        ))),
        (prop::option::of(group()), scopes()).prop_map(|(root, scopes)| Principal::Service(
            ServicePrincipal {
                name: "svc".into(),
                root,
                scopes
            }
        )),
    ]
}

fn resource() -> impl Strategy<Value = Resource> {
    (group(), prop::option::of(device_id())).prop_map(|(group, device)| Resource { group, device })
}

fn action() -> impl Strategy<Value = Action> {
    prop::sample::select(Action::ALL.to_vec())
}

/// Whether `inner` lies in `outer`'s subtree, computed the slow, obvious way: by segments.
fn contains_by_segments(outer: &GroupPath, inner: &GroupPath) -> bool {
    let o: Vec<&str> = outer.segments().collect();
    let i: Vec<&str> = inner.segments().collect();
    o.len() <= i.len() && o.iter().zip(&i).all(|(a, b)| a == b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn containment_is_segment_prefix(a in group(), b in group()) {
        prop_assert_eq!(a.contains(&b), contains_by_segments(&a, &b));
    }

    #[test]
    fn containment_is_reflexive(a in group()) {
        prop_assert!(a.contains(&a));
    }

    #[test]
    fn containment_is_transitive(a in group(), b in group(), c in group()) {
        if a.contains(&b) && b.contains(&c) {
            prop_assert!(a.contains(&c));
        }
    }

    #[test]
    fn containment_is_antisymmetric(a in group(), b in group()) {
        if a.contains(&b) && b.contains(&a) {
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn containment_never_crosses_tenants(a in group(), b in group()) {
        if a.contains(&b) {
            prop_assert_eq!(a.tenant(), b.tenant());
        }
    }

    #[test]
    fn ancestors_contain_and_children_are_contained(a in group()) {
        let mut p = a.parent();
        while let Some(g) = p {
            prop_assert!(g.contains(&a));
            prop_assert!(!a.contains(&g));
            p = g.parent();
        }
    }

    /// The central property: whatever the principal, an allowed action stays within its reach.
    #[test]
    fn no_principal_reaches_outside_its_subtree(p in principal(), a in action(), r in resource()) {
        if authorize(&p, a, &r).is_ok() {
            match &p {
                Principal::User(u) => prop_assert!(contains_by_segments(&u.group, &r.group)),
                Principal::App(app) => prop_assert!(contains_by_segments(&app.user().group, &r.group)),
                Principal::Service(s) => if let Some(root) = &s.root {
                    prop_assert!(contains_by_segments(root, &r.group));
                },
                Principal::Device(d) => {
                    if a == Action::ReadArtifact {
                        // Artifacts published at its group or above, and no other device's own.
                        prop_assert!(contains_by_segments(&r.group, &d.group));
                        prop_assert!(r.device.is_none() || r.device.as_ref() == Some(&d.id));
                    } else {
                        prop_assert_eq!(r.device.as_ref(), Some(&d.id));
                        prop_assert_eq!(&r.group, &d.group);
                    }
                }
            }
        }
    }

    #[test]
    fn allowed_actions_hold_their_scope(p in principal(), a in action(), r in resource()) {
        if authorize(&p, a, &r).is_ok() {
            let scopes = match &p {
                Principal::User(u) => Some(u.scopes),
                Principal::App(app) => Some(app.scopes()),
                Principal::Service(s) => Some(s.scopes),
                Principal::Device(_) => None,
            };
            if let Some(scopes) = scopes {
                let needed = a.required_scope();
                prop_assert!(needed.is_some(), "device-only action {:?} allowed to a non-device", a);
                prop_assert!(scopes.contains(needed.unwrap()));
            }
        }
    }

    /// Delegation never widens: whatever an app may do, its user may do too.
    #[test]
    fn delegated_scopes_never_exceed_the_users(u in user(), granted in scopes(), a in action(), r in resource()) {
        let app = AppPrincipal::new("app".parse().unwrap(), u.clone(), granted);
        prop_assert!(app.scopes().is_subset_of(u.scopes));
        prop_assert!(app.scopes().is_subset_of(granted));
        if authorize(&Principal::App(app), a, &r).is_ok() {
            prop_assert!(authorize(&Principal::User(u), a, &r).is_ok());
        }
    }

    /// An app that somehow carries a token with more scopes than its user (a forged or stale
    /// record deserialized from storage) is still cut down by the policy.
    #[test]
    fn deserialized_apps_cannot_smuggle_scopes(u in user(), a in action(), r in resource()) {
        let mut json = serde_json::to_value(Principal::App(AppPrincipal::new(
            "app".parse().unwrap(), u.clone(), ScopeSet::EMPTY))).unwrap();
        json["scopes"] = serde_json::Value::String(ScopeSet::all().to_string());
        let smuggled: Principal = serde_json::from_value(json).unwrap();
        if authorize(&smuggled, a, &r).is_ok() {
            prop_assert!(authorize(&Principal::User(u), a, &r).is_ok());
        }
    }

    #[test]
    fn device_only_actions_are_refused_to_everyone_else(p in principal(), r in resource()) {
        for a in [Action::ReceiveJobs, Action::ReportJobProgress] {
            if !matches!(p, Principal::Device(_)) {
                prop_assert_eq!(authorize(&p, a, &r), Err(Denied::DeviceOnly));
            }
        }
    }

    #[test]
    fn nobody_changes_the_group_anchoring_their_reach(u in user()) {
        let u = UserPrincipal { scopes: ScopeSet::all(), ..u };
        let r = Resource::group(u.group.clone());
        prop_assert_eq!(authorize(&Principal::User(u), Action::ManageGroup, &r), Err(Denied::OwnRootGroup));
    }

    #[test]
    fn scope_strings_round_trip(s in scopes()) {
        prop_assert_eq!(s.to_string().parse::<ScopeSet>().unwrap(), s);
    }
}

fn user_at(group: &str, role: Role) -> Principal {
    Principal::User(UserPrincipal {
        id: "alice".parse().unwrap(),
        group: group.parse().unwrap(),
        scopes: role.scopes(),
    })
}

fn device_res(group: &str, device: &str) -> Resource {
    Resource::device(group.parse().unwrap(), device.parse().unwrap())
}

#[test]
fn sibling_with_common_prefix_is_outside() {
    let alice = user_at("acme/plant-1", Role::Admin);
    for a in [
        Action::ReadDevice,
        Action::CreateJob,
        Action::ReadMeasurements,
    ] {
        assert_eq!(
            authorize(&alice, a, &device_res("acme/plant-10", "pump")),
            Err(Denied::OutsideReach)
        );
        assert_eq!(
            authorize(&alice, a, &device_res("acme/plant-1/line-1", "pump")),
            Ok(())
        );
        assert_eq!(
            authorize(&alice, a, &device_res("acme", "pump")),
            Err(Denied::OutsideReach),
            "a parent is outside a child's reach"
        );
    }
}

#[test]
fn tenant_admin_cannot_reach_another_tenant() {
    let admin = user_at("acme", Role::Admin);
    let r = device_res("acme2", "pump");
    assert_eq!(
        authorize(&admin, Action::ReadDevice, &r),
        Err(Denied::OutsideReach)
    );
    // Turned into an error, it does not confirm the device exists.
    let e: hub_core::Error = Denied::OutsideReach.into();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[test]
fn viewers_read_but_do_not_control() {
    let viewer = user_at("acme", Role::Viewer);
    let r = device_res("acme/p", "pump");
    assert_eq!(authorize(&viewer, Action::ReadJobs, &r), Ok(()));
    assert_eq!(
        authorize(&viewer, Action::CreateJob, &r),
        Err(Denied::MissingScope(Scope::JobsWrite))
    );
    let e: hub_core::Error = Denied::MissingScope(Scope::JobsWrite).into();
    assert_eq!(e.kind(), ErrorKind::Forbidden);
}

#[test]
fn devices_act_only_on_themselves() {
    let dev = Principal::Device(DevicePrincipal {
        id: "pump-7".parse().unwrap(),
        group: "acme/plant-1".parse().unwrap(),
    });
    let own = device_res("acme/plant-1", "pump-7");
    let other = device_res("acme/plant-1", "pump-8");
    assert_eq!(authorize(&dev, Action::ReceiveJobs, &own), Ok(()));
    assert_eq!(authorize(&dev, Action::WriteMeasurements, &own), Ok(()));
    assert_eq!(
        authorize(&dev, Action::ReceiveJobs, &other),
        Err(Denied::NotSelf)
    );
    assert_eq!(
        authorize(&dev, Action::CreateJob, &own),
        Err(Denied::NotForDevices)
    );
    assert_eq!(
        authorize(&dev, Action::ReadMeasurements, &own),
        Err(Denied::NotForDevices)
    );
    // About anything else, a device hears "not found", whether it exists or not.
    assert_eq!(
        authorize(&dev, Action::ReadMeasurements, &other),
        Err(Denied::NotSelf)
    );
    assert_eq!(
        authorize(
            &dev,
            Action::CreateJob,
            &Resource::group("globex".parse().unwrap())
        ),
        Err(Denied::NotSelf)
    );
    // A device of the same id in another tenant is another device.
    assert_eq!(
        authorize(
            &dev,
            Action::ReceiveJobs,
            &device_res("evil/plant-1", "pump-7")
        ),
        Err(Denied::NotSelf)
    );
    // Firmware published at the tenant applies to it; a sibling plant's does not.
    let acme = Resource::group("acme".parse().unwrap());
    assert_eq!(authorize(&dev, Action::ReadArtifact, &acme), Ok(()));
    let sibling = Resource::group("acme/plant-10".parse().unwrap());
    assert_eq!(
        authorize(&dev, Action::ReadArtifact, &sibling),
        Err(Denied::OutsideReach)
    );
}

#[test]
fn internal_services_reach_every_tenant_but_client_apps_do_not() {
    let internal = Principal::Service(ServicePrincipal {
        name: "job-timer".into(),
        root: None,
        scopes: ScopeSet::only(Scope::JobsWrite),
    });
    assert_eq!(
        authorize(&internal, Action::CancelJob, &device_res("anyone", "d")),
        Ok(())
    );
    let client = Principal::Service(ServicePrincipal {
        name: "erp-bridge".into(),
        root: Some("acme".parse().unwrap()),
        scopes: ScopeSet::only(Scope::JobsWrite),
    });
    assert_eq!(
        authorize(&client, Action::CancelJob, &device_res("anyone", "d")),
        Err(Denied::OutsideReach)
    );
}

#[test]
fn unknown_scopes_are_rejected() {
    assert!("jobs:read jobs:execute".parse::<ScopeSet>().is_err());
    assert_eq!(
        "  jobs:read   devices:read ".parse::<ScopeSet>().unwrap(),
        ScopeSet::only(Scope::JobsRead).with(Scope::DevicesRead)
    );
}

#[test]
fn principal_descriptions_are_unambiguous() {
    let svc = |name: &str, root: Option<&str>| {
        Principal::Service(ServicePrincipal {
            name: name.into(),
            root: root.map(|r| r.parse().unwrap()),
            scopes: ScopeSet::EMPTY,
        })
    };
    assert_ne!(
        svc("ops@acme", None).describe(),
        svc("ops", Some("acme")).describe()
    );
    let user = |id: &str, g: &str| {
        Principal::User(UserPrincipal {
            id: id.parse().unwrap(),
            group: g.parse().unwrap(),
            scopes: ScopeSet::EMPTY,
        })
    };
    assert_eq!(
        user("erin@acme.example", "acme/plant-1").describe(),
        "user:erin@acme.example@acme/plant-1"
    );
}
