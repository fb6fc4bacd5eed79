use std::time::Duration;

use bytes::Bytes;
use hub_core::{Credentials, DisconnectReason, Timestamp};
use proptest::prelude::*;

use super::*;
use crate::codec::{Connect, Packet, Properties, Protocol, Publish, QoS, Will, reason};

fn t(ms: u64) -> Timestamp {
    Timestamp::EPOCH.saturating_add(Duration::from_millis(ms))
}

fn limits() -> SessionLimits {
    SessionLimits::from(&TransportConfig::default())
}

fn connect(protocol: Protocol, keep_alive: u16, user: Option<&str>, pass: Option<&str>) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_start: true,
        keep_alive,
        client_id: "c1".into(),
        will: Some(Will {
            topic: "devices/pump-7/status".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties::default(),
        }),
        username: user.map(str::to_owned),
        password: pass.map(|p| Bytes::copy_from_slice(p.as_bytes())),
        properties: Properties::default(),
    }))
}

/// A session that has accepted a CONNECT; returns the actions of the handshake.
fn connected(protocol: Protocol, keep_alive: u16, limits: SessionLimits) -> (Session, Vec<Action>) {
    let mut s = Session::new(limits, t(0));
    s.handle(
        t(0),
        connect(protocol, keep_alive, Some("pump-7"), Some("hk_a_b")),
    );
    let mut actions = s.take_actions();
    s.authenticated(Ok(()), false, None);
    actions.extend(s.take_actions());
    (s, actions)
}

fn sent(actions: &[Action]) -> Vec<&Packet> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn publish(qos: QoS, id: Option<u16>) -> Packet {
    let mut p = Publish::new("devices/pump-7/t", qos, &b"x"[..]);
    p.packet_id = id;
    Packet::Publish(p)
}

#[test]
fn connect_asks_for_the_right_credentials() {
    let mut s = Session::new(limits(), t(0));
    s.handle(
        t(0),
        connect(Protocol::V5, 30, Some("pump-7"), Some("hk_a_b")),
    );
    let a = s.take_actions();
    assert!(
        matches!(&a[0], Action::Authenticate(Credentials::AccessKey { device: Some(d), key })
        if d.as_str() == "pump-7" && key.expose() == "hk_a_b")
    );
    for user in [None, Some(""), Some("oauth2")] {
        let mut s = Session::new(limits(), t(0));
        s.handle(t(0), connect(Protocol::V5, 30, user, Some("eyJtoken")));
        assert!(
            matches!(&s.take_actions()[0], Action::Authenticate(Credentials::Bearer(tok)) if tok.expose() == "eyJtoken")
        );
    }
}

#[test]
fn connect_without_a_password_is_refused_with_the_protocols_code() {
    for (protocol, code) in [
        (Protocol::V5, reason::BAD_USER_NAME_OR_PASSWORD),
        (Protocol::V311, 4),
    ] {
        let mut s = Session::new(limits(), t(0));
        s.handle(t(0), connect(protocol, 30, Some("pump-7"), None));
        let a = s.take_actions();
        assert!(matches!(sent(&a)[..], [Packet::ConnAck(ConnAck { code: c, .. })] if *c == code));
        assert!(matches!(a.last(), Some(Action::Close(_))));
        assert!(s.is_closed());
    }
}

#[test]
fn a_failed_authentication_is_answered_and_closed() {
    let mut s = Session::new(limits(), t(0));
    s.handle(
        t(0),
        connect(Protocol::V311, 30, Some("pump-7"), Some("wrong")),
    );
    s.take_actions();
    s.authenticated(Err(reason::BAD_USER_NAME_OR_PASSWORD), false, None);
    let a = s.take_actions();
    assert!(matches!(
        sent(&a)[..],
        [Packet::ConnAck(ConnAck { code: 4, .. })]
    ));
    assert!(s.is_closed());
}

#[test]
fn mqtt5_gets_a_server_keep_alive_and_is_held_to_it() {
    let (mut s, a) = connected(Protocol::V5, 0, limits());
    let Packet::ConnAck(ack) = sent(&a)[0] else {
        panic!("no CONNACK")
    };
    assert_eq!(ack.code, 0);
    assert_eq!(ack.properties.server_keep_alive, Some(60));
    assert_eq!(ack.properties.topic_alias_maximum, Some(0));
    assert_eq!(s.deadline(), Some(t(90_000)));
    s.handle_timeout(t(89_999));
    assert!(s.take_actions().is_empty());
    // Traffic moves the deadline.
    s.handle(t(50_000), Packet::PingReq);
    assert!(matches!(sent(&s.take_actions())[..], [Packet::PingResp]));
    s.handle_timeout(t(90_000));
    assert!(s.take_actions().is_empty());
    s.handle_timeout(t(140_000));
    let a = s.take_actions();
    assert!(
        matches!(sent(&a)[..], [Packet::Disconnect(d)] if d.reason == reason::KEEP_ALIVE_TIMEOUT)
    );
    // The will is published on a keep-alive timeout.
    assert!(a.iter().any(|x| matches!(x, Action::Publish { message, ack: None } if message.topic == "devices/pump-7/status")));
    assert!(matches!(
        a.last(),
        Some(Action::Close(DisconnectReason::KeepAliveTimeout))
    ));
}

#[test]
fn a_too_long_keep_alive_is_lowered_over_mqtt5() {
    let mut l = limits();
    l.max_keep_alive = 600;
    let (s, a) = connected(Protocol::V5, 3600, l);
    let Packet::ConnAck(ack) = sent(&a)[0] else {
        panic!()
    };
    assert_eq!(ack.properties.server_keep_alive, Some(600));
    assert_eq!(s.keep_alive(), 600);
}

#[test]
fn a_connection_that_never_connects_times_out() {
    let mut s = Session::new(limits(), t(0));
    assert_eq!(s.deadline(), Some(t(10_000)));
    s.handle_timeout(t(10_000));
    assert!(matches!(
        s.take_actions()[..],
        [Action::Close(DisconnectReason::KeepAliveTimeout)]
    ));
}

#[test]
fn packets_before_connect_close_the_connection() {
    let mut s = Session::new(limits(), t(0));
    s.handle(t(0), Packet::PingReq);
    assert!(matches!(s.take_actions()[..], [Action::Close(_)]));
}

#[test]
fn qos2_inbound_is_routed_exactly_once() {
    let (mut s, _) = connected(Protocol::V5, 60, limits());
    s.handle(t(1), publish(QoS::ExactlyOnce, Some(5)));
    let a = s.take_actions();
    assert!(matches!(
        &a[..],
        [Action::Publish {
            ack: Some((5, QoS::ExactlyOnce)),
            ..
        }]
    ));
    s.published(5, QoS::ExactlyOnce, 0);
    assert!(matches!(sent(&s.take_actions())[..], [Packet::PubRec(a)] if a.packet_id == 5));
    // The client re-sends before PUBREL: acknowledged, not routed again.
    let mut again = publish(QoS::ExactlyOnce, Some(5));
    if let Packet::Publish(p) = &mut again {
        p.dup = true;
    }
    s.handle(t(2), again);
    assert!(matches!(sent(&s.take_actions())[..], [Packet::PubRec(a)] if a.packet_id == 5));
    s.handle(t(3), Packet::PubRel(Ack::new(5)));
    assert!(
        matches!(sent(&s.take_actions())[..], [Packet::PubComp(a)] if a.packet_id == 5 && a.reason == 0)
    );
    // After PUBREL the id is free: a new message with it is routed.
    s.handle(t(4), publish(QoS::ExactlyOnce, Some(5)));
    assert!(matches!(&s.take_actions()[..], [Action::Publish { .. }]));
}

#[test]
fn a_refused_qos1_publication_gets_the_reason_code_over_mqtt5() {
    let (mut s, _) = connected(Protocol::V5, 60, limits());
    s.handle(t(1), publish(QoS::AtLeastOnce, Some(9)));
    s.take_actions();
    s.published(9, QoS::AtLeastOnce, reason::NOT_AUTHORIZED);
    assert!(
        matches!(sent(&s.take_actions())[..], [Packet::PubAck(a)] if a.reason == reason::NOT_AUTHORIZED)
    );
}

#[test]
fn outbound_flow_control_respects_the_clients_receive_maximum() {
    let mut s = Session::new(limits(), t(0));
    let mut c = connect(Protocol::V5, 60, Some("pump-7"), Some("k"));
    if let Packet::Connect(c) = &mut c {
        c.properties.receive_maximum = Some(2);
    }
    s.handle(t(0), c);
    s.authenticated(Ok(()), false, None);
    s.take_actions();
    for _ in 0..5 {
        s.deliver(Message::new(
            "devices/pump-7/x",
            &b"m"[..],
            QoS::AtLeastOnce,
        ))
        .unwrap();
    }
    let a = s.take_actions();
    let ids: Vec<u16> = sent(&a)
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => p.packet_id,
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    s.handle(t(1), Packet::PubAck(Ack::new(ids[0])));
    let a = s.take_actions();
    assert_eq!(
        sent(&a).len(),
        1,
        "one acknowledgement opens the window for one more"
    );
    // QoS 0 is not held back by the window.
    s.deliver(Message::new("devices/pump-7/x", &b"m"[..], QoS::AtMostOnce))
        .unwrap();
    assert_eq!(sent(&s.take_actions()).len(), 1);
}

#[test]
fn outbound_qos2_completes_with_pubrel_and_pubcomp() {
    let (mut s, _) = connected(Protocol::V311, 60, limits());
    s.deliver(Message::new(
        "devices/pump-7/x",
        &b"m"[..],
        QoS::ExactlyOnce,
    ))
    .unwrap();
    let a = s.take_actions();
    let Packet::Publish(p) = sent(&a)[0] else {
        panic!()
    };
    let id = p.packet_id.unwrap();
    s.handle(t(1), Packet::PubRec(Ack::new(id)));
    assert!(matches!(sent(&s.take_actions())[..], [Packet::PubRel(a)] if a.packet_id == id));
    s.handle(t(2), Packet::PubComp(Ack::new(id)));
    assert!(s.take_undelivered().is_empty());
}

#[test]
fn a_slow_consumer_is_disconnected() {
    let mut l = limits();
    l.max_inflight = 1;
    l.max_queued = 2;
    let (mut s, _) = connected(Protocol::V5, 60, l);
    for _ in 0..3 {
        s.deliver(Message::new(
            "devices/pump-7/x",
            &b"m"[..],
            QoS::AtLeastOnce,
        ))
        .unwrap();
    }
    assert_eq!(
        s.deliver(Message::new(
            "devices/pump-7/x",
            &b"m"[..],
            QoS::AtLeastOnce
        )),
        Err(SlowConsumer)
    );
    let a = s.take_actions();
    assert!(a.iter().any(
        |x| matches!(x, Action::Send(Packet::Disconnect(d)) if d.reason == reason::QUOTA_EXCEEDED)
    ));
    assert!(matches!(
        a.last(),
        Some(Action::Close(DisconnectReason::ServerClosed))
    ));
    // What was accepted is kept for a persistent session.
    assert_eq!(s.take_undelivered().len(), 3);
}

#[test]
fn a_graceful_disconnect_drops_the_will_unless_asked() {
    let (mut s, _) = connected(Protocol::V5, 60, limits());
    s.handle(
        t(1),
        Packet::Disconnect(Disconnect {
            reason: 0,
            properties: Properties::default(),
        }),
    );
    let a = s.take_actions();
    assert!(matches!(a[..], [Action::Close(DisconnectReason::Graceful)]));

    let (mut s, _) = connected(Protocol::V5, 60, limits());
    s.handle(
        t(1),
        Packet::Disconnect(Disconnect {
            reason: reason::DISCONNECT_WITH_WILL,
            properties: Properties::default(),
        }),
    );
    let a = s.take_actions();
    assert!(matches!(
        &a[..],
        [
            Action::Publish { ack: None, .. },
            Action::Close(DisconnectReason::Graceful)
        ]
    ));
}

#[test]
fn a_lost_connection_publishes_the_will() {
    let (mut s, _) = connected(Protocol::V311, 60, limits());
    s.connection_lost(None);
    let a = s.take_actions();
    assert!(
        matches!(&a[..], [Action::Publish { message, ack: None }, Action::Close(DisconnectReason::ConnectionLost)] if message.retain)
    );
}

#[test]
fn session_expiry_follows_the_protocol() {
    let mut s = Session::new(limits(), t(0));
    let mut c = connect(Protocol::V311, 60, Some("pump-7"), Some("k"));
    if let Packet::Connect(c) = &mut c {
        c.clean_start = false;
    }
    s.handle(t(0), c);
    assert_eq!(s.session_expiry(), 86_400);
    let mut s = Session::new(limits(), t(0));
    let mut c = connect(Protocol::V5, 60, Some("pump-7"), Some("k"));
    if let Packet::Connect(c) = &mut c {
        c.properties.session_expiry = Some(u32::MAX);
    }
    s.handle(t(0), c);
    assert_eq!(s.session_expiry(), 86_400, "capped by the configuration");
}

#[derive(Debug, Clone)]
enum Step {
    Publish(u8, u16),
    PubRel(u16),
    PubAck(u16),
    PubRec(u16),
    PubComp(u16),
    Deliver(u8),
    Ping,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3u8, 1..6u16).prop_map(|(q, id)| Step::Publish(q, id)),
        (1..6u16).prop_map(Step::PubRel),
        (1..8u16).prop_map(Step::PubAck),
        (1..8u16).prop_map(Step::PubRec),
        (1..8u16).prop_map(Step::PubComp),
        (0..3u8).prop_map(Step::Deliver),
        Just(Step::Ping),
    ]
}

proptest! {
    /// Whatever a client sends after CONNECT: no panic, a QoS 2 id is routed at most once until
    /// its PUBREL, and never more QoS 1/2 messages are unacknowledged than the window allows.
    #[test]
    fn the_session_keeps_its_promises(steps in proptest::collection::vec(step(), 0..60)) {
        let mut l = limits();
        l.max_inflight = 3;
        l.max_queued = 1000;
        let (mut s, _) = connected(Protocol::V5, 60, l);
        let mut outstanding_qos2: std::collections::HashSet<u16> = Default::default();
        let mut unacked: std::collections::HashMap<u16, QoS> = Default::default();
        for (i, st) in steps.into_iter().enumerate() {
            let now = t(i as u64);
            match st {
                Step::Publish(q, id) => s.handle(now, publish(QoS::from_u8(q).unwrap(), (q > 0).then_some(id))),
                Step::PubRel(id) => {
                    s.handle(now, Packet::PubRel(Ack::new(id)));
                    outstanding_qos2.remove(&id);
                }
                Step::PubAck(id) => s.handle(now, Packet::PubAck(Ack::new(id))),
                Step::PubRec(id) => s.handle(now, Packet::PubRec(Ack::new(id))),
                Step::PubComp(id) => s.handle(now, Packet::PubComp(Ack::new(id))),
                Step::Deliver(q) => { let _ = s.deliver(Message::new("devices/pump-7/o", &b"o"[..], QoS::from_u8(q).unwrap())); }
                Step::Ping => s.handle(now, Packet::PingReq),
            }
            for a in s.take_actions() {
                match a {
                    Action::Publish { ack: Some((id, qos)), .. } => {
                        if qos == QoS::ExactlyOnce {
                            prop_assert!(outstanding_qos2.insert(id), "QoS 2 id {} routed twice", id);
                        }
                        s.published(id, qos, 0);
                    }
                    Action::Send(Packet::Publish(p)) if p.qos > QoS::AtMostOnce => {
                        unacked.insert(p.packet_id.unwrap(), p.qos);
                    }
                    Action::Send(_) | Action::Publish { .. } => {}
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            // Drain the acknowledgements the session produced for `published`.
            for a in s.take_actions() {
                prop_assert!(matches!(a, Action::Send(_)));
            }
            let inflight = s.flows().inflight.len();
            prop_assert!(inflight <= 3, "window exceeded: {}", inflight);
            prop_assert!(!s.is_closed());
        }
        let _ = unacked;
    }
}
