//! The MQTT 3.1.1 and 5.0 packet codec: pure functions over [`bytes`].
//!
//! [`Codec::decode`] is incremental: it returns `Ok(None)` until a whole packet is in the buffer,
//! and refuses a packet whose declared size exceeds the configured maximum *before* its body is
//! buffered, so a client cannot make the hub hold more than `max_packet_size` bytes. Malformed
//! input is a typed [`CodecError`], never a panic.
//!
//! ```
//! use bytes::BytesMut;
//! use hub_transport::codec::{Codec, Packet, Protocol, Publish, QoS};
//!
//! let codec = Codec::new(Protocol::V5, 1024);
//! let mut wire = BytesMut::new();
//! let publish = Publish::new("devices/pump-7/temp", QoS::AtMostOnce, &b"21.5"[..]);
//! codec.encode(&Packet::Publish(publish.clone()), &mut wire)?;
//! let mut decoder = Codec::new(Protocol::V5, 1024);
//! assert_eq!(decoder.decode(&mut wire)?, Some(Packet::Publish(publish)));
//! assert_eq!(decoder.decode(&mut wire)?, None);
//! # Ok::<(), hub_transport::codec::CodecError>(())
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The protocol level a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// A quality of service level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once (PUBACK).
    AtLeastOnce = 1,
    /// Exactly once (PUBREC, PUBREL, PUBCOMP).
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two-bit QoS field.
    pub fn from_u8(v: u8) -> Result<Self, CodecError> {
        match v {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            _ => Err(CodecError::InvalidQos),
        }
    }
}

/// Malformed or refused input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The remaining length is longer than four bytes.
    #[error("malformed remaining length")]
    BadRemainingLength,
    /// The packet is larger than the configured maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The declared size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// A string is not valid UTF-8 or contains U+0000.
    #[error("string is not valid UTF-8 or contains U+0000")]
    BadString,
    /// A PUBLISH topic contains `+` or `#`, or is empty.
    #[error("invalid topic name")]
    BadTopic,
    /// A topic filter places `+` or `#` wrongly, or is empty.
    #[error("invalid topic filter")]
    BadTopicFilter,
    /// The fixed header's flags are not those the packet type requires.
    #[error("reserved flags set")]
    ReservedFlags,
    /// Packet type 0, 15 (AUTH, not supported), or a server-to-client packet.
    #[error("unexpected packet type {0}")]
    PacketType(u8),
    /// QoS 3.
    #[error("invalid QoS")]
    InvalidQos,
    /// The CONNECT names a protocol other than MQTT 3.1.1 or 5.0.
    #[error("unsupported protocol {0}")]
    UnsupportedProtocol(u8),
    /// Anything else that does not follow the grammar.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
}

impl CodecError {
    /// The MQTT 5 reason code for a DISCONNECT (or CONNACK) that answers this error.
    pub fn reason_code(&self) -> u8 {
        match self {
            CodecError::TooLarge { .. } => reason::PACKET_TOO_LARGE,
            CodecError::BadTopic => reason::TOPIC_NAME_INVALID,
            CodecError::BadTopicFilter => reason::TOPIC_FILTER_INVALID,
            CodecError::UnsupportedProtocol(_) => reason::UNSUPPORTED_PROTOCOL_VERSION,
            CodecError::PacketType(_) => reason::PROTOCOL_ERROR,
            _ => reason::MALFORMED_PACKET,
        }
    }
}

impl From<CodecError> for hub_core::Error {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::TooLarge { .. } => hub_core::Error::too_large(e.to_string()),
            _ => hub_core::Error::invalid_input(e.to_string()),
        }
    }
}

/// MQTT 5 reason codes the hub sends.
pub mod reason {
    /// Success / normal disconnection / granted QoS 0.
    pub const SUCCESS: u8 = 0x00;
    /// Disconnect with will message.
    pub const DISCONNECT_WITH_WILL: u8 = 0x04;
    /// No matching subscribers (PUBACK).
    pub const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;
    /// No subscription existed (UNSUBACK).
    pub const NO_SUBSCRIPTION_EXISTED: u8 = 0x11;
    /// Unspecified error.
    pub const UNSPECIFIED: u8 = 0x80;
    /// Malformed packet.
    pub const MALFORMED_PACKET: u8 = 0x81;
    /// Protocol error.
    pub const PROTOCOL_ERROR: u8 = 0x82;
    /// Unsupported protocol version.
    pub const UNSUPPORTED_PROTOCOL_VERSION: u8 = 0x84;
    /// Client identifier not valid.
    pub const CLIENT_ID_NOT_VALID: u8 = 0x85;
    /// Bad user name or password.
    pub const BAD_USER_NAME_OR_PASSWORD: u8 = 0x86;
    /// Not authorized.
    pub const NOT_AUTHORIZED: u8 = 0x87;
    /// Server unavailable.
    pub const SERVER_UNAVAILABLE: u8 = 0x88;
    /// Server shutting down.
    pub const SERVER_SHUTTING_DOWN: u8 = 0x8B;
    /// Keep alive timeout.
    pub const KEEP_ALIVE_TIMEOUT: u8 = 0x8D;
    /// Session taken over.
    pub const SESSION_TAKEN_OVER: u8 = 0x8E;
    /// Topic filter invalid.
    pub const TOPIC_FILTER_INVALID: u8 = 0x8F;
    /// Topic name invalid.
    pub const TOPIC_NAME_INVALID: u8 = 0x90;
    /// Packet identifier in use.
    pub const PACKET_ID_IN_USE: u8 = 0x91;
    /// Packet identifier not found.
    pub const PACKET_ID_NOT_FOUND: u8 = 0x92;
    /// Receive maximum exceeded.
    pub const RECEIVE_MAXIMUM_EXCEEDED: u8 = 0x93;
    /// Packet too large.
    pub const PACKET_TOO_LARGE: u8 = 0x95;
    /// Quota exceeded.
    pub const QUOTA_EXCEEDED: u8 = 0x97;
    /// Implementation specific error.
    pub const IMPLEMENTATION_SPECIFIC: u8 = 0x83;
    /// Topic alias invalid.
    pub const TOPIC_ALIAS_INVALID: u8 = 0x94;
}

/// The MQTT 5 properties the hub reads, writes or passes through. Absent fields are not sent.
/// MQTT 3.1.1 packets carry none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01 payload format indicator (passed through).
    pub payload_format: Option<u8>,
    /// 0x02 message expiry interval (passed through).
    pub message_expiry: Option<u32>,
    /// 0x03 content type (passed through).
    pub content_type: Option<String>,
    /// 0x08 response topic (passed through).
    pub response_topic: Option<String>,
    /// 0x09 correlation data (passed through).
    pub correlation_data: Option<Bytes>,
    /// 0x0B subscription identifiers.
    pub subscription_ids: Vec<u32>,
    /// 0x11 session expiry interval, seconds.
    pub session_expiry: Option<u32>,
    /// 0x12 assigned client identifier.
    pub assigned_client_id: Option<String>,
    /// 0x13 server keep alive, seconds.
    pub server_keep_alive: Option<u16>,
    /// 0x15 authentication method (extended authentication is refused).
    pub auth_method: Option<String>,
    /// 0x17 request problem information.
    pub request_problem_info: Option<u8>,
    /// 0x18 will delay interval.
    pub will_delay: Option<u32>,
    /// 0x19 request response information.
    pub request_response_info: Option<u8>,
    /// 0x1F reason string.
    pub reason_string: Option<String>,
    /// 0x21 receive maximum.
    pub receive_maximum: Option<u16>,
    /// 0x22 topic alias maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 topic alias.
    pub topic_alias: Option<u16>,
    /// 0x24 maximum QoS.
    pub maximum_qos: Option<u8>,
    /// 0x25 retain available.
    pub retain_available: Option<u8>,
    /// 0x26 user properties, in order (passed through).
    pub user_properties: Vec<(String, String)>,
    /// 0x27 maximum packet size.
    pub maximum_packet_size: Option<u32>,
    /// 0x28 wildcard subscription available.
    pub wildcard_available: Option<u8>,
    /// 0x29 subscription identifiers available.
    pub subscription_ids_available: Option<u8>,
    /// 0x2A shared subscription available.
    pub shared_available: Option<u8>,
}

/// A will message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Where it is published.
    pub topic: String,
    /// What.
    pub payload: Bytes,
    /// With which QoS.
    pub qos: QoS,
    /// Whether retained.
    pub retain: bool,
    /// Will properties (MQTT 5).
    pub properties: Properties,
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level.
    pub protocol: Protocol,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    /// Keep alive, seconds; 0 disables it.
    pub keep_alive: u16,
    /// The client identifier (may be empty).
    pub client_id: String,
    /// The will.
    pub will: Option<Will>,
    /// The user name.
    pub username: Option<String>,
    /// The password.
    pub password: Option<Bytes>,
    /// Properties (MQTT 5).
    pub properties: Properties,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether a stored session was resumed.
    pub session_present: bool,
    /// The return code (3.1.1) or reason code (5.0).
    pub code: u8,
    /// Properties (MQTT 5).
    pub properties: Properties,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// A re-delivery.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// The topic name.
    pub topic: String,
    /// The packet identifier; present exactly when `qos > 0`.
    pub packet_id: Option<u16>,
    /// The payload.
    pub payload: Bytes,
    /// Properties (MQTT 5).
    pub properties: Properties,
}

impl Publish {
    /// A publish without packet id and properties.
    pub fn new(topic: impl Into<String>, qos: QoS, payload: impl Into<Bytes>) -> Self {
        Self {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            payload: payload.into(),
            properties: Properties::default(),
        }
    }
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The packet identifier.
    pub packet_id: u16,
    /// The reason code (MQTT 5; 0 in 3.1.1).
    pub reason: u8,
    /// Properties (MQTT 5).
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement.
    pub fn new(packet_id: u16) -> Self {
        Self {
            packet_id,
            reason: reason::SUCCESS,
            properties: Properties::default(),
        }
    }
}

/// Subscription options of one filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubOptions {
    /// The maximum QoS.
    pub qos: QoS,
    /// MQTT 5: do not send the client its own publications.
    pub no_local: bool,
    /// MQTT 5: keep the retain flag when forwarding.
    pub retain_as_published: bool,
    /// MQTT 5: 0 send retained, 1 only for new subscriptions, 2 never.
    pub retain_handling: u8,
}

impl SubOptions {
    /// Options with a QoS and defaults otherwise.
    pub fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }
    }
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The packet identifier.
    pub packet_id: u16,
    /// The filters and their options.
    pub filters: Vec<(String, SubOptions)>,
    /// Properties (MQTT 5).
    pub properties: Properties,
}

/// SUBACK or UNSUBACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The packet identifier.
    pub packet_id: u16,
    /// One code per filter (UNSUBACK in 3.1.1 carries none).
    pub codes: Vec<u8>,
    /// Properties (MQTT 5).
    pub properties: Properties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The packet identifier.
    pub packet_id: u16,
    /// The filters.
    pub filters: Vec<String>,
    /// Properties (MQTT 5).
    pub properties: Properties,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The reason code (MQTT 5).
    pub reason: u8,
    /// Properties (MQTT 5).
    pub properties: Properties,
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(Ack),
    PubRec(Ack),
    PubRel(Ack),
    PubComp(Ack),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(SubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
}

/// Encoder and incremental decoder for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    /// The protocol in use; set by a decoded CONNECT.
    pub protocol: Protocol,
    /// The largest packet accepted, fixed header included.
    pub max_packet_size: usize,
}

impl Codec {
    /// A codec for `protocol` refusing packets above `max_packet_size` bytes.
    pub fn new(protocol: Protocol, max_packet_size: usize) -> Self {
        Self {
            protocol,
            max_packet_size,
        }
    }

    /// Decodes one packet from the front of `buf`, or returns `Ok(None)` when more bytes are
    /// needed. A decoded CONNECT sets [`Codec::protocol`].
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let mut len: usize = 0;
        let mut header = 1;
        loop {
            if header > 4 {
                return Err(CodecError::BadRemainingLength);
            }
            let Some(&b) = buf.get(header) else {
                return Ok(None);
            };
            len |= ((b & 0x7F) as usize) << (7 * (header - 1));
            header += 1;
            if b & 0x80 == 0 {
                // A multi-byte encoding of a value that fits in fewer bytes is still legal.
                break;
            }
        }
        let total = header + len;
        if total > self.max_packet_size {
            return Err(CodecError::TooLarge {
                size: total,
                max: self.max_packet_size,
            });
        }
        if buf.len() < total {
            // Reserve only up to the declared (and already bounded) size.
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let first = buf[0];
        let mut frame = buf.split_to(total).freeze();
        frame.advance(header);
        let packet = decode_body(first, frame, self.protocol)?;
        if let Packet::Connect(c) = &packet {
            self.protocol = c.protocol;
        }
        Ok(Some(packet))
    }

    /// Appends `packet` to `out` in the codec's protocol.
    pub fn encode(&self, packet: &Packet, out: &mut BytesMut) -> Result<(), CodecError> {
        encode(packet, self.protocol, out)
    }
}

// ---- reading -------------------------------------------------------------------------------

struct Reader {
    b: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), CodecError> {
        if self.b.remaining() < n {
            Err(CodecError::Malformed("packet ends early"))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        Ok(self.b.get_u8())
    }
    fn u16(&mut self) -> Result<u16, CodecError> {
        self.need(2)?;
        Ok(self.b.get_u16())
    }
    fn u32(&mut self) -> Result<u32, CodecError> {
        self.need(4)?;
        Ok(self.b.get_u32())
    }
    fn varint(&mut self) -> Result<u32, CodecError> {
        let mut v: u32 = 0;
        for i in 0..4 {
            let b = self.u8()?;
            v |= u32::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }
    fn binary(&mut self) -> Result<Bytes, CodecError> {
        let n = self.u16()? as usize;
        self.need(n)?;
        Ok(self.b.split_to(n))
    }
    fn string(&mut self) -> Result<String, CodecError> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw).map_err(|_| CodecError::BadString)?;
        if s.contains('\0') {
            return Err(CodecError::BadString);
        }
        Ok(s.to_owned())
    }
    fn rest(&mut self) -> Bytes {
        self.b.split_off(0)
    }
    fn is_empty(&self) -> bool {
        !self.b.has_remaining()
    }
    fn properties(&mut self, protocol: Protocol) -> Result<Properties, CodecError> {
        let mut p = Properties::default();
        if protocol == Protocol::V311 {
            return Ok(p);
        }
        let len = self.varint()? as usize;
        self.need(len)?;
        let mut r = Reader {
            b: self.b.split_to(len),
        };
        while !r.is_empty() {
            let id = r.varint()?;
            match id {
                0x01 => p.payload_format = Some(r.u8()?),
                0x02 => p.message_expiry = Some(r.u32()?),
                0x03 => p.content_type = Some(r.string()?),
                0x08 => p.response_topic = Some(r.string()?),
                0x09 => p.correlation_data = Some(r.binary()?),
                0x0B => p.subscription_ids.push(r.varint()?),
                0x11 => p.session_expiry = Some(r.u32()?),
                0x12 => p.assigned_client_id = Some(r.string()?),
                0x13 => p.server_keep_alive = Some(r.u16()?),
                0x15 => p.auth_method = Some(r.string()?),
                0x16 => {
                    r.binary()?;
                }
                0x17 => p.request_problem_info = Some(r.u8()?),
                0x18 => p.will_delay = Some(r.u32()?),
                0x19 => p.request_response_info = Some(r.u8()?),
                0x1A | 0x1C => {
                    r.string()?;
                }
                0x1F => p.reason_string = Some(r.string()?),
                0x21 => p.receive_maximum = Some(r.u16()?),
                0x22 => p.topic_alias_maximum = Some(r.u16()?),
                0x23 => p.topic_alias = Some(r.u16()?),
                0x24 => p.maximum_qos = Some(r.u8()?),
                0x25 => p.retain_available = Some(r.u8()?),
                0x26 => {
                    let k = r.string()?;
                    let v = r.string()?;
                    p.user_properties.push((k, v));
                }
                0x27 => p.maximum_packet_size = Some(r.u32()?),
                0x28 => p.wildcard_available = Some(r.u8()?),
                0x29 => p.subscription_ids_available = Some(r.u8()?),
                0x2A => p.shared_available = Some(r.u8()?),
                _ => return Err(CodecError::Malformed("unknown property")),
            }
        }
        Ok(p)
    }
}

/// Whether `topic` is a valid PUBLISH topic name: non-empty, no wildcards.
pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#'])
}

/// Whether `filter` is a valid topic filter: non-empty, `+` and `#` only as whole levels, `#`
/// only last.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_some() => return false,
            "#" | "+" => {}
            l if l.contains(['+', '#']) => return false,
            _ => {}
        }
    }
    true
}

fn decode_body(first: u8, body: Bytes, protocol: Protocol) -> Result<Packet, CodecError> {
    let kind = first >> 4;
    let flags = first & 0x0F;
    let mut r = Reader { b: body };
    let expect_flags = |want: u8| {
        if flags == want {
            Ok(())
        } else {
            Err(CodecError::ReservedFlags)
        }
    };
    let packet = match kind {
        1 => {
            expect_flags(0)?;
            Packet::Connect(Box::new(decode_connect(&mut r)?))
        }
        2 => {
            expect_flags(0)?;
            let ack_flags = r.u8()?;
            if ack_flags & 0xFE != 0 {
                return Err(CodecError::ReservedFlags);
            }
            let code = r.u8()?;
            let properties = r.properties(protocol)?;
            Packet::ConnAck(ConnAck {
                session_present: ack_flags & 1 == 1,
                code,
                properties,
            })
        }
        3 => {
            let qos = QoS::from_u8((flags >> 1) & 3)?;
            let dup = flags & 8 != 0;
            if qos == QoS::AtMostOnce && dup {
                return Err(CodecError::Malformed("DUP set on a QoS 0 publish"));
            }
            let topic = r.string()?;
            let packet_id = if qos == QoS::AtMostOnce {
                None
            } else {
                match r.u16()? {
                    0 => return Err(CodecError::Malformed("packet identifier 0")),
                    id => Some(id),
                }
            };
            let properties = r.properties(protocol)?;
            if !valid_topic(&topic) {
                return Err(CodecError::BadTopic);
            }
            Packet::Publish(Publish {
                dup,
                qos,
                retain: flags & 1 != 0,
                topic,
                packet_id,
                payload: r.rest(),
                properties,
            })
        }
        4..=7 => {
            expect_flags(if kind == 6 { 2 } else { 0 })?;
            let packet_id = r.u16()?;
            let (reason, properties) = if protocol == Protocol::V5 && !r.is_empty() {
                let reason = r.u8()?;
                let props = if r.is_empty() {
                    Properties::default()
                } else {
                    r.properties(protocol)?
                };
                (reason, props)
            } else {
                (reason::SUCCESS, Properties::default())
            };
            let ack = Ack {
                packet_id,
                reason,
                properties,
            };
            match kind {
                4 => Packet::PubAck(ack),
                5 => Packet::PubRec(ack),
                6 => Packet::PubRel(ack),
                _ => Packet::PubComp(ack),
            }
        }
        8 => {
            expect_flags(2)?;
            let packet_id = r.u16()?;
            let properties = r.properties(protocol)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                let filter = r.string()?;
                let o = r.u8()?;
                let reserved = if protocol == Protocol::V5 { 0xC0 } else { 0xFC };
                if o & reserved != 0 {
                    return Err(CodecError::ReservedFlags);
                }
                let opts = SubOptions {
                    qos: QoS::from_u8(o & 3)?,
                    no_local: o & 4 != 0,
                    retain_as_published: o & 8 != 0,
                    retain_handling: (o >> 4) & 3,
                };
                if opts.retain_handling == 3 {
                    return Err(CodecError::Malformed("retain handling 3"));
                }
                if !valid_filter(&filter) {
                    return Err(CodecError::BadTopicFilter);
                }
                filters.push((filter, opts));
            }
            if filters.is_empty() {
                return Err(CodecError::Malformed("SUBSCRIBE without filters"));
            }
            Packet::Subscribe(Subscribe {
                packet_id,
                filters,
                properties,
            })
        }
        9 | 11 => {
            expect_flags(0)?;
            let packet_id = r.u16()?;
            let properties = r.properties(protocol)?;
            // A 3.1.1 UNSUBACK has no payload: anything left is trailing garbage.
            let codes = if kind == 11 && protocol == Protocol::V311 {
                Vec::new()
            } else {
                r.rest().to_vec()
            };
            let ack = SubAck {
                packet_id,
                codes,
                properties,
            };
            if kind == 9 {
                Packet::SubAck(ack)
            } else {
                Packet::UnsubAck(ack)
            }
        }
        10 => {
            expect_flags(2)?;
            let packet_id = r.u16()?;
            let properties = r.properties(protocol)?;
            let mut filters = Vec::new();
            while !r.is_empty() {
                let f = r.string()?;
                if !valid_filter(&f) {
                    return Err(CodecError::BadTopicFilter);
                }
                filters.push(f);
            }
            if filters.is_empty() {
                return Err(CodecError::Malformed("UNSUBSCRIBE without filters"));
            }
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        }
        12 | 13 => {
            expect_flags(0)?;
            if !r.is_empty() {
                return Err(CodecError::Malformed("PINGREQ/PINGRESP with a body"));
            }
            if kind == 12 {
                Packet::PingReq
            } else {
                Packet::PingResp
            }
        }
        14 => {
            expect_flags(0)?;
            let (reason, properties) = if protocol == Protocol::V5 && !r.is_empty() {
                let reason = r.u8()?;
                let props = if r.is_empty() {
                    Properties::default()
                } else {
                    r.properties(protocol)?
                };
                (reason, props)
            } else {
                (reason::SUCCESS, Properties::default())
            };
            Packet::Disconnect(Disconnect { reason, properties })
        }
        k => return Err(CodecError::PacketType(k)),
    };
    if !r.is_empty() {
        return Err(CodecError::Malformed("trailing bytes"));
    }
    Ok(packet)
}

fn decode_connect(r: &mut Reader) -> Result<Connect, CodecError> {
    let name = r.binary()?;
    let level = r.u8()?;
    if &name[..] != b"MQTT" {
        return Err(CodecError::UnsupportedProtocol(level));
    }
    let protocol = match level {
        4 => Protocol::V311,
        5 => Protocol::V5,
        l => return Err(CodecError::UnsupportedProtocol(l)),
    };
    let flags = r.u8()?;
    if flags & 1 != 0 {
        return Err(CodecError::ReservedFlags);
    }
    let keep_alive = r.u16()?;
    let properties = r.properties(protocol)?;
    let client_id = r.string()?;
    let will_flag = flags & 0x04 != 0;
    let will_qos = QoS::from_u8((flags >> 3) & 3)?;
    let will_retain = flags & 0x20 != 0;
    if !will_flag && (will_qos != QoS::AtMostOnce || will_retain) {
        return Err(CodecError::Malformed("will QoS or retain without a will"));
    }
    let will = if will_flag {
        let properties = r.properties(protocol)?;
        let topic = r.string()?;
        if !valid_topic(&topic) {
            return Err(CodecError::BadTopic);
        }
        let payload = r.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: will_retain,
            properties,
        })
    } else {
        None
    };
    let username = if flags & 0x80 != 0 {
        Some(r.string()?)
    } else {
        None
    };
    if protocol == Protocol::V311 && flags & 0x40 != 0 && username.is_none() {
        return Err(CodecError::Malformed("password without user name"));
    }
    let password = if flags & 0x40 != 0 {
        Some(r.binary()?)
    } else {
        None
    };
    Ok(Connect {
        protocol,
        clean_start: flags & 0x02 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

// ---- writing -------------------------------------------------------------------------------

fn put_varint(out: &mut BytesMut, mut v: usize) -> Result<(), CodecError> {
    if v > 268_435_455 {
        return Err(CodecError::TooLarge {
            size: v,
            max: 268_435_455,
        });
    }
    loop {
        let mut b = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if v == 0 {
            return Ok(());
        }
    }
}

fn put_binary(out: &mut BytesMut, b: &[u8]) -> Result<(), CodecError> {
    let n = u16::try_from(b.len()).map_err(|_| CodecError::Malformed("field over 65535 bytes"))?;
    out.put_u16(n);
    out.put_slice(b);
    Ok(())
}

fn put_properties(
    out: &mut BytesMut,
    p: &Properties,
    protocol: Protocol,
) -> Result<(), CodecError> {
    if protocol == Protocol::V311 {
        return Ok(());
    }
    let mut b = BytesMut::new();
    macro_rules! prop {
        ($field:expr, $id:literal, $put:ident) => {
            if let Some(v) = $field {
                b.put_u8($id);
                b.$put(v);
            }
        };
    }
    prop!(p.payload_format, 0x01, put_u8);
    prop!(p.message_expiry, 0x02, put_u32);
    if let Some(v) = &p.content_type {
        b.put_u8(0x03);
        put_binary(&mut b, v.as_bytes())?;
    }
    if let Some(v) = &p.response_topic {
        b.put_u8(0x08);
        put_binary(&mut b, v.as_bytes())?;
    }
    if let Some(v) = &p.correlation_data {
        b.put_u8(0x09);
        put_binary(&mut b, v)?;
    }
    for id in &p.subscription_ids {
        b.put_u8(0x0B);
        put_varint(&mut b, *id as usize)?;
    }
    prop!(p.session_expiry, 0x11, put_u32);
    if let Some(v) = &p.assigned_client_id {
        b.put_u8(0x12);
        put_binary(&mut b, v.as_bytes())?;
    }
    prop!(p.server_keep_alive, 0x13, put_u16);
    if let Some(v) = &p.auth_method {
        b.put_u8(0x15);
        put_binary(&mut b, v.as_bytes())?;
    }
    prop!(p.request_problem_info, 0x17, put_u8);
    prop!(p.will_delay, 0x18, put_u32);
    prop!(p.request_response_info, 0x19, put_u8);
    if let Some(v) = &p.reason_string {
        b.put_u8(0x1F);
        put_binary(&mut b, v.as_bytes())?;
    }
    prop!(p.receive_maximum, 0x21, put_u16);
    prop!(p.topic_alias_maximum, 0x22, put_u16);
    prop!(p.topic_alias, 0x23, put_u16);
    prop!(p.maximum_qos, 0x24, put_u8);
    prop!(p.retain_available, 0x25, put_u8);
    for (k, v) in &p.user_properties {
        b.put_u8(0x26);
        put_binary(&mut b, k.as_bytes())?;
        put_binary(&mut b, v.as_bytes())?;
    }
    prop!(p.maximum_packet_size, 0x27, put_u32);
    prop!(p.wildcard_available, 0x28, put_u8);
    prop!(p.subscription_ids_available, 0x29, put_u8);
    prop!(p.shared_available, 0x2A, put_u8);
    put_varint(out, b.len())?;
    out.put_slice(&b);
    Ok(())
}

/// Appends `packet`, encoded for `protocol`, to `out`.
pub fn encode(packet: &Packet, protocol: Protocol, out: &mut BytesMut) -> Result<(), CodecError> {
    let v5 = protocol == Protocol::V5;
    let mut body = BytesMut::new();
    let first: u8 = match packet {
        Packet::Connect(c) => {
            put_binary(&mut body, b"MQTT")?;
            body.put_u8(match c.protocol {
                Protocol::V311 => 4,
                Protocol::V5 => 5,
            });
            let mut flags = 0u8;
            if c.clean_start {
                flags |= 2;
            }
            if let Some(w) = &c.will {
                flags |= 4 | ((w.qos as u8) << 3);
                if w.retain {
                    flags |= 0x20;
                }
            }
            if c.password.is_some() {
                flags |= 0x40;
            }
            if c.username.is_some() {
                flags |= 0x80;
            }
            body.put_u8(flags);
            body.put_u16(c.keep_alive);
            put_properties(&mut body, &c.properties, c.protocol)?;
            put_binary(&mut body, c.client_id.as_bytes())?;
            if let Some(w) = &c.will {
                put_properties(&mut body, &w.properties, c.protocol)?;
                put_binary(&mut body, w.topic.as_bytes())?;
                put_binary(&mut body, &w.payload)?;
            }
            if let Some(u) = &c.username {
                put_binary(&mut body, u.as_bytes())?;
            }
            if let Some(p) = &c.password {
                put_binary(&mut body, p)?;
            }
            0x10
        }
        Packet::ConnAck(a) => {
            body.put_u8(u8::from(a.session_present));
            body.put_u8(a.code);
            put_properties(&mut body, &a.properties, protocol)?;
            0x20
        }
        Packet::Publish(p) => {
            put_binary(&mut body, p.topic.as_bytes())?;
            if p.qos != QoS::AtMostOnce {
                body.put_u16(p.packet_id.unwrap_or(0));
            }
            put_properties(&mut body, &p.properties, protocol)?;
            body.put_slice(&p.payload);
            0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubRel(a) | Packet::PubComp(a) => {
            body.put_u16(a.packet_id);
            let has_props = a.properties != Properties::default();
            if v5 && (a.reason != 0 || has_props) {
                body.put_u8(a.reason);
                if has_props {
                    put_properties(&mut body, &a.properties, protocol)?;
                }
            }
            match packet {
                Packet::PubAck(_) => 0x40,
                Packet::PubRec(_) => 0x50,
                Packet::PubRel(_) => 0x62,
                _ => 0x70,
            }
        }
        Packet::Subscribe(s) => {
            body.put_u16(s.packet_id);
            put_properties(&mut body, &s.properties, protocol)?;
            for (f, o) in &s.filters {
                put_binary(&mut body, f.as_bytes())?;
                body.put_u8(
                    (o.qos as u8)
                        | (u8::from(o.no_local) << 2)
                        | (u8::from(o.retain_as_published) << 3)
                        | (o.retain_handling << 4),
                );
            }
            0x82
        }
        Packet::SubAck(a) | Packet::UnsubAck(a) => {
            body.put_u16(a.packet_id);
            put_properties(&mut body, &a.properties, protocol)?;
            let is_sub = matches!(packet, Packet::SubAck(_));
            if is_sub || v5 {
                body.put_slice(&a.codes);
            }
            if is_sub { 0x90 } else { 0xB0 }
        }
        Packet::Unsubscribe(u) => {
            body.put_u16(u.packet_id);
            put_properties(&mut body, &u.properties, protocol)?;
            for f in &u.filters {
                put_binary(&mut body, f.as_bytes())?;
            }
            0xA2
        }
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(d) => {
            let has_props = d.properties != Properties::default();
            if v5 && (d.reason != 0 || has_props) {
                body.put_u8(d.reason);
                if has_props {
                    put_properties(&mut body, &d.properties, protocol)?;
                }
            }
            0xE0
        }
    };
    out.put_u8(first);
    put_varint(out, body.len())?;
    out.put_slice(&body);
    Ok(())
}

/// The fuzz target's body: decodes `data` as a stream of packets in both protocols, and checks
/// that whatever decodes re-encodes and decodes to the same packet. Public for the `fuzz/` crate.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    for protocol in [Protocol::V311, Protocol::V5] {
        let mut buf = BytesMut::from(data);
        let mut codec = Codec::new(protocol, 4096);
        while let Ok(Some(p)) = codec.decode(&mut buf) {
            let mut wire = BytesMut::new();
            if encode(&p, codec.protocol, &mut wire).is_ok() {
                let mut again = Codec::new(codec.protocol, usize::MAX);
                let back = again.decode(&mut wire);
                assert_eq!(back, Ok(Some(p)), "re-encoding changed the packet");
            }
        }
    }
}

#[cfg(test)]
mod tests;
