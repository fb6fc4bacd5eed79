//! The sans-IO MQTT session: one connection's protocol state, driven by decoded packets and
//! `now`, producing [`Action`]s (packets to send, work for the broker) and a deadline.
//!
//! It never touches a socket, a clock or the broker. The driver feeds it packets
//! ([`Session::handle`]), answers the work it asks for ([`Session::authenticated`],
//! [`Session::published`], [`Session::subscribed`]), hands it messages to deliver
//! ([`Session::deliver`]), and closes the connection when it sees [`Action::Close`].
//!
//! Policies it implements:
//! - **Keep-alive**: a client silent for 1.5 times its keep-alive is disconnected
//!   ([`Session::deadline`]). Over MQTT 5 the hub may impose its own keep-alive (server keep
//!   alive) when the client asks for none or more than the configured maximum.
//! - **Flow control**: at most `min(max_inflight, client receive maximum)` QoS 1/2 messages
//!   unacknowledged towards the client; the rest wait in a bounded queue. A full queue makes the
//!   client a slow consumer: [`Session::deliver`] returns `Err` and the session closes.
//! - **Exactly once inbound**: a QoS 2 packet id is remembered from PUBLISH to PUBREL, so a
//!   re-sent PUBLISH is acknowledged but not routed twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hub_core::{Credentials, DeviceId, DisconnectReason, Principal, Secret, Timestamp};

use crate::codec::{
    Ack, ConnAck, Connect, Disconnect, Packet, Properties, Protocol, Publish, QoS, SubAck,
    SubOptions, Will, reason,
};
use crate::config::TransportConfig;

/// A message travelling through the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published with (or is delivered with).
    pub qos: QoS,
    /// The retain flag.
    pub retain: bool,
    /// MQTT 5 properties passed through (user properties, content type, correlation data...).
    pub properties: Properties,
}

impl Message {
    /// A message without properties.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>, qos: QoS) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain: false,
            properties: Properties::default(),
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Write this packet.
    Send(Packet),
    /// Check these credentials and answer with [`Session::authenticated`].
    Authenticate(Credentials),
    /// Route this message (after access control). A publication from the client names its
    /// packet id and QoS so that the driver answers with [`Session::published`]; a will has
    /// `ack: None`.
    Publish {
        /// The message.
        message: Message,
        /// The packet id and QoS to acknowledge.
        ack: Option<(u16, QoS)>,
    },
    /// Check and register these filters and answer with [`Session::subscribed`].
    Subscribe {
        /// The SUBSCRIBE packet id.
        packet_id: u16,
        /// The filters.
        filters: Vec<(String, SubOptions)>,
    },
    /// Remove these filters (the session has already answered UNSUBACK).
    Unsubscribe(Vec<String>),
    /// Close the connection after writing what was queued before.
    Close(DisconnectReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitConnect,
    Authenticating,
    Connected,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for PUBACK.
    Ack,
    /// Waiting for PUBREC.
    Rec,
    /// Waiting for PUBCOMP.
    Comp,
}

/// The limits a session applies, taken from [`TransportConfig`].
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Most unacknowledged QoS 1/2 messages towards the client.
    pub max_inflight: u16,
    /// Most unacknowledged QoS 2 publications from the client.
    pub receive_maximum: u16,
    /// Most messages waiting beyond the in-flight window.
    pub max_queued: usize,
    /// Keep-alive imposed when the client asks for none (MQTT 5).
    pub default_keep_alive: u16,
    /// Longest keep-alive allowed (MQTT 5).
    pub max_keep_alive: u16,
    /// Time allowed between connection and CONNECT.
    pub connect_timeout: Duration,
    /// Longest session expiry granted.
    pub max_session_expiry: u32,
    /// The maximum packet size announced to MQTT 5 clients.
    pub max_packet_size: u32,
}

impl From<&TransportConfig> for SessionLimits {
    fn from(c: &TransportConfig) -> Self {
        Self {
            max_inflight: c.max_inflight.max(1),
            receive_maximum: c.receive_maximum.max(1),
            max_queued: c.max_queued_messages,
            default_keep_alive: c.default_keep_alive_secs,
            max_keep_alive: c.max_keep_alive_secs,
            connect_timeout: TransportConfig::ms(c.connect_timeout_ms),
            max_session_expiry: c.max_session_expiry_secs,
            max_packet_size: u32::try_from(c.max_packet_size).unwrap_or(u32::MAX),
        }
    }
}

/// The delivery queue is full: the client does not keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowConsumer;

/// One connection's MQTT state.
#[derive(Debug)]
pub struct Session {
    state: State,
    protocol: Protocol,
    limits: Arc<SessionLimits>,
    /// The CONNECT packet, from its arrival until the session is authenticated: credentials are
    /// not kept for the life of the connection.
    connect: Option<Box<Connect>>,
    /// The will, once the session is authenticated.
    will: Option<Box<Will>>,
    /// The session expiry granted, in seconds.
    expiry: u32,
    keep_alive: u16,
    last_heard: Timestamp,
    started: Timestamp,
    client_receive_max: u16,
    client_max_packet: u32,
    /// Messages in flight either way, allocated only while there are some: an idle session
    /// holds none.
    flows: Option<Box<Flows>>,
    next_id: u16,
    out: Vec<Action>,
}

/// What a session has in flight.
#[derive(Debug, Default)]
struct Flows {
    /// Deliveries to the client awaiting acknowledgement: packet id, message, stage.
    inflight: VecDeque<(u16, Message, Stage)>,
    /// Deliveries waiting for the in-flight window to open.
    queue: VecDeque<Message>,
    /// QoS 2 publications from the client awaiting PUBREL.
    incoming_qos2: Vec<u16>,
}

impl Flows {
    fn is_empty(&self) -> bool {
        self.inflight.is_empty() && self.queue.is_empty() && self.incoming_qos2.is_empty()
    }
}

impl Session {
    /// A session for a connection opened at `now`. Many sessions can share one `Arc` of limits.
    pub fn new(limits: impl Into<Arc<SessionLimits>>, now: Timestamp) -> Self {
        let limits = limits.into();
        Self {
            state: State::AwaitConnect,
            protocol: Protocol::V311,
            limits,
            connect: None,
            will: None,
            expiry: 0,
            keep_alive: 0,
            last_heard: now,
            started: now,
            client_receive_max: u16::MAX,
            client_max_packet: u32::MAX,
            flows: None,
            next_id: 1,
            out: Vec::new(),
        }
    }

    /// Whether actions are waiting to be taken.
    pub fn has_actions(&self) -> bool {
        !self.out.is_empty()
    }

    /// The actions produced so far, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// The protocol the client speaks (3.1.1 until CONNECT says otherwise).
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The CONNECT packet, from its arrival until the session is authenticated.
    pub fn connect_packet(&self) -> Option<&Connect> {
        self.connect.as_deref()
    }

    /// Whether the session is closed.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The effective keep-alive in seconds (0: none).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// When the session must be checked again: the CONNECT deadline, or 1.5 times the keep-alive
    /// after the client was last heard. `None` when no deadline applies.
    pub fn deadline(&self) -> Option<Timestamp> {
        match self.state {
            State::AwaitConnect | State::Authenticating => {
                Some(self.started.saturating_add(self.limits.connect_timeout))
            }
            State::Connected if self.keep_alive > 0 => Some(
                self.last_heard
                    .saturating_add(Duration::from_millis(u64::from(self.keep_alive) * 1500)),
            ),
            _ => None,
        }
    }

    /// Closes the session if its deadline has passed.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if let Some(d) = self.deadline()
            && now >= d
        {
            if self.state == State::Connected {
                self.close_with(
                    reason::KEEP_ALIVE_TIMEOUT,
                    DisconnectReason::KeepAliveTimeout,
                    true,
                );
            } else {
                self.close_silently(DisconnectReason::KeepAliveTimeout);
            }
        }
    }

    /// The server closes the session (shutdown, takeover, slow consumer): MQTT 5 clients get a
    /// DISCONNECT with `code`. The will is published unless the server is shutting down cleanly
    /// and `publish_will` is false.
    pub fn server_close(&mut self, code: u8, why: DisconnectReason, publish_will: bool) {
        if self.state == State::Connected {
            self.close_with(code, why, publish_will);
        } else {
            self.close_silently(why);
        }
    }

    /// The connection broke or sent malformed bytes (`code` is the MQTT 5 reason, if the client
    /// should be told).
    pub fn connection_lost(&mut self, code: Option<u8>) {
        match (self.state, code) {
            (State::Connected, Some(code)) => {
                self.close_with(code, DisconnectReason::ConnectionLost, true)
            }
            (State::Connected, None) => {
                self.publish_will();
                self.close_silently(DisconnectReason::ConnectionLost);
            }
            (State::AwaitConnect, Some(code)) if self.protocol == Protocol::V5 => {
                self.connack_refusal(code);
            }
            _ => self.close_silently(DisconnectReason::ConnectionLost),
        }
    }

    /// Feeds one decoded packet received at `now`.
    pub fn handle(&mut self, now: Timestamp, packet: Packet) {
        if self.state == State::Closed {
            return;
        }
        self.last_heard = now;
        match (self.state, packet) {
            (State::AwaitConnect, Packet::Connect(c)) => self.on_connect(c),
            (State::AwaitConnect | State::Authenticating, _) => {
                // Anything before a successful CONNECT is a protocol error.
                self.close_silently(DisconnectReason::ConnectionLost);
            }
            (State::Connected, Packet::Publish(p)) => self.on_publish(p),
            (State::Connected, Packet::PubAck(a)) => {
                self.settle(a.packet_id, Stage::Ack);
            }
            (State::Connected, Packet::PubRec(a)) => {
                let pos = self
                    .flows()
                    .inflight
                    .iter()
                    .position(|(id, _, s)| *id == a.packet_id && *s == Stage::Rec);
                if let Some(pos) = pos {
                    if a.reason >= 0x80 {
                        self.flows_mut().inflight.remove(pos);
                        self.pump();
                    } else {
                        self.flows_mut().inflight[pos].2 = Stage::Comp;
                        self.send(Packet::PubRel(Ack::new(a.packet_id)));
                    }
                } else if self
                    .flows()
                    .inflight
                    .iter()
                    .any(|(id, _, _)| *id == a.packet_id)
                {
                    // A repeated PUBREC: repeat the PUBREL.
                    self.send(Packet::PubRel(Ack::new(a.packet_id)));
                }
            }
            (State::Connected, Packet::PubComp(a)) => {
                self.settle(a.packet_id, Stage::Comp);
            }
            (State::Connected, Packet::PubRel(a)) => {
                let known = self
                    .flows()
                    .incoming_qos2
                    .iter()
                    .position(|id| *id == a.packet_id);
                let mut ack = Ack::new(a.packet_id);
                match known {
                    Some(pos) => {
                        self.flows_mut().incoming_qos2.swap_remove(pos);
                    }
                    None if self.protocol == Protocol::V5 => {
                        ack.reason = reason::PACKET_ID_NOT_FOUND;
                    }
                    None => {}
                }
                self.send(Packet::PubComp(ack));
            }
            (State::Connected, Packet::Subscribe(s)) => {
                self.out.push(Action::Subscribe {
                    packet_id: s.packet_id,
                    filters: s.filters,
                });
            }
            (State::Connected, Packet::Unsubscribe(u)) => {
                let codes = if self.protocol == Protocol::V5 {
                    vec![reason::SUCCESS; u.filters.len()]
                } else {
                    Vec::new()
                };
                self.out.push(Action::Unsubscribe(u.filters));
                self.send(Packet::UnsubAck(SubAck {
                    packet_id: u.packet_id,
                    codes,
                    properties: Properties::default(),
                }));
            }
            (State::Connected, Packet::PingReq) => self.send(Packet::PingResp),
            (State::Connected, Packet::Disconnect(d)) => {
                if d.reason == reason::DISCONNECT_WITH_WILL {
                    self.publish_will();
                }
                self.will = None;
                self.state = State::Closed;
                self.out.push(Action::Close(DisconnectReason::Graceful));
            }
            (State::Connected, _) => {
                // A second CONNECT, or a server-to-client packet.
                self.close_with(
                    reason::PROTOCOL_ERROR,
                    DisconnectReason::ConnectionLost,
                    true,
                );
            }
            (State::Closed, _) => {}
        }
    }

    fn on_connect(&mut self, c: Box<Connect>) {
        self.protocol = c.protocol;
        if c.properties.auth_method.is_some() {
            // Extended (AUTH packet) authentication is not offered.
            self.connack_refusal(reason::BAD_USER_NAME_OR_PASSWORD);
            return;
        }
        if c.client_id.is_empty() && !c.clean_start && c.protocol == Protocol::V311 {
            self.connack_refusal(reason::CLIENT_ID_NOT_VALID);
            return;
        }
        let credentials = match credentials(&c) {
            Some(creds) => creds,
            None => {
                self.connack_refusal(reason::BAD_USER_NAME_OR_PASSWORD);
                return;
            }
        };
        self.client_receive_max = c.properties.receive_maximum.unwrap_or(u16::MAX).max(1);
        self.client_max_packet = c.properties.maximum_packet_size.unwrap_or(u32::MAX);
        self.keep_alive = match c.protocol {
            Protocol::V5 if c.keep_alive == 0 => self.limits.default_keep_alive,
            Protocol::V5 => c.keep_alive.min(self.limits.max_keep_alive),
            // 3.1.1 has no way to tell the client another value: hold it to its own.
            Protocol::V311 => c.keep_alive,
        };
        self.expiry = match c.protocol {
            Protocol::V311 if c.clean_start => 0,
            Protocol::V311 => self.limits.max_session_expiry,
            Protocol::V5 => c
                .properties
                .session_expiry
                .unwrap_or(0)
                .min(self.limits.max_session_expiry),
        };
        self.connect = Some(c);
        self.state = State::Authenticating;
        self.out.push(Action::Authenticate(credentials));
    }

    /// The session expiry the hub grants, in seconds (0: the session ends with the connection).
    pub fn session_expiry(&self) -> u32 {
        self.expiry
    }

    /// The outcome of [`Action::Authenticate`]. On success the driver has registered the session
    /// with the broker and says whether a stored session was resumed; `assigned_client_id` is set
    /// when the client sent an empty one.
    pub fn authenticated(
        &mut self,
        result: Result<(), u8>,
        session_present: bool,
        assigned_client_id: Option<String>,
    ) {
        if self.state != State::Authenticating {
            return;
        }
        if let Err(code) = result {
            self.connack_refusal(code);
            return;
        }
        let v5 = self.protocol == Protocol::V5;
        let mut properties = Properties::default();
        if v5 {
            let asked = self.connect.as_ref().map_or(0, |c| c.keep_alive);
            if asked != self.keep_alive {
                properties.server_keep_alive = Some(self.keep_alive);
            }
            let asked_expiry = self
                .connect
                .as_ref()
                .and_then(|c| c.properties.session_expiry)
                .unwrap_or(0);
            if asked_expiry != self.session_expiry() {
                properties.session_expiry = Some(self.session_expiry());
            }
            properties.receive_maximum = Some(self.limits.receive_maximum);
            properties.maximum_packet_size = Some(self.limits.max_packet_size);
            properties.topic_alias_maximum = Some(0);
            properties.shared_available = Some(0);
            properties.subscription_ids_available = Some(0);
            properties.assigned_client_id = assigned_client_id;
        }
        self.state = State::Connected;
        self.will = self.connect.take().and_then(|c| c.will).map(Box::new);
        self.send(Packet::ConnAck(ConnAck {
            session_present,
            code: 0,
            properties,
        }));
    }

    fn on_publish(&mut self, p: Publish) {
        if p.properties.topic_alias.is_some() {
            self.close_with(
                reason::TOPIC_ALIAS_INVALID,
                DisconnectReason::ConnectionLost,
                true,
            );
            return;
        }
        let ack = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => None,
            (QoS::ExactlyOnce, Some(id)) if self.flows().incoming_qos2.contains(&id) => {
                // A re-sent PUBLISH already routed: acknowledge, do not route again.
                self.send(Packet::PubRec(Ack::new(id)));
                return;
            }
            (QoS::ExactlyOnce, Some(_))
                if self.flows().incoming_qos2.len() >= usize::from(self.limits.receive_maximum) =>
            {
                self.close_with(
                    reason::RECEIVE_MAXIMUM_EXCEEDED,
                    DisconnectReason::ConnectionLost,
                    true,
                );
                return;
            }
            (qos, Some(id)) => Some((id, qos)),
        };
        let mut properties = p.properties;
        properties.subscription_ids.clear();
        self.out.push(Action::Publish {
            message: Message {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties,
            },
            ack,
        });
    }

    /// The outcome of routing a client's publication: `code` is 0 on success or an MQTT 5 reason
    /// code (3.1.1 clients are acknowledged without one).
    pub fn published(&mut self, packet_id: u16, qos: QoS, code: u8) {
        if self.state != State::Connected {
            return;
        }
        let mut ack = Ack::new(packet_id);
        if self.protocol == Protocol::V5 {
            ack.reason = code;
        }
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(Packet::PubAck(ack)),
            QoS::ExactlyOnce => {
                if code < 0x80 {
                    self.flows_mut().incoming_qos2.push(packet_id);
                }
                self.send(Packet::PubRec(ack));
            }
        }
    }

    /// The outcome of [`Action::Subscribe`]: one granted QoS or failure code per filter.
    pub fn subscribed(&mut self, packet_id: u16, codes: Vec<u8>) {
        if self.state != State::Connected {
            return;
        }
        let codes = if self.protocol == Protocol::V311 {
            // 3.1.1 knows only "failure" (0x80).
            codes
                .into_iter()
                .map(|c| if c >= 0x80 { 0x80 } else { c })
                .collect()
        } else {
            codes
        };
        self.send(Packet::SubAck(SubAck {
            packet_id,
            codes,
            properties: Properties::default(),
        }));
    }

    /// Delivers a message to the client (QoS already reduced to the subscription's). QoS 1/2
    /// messages beyond the in-flight window wait in a bounded queue; when it is full the client is
    /// a slow consumer: the session closes and `Err` is returned.
    pub fn deliver(&mut self, message: Message) -> Result<(), SlowConsumer> {
        if self.state == State::Closed {
            return Err(SlowConsumer);
        }
        if self.state != State::Connected || !self.flows().queue.is_empty() || !self.window_open() {
            if message.qos == QoS::AtMostOnce && self.state == State::Connected {
                // QoS 0 is never held back by the QoS 1/2 window.
                self.send_publish(message, None);
                return Ok(());
            }
            if self.flows().queue.len() >= self.limits.max_queued {
                self.close_with(reason::QUOTA_EXCEEDED, DisconnectReason::ServerClosed, true);
                return Err(SlowConsumer);
            }
            self.flows_mut().queue.push_back(message);
            return Ok(());
        }
        self.start_delivery(message);
        Ok(())
    }

    /// Gives back the memory of queues that are empty: an idle session holds no buffers.
    pub fn release_idle_memory(&mut self) {
        if self.flows.as_deref().is_some_and(Flows::is_empty) {
            self.flows = None;
        }
    }

    fn flows(&self) -> &Flows {
        static NONE: Flows = Flows {
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            incoming_qos2: Vec::new(),
        };
        self.flows.as_deref().unwrap_or(&NONE)
    }

    fn flows_mut(&mut self) -> &mut Flows {
        self.flows.get_or_insert_default()
    }

    /// Messages accepted but not yet acknowledged by the client, oldest first, so that a
    /// persistent session keeps them when the connection ends.
    pub fn take_undelivered(&mut self) -> Vec<Message> {
        let Some(flows) = self.flows.as_deref_mut() else {
            return Vec::new();
        };
        let mut v: Vec<Message> = flows
            .inflight
            .drain(..)
            .filter(|(_, _, s)| *s != Stage::Comp)
            .map(|(_, m, _)| m)
            .collect();
        v.extend(flows.queue.drain(..));
        v
    }

    fn window_open(&self) -> bool {
        let window = self.limits.max_inflight.min(self.client_receive_max);
        self.flows().inflight.len() < usize::from(window)
    }

    fn start_delivery(&mut self, message: Message) {
        if message.qos == QoS::AtMostOnce {
            self.send_publish(message, None);
            return;
        }
        let id = self.alloc_id();
        let stage = if message.qos == QoS::AtLeastOnce {
            Stage::Ack
        } else {
            Stage::Rec
        };
        self.flows_mut()
            .inflight
            .push_back((id, message.clone(), stage));
        self.send_publish(message, Some(id));
    }

    fn send_publish(&mut self, m: Message, packet_id: Option<u16>) {
        // MQTT 5: never send more than the client's maximum packet size (approximate: the
        // payload and topic dominate); such a message is dropped for this client.
        if (m.payload.len() + m.topic.len() + 16) as u64 > u64::from(self.client_max_packet) {
            return;
        }
        self.send(Packet::Publish(Publish {
            dup: false,
            qos: m.qos,
            retain: m.retain,
            topic: m.topic,
            packet_id,
            payload: m.payload,
            properties: m.properties,
        }));
    }

    fn alloc_id(&mut self) -> u16 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.flows().inflight.iter().any(|(i, _, _)| *i == id) {
                return id;
            }
        }
    }

    fn settle(&mut self, packet_id: u16, stage: Stage) {
        if let Some(pos) = self
            .flows()
            .inflight
            .iter()
            .position(|(id, _, s)| *id == packet_id && *s == stage)
        {
            self.flows_mut().inflight.remove(pos);
            self.pump();
        }
    }

    fn pump(&mut self) {
        while self.window_open() {
            let Some(m) = self.flows_mut().queue.pop_front() else {
                break;
            };
            self.start_delivery(m);
        }
    }

    fn send(&mut self, p: Packet) {
        self.out.push(Action::Send(p));
    }

    fn publish_will(&mut self) {
        if let Some(w) = self.will.take().map(|w| *w) {
            self.out.push(Action::Publish {
                message: Message {
                    topic: w.topic,
                    payload: w.payload,
                    qos: w.qos,
                    retain: w.retain,
                    properties: Properties {
                        user_properties: w.properties.user_properties,
                        content_type: w.properties.content_type,
                        payload_format: w.properties.payload_format,
                        ..Properties::default()
                    },
                },
                ack: None,
            });
        }
    }

    fn close_with(&mut self, code: u8, why: DisconnectReason, will: bool) {
        if self.state == State::Closed {
            return;
        }
        if self.protocol == Protocol::V5 {
            self.send(Packet::Disconnect(Disconnect {
                reason: code,
                properties: Properties::default(),
            }));
        }
        if will {
            self.publish_will();
        }
        self.state = State::Closed;
        self.out.push(Action::Close(why));
    }

    fn close_silently(&mut self, why: DisconnectReason) {
        if self.state != State::Closed {
            self.state = State::Closed;
            self.out.push(Action::Close(why));
        }
    }

    fn connack_refusal(&mut self, code: u8) {
        let code = if self.protocol == Protocol::V5 {
            code
        } else {
            v311_return_code(code)
        };
        self.send(Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: Properties::default(),
        }));
        self.state = State::Closed;
        self.out
            .push(Action::Close(DisconnectReason::ConnectionLost));
    }
}

/// The MQTT 3.1.1 CONNACK return code closest to an MQTT 5 reason code.
pub fn v311_return_code(code: u8) -> u8 {
    match code {
        0 => 0,
        reason::UNSUPPORTED_PROTOCOL_VERSION => 1,
        reason::CLIENT_ID_NOT_VALID => 2,
        reason::SERVER_UNAVAILABLE | reason::SERVER_SHUTTING_DOWN => 3,
        reason::BAD_USER_NAME_OR_PASSWORD => 4,
        _ => 5,
    }
}

/// The credentials a CONNECT presents: user name = device id with password = access key, or user
/// name `oauth2` (or none) with password = bearer token. `None` without a usable password.
pub fn credentials(c: &Connect) -> Option<Credentials> {
    let password = std::str::from_utf8(c.password.as_deref()?).ok()?;
    if password.is_empty() {
        return None;
    }
    match c.username.as_deref() {
        None | Some("") | Some("oauth2") => Some(Credentials::Bearer(Secret::new(password))),
        Some(user) => {
            let device: DeviceId = user.parse().ok()?;
            Some(Credentials::AccessKey {
                device: Some(device),
                key: Secret::new(password),
            })
        }
    }
}

/// The tenant a principal's MQTT session lives in; `None` for hub-wide services, which do not
/// connect over MQTT.
pub fn principal_tenant(p: &Principal) -> Option<hub_core::TenantId> {
    match p {
        Principal::Device(d) => Some(d.group.tenant()),
        Principal::User(u) => Some(u.group.tenant()),
        Principal::App(a) => Some(a.user().group.tenant()),
        Principal::Service(s) => s.root.as_ref().map(|g| g.tenant()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

#[cfg(test)]
mod tests;
