//! Presence: which devices hold a session here, and when each was last heard from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hub_core::{
    DeviceId, DisconnectReason, Event, EventKind, EventSink, GroupPath, LivenessPolicy, NodeId,
    Presence, PresenceState, TenantId, Timestamp,
};
use tokio::sync::Notify;

#[derive(Debug)]
struct Entry {
    sessions: u32,
    last_seen: Option<Timestamp>,
    last_event: Option<Timestamp>,
}

/// Tracks device sessions on this node and turns them into events and [`Presence`] answers.
#[derive(Debug)]
pub(crate) struct PresenceTable {
    map: Mutex<HashMap<(TenantId, DeviceId), Entry>>,
    changed: Notify,
    policy: LivenessPolicy,
    node: NodeId,
    events: Arc<dyn EventSink>,
}

impl PresenceTable {
    pub(crate) fn new(policy: LivenessPolicy, node: NodeId, events: Arc<dyn EventSink>) -> Self {
        Self {
            map: Mutex::default(),
            changed: Notify::new(),
            policy,
            node,
            events,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(TenantId, DeviceId), Entry>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn connected(
        &self,
        group: &GroupPath,
        device: &DeviceId,
        protocol: &str,
        now: Timestamp,
    ) {
        {
            let mut map = self.lock();
            let e = map
                .entry((group.tenant(), device.clone()))
                .or_insert(Entry {
                    sessions: 0,
                    last_seen: None,
                    last_event: None,
                });
            e.sessions += 1;
            e.last_seen = Some(now);
            e.last_event = Some(now);
        }
        self.changed.notify_waiters();
        self.events.publish(Event {
            at: now,
            group: group.clone(),
            kind: EventKind::DeviceConnected {
                device: device.clone(),
                node: self.node.clone(),
                protocol: protocol.to_owned(),
            },
        });
    }

    pub(crate) fn disconnected(
        &self,
        group: &GroupPath,
        device: &DeviceId,
        reason: DisconnectReason,
        now: Timestamp,
    ) {
        if let Some(e) = self.lock().get_mut(&(group.tenant(), device.clone())) {
            e.sessions = e.sessions.saturating_sub(1);
            e.last_seen = Some(now);
        }
        self.changed.notify_waiters();
        self.events.publish(Event {
            at: now,
            group: group.clone(),
            kind: EventKind::DeviceDisconnected {
                device: device.clone(),
                reason,
            },
        });
    }

    /// Records traffic from a device. Emits `DeviceSeen` at most once per a third of the stale
    /// grace period, so busy devices do not flood the event sink.
    pub(crate) fn seen(&self, group: &GroupPath, device: &DeviceId, now: Timestamp) {
        let emit = {
            let mut map = self.lock();
            let Some(e) = map.get_mut(&(group.tenant(), device.clone())) else {
                return;
            };
            e.last_seen = Some(now);
            let every = self.policy.stale_after / 3;
            let due = e
                .last_event
                .is_none_or(|t| now.duration_since(t) >= every.max(Duration::from_secs(1)));
            if due {
                e.last_event = Some(now);
            }
            due
        };
        if emit {
            self.events.publish(Event {
                at: now,
                group: group.clone(),
                kind: EventKind::DeviceSeen {
                    device: device.clone(),
                },
            });
        }
    }

    pub(crate) fn presence(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        now: Timestamp,
    ) -> Presence {
        let map = self.lock();
        match map.get(&(tenant.clone(), device.clone())) {
            None => Presence {
                state: PresenceState::Offline,
                last_seen: None,
                node: None,
            },
            Some(e) => Presence {
                state: self.policy.classify(e.sessions > 0, e.last_seen, now),
                last_seen: e.last_seen,
                node: (e.sessions > 0).then(|| self.node.clone()),
            },
        }
    }

    pub(crate) fn is_connected(&self, tenant: &TenantId, device: &DeviceId) -> bool {
        self.lock()
            .get(&(tenant.clone(), device.clone()))
            .is_some_and(|e| e.sessions > 0)
    }

    pub(crate) async fn wait_online(&self, tenant: &TenantId, device: &DeviceId) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a connection between the check and the wait is seen.
            notified.as_mut().enable();
            if self.is_connected(tenant, device) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hub_core::{EventKind, PresenceState, RecordedEvents, Timestamp};

    use super::*;

    fn t(s: u64) -> Timestamp {
        Timestamp::EPOCH.saturating_add(Duration::from_secs(s))
    }

    #[test]
    fn presence_follows_sessions_and_grace_periods() {
        let events = Arc::new(RecordedEvents::new());
        let table = PresenceTable::new(
            LivenessPolicy::default(),
            "node-a".parse().unwrap(),
            events.clone(),
        );
        let group: GroupPath = "acme/plant-1".parse().unwrap();
        let tenant = group.tenant();
        let dev: DeviceId = "pump-7".parse().unwrap();
        assert_eq!(
            table.presence(&tenant, &dev, t(0)).state,
            PresenceState::Offline
        );
        table.connected(&group, &dev, "mqtt-tls", t(0));
        let p = table.presence(&tenant, &dev, t(10));
        assert_eq!(p.state, PresenceState::Online);
        assert_eq!(p.node.as_ref().map(|n| n.as_str()), Some("node-a"));
        // Silent past the stale grace period while connected: stale.
        assert_eq!(
            table.presence(&tenant, &dev, t(100)).state,
            PresenceState::Stale
        );
        // Traffic makes it online again; DeviceSeen is throttled to one per stale/3.
        table.seen(&group, &dev, t(100));
        table.seen(&group, &dev, t(101));
        assert_eq!(
            table.presence(&tenant, &dev, t(110)).state,
            PresenceState::Online
        );
        table.disconnected(&group, &dev, hub_core::DisconnectReason::Graceful, t(120));
        let p = table.presence(&tenant, &dev, t(130));
        assert_eq!(p.state, PresenceState::Stale, "just disconnected");
        assert_eq!(p.node, None);
        assert_eq!(
            table.presence(&tenant, &dev, t(500)).state,
            PresenceState::Offline
        );
        let kinds: Vec<&'static str> = events
            .take()
            .iter()
            .map(|e| match e.kind {
                EventKind::DeviceConnected { .. } => "connected",
                EventKind::DeviceSeen { .. } => "seen",
                EventKind::DeviceDisconnected { .. } => "disconnected",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["connected", "seen", "disconnected"]);
        // Other tenants do not share presence.
        let other: TenantId = "globex".parse().unwrap();
        assert!(!table.is_connected(&other, &dev));
    }
}
