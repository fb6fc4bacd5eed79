//! Routing: subscriptions with `+` and `#`, retained messages, persistent sessions and topic
//! access control, partitioned by tenant so that tenants never see each other's topics.
//!
//! The routing table lives behind one `std::sync::Mutex` that is never held across an await;
//! deliveries go into each connection's bounded mailbox without waiting, so a slow client never
//! stalls a publisher: its mailbox fills up and it is disconnected.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hub_core::{
    Action as PolicyAction, DeviceId, GroupPath, Principal, Resource, TenantId, Timestamp,
    authorize,
};
use hub_store::RegistryStore;

use crate::codec::{QoS, SubOptions, reason};
use crate::session::Message;

/// Identifies a session: tenant, principal and client id. Two principals never share a session,
/// so a device cannot take over another device's session by choosing its client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct SessionKey {
    pub(crate) tenant: TenantId,
    pub(crate) principal: String,
    pub(crate) client_id: String,
}

/// What a connection shares with the broker and the keep-alive sweep: its mailbox of
/// deliveries, why it was kicked, and its keep-alive deadline. One allocation per connection,
/// instead of a channel (whose first block of slots is allocated up front), a cancellation token
/// and two atomics of their own; an empty mailbox holds no buffer.
#[derive(Debug)]
pub(crate) struct ConnHandle {
    pub(crate) id: u64,
    mailbox: Mutex<Mailbox>,
    capacity: usize,
    /// Why it was kicked (an MQTT 5 reason code, never 0); 0 while it was not.
    kick_reason: AtomicU8,
    /// The keep-alive deadline in milliseconds; `i64::MAX` when there is none.
    pub(crate) deadline: AtomicI64,
}

#[derive(Debug, Default)]
struct Mailbox {
    queue: VecDeque<Message>,
    waker: Option<Waker>,
}

/// What the broker has for a connection's driver.
#[derive(Debug)]
// Moved out at once; boxing would cost an allocation per delivery.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ConnEvent {
    /// Close, with this reason code.
    Kicked(u8),
    /// Deliver this message.
    Deliver(Message),
}

impl ConnHandle {
    /// A handle whose mailbox holds at most `capacity` messages.
    pub(crate) fn new(id: u64, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            id,
            mailbox: Mutex::default(),
            capacity: capacity.max(1),
            kick_reason: AtomicU8::new(0),
            deadline: AtomicI64::new(i64::MAX),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a delivery; `false` when the mailbox is full.
    pub(crate) fn deliver(&self, m: Message) -> bool {
        let mut mailbox = self.lock();
        if mailbox.queue.len() >= self.capacity {
            return false;
        }
        mailbox.queue.push_back(m);
        let waker = mailbox.waker.take();
        drop(mailbox);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Asks the connection to close with `code` (the first reason given wins).
    pub(crate) fn kick(&self, code: u8) {
        debug_assert_ne!(code, 0);
        let _ = self
            .kick_reason
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        let waker = self.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The reason the connection was kicked, if it was.
    pub(crate) fn kicked(&self) -> Option<u8> {
        match self.kick_reason.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Ready with a kick or the next delivery; otherwise wakes `cx` when one arrives.
    pub(crate) fn poll_event(&self, cx: &mut Context<'_>) -> Poll<ConnEvent> {
        if let Some(code) = self.kicked() {
            return Poll::Ready(ConnEvent::Kicked(code));
        }
        let mut mailbox = self.lock();
        if let Some(m) = mailbox.queue.pop_front() {
            if mailbox.queue.is_empty() {
                // Drained: an idle connection keeps no queue buffer.
                mailbox.queue = VecDeque::new();
            }
            return Poll::Ready(ConnEvent::Deliver(m));
        }
        Self::register(&mut mailbox, cx);
        drop(mailbox);
        // A kick between the first check and the registration found no waker to wake.
        match self.kicked() {
            Some(code) => Poll::Ready(ConnEvent::Kicked(code)),
            None => Poll::Pending,
        }
    }

    /// Ready once the connection is kicked; otherwise wakes `cx` on a kick (or a delivery).
    pub(crate) fn poll_kicked(&self, cx: &mut Context<'_>) -> Poll<u8> {
        if let Some(code) = self.kicked() {
            return Poll::Ready(code);
        }
        Self::register(&mut self.lock(), cx);
        match self.kicked() {
            Some(code) => Poll::Ready(code),
            None => Poll::Pending,
        }
    }

    fn register(mailbox: &mut Mailbox, cx: &mut Context<'_>) {
        match &mailbox.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => mailbox.waker = Some(cx.waker().clone()),
        }
    }

    /// Forgets the registered waker (the connection stopped waiting).
    pub(crate) fn unregister_waker(&self) {
        self.lock().waker = None;
    }
}

#[derive(Debug)]
struct SessionEntry {
    principal: Arc<Principal>,
    conn: Option<Arc<ConnHandle>>,
    /// Filter and options, in the order subscribed: a short list (bounded by
    /// `max_subscriptions`), sized exactly, rather than a hash table per session.
    subscriptions: Vec<(Box<str>, SubOptions)>,
    offline: VecDeque<Message>,
    /// Seconds the session outlives its connection (0: removed at once).
    expiry: u32,
    disconnected_at: Option<Timestamp>,
}

#[derive(Debug, Clone)]
struct Sub {
    key: Arc<SessionKey>,
    opts: SubOptions,
}

/// A level of the topic trie. Most nodes have one child and one subscriber (a device's own
/// topics), so children are a short list until there are many, and lists grow one at a time.
#[derive(Debug, Default)]
struct Node {
    children: Children,
    plus: Option<Box<Node>>,
    hash: Vec<Sub>,
    here: Vec<Sub>,
}

/// Children by level: a list searched in order while short, a hash map beyond `FEW_CHILDREN`.
#[derive(Debug)]
// Boxed: a map is 48 bytes inline and rare; nodes with few children are the many.
#[allow(clippy::box_collection)]
enum Children {
    Few(Vec<(Box<str>, Node)>),
    Many(Box<HashMap<Box<str>, Node>>),
}

const FEW_CHILDREN: usize = 8;

impl Default for Children {
    fn default() -> Self {
        Children::Few(Vec::new())
    }
}

impl Children {
    fn get(&self, level: &str) -> Option<&Node> {
        match self {
            Children::Few(v) => v.iter().find(|(l, _)| **l == *level).map(|(_, n)| n),
            Children::Many(m) => m.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut Node> {
        match self {
            Children::Few(v) => v.iter_mut().find(|(l, _)| **l == *level).map(|(_, n)| n),
            Children::Many(m) => m.get_mut(level),
        }
    }

    fn entry(&mut self, level: &str) -> &mut Node {
        if let Children::Few(v) = self
            && v.len() >= FEW_CHILDREN
            && !v.iter().any(|(l, _)| **l == *level)
        {
            *self = Children::Many(Box::new(std::mem::take(v).into_iter().collect()));
        }
        match self {
            Children::Few(v) => {
                let i = match v.iter().position(|(l, _)| **l == *level) {
                    Some(i) => i,
                    None => {
                        v.reserve_exact(1);
                        v.push((level.into(), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Children::Many(m) => m.entry(level.into()).or_default(),
        }
    }

    fn remove(&mut self, level: &str) {
        match self {
            Children::Few(v) => v.retain(|(l, _)| **l != *level),
            Children::Many(m) => {
                m.remove(level);
                if m.capacity() > 64 && m.len() < m.capacity() / 4 {
                    m.shrink_to_fit();
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Children::Few(v) => v.is_empty(),
            Children::Many(m) => m.is_empty(),
        }
    }
}

/// Adds `sub` to `subs`, replacing the same session's, growing the list one at a time.
fn put(subs: &mut Vec<Sub>, sub: Sub) {
    match subs.iter_mut().find(|s| s.key == sub.key) {
        Some(s) => *s = sub,
        None => {
            subs.reserve_exact(1);
            subs.push(sub);
        }
    }
}

impl Node {
    fn insert(&mut self, filter: &str, sub: Sub) {
        let mut node = self;
        for level in filter.split('/') {
            match level {
                "#" => {
                    put(&mut node.hash, sub);
                    return;
                }
                "+" => node = node.plus.get_or_insert_with(Default::default),
                l => node = node.children.entry(l),
            }
        }
        put(&mut node.here, sub);
    }

    fn remove(&mut self, filter: &str, key: &SessionKey) {
        fn go<'a>(node: &mut Node, mut levels: impl Iterator<Item = &'a str>, key: &SessionKey) {
            match levels.next() {
                None => node.here.retain(|s| *s.key != *key),
                Some("#") => node.hash.retain(|s| *s.key != *key),
                Some("+") => {
                    if let Some(p) = node.plus.as_deref_mut() {
                        go(p, levels, key);
                        if p.is_empty() {
                            node.plus = None;
                        }
                    }
                }
                Some(l) => {
                    if let Some(c) = node.children.get_mut(l) {
                        go(c, levels, key);
                        if c.is_empty() {
                            node.children.remove(l);
                        }
                    }
                }
            }
        }
        go(self, filter.split('/'), key);
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.here.is_empty()
    }

    fn matches<'n>(&'n self, levels: &[&str], out: &mut Vec<&'n Sub>) {
        out.extend(self.hash.iter());
        let Some((first, rest)) = levels.split_first() else {
            out.extend(self.here.iter());
            return;
        };
        if let Some(c) = self.children.get(first) {
            c.matches(rest, out);
        }
        if let Some(p) = &self.plus {
            p.matches(rest, out);
        }
    }
}

/// Whether `topic` matches `filter`.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[derive(Debug, Default)]
struct TenantState {
    subs: Node,
    retained: HashMap<String, Message>,
}

#[derive(Debug, Default)]
struct State {
    tenants: HashMap<TenantId, TenantState>,
    sessions: HashMap<Arc<SessionKey>, SessionEntry>,
    next_conn: u64,
}

/// The device a topic or filter addresses: the second level of `devices/{id}/...` (at least three
/// levels). Wildcards in the second level yield `Err(())`-like `None` devices.
pub(crate) fn topic_device(topic: &str) -> Option<&str> {
    let mut levels = topic.splitn(3, '/');
    match (levels.next(), levels.next(), levels.next()) {
        (Some("devices"), Some(id), Some(rest)) if !id.is_empty() && !rest.is_empty() => Some(id),
        _ => None,
    }
}

/// Topics the hub answers on, which nobody else may publish to.
fn hub_answer_topic(rest: &str) -> bool {
    rest == "jobs/notify"
        || (rest.starts_with("jobs/")
            && (rest.ends_with("/accepted") || rest.ends_with("/rejected")))
        || rest == "measurements/rejected"
}

/// Topics the hub consumes (device to hub).
pub(crate) fn hub_request_topic(rest: &str) -> bool {
    rest == "measurements"
        || rest == "jobs/start-next"
        || (rest.starts_with("jobs/") && rest.ends_with("/update") && rest.split('/').count() == 3)
}

/// The broker shared by every connection of a [`Transport`](crate::Transport).
#[derive(Debug)]
pub(crate) struct Broker {
    state: Mutex<State>,
    groups: GroupCache,
    max_offline: usize,
    max_subscriptions: usize,
    max_retained: usize,
}

/// A registration result.
pub(crate) struct Registered {
    pub(crate) key: Arc<SessionKey>,
    pub(crate) session_present: bool,
    pub(crate) backlog: Vec<Message>,
}

impl Broker {
    pub(crate) fn new(registry: Arc<dyn RegistryStore>, config: &crate::TransportConfig) -> Self {
        Self {
            state: Mutex::default(),
            groups: GroupCache::new(registry, TransportConfig_ms(config.group_cache_ttl_ms)),
            max_offline: config.max_offline_messages,
            max_subscriptions: config.max_subscriptions,
            max_retained: config.max_retained_per_tenant,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than refusing every later connection would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        let mut s = self.lock();
        s.next_conn += 1;
        s.next_conn
    }

    /// Registers a connection for a session; an existing connection of the same session is
    /// kicked (session taken over). A clean start discards a stored session.
    pub(crate) fn register(
        &self,
        key: SessionKey,
        principal: Arc<Principal>,
        conn: Arc<ConnHandle>,
        clean_start: bool,
        expiry: u32,
    ) -> Registered {
        let mut s = self.lock();
        let key = Arc::new(key);
        if clean_start && let Some(old) = s.sessions.remove(&key) {
            if let Some(c) = &old.conn {
                c.kick(reason::SESSION_TAKEN_OVER);
            }
            let tenant = s.tenants.entry(key.tenant.clone()).or_default();
            for (f, _) in &old.subscriptions {
                tenant.subs.remove(f, &key);
            }
        }
        let (key, entry) = match s.sessions.get_key_value(&key) {
            Some((k, _)) => (k.clone(), s.sessions.get_mut(&key).expect("present")),
            None => {
                s.sessions.insert(
                    key.clone(),
                    SessionEntry {
                        principal: principal.clone(),
                        conn: None,
                        subscriptions: Vec::new(),
                        offline: VecDeque::new(),
                        expiry,
                        disconnected_at: None,
                    },
                );
                let k = key.clone();
                (k, s.sessions.get_mut(&key).expect("inserted"))
            }
        };
        let session_present =
            !clean_start && (entry.disconnected_at.is_some() || entry.conn.is_some());
        if let Some(old) = entry.conn.replace(conn) {
            old.kick(reason::SESSION_TAKEN_OVER);
        }
        entry.principal = principal;
        entry.expiry = expiry;
        entry.disconnected_at = None;
        let backlog = entry.offline.drain(..).collect();
        Registered {
            key,
            session_present,
            backlog,
        }
    }

    /// A connection ended: a persistent session keeps its subscriptions and the undelivered
    /// messages; otherwise the session is removed.
    pub(crate) fn unregister(
        &self,
        key: &Arc<SessionKey>,
        mut undelivered: Vec<Message>,
        conn: &ConnHandle,
        now: Timestamp,
    ) {
        let mut s = self.lock();
        // Deliveries happen under this lock, so draining the mailbox here loses nothing that
        // was routed to the closing connection.
        let left = std::mem::take(&mut conn.lock().queue);
        undelivered.extend(left.into_iter().filter(|m| m.qos > QoS::AtMostOnce));
        // The same session (not one that replaced it by a clean start) shares the key's `Arc`.
        let same_session = s
            .sessions
            .get_key_value(key)
            .is_some_and(|(k, _)| Arc::ptr_eq(k, key));
        let Some(entry) = s.sessions.get_mut(key) else {
            return;
        };
        if entry.conn.as_ref().map(|c| c.id) != Some(conn.id) {
            // Taken over: the new connection owns the session now, and what this one had not
            // delivered is the session's too, unless the new connection started clean.
            if !same_session {
                return;
            }
            match &entry.conn {
                Some(new) => {
                    for m in undelivered {
                        let delivered = new.deliver(m);
                        if !delivered {
                            new.kick(reason::QUOTA_EXCEEDED);
                            break;
                        }
                    }
                }
                None if entry.expiry > 0 => {
                    for m in undelivered.into_iter().rev() {
                        entry.offline.push_front(m);
                    }
                    while entry.offline.len() > self.max_offline {
                        entry.offline.pop_front();
                    }
                }
                None => {}
            }
            return;
        }
        entry.conn = None;
        if entry.expiry > 0 {
            entry.disconnected_at = Some(now);
            for m in undelivered.into_iter().rev() {
                entry.offline.push_front(m);
            }
            // Over the bound, the oldest go first, as for messages arriving while offline.
            while entry.offline.len() > self.max_offline {
                entry.offline.pop_front();
            }
            return;
        }
        let old = s.sessions.remove(key).expect("present");
        let tenant = s.tenants.entry(key.tenant.clone()).or_default();
        for (f, _) in &old.subscriptions {
            tenant.subs.remove(f, key);
        }
    }

    /// Drops stored sessions whose expiry has passed.
    pub(crate) fn expire(&self, now: Timestamp) {
        let mut s = self.lock();
        let expired: Vec<Arc<SessionKey>> = s
            .sessions
            .iter()
            .filter(|(_, e)| {
                e.disconnected_at.is_some_and(|at| {
                    now >= at.saturating_add(Duration::from_secs(u64::from(e.expiry)))
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            if let Some(old) = s.sessions.remove(&key) {
                let tenant = s.tenants.entry(key.tenant.clone()).or_default();
                for (f, _) in &old.subscriptions {
                    tenant.subs.remove(f, &key);
                }
            }
        }
    }

    /// Checks whether `principal` may publish `topic` to other clients: `Ok(Some(device))` for
    /// a hub request topic of the device itself, `Ok(None)` for free pub/sub.
    pub(crate) async fn check_publish(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        topic: &str,
        now: Timestamp,
    ) -> Result<bool, u8> {
        let Some(device) = topic_device(topic) else {
            return Err(reason::NOT_AUTHORIZED);
        };
        let rest = &topic["devices/".len() + device.len() + 1..];
        if hub_answer_topic(rest) {
            return Err(reason::NOT_AUTHORIZED);
        }
        match principal {
            Principal::Device(d) if d.id.as_str() == device => Ok(hub_request_topic(rest)),
            Principal::Device(_) => Err(reason::NOT_AUTHORIZED),
            _ if hub_request_topic(rest) => Err(reason::NOT_AUTHORIZED),
            _ => {
                let id: DeviceId = device.parse().map_err(|_| reason::NOT_AUTHORIZED)?;
                match self.groups.get(tenant, &id, now).await {
                    Some(g)
                        if authorize(
                            principal,
                            PolicyAction::ReadDevice,
                            &Resource::device(g.clone(), id.clone()),
                        )
                        .is_ok() =>
                    {
                        Ok(false)
                    }
                    _ => Err(reason::NOT_AUTHORIZED),
                }
            }
        }
    }

    /// The granted QoS (or a failure reason code) for one filter.
    pub(crate) async fn check_subscribe(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        filter: &str,
        now: Timestamp,
    ) -> Result<(), u8> {
        let mut levels = filter.splitn(3, '/');
        let (first, second, rest) = (levels.next(), levels.next(), levels.next());
        if first != Some("devices") {
            return Err(reason::NOT_AUTHORIZED);
        }
        match (principal, second, rest) {
            (Principal::Device(d), Some(id), Some(r)) if id == d.id.as_str() && !r.is_empty() => {
                Ok(())
            }
            (Principal::Device(_), _, _) => Err(reason::NOT_AUTHORIZED),
            (_, Some("#"), None) | (_, Some("+"), Some(_)) => Ok(()),
            (_, Some(id), Some(_)) => {
                let id: DeviceId = id.parse().map_err(|_| reason::NOT_AUTHORIZED)?;
                match self.groups.get(tenant, &id, now).await {
                    Some(g)
                        if authorize(
                            principal,
                            PolicyAction::ReadDevice,
                            &Resource::device(g.clone(), id.clone()),
                        )
                        .is_ok() =>
                    {
                        Ok(())
                    }
                    _ => Err(reason::NOT_AUTHORIZED),
                }
            }
            _ => Err(reason::NOT_AUTHORIZED),
        }
    }

    /// Adds checked subscriptions and returns the retained messages to send for them.
    pub(crate) async fn subscribe(
        &self,
        key: &Arc<SessionKey>,
        principal: &Principal,
        filters: &[(String, SubOptions)],
        now: Timestamp,
    ) -> (Vec<u8>, Vec<Message>) {
        let mut codes = Vec::with_capacity(filters.len());
        for (f, o) in filters {
            codes.push(
                match self.check_subscribe(principal, &key.tenant, f, now).await {
                    Ok(()) => o.qos as u8,
                    Err(c) => c,
                },
            );
        }
        let mut retained = Vec::new();
        {
            let mut s = self.lock();
            let State {
                tenants, sessions, ..
            } = &mut *s;
            let Some(entry) = sessions.get_mut(key) else {
                return (codes, retained);
            };
            let tenant = tenants.entry(key.tenant.clone()).or_default();
            for ((f, o), code) in filters.iter().zip(codes.iter_mut()) {
                if *code >= 0x80 {
                    continue;
                }
                let existing = entry.subscriptions.iter().position(|(e, _)| **e == **f);
                let is_new = existing.is_none();
                match existing {
                    Some(i) => entry.subscriptions[i].1 = *o,
                    None if entry.subscriptions.len() >= self.max_subscriptions => {
                        *code = reason::QUOTA_EXCEEDED;
                        continue;
                    }
                    None => {
                        entry.subscriptions.reserve_exact(1);
                        entry.subscriptions.push((f.as_str().into(), *o));
                    }
                }
                tenant.subs.insert(
                    f,
                    Sub {
                        key: key.clone(),
                        opts: *o,
                    },
                );
                if o.retain_handling == 0 || (o.retain_handling == 1 && is_new) {
                    for m in tenant.retained.values() {
                        if topic_matches(f, &m.topic) {
                            let mut m = m.clone();
                            m.qos = m.qos.min(o.qos);
                            m.retain = true;
                            retained.push(m);
                        }
                    }
                }
            }
        }
        // Retained messages of devices the principal may not see are filtered like live ones.
        let mut visible = Vec::with_capacity(retained.len());
        for m in retained {
            if self.may_see(principal, &key.tenant, &m.topic, now).await {
                visible.push(m);
            }
        }
        (codes, visible)
    }

    pub(crate) fn unsubscribe(&self, key: &Arc<SessionKey>, filters: &[String]) {
        let mut s = self.lock();
        let State {
            tenants, sessions, ..
        } = &mut *s;
        if let Some(entry) = sessions.get_mut(key) {
            let tenant = tenants.entry(key.tenant.clone()).or_default();
            for f in filters {
                if let Some(i) = entry.subscriptions.iter().position(|(e, _)| **e == **f) {
                    entry.subscriptions.remove(i);
                    tenant.subs.remove(f, key);
                }
            }
        }
    }

    async fn may_see(
        &self,
        principal: &Principal,
        tenant: &TenantId,
        topic: &str,
        now: Timestamp,
    ) -> bool {
        let Some(device) = topic_device(topic) else {
            return false;
        };
        match principal {
            Principal::Device(d) => d.id.as_str() == device,
            _ => {
                let Ok(id) = device.parse::<DeviceId>() else {
                    return false;
                };
                match self.groups.get(tenant, &id, now).await {
                    Some(g) => authorize(
                        principal,
                        PolicyAction::ReadDevice,
                        &Resource::device(g, id),
                    )
                    .is_ok(),
                    None => false,
                }
            }
        }
    }

    /// Routes a message within `tenant`. With `only_device`, only that device's own sessions
    /// receive it (the hub's answers on job topics). `from` is the publishing session (for MQTT
    /// 5 no-local). Returns how many sessions it reached.
    pub(crate) async fn publish(
        &self,
        tenant: &TenantId,
        message: Message,
        from: Option<&Arc<SessionKey>>,
        only_device: bool,
        now: Timestamp,
    ) -> usize {
        let Some(device) = topic_device(&message.topic) else {
            return 0;
        };
        // Resolve the device's group once per publication, outside the lock.
        let group = if only_device {
            None
        } else {
            match device.parse::<DeviceId>() {
                Ok(id) => self.groups.get(tenant, &id, now).await.map(|g| (g, id)),
                Err(_) => None,
            }
        };
        self.route(tenant, message, from, group, only_device)
    }

    /// Routes a hub message to the device's own subscribed sessions.
    pub(crate) fn route_to_device(&self, tenant: &TenantId, message: Message) -> usize {
        self.route(tenant, message, None, None, true)
    }

    fn route(
        &self,
        tenant: &TenantId,
        message: Message,
        from: Option<&Arc<SessionKey>>,
        group: Option<(GroupPath, DeviceId)>,
        only_device: bool,
    ) -> usize {
        let Some(device) = topic_device(&message.topic) else {
            return 0;
        };
        let levels: Vec<&str> = message.topic.split('/').collect();
        let mut s = self.lock();
        let State {
            tenants, sessions, ..
        } = &mut *s;
        let tenant_state = tenants.entry(tenant.clone()).or_default();
        if message.retain && !only_device {
            if message.payload.is_empty() {
                tenant_state.retained.remove(&message.topic);
            } else if tenant_state.retained.len() < self.max_retained
                || tenant_state.retained.contains_key(&message.topic)
            {
                tenant_state
                    .retained
                    .insert(message.topic.clone(), message.clone());
            }
        }
        let mut matched = Vec::new();
        tenant_state.subs.matches(&levels, &mut matched);
        // One delivery per session: the highest QoS among its matching filters.
        let mut best: HashMap<&Arc<SessionKey>, SubOptions> = HashMap::new();
        for sub in matched {
            best.entry(&sub.key)
                .and_modify(|o| {
                    if sub.opts.qos > o.qos {
                        *o = sub.opts
                    }
                })
                .or_insert(sub.opts);
        }
        let mut reached = 0;
        for (key, opts) in best {
            if opts.no_local && from.is_some_and(|f| f == key) {
                continue;
            }
            let Some(entry) = sessions.get_mut(key) else {
                continue;
            };
            let allowed = match &*entry.principal {
                Principal::Device(d) => d.id.as_str() == device,
                p if only_device => {
                    let _ = p;
                    false
                }
                p => group.as_ref().is_some_and(|(g, id)| {
                    authorize(
                        p,
                        PolicyAction::ReadDevice,
                        &Resource::device(g.clone(), id.clone()),
                    )
                    .is_ok()
                }),
            };
            if !allowed {
                continue;
            }
            let mut m = message.clone();
            m.qos = m.qos.min(opts.qos);
            m.retain = message.retain && opts.retain_as_published;
            reached += 1;
            match &entry.conn {
                Some(c) => {
                    let delivered = c.deliver(m);
                    if !delivered {
                        // Slow consumer: its mailbox is full. Close it; others are unaffected.
                        c.kick(reason::QUOTA_EXCEEDED);
                    }
                }
                None if m.qos > QoS::AtMostOnce => {
                    if entry.offline.len() >= self.max_offline {
                        entry.offline.pop_front();
                    }
                    entry.offline.push_back(m);
                }
                None => {}
            }
        }
        reached
    }
}

#[allow(non_snake_case)]
fn TransportConfig_ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A device's group (`None`: unknown device) and when it was looked up.
type CachedGroup = (Option<GroupPath>, Timestamp);

/// Device groups for access control, looked up in the registry and cached for a while.
#[derive(Debug)]
pub(crate) struct GroupCache {
    registry: Arc<dyn RegistryStore>,
    ttl: Duration,
    map: Mutex<HashMap<(TenantId, DeviceId), CachedGroup>>,
}

const GROUP_CACHE_MAX: usize = 100_000;

impl GroupCache {
    fn new(registry: Arc<dyn RegistryStore>, ttl: Duration) -> Self {
        Self {
            registry,
            ttl,
            map: Mutex::default(),
        }
    }

    pub(crate) async fn get(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        now: Timestamp,
    ) -> Option<GroupPath> {
        let key = (tenant.clone(), device.clone());
        if let Some((g, at)) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&key)
            && now < at.saturating_add(self.ttl)
        {
            return g.clone();
        }
        // A registry failure denies access (and is not cached).
        let group = match self.registry.get_device(tenant, device).await {
            Ok(d) => d.map(|d| d.group),
            Err(e) => {
                tracing::warn!(error = %e, "registry lookup failed");
                return None;
            }
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= GROUP_CACHE_MAX {
            map.clear();
        }
        map.insert(key, (group.clone(), now));
        group
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device reconnects before its old connection died: what the old one had not delivered
    /// goes to the new one, unless the new one started clean.
    #[test]
    fn a_takeover_hands_undelivered_messages_to_the_new_connection() {
        let stores =
            hub_store::memory::MemoryStore::new(hub_store::StoreLimits::default()).into_stores();
        let broker = Broker::new(stores.registry, &crate::TransportConfig::default());
        let principal = Arc::new(Principal::Device(hub_core::DevicePrincipal {
            id: "pump-7".parse().unwrap(),
            group: "acme/plant-1".parse().unwrap(),
        }));
        let key = || SessionKey {
            tenant: "acme".parse().unwrap(),
            principal: principal.describe(),
            client_id: "pump-7".into(),
        };
        let now = Timestamp::from_millis(1_000).unwrap();
        let old = ConnHandle::new(1, 10);
        let first = broker.register(key(), principal.clone(), old.clone(), false, 3600);
        let new = ConnHandle::new(2, 10);
        let second = broker.register(key(), principal.clone(), new.clone(), false, 3600);
        assert!(second.session_present);
        assert_eq!(old.kicked(), Some(reason::SESSION_TAKEN_OVER));
        let pending = Message::new("devices/pump-7/inbox", "qos1", QoS::AtLeastOnce);
        broker.unregister(&first.key, vec![pending.clone()], &old, now);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match new.poll_event(&mut cx) {
            Poll::Ready(ConnEvent::Deliver(m)) => assert_eq!(m.payload, pending.payload),
            other => panic!("expected the old connection's message, got {other:?}"),
        }

        // A clean start discards the session: nothing is handed over.
        let clean = ConnHandle::new(3, 10);
        broker.register(key(), principal.clone(), clean.clone(), true, 0);
        broker.unregister(&second.key, vec![pending], &new, now);
        assert!(clean.poll_event(&mut cx).is_pending());
    }

    #[test]
    fn filters_match_topics() {
        assert!(topic_matches("devices/+/temp", "devices/a/temp"));
        assert!(topic_matches("devices/#", "devices/a/b/c"));
        assert!(topic_matches("devices/a/#", "devices/a/x"));
        assert!(!topic_matches("devices/+/temp", "devices/a/b/temp"));
        assert!(!topic_matches("devices/a/temp", "devices/b/temp"));
    }

    #[test]
    fn trie_agrees_with_the_matcher() {
        let filters = [
            "devices/+/t",
            "devices/#",
            "devices/a/t",
            "devices/a/+",
            "devices/+/+/x",
        ];
        let topics = [
            "devices/a/t",
            "devices/b/t",
            "devices/a/y",
            "devices/a/b/x",
            "other/a/t",
        ];
        let mut root = Node::default();
        for (i, f) in filters.iter().enumerate() {
            let key = Arc::new(SessionKey {
                tenant: "acme".parse().unwrap(),
                principal: "p".into(),
                client_id: i.to_string(),
            });
            root.insert(
                f,
                Sub {
                    key,
                    opts: SubOptions::qos(QoS::AtMostOnce),
                },
            );
        }
        for t in topics {
            let levels: Vec<&str> = t.split('/').collect();
            let mut out = Vec::new();
            root.matches(&levels, &mut out);
            let mut got: Vec<String> = out.iter().map(|s| s.key.client_id.clone()).collect();
            got.sort();
            let mut want: Vec<String> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| topic_matches(f, t))
                .map(|(i, _)| i.to_string())
                .collect();
            want.sort();
            assert_eq!(got, want, "topic {t}");
        }
        // Removing every filter leaves an empty trie.
        for (i, f) in filters.iter().enumerate() {
            let key = SessionKey {
                tenant: "acme".parse().unwrap(),
                principal: "p".into(),
                client_id: i.to_string(),
            };
            root.remove(f, &key);
        }
        assert!(root.is_empty());
    }

    /// Past `FEW_CHILDREN` a level's children move from a list to a map; routing and removal
    /// must not notice.
    #[test]
    fn many_devices_route_like_few() {
        let filters: Vec<String> = (0..40)
            .flat_map(|d| {
                [
                    format!("devices/d{d}/inbox"),
                    format!("devices/d{d}/jobs/#"),
                ]
            })
            .chain(["devices/+/inbox".to_string()])
            .collect();
        let key = |i: usize| SessionKey {
            tenant: "acme".parse().unwrap(),
            principal: "p".into(),
            client_id: i.to_string(),
        };
        let mut root = Node::default();
        for (i, f) in filters.iter().enumerate() {
            let sub = Sub {
                key: Arc::new(key(i)),
                opts: SubOptions::qos(QoS::AtMostOnce),
            };
            root.insert(f, sub);
        }
        let check = |root: &Node, live: &dyn Fn(usize) -> bool| {
            for t in [
                "devices/d7/inbox",
                "devices/d39/jobs/notify",
                "devices/d40/inbox",
            ] {
                let levels: Vec<&str> = t.split('/').collect();
                let mut out = Vec::new();
                root.matches(&levels, &mut out);
                let mut got: Vec<usize> = out
                    .iter()
                    .map(|s| s.key.client_id.parse().unwrap())
                    .collect();
                got.sort();
                let want: Vec<usize> = (0..filters.len())
                    .filter(|&i| live(i) && topic_matches(&filters[i], t))
                    .collect();
                assert_eq!(got, want, "topic {t}");
            }
        };
        check(&root, &|_| true);
        // Remove the even ones, then the rest: the trie empties.
        for (i, f) in filters.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            root.remove(f, &key(i));
        }
        check(&root, &|i| i % 2 == 1);
        for (i, f) in filters.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
            root.remove(f, &key(i));
        }
        assert!(root.is_empty());
    }

    #[test]
    fn hub_topics_are_recognised() {
        assert!(hub_request_topic("jobs/start-next"));
        assert!(hub_request_topic("jobs/0190/update"));
        assert!(hub_request_topic("measurements"));
        assert!(!hub_request_topic("jobs/a/b/update"));
        assert!(hub_answer_topic("jobs/notify"));
        assert!(hub_answer_topic("jobs/start-next/accepted"));
        assert!(hub_answer_topic("jobs/x/update/rejected"));
        assert_eq!(topic_device("devices/pump-7/temp"), Some("pump-7"));
        assert_eq!(topic_device("devices/pump-7"), None);
        assert_eq!(topic_device("other/pump-7/x"), None);
    }
}
