use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;

fn roundtrip(p: &Packet, protocol: Protocol) -> Packet {
    let mut wire = BytesMut::new();
    encode(p, protocol, &mut wire).unwrap();
    let mut codec = Codec::new(protocol, 1 << 20);
    let got = codec.decode(&mut wire).unwrap().expect("a whole packet");
    assert!(wire.is_empty(), "the packet was consumed entirely");
    got
}

fn decode_all(bytes: &[u8], protocol: Protocol) -> Result<Option<Packet>, CodecError> {
    Codec::new(protocol, 1024).decode(&mut BytesMut::from(bytes))
}

fn text() -> impl Strategy<Value = String> {
    // Any Unicode scalar except U+0000, short.
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..12)
        .prop_map(|v| v.into_iter().collect())
}

fn topic() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,8}(/[a-z0-9-]{1,8}){0,4}"
}

fn filter() -> impl Strategy<Value = String> {
    (topic(), 0..3u8, any::<bool>()).prop_map(|(t, plus, hash)| {
        let mut levels: Vec<String> = t.split('/').map(str::to_owned).collect();
        if plus > 0 {
            levels[0] = "+".into();
        }
        if hash {
            levels.push("#".into());
        }
        levels.join("/")
    })
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn properties(v5: bool) -> BoxedStrategy<Properties> {
    if !v5 {
        return Just(Properties::default()).boxed();
    }
    (
        proptest::option::of(any::<u32>()),
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::collection::vec((text(), text()), 0..3),
        proptest::option::of(any::<u16>()),
        proptest::option::of(text()),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(|(expiry, ct, corr, user, rm, rs, se)| Properties {
            message_expiry: expiry,
            content_type: ct,
            correlation_data: corr.map(Bytes::from),
            user_properties: user,
            receive_maximum: rm,
            reason_string: rs,
            session_expiry: se,
            ..Properties::default()
        })
        .boxed()
}

fn packet(v5: bool) -> BoxedStrategy<Packet> {
    let protocol = if v5 { Protocol::V5 } else { Protocol::V311 };
    let publish = (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic(),
        1..=u16::MAX,
        proptest::collection::vec(any::<u8>(), 0..64),
        properties(v5),
    )
        .prop_map(|(qos, dup, retain, topic, id, payload, properties)| {
            Packet::Publish(Publish {
                dup: dup && qos != QoS::AtMostOnce,
                qos,
                retain,
                topic,
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                payload: payload.into(),
                properties,
            })
        });
    let reason = if v5 {
        any::<u8>().boxed()
    } else {
        Just(0u8).boxed()
    };
    let ack = (0..4u8, any::<u16>(), reason.clone(), properties(v5)).prop_map(
        |(k, id, reason, properties)| {
            let a = Ack {
                packet_id: id,
                reason,
                properties,
            };
            match k {
                0 => Packet::PubAck(a),
                1 => Packet::PubRec(a),
                2 => Packet::PubRel(a),
                _ => Packet::PubComp(a),
            }
        },
    );
    let opts = (qos(), any::<bool>(), any::<bool>(), 0..3u8).prop_map(move |(qos, nl, rap, rh)| {
        if v5 {
            SubOptions {
                qos,
                no_local: nl,
                retain_as_published: rap,
                retain_handling: rh,
            }
        } else {
            SubOptions::qos(qos)
        }
    });
    let subscribe = (
        any::<u16>(),
        proptest::collection::vec((filter(), opts), 1..4),
        properties(v5),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let suback = (
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 1..4),
        properties(v5),
        any::<bool>(),
    )
        .prop_map(move |(packet_id, codes, properties, unsub)| {
            if unsub {
                let codes = if v5 { codes } else { Vec::new() };
                Packet::UnsubAck(SubAck {
                    packet_id,
                    codes,
                    properties,
                })
            } else {
                Packet::SubAck(SubAck {
                    packet_id,
                    codes,
                    properties,
                })
            }
        });
    let unsubscribe = (
        any::<u16>(),
        proptest::collection::vec(filter(), 1..4),
        properties(v5),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        });
    let will = (
        topic(),
        proptest::collection::vec(any::<u8>(), 0..16),
        qos(),
        any::<bool>(),
        properties(v5),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload: payload.into(),
            qos,
            retain,
            properties,
        });
    let connect = (
        any::<bool>(),
        any::<u16>(),
        text(),
        proptest::option::of(will),
        proptest::option::of(text()),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        properties(v5),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // 3.1.1 allows a password only with a user name.
                let username = if !v5 && password.is_some() {
                    Some(username.unwrap_or_default())
                } else {
                    username
                };
                Packet::Connect(Box::new(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password: password.map(Bytes::from),
                    properties,
                }))
            },
        );
    let connack = (any::<bool>(), any::<u8>(), properties(v5)).prop_map(
        |(session_present, code, properties)| {
            Packet::ConnAck(ConnAck {
                session_present,
                code,
                properties,
            })
        },
    );
    let disconnect = (reason, properties(v5))
        .prop_map(|(reason, properties)| Packet::Disconnect(Disconnect { reason, properties }));
    prop_oneof![
        publish,
        ack,
        subscribe,
        suback,
        unsubscribe,
        connect,
        connack,
        disconnect,
        Just(Packet::PingReq),
        Just(Packet::PingResp),
    ]
    .boxed()
}

proptest! {
    #[test]
    fn v311_packets_round_trip(p in packet(false)) {
        prop_assert_eq!(roundtrip(&p, Protocol::V311), p);
    }

    #[test]
    fn v5_packets_round_trip(p in packet(true)) {
        prop_assert_eq!(roundtrip(&p, Protocol::V5), p);
    }

    /// Every strict prefix of a packet is "need more bytes", and consumes nothing.
    #[test]
    fn partial_input_waits_for_more(p in packet(true)) {
        let mut wire = BytesMut::new();
        encode(&p, Protocol::V5, &mut wire).unwrap();
        for cut in 0..wire.len() {
            let mut part = BytesMut::from(&wire[..cut]);
            let mut codec = Codec::new(Protocol::V5, 1 << 20);
            prop_assert_eq!(codec.decode(&mut part), Ok(None));
            prop_assert_eq!(part.len(), cut);
        }
    }

    /// Arbitrary bytes are decoded or refused with an error; never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), v5 in any::<bool>()) {
        let protocol = if v5 { Protocol::V5 } else { Protocol::V311 };
        let mut buf = BytesMut::from(&bytes[..]);
        let mut codec = Codec::new(protocol, 200);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
        // And whatever decodes re-encodes to the same packet.
        crate::codec::fuzz_decode(&bytes);
    }
}

#[test]
fn a_remaining_length_of_five_bytes_is_refused() {
    assert_eq!(
        decode_all(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], Protocol::V311),
        Err(CodecError::BadRemainingLength)
    );
}

#[test]
fn an_oversized_packet_is_refused_from_its_header_alone() {
    // Only the fixed header has arrived: the size is refused before any body is buffered.
    let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x04][..]);
    let mut codec = Codec::new(Protocol::V311, 1024);
    assert_eq!(
        codec.decode(&mut buf),
        Err(CodecError::TooLarge {
            size: 65_540,
            max: 1024
        })
    );
    assert!(buf.capacity() < 1024);
}

fn publish_bytes(topic: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u8(0x30);
    b.put_u8((2 + topic.len()) as u8);
    b.put_u16(topic.len() as u16);
    b.put_slice(topic);
    b.to_vec()
}

#[test]
fn bad_strings_are_refused() {
    assert_eq!(
        decode_all(&publish_bytes(b"a/\xff"), Protocol::V311),
        Err(CodecError::BadString)
    );
    assert_eq!(
        decode_all(&publish_bytes(b"a/\0b"), Protocol::V311),
        Err(CodecError::BadString)
    );
    // Overlong encoding of '/' is not UTF-8 either.
    assert_eq!(
        decode_all(&publish_bytes(b"a\xc0\xafb"), Protocol::V311),
        Err(CodecError::BadString)
    );
}

#[test]
fn wildcards_in_publish_topics_are_refused() {
    assert_eq!(
        decode_all(&publish_bytes(b"devices/+/x"), Protocol::V311),
        Err(CodecError::BadTopic)
    );
    assert_eq!(
        decode_all(&publish_bytes(b"devices/#"), Protocol::V311),
        Err(CodecError::BadTopic)
    );
    assert_eq!(
        decode_all(&publish_bytes(b""), Protocol::V311),
        Err(CodecError::BadTopic)
    );
}

#[test]
fn reserved_flags_and_bad_qos_are_refused() {
    // SUBSCRIBE must carry flags 0b0010.
    assert_eq!(
        decode_all(&[0x80, 0x06, 0, 1, 0, 1, b'a', 0], Protocol::V311),
        Err(CodecError::ReservedFlags)
    );
    // PUBREL must carry flags 0b0010.
    assert_eq!(
        decode_all(&[0x60, 0x02, 0, 1], Protocol::V311),
        Err(CodecError::ReservedFlags)
    );
    // QoS 3.
    assert_eq!(
        decode_all(&[0x36, 0x05, 0, 1, b'a', 0, 1], Protocol::V311),
        Err(CodecError::InvalidQos)
    );
    // Packet type 0 and AUTH (15) are refused.
    assert_eq!(
        decode_all(&[0x00, 0x00], Protocol::V311),
        Err(CodecError::PacketType(0))
    );
    assert_eq!(
        decode_all(&[0xF0, 0x00], Protocol::V5),
        Err(CodecError::PacketType(15))
    );
}

#[test]
fn bad_filters_and_protocols_are_refused() {
    assert!(valid_filter("devices/+/#"));
    assert!(!valid_filter("devices/#/x"));
    assert!(!valid_filter("devices/a+"));
    assert!(!valid_filter(""));
    // CONNECT naming protocol level 3 (MQTT 3.1).
    let connect = [0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 3, 2, 0, 60, 0, 0];
    assert_eq!(
        decode_all(&connect, Protocol::V311),
        Err(CodecError::UnsupportedProtocol(3))
    );
    // Trailing bytes after PINGREQ's empty body.
    assert!(decode_all(&[0xC0, 0x01, 0x00], Protocol::V311).is_err());
}

#[test]
fn errors_map_to_reason_codes_and_hub_errors() {
    assert_eq!(
        CodecError::TooLarge { size: 2, max: 1 }.reason_code(),
        reason::PACKET_TOO_LARGE
    );
    assert_eq!(
        CodecError::BadString.reason_code(),
        reason::MALFORMED_PACKET
    );
    let e: hub_core::Error = CodecError::TooLarge { size: 2, max: 1 }.into();
    assert_eq!(e.kind(), hub_core::ErrorKind::TooLarge);
}

/// Replays the fuzz corpus checked in under `fuzz/corpus/decode`: none of it may panic.
#[test]
fn fuzz_corpus_replays_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the fuzz corpus is checked in") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        crate::codec::fuzz_decode(&bytes);
        n += 1;
    }
    assert!(n > 0, "the corpus is empty");
}
