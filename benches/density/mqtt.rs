//! The few MQTT 3.1.1 packets the density client needs, encoded and decoded by hand so that the
//! client is the same small thing against every server (no broker-specific client library).

/// MQTT 3.1.1 packet types (the high nibble of the first byte).
pub(crate) const CONNACK: u8 = 2;
pub(crate) const PUBLISH: u8 = 3;
pub(crate) const SUBACK: u8 = 9;
pub(crate) const PINGRESP: u8 = 13;

/// A PINGREQ packet.
pub(crate) const PINGREQ_PACKET: [u8; 2] = [0xC0, 0x00];
/// A DISCONNECT packet.
pub(crate) const DISCONNECT_PACKET: [u8; 2] = [0xE0, 0x00];

/// Appends the variable-length "remaining length" of a packet.
fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

/// Appends a length-prefixed UTF-8 string (or binary field).
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).expect("MQTT strings are at most 65,535 bytes");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
}

/// Wraps a body in a fixed header.
fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(first_byte);
    put_remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// A CONNECT packet (MQTT 3.1.1, clean session) with user name and password.
pub(crate) fn connect(client_id: &str, user: &str, password: &str, keepalive_secs: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(32 + client_id.len() + user.len() + password.len());
    put_str(&mut body, b"MQTT");
    body.push(4); // protocol level 4 = MQTT 3.1.1
    body.push(0x80 | 0x40 | 0x02); // user name, password, clean session
    body.extend_from_slice(&keepalive_secs.to_be_bytes());
    put_str(&mut body, client_id.as_bytes());
    put_str(&mut body, user.as_bytes());
    put_str(&mut body, password.as_bytes());
    packet(0x10, &body)
}

/// A SUBSCRIBE packet for one topic filter at QoS 0.
pub(crate) fn subscribe(packet_id: u16, topic: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(5 + topic.len());
    body.extend_from_slice(&packet_id.to_be_bytes());
    put_str(&mut body, topic.as_bytes());
    body.push(0); // QoS 0
    packet(0x82, &body)
}

/// A PUBLISH packet at QoS 0.
pub(crate) fn publish(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(2 + topic.len() + payload.len());
    put_str(&mut body, topic.as_bytes());
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// A complete packet at the front of a buffer: its type and where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Frame {
    /// The packet type (high nibble of the first byte).
    pub(crate) kind: u8,
    /// Offset of the first byte of the variable header.
    pub(crate) body_start: usize,
    /// Offset just past the packet.
    pub(crate) end: usize,
}

/// Why the bytes received are not MQTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// Finds the packet at the front of `buf`: `Ok(None)` while more bytes are needed.
pub(crate) fn frame(buf: &[u8]) -> Result<Option<Frame>, Malformed> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut shift = 0u32;
    for (i, &byte) in buf[1..].iter().enumerate() {
        if i == 4 {
            // The remaining length has at most four bytes.
            return Err(Malformed);
        }
        len |= usize::from(byte & 0x7F) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            let body_start = 2 + i;
            let end = body_start + len;
            return Ok((buf.len() >= end).then_some(Frame {
                kind: first >> 4,
                body_start,
                end,
            }));
        }
    }
    if buf.len() > 4 {
        return Err(Malformed);
    }
    Ok(None)
}

/// The return code of a CONNACK body (0 = accepted).
pub(crate) fn connack_code(body: &[u8]) -> Result<u8, Malformed> {
    match body {
        [_flags, code] => Ok(*code),
        _ => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn connect_matches_the_3_1_1_layout() {
        let p = connect("c", "u", "pw", 60);
        assert_eq!(
            p,
            [
                0x10, 20, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xC2, 0, 60, 0, 1, b'c', 0, 1, b'u', 0,
                2, b'p', b'w'
            ]
        );
        assert_eq!(
            frame(&p).unwrap(),
            Some(Frame {
                kind: 1,
                body_start: 2,
                end: p.len()
            })
        );
    }

    #[test]
    fn subscribe_and_publish_layouts() {
        assert_eq!(
            subscribe(7, "a/b"),
            [0x82, 8, 0, 7, 0, 3, b'a', b'/', b'b', 0]
        );
        assert_eq!(publish("t", b"xy"), [0x30, 5, 0, 1, b't', b'x', b'y']);
    }

    #[test]
    fn a_1_kib_publish_has_a_two_byte_length() {
        let p = publish("devices/dev-000001/inbox", &[0u8; 1024]);
        let f = frame(&p).unwrap().unwrap();
        assert_eq!(f.body_start, 3);
        assert_eq!(f.end, p.len());
        assert_eq!(f.kind, PUBLISH);
    }

    #[test]
    fn incomplete_packets_wait_for_more_bytes() {
        assert_eq!(frame(&[]), Ok(None));
        assert_eq!(frame(&[0x20]), Ok(None));
        assert_eq!(frame(&[0x20, 2, 0]), Ok(None));
        assert_eq!(frame(&[0x30, 0x80]), Ok(None));
        let f = frame(&[0x20, 2, 0, 5, 0xD0]).unwrap().unwrap();
        assert_eq!((f.kind, f.end), (CONNACK, 4));
        assert_eq!(connack_code(&[0, 5]), Ok(5));
        assert_eq!(connack_code(&[0]), Err(Malformed));
    }

    #[test]
    fn a_five_byte_length_is_refused() {
        assert_eq!(frame(&[0x30, 0x80, 0x80, 0x80, 0x80, 0x01]), Err(Malformed));
        assert_eq!(frame(&[0x30, 0x80, 0x80, 0x80, 0x80]), Err(Malformed));
    }

    proptest! {
        /// Every publish we encode frames back to exactly its own bytes, however it is split.
        #[test]
        fn publish_frames_round_trip(len in 0usize..70_000, cut in 0usize..70_010) {
            let p = publish("devices/x/inbox", &vec![7u8; len]);
            let f = frame(&p).unwrap().unwrap();
            prop_assert_eq!(f.kind, PUBLISH);
            prop_assert_eq!(f.end, p.len());
            let cut = cut.min(p.len());
            let partial = frame(&p[..cut]).unwrap();
            prop_assert_eq!(partial.is_some(), cut == p.len());
        }
    }
}
