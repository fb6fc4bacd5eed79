//! The hub's events: what happened, to which resource, when.
//!
//! Components publish events into an [`EventSink`]; the application decides where they go
//! (server-sent event streams, webhooks, metrics, the audit log).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::id::{DeviceId, GroupPath, JobId, NodeId};
use crate::job::JobState;
use crate::time::Timestamp;

/// One event. `group` is where the resource lives, so subscribers can filter by subtree with the
/// same containment rule as the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened.
    pub at: Timestamp,
    /// The group of the resource concerned.
    pub group: GroupPath,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Why a device's session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The device said goodbye (MQTT DISCONNECT).
    Graceful,
    /// Nothing heard from the device within its keep-alive.
    KeepAliveTimeout,
    /// The connection broke (reset, TLS error, malformed traffic).
    ConnectionLost,
    /// Another session of the same device took over.
    SessionTakenOver,
    /// The hub closed it (shutdown, drain, credentials revoked).
    ServerClosed,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A device opened a session.
    DeviceConnected {
        /// The device.
        device: DeviceId,
        /// The hub node holding the session.
        node: NodeId,
        /// The protocol, e.g. `mqtt-tls` or `mqtt-wss`.
        protocol: String,
    },
    /// A device's session ended.
    DeviceDisconnected {
        /// The device.
        device: DeviceId,
        /// Why.
        reason: DisconnectReason,
    },
    /// A device was heard from (traffic on an open session or a polling request).
    DeviceSeen {
        /// The device.
        device: DeviceId,
    },
    /// A device was registered.
    DeviceRegistered {
        /// The device.
        device: DeviceId,
    },
    /// A device moved to another group (`group` is the new one).
    DeviceMoved {
        /// The device.
        device: DeviceId,
        /// The group it left.
        from: GroupPath,
    },
    /// A device was removed.
    DeviceRemoved {
        /// The device.
        device: DeviceId,
    },
    /// A job execution changed state.
    JobStateChanged {
        /// The job.
        job: JobId,
        /// The device executing it.
        device: DeviceId,
        /// The previous state; `None` when the job was just created.
        from: Option<JobState>,
        /// The new state.
        to: JobState,
        /// The job's version after the change (its ETag).
        version: u64,
    },
    /// A device uploaded measurements.
    MeasurementsReceived {
        /// The device.
        device: DeviceId,
        /// How many points were stored (duplicates of stored points are not counted).
        points: u32,
    },
}

/// Where components publish events. `publish` must not block: an implementation that forwards
/// to slow consumers buffers or drops (and counts what it drops) rather than stalling a device
/// session or a job transition.
pub trait EventSink: Send + Sync + std::fmt::Debug + 'static {
    /// Publishes one event.
    fn publish(&self, event: Event);
}

impl<S: EventSink + ?Sized> EventSink for std::sync::Arc<S> {
    fn publish(&self, event: Event) {
        (**self).publish(event)
    }
}

/// Discards every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardEvents;

impl EventSink for DiscardEvents {
    fn publish(&self, _event: Event) {}
}

/// Keeps every event in memory, for tests that assert what was published.
#[derive(Debug, Default)]
pub struct RecordedEvents(Mutex<Vec<Event>>);

impl RecordedEvents {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the events recorded so far, oldest first.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl EventSink for RecordedEvents {
    fn publish(&self, event: Event) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_a_type_tag_and_round_trip() {
        let e = Event {
            at: Timestamp::from_millis(1_000).unwrap(),
            group: "acme/plant-1".parse().unwrap(),
            kind: EventKind::JobStateChanged {
                job: JobId::from_parts(Timestamp::from_millis(5).unwrap(), [7; 10]),
                device: "pump-7".parse().unwrap(),
                from: Some(JobState::Queued),
                to: JobState::Delivered,
                version: 2,
            },
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "job_state_changed");
        assert_eq!(json["to"], "delivered");
        assert_eq!(json["group"], "acme/plant-1");
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn recorder_returns_events_in_order() {
        let r = RecordedEvents::new();
        for i in 0..3 {
            r.publish(Event {
                at: Timestamp::from_millis(i).unwrap(),
                group: "acme".parse().unwrap(),
                kind: EventKind::DeviceSeen {
                    device: "d1".parse().unwrap(),
                },
            });
        }
        let got: Vec<i64> = r.take().iter().map(|e| e.at.as_millis()).collect();
        assert_eq!(got, vec![0, 1, 2]);
        assert!(r.take().is_empty());
    }
}
