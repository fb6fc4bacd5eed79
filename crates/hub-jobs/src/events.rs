//! The in-process event bus (feature `events`): an [`EventSink`] that fans every event out to
//! any number of subscribers (the SSE streams of the `http` feature, the
//! webhook dispatcher, the application's own consumers).
//!
//! Publishing never blocks: the bus is a bounded [`tokio::sync::broadcast`] channel holding the
//! last `capacity` events. A subscriber that falls further behind than that loses the oldest
//! events and is told how many it missed ([`Received::Lagged`]) instead of silently skipping
//! them, so a consumer always knows when its view has a gap and can re-read the Job API.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use hub_core::{Event, EventKind, EventSink, Timestamp};
//! use hub_jobs::events::{EventBus, Received};
//!
//! let bus = EventBus::new(2);
//! let mut sub = bus.subscribe();
//! for i in 0..3 {
//!     bus.publish(Event {
//!         at: Timestamp::from_millis(i).unwrap(),
//!         group: "acme/plant-1".parse().unwrap(),
//!         kind: EventKind::DeviceSeen { device: "pump-7".parse().unwrap() },
//!     });
//! }
//! // Capacity 2, three events: the oldest one is gone, and the subscriber is told so.
//! assert_eq!(sub.recv().await, Received::Lagged(1));
//! assert!(matches!(sub.recv().await, Received::Event(e) if e.at.as_millis() == 1));
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hub_core::{Event, EventSink};
use tokio::sync::broadcast;

/// How many events the bus keeps for slow subscribers unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Fans events out to subscribers through a bounded broadcast channel. Cheap to clone (all clones
/// are the same bus).
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
    published: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl EventBus {
    /// A bus that keeps the last `capacity` events (at least 1) for subscribers that lag.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            published: Arc::default(),
        }
    }

    /// A new subscriber; it receives the events published from now on.
    pub fn subscribe(&self) -> Subscriber {
        Subscriber {
            rx: self.tx.subscribe(),
        }
    }

    /// How many subscribers are listening now.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// How many events were published since the bus was made (with or without subscribers).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

impl EventSink for EventBus {
    fn publish(&self, event: Event) {
        self.published.fetch_add(1, Ordering::Relaxed);
        // No subscriber is not an error: the event simply has nobody to reach.
        let _ = self.tx.send(Arc::new(event));
    }
}

/// What a subscriber receives next.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next event.
    Event(Arc<Event>),
    /// The subscriber fell behind and this many events were dropped before the next one.
    Lagged(u64),
    /// Every handle of the bus is gone; nothing more will come.
    Closed,
}

/// One subscription to an [`EventBus`].
#[derive(Debug)]
pub struct Subscriber {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl Subscriber {
    /// Waits for the next event (or the news that some were missed).
    pub async fn recv(&mut self) -> Received {
        match self.rx.recv().await {
            Ok(e) => Received::Event(e),
            Err(broadcast::error::RecvError::Lagged(n)) => Received::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => Received::Closed,
        }
    }
}

/// Publishes every event into several sinks, in order (for example the [`EventBus`] and the
/// audit log).
#[derive(Debug, Clone, Default)]
pub struct Fanout(pub Vec<Arc<dyn EventSink>>);

impl EventSink for Fanout {
    fn publish(&self, event: Event) {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.publish(event.clone());
            }
            last.publish(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hub_core::{EventKind, RecordedEvents, Timestamp};

    fn seen(n: i64) -> Event {
        Event {
            at: Timestamp::from_millis(n).unwrap(),
            group: "acme/plant-1".parse().unwrap(),
            kind: EventKind::DeviceSeen {
                device: "pump-7".parse().unwrap(),
            },
        }
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order_and_learns_when_the_bus_is_gone() {
        let bus = EventBus::new(8);
        bus.publish(seen(0)); // nobody listens yet: counted, not kept for later subscribers
        let (mut a, mut b) = (bus.subscribe(), bus.subscribe());
        assert_eq!(bus.subscribers(), 2);
        bus.publish(seen(1));
        bus.publish(seen(2));
        assert_eq!(bus.published(), 3);
        for sub in [&mut a, &mut b] {
            for n in [1, 2] {
                assert_eq!(sub.recv().await, Received::Event(Arc::new(seen(n))));
            }
        }
        drop(bus);
        assert_eq!(a.recv().await, Received::Closed);
    }

    #[test]
    fn fanout_publishes_into_every_sink() {
        let (x, y) = (
            Arc::new(RecordedEvents::new()),
            Arc::new(RecordedEvents::new()),
        );
        let fanout = Fanout(vec![x.clone(), y.clone()]);
        fanout.publish(seen(1));
        assert_eq!(x.take(), vec![seen(1)]);
        assert_eq!(y.take(), vec![seen(1)]);
        Fanout::default().publish(seen(2));
    }
}
