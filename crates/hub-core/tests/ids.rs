//! Identifier parsing: round trips, and rejection of bad input with a message that says why.

use hub_core::{
    ClientId, DeviceId, GroupPath, IdErrorReason, JobId, MAX_GROUP_DEPTH, TenantId, Timestamp,
    UserId,
};
use proptest::prelude::*;

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
}

fn group_path() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..=MAX_GROUP_DEPTH).prop_map(|segs| segs.join("/"))
}

proptest! {
    #[test]
    fn tenant_ids_round_trip(s in label()) {
        let id: TenantId = s.parse().unwrap();
        prop_assert_eq!(id.to_string(), s.clone());
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<TenantId>(&json).unwrap(), id);
    }

    #[test]
    fn device_ids_round_trip(s in "[A-Za-z0-9]([A-Za-z0-9._:-]{0,126}[A-Za-z0-9])?") {
        let id: DeviceId = s.parse().unwrap();
        prop_assert_eq!(id.as_str(), s.as_str());
        let json = serde_json::to_string(&id).unwrap();
        prop_assert_eq!(serde_json::from_str::<DeviceId>(&json).unwrap(), id);
    }

    #[test]
    fn group_paths_round_trip(s in group_path()) {
        let g: GroupPath = s.parse().unwrap();
        prop_assert_eq!(g.to_string(), s.clone());
        prop_assert_eq!(g.depth(), s.split('/').count());
        prop_assert_eq!(g.tenant().to_string(), s.split('/').next().unwrap().to_owned());
        let json = serde_json::to_string(&g).unwrap();
        prop_assert_eq!(serde_json::from_str::<GroupPath>(&json).unwrap(), g);
    }

    #[test]
    fn device_ids_never_contain_topic_specials(s in "\\PC{0,140}") {
        if let Ok(id) = s.parse::<DeviceId>() {
            prop_assert!(!id.as_str().contains(['/', '+', '#', ' ', '\0']));
            prop_assert!(id.as_str().len() <= 128);
        }
    }

    #[test]
    fn arbitrary_strings_never_panic_and_valid_ones_round_trip(s in "\\PC{0,300}") {
        if let Ok(g) = s.parse::<GroupPath>() {
            prop_assert_eq!(g.as_str(), s.as_str());
        }
        let _ = s.parse::<TenantId>();
        let _ = s.parse::<UserId>();
        let _ = s.parse::<ClientId>();
        let _ = s.parse::<JobId>();
    }

    #[test]
    fn job_ids_round_trip_and_keep_their_time(ms in 0i64..=Timestamp::MAX.as_millis(), r in any::<[u8; 10]>()) {
        let t = Timestamp::from_millis(ms).unwrap();
        let id = JobId::from_parts(t, r);
        // The UUIDv7 timestamp field holds 48 bits of milliseconds.
        prop_assert_eq!(id.created(), t);
        prop_assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
    }

    #[test]
    fn job_ids_sort_by_creation_time(a in 0i64..1_000_000_000_000, b in 0i64..1_000_000_000_000, r1 in any::<[u8; 10]>(), r2 in any::<[u8; 10]>()) {
        prop_assume!(a != b);
        let ia = JobId::from_parts(Timestamp::from_millis(a).unwrap(), r1);
        let ib = JobId::from_parts(Timestamp::from_millis(b).unwrap(), r2);
        prop_assert_eq!(a < b, ia < ib);
    }
}

fn reason<T: std::str::FromStr<Err = hub_core::IdError>>(s: &str) -> IdErrorReason {
    match s.parse::<T>() {
        Ok(_) => panic!("{s:?} should be rejected"),
        Err(e) => e.reason,
    }
}

#[test]
fn bad_identifiers_are_rejected_with_the_reason() {
    assert_eq!(reason::<TenantId>(""), IdErrorReason::Empty);
    assert!(matches!(
        reason::<TenantId>("Acme"),
        IdErrorReason::InvalidChar {
            ch: 'A',
            position: 0,
            ..
        }
    ));
    assert_eq!(reason::<TenantId>("-acme"), IdErrorReason::BadEdge);
    assert_eq!(reason::<TenantId>("acme-"), IdErrorReason::BadEdge);
    assert!(matches!(
        reason::<TenantId>(&"a".repeat(64)),
        IdErrorReason::TooLong { len: 64, max: 63 }
    ));
    assert!(matches!(
        reason::<DeviceId>("dev/1"),
        IdErrorReason::InvalidChar { ch: '/', .. }
    ));
    assert!(matches!(
        reason::<DeviceId>("dev+"),
        IdErrorReason::InvalidChar { ch: '+', .. }
    ));
    assert!(matches!(
        reason::<DeviceId>("dév"),
        IdErrorReason::InvalidChar { ch: 'é', .. }
    ));
    assert_eq!(
        reason::<GroupPath>("acme//line"),
        IdErrorReason::EmptySegment { index: 1 }
    );
    assert_eq!(
        reason::<GroupPath>("acme/"),
        IdErrorReason::EmptySegment { index: 1 }
    );
    assert_eq!(
        reason::<GroupPath>("/acme"),
        IdErrorReason::EmptySegment { index: 0 }
    );
    assert!(matches!(
        reason::<GroupPath>("a/b/c/d/e/f/g/h/i"),
        IdErrorReason::TooDeep { depth: 9, max: 8 }
    ));
    assert!(matches!(
        reason::<GroupPath>("acme/Plant"),
        IdErrorReason::BadSegment { index: 1, .. }
    ));
    // A v4 UUID is not a job id: job ids must sort by time.
    assert_eq!(
        reason::<JobId>("67e55044-10b1-426f-9247-bb680e5fe0c8"),
        IdErrorReason::NotUuidV7
    );
}

#[test]
fn error_messages_name_the_identifier_and_cut_long_input() {
    let e = "x/y".parse::<DeviceId>().unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("invalid device id \"x/y\""), "{msg}");
    assert!(msg.contains("'/'"), "{msg}");
    let huge = "z".repeat(10_000);
    let e = huge.parse::<DeviceId>().unwrap_err();
    assert!(e.to_string().len() < 300);
    let core: hub_core::Error = e.into();
    assert_eq!(core.kind(), hub_core::ErrorKind::InvalidInput);
}

#[test]
fn invalid_ids_are_refused_by_serde_too() {
    assert!(serde_json::from_str::<DeviceId>("\"a#b\"").is_err());
    assert!(serde_json::from_str::<GroupPath>("\"acme/../etc\"").is_err());
}

#[test]
fn group_navigation() {
    let g: GroupPath = "acme/plant-3/line-2".parse().unwrap();
    assert_eq!(g.parent().unwrap().as_str(), "acme/plant-3");
    assert_eq!(g.parent().unwrap().parent().unwrap().as_str(), "acme");
    assert!(g.parent().unwrap().parent().unwrap().is_root());
    assert_eq!(GroupPath::root(&"acme".parse().unwrap()).parent(), None);
    assert_eq!(
        g.child("cell-1").unwrap().as_str(),
        "acme/plant-3/line-2/cell-1"
    );
    assert!(g.child("bad/child").is_err());
    assert_eq!(
        g.segments().collect::<Vec<_>>(),
        vec!["acme", "plant-3", "line-2"]
    );
    let moved = g
        .rebase(
            &"acme/plant-3".parse().unwrap(),
            &"acme/plant-9".parse().unwrap(),
        )
        .unwrap();
    assert_eq!(moved.as_str(), "acme/plant-9/line-2");
    assert_eq!(
        g.rebase(&"acme/plant-30".parse().unwrap(), &"acme".parse().unwrap()),
        None
    );
}
