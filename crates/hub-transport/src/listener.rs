//! The TLS listener: accept-rate limiting, a connection cap, socket tuning, a TLS handshake
//! timeout, the shared keep-alive sweep and the graceful drain.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Inner;
use crate::codec::reason;
use crate::config::{SocketProfile, TransportConfig};

/// A token bucket for accepted connections, refilled from a monotonic instant.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: tokio::time::Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst.max(1)),
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            last: tokio::time::Instant::now(),
        }
    }

    /// How long to wait before the next connection may be accepted.
    fn take(&mut self) -> Option<Duration> {
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

pub(crate) fn tune(stream: &TcpStream, p: &SocketProfile) {
    let sock = SockRef::from(stream);
    // Tuning is best effort: a kernel refusing an option must not refuse the device.
    let _ = stream.set_nodelay(p.nodelay);
    if let Some(n) = p.send_buffer {
        let _ = sock.set_send_buffer_size(n);
    }
    if let Some(n) = p.recv_buffer {
        let _ = sock.set_recv_buffer_size(n);
    }
    if let Some(secs) = p.tcp_keepalive_secs {
        let ka = TcpKeepalive::new()
            .with_time(Duration::from_secs(secs))
            .with_interval(Duration::from_secs(secs.div_ceil(4).max(1)));
        let _ = sock.set_tcp_keepalive(&ka);
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(ms) = p.user_timeout_ms {
        let _ = sock.set_tcp_user_timeout(Some(Duration::from_millis(ms)));
    }
}

/// The TLS stream of a device connection: the compact record layer (feature `compact-tls`), else
/// tokio-rustls.
#[cfg(feature = "compact-tls")]
pub(crate) type DeviceTls = crate::tls::compact::CompactTls;
/// The TLS stream of a device connection: the compact record layer (feature `compact-tls`), else
/// tokio-rustls.
#[cfg(not(feature = "compact-tls"))]
pub(crate) type DeviceTls = tokio_rustls::server::TlsStream<TcpStream>;

#[cfg(feature = "compact-tls")]
struct Acceptor(Arc<rustls::ServerConfig>);

#[cfg(feature = "compact-tls")]
impl Acceptor {
    fn new(tls: Arc<rustls::ServerConfig>) -> Self {
        // The record layer needs the traffic keys and secrets once the handshake is over.
        Self(crate::tls::compact::capture_config(&tls))
    }

    async fn accept(&self, stream: TcpStream) -> std::io::Result<DeviceTls> {
        crate::tls::compact::accept(stream, self.0.clone()).await
    }
}

#[cfg(not(feature = "compact-tls"))]
struct Acceptor(tokio_rustls::TlsAcceptor);

#[cfg(not(feature = "compact-tls"))]
impl Acceptor {
    fn new(tls: Arc<rustls::ServerConfig>) -> Self {
        Self(tokio_rustls::TlsAcceptor::from(tls))
    }

    async fn accept(&self, stream: TcpStream) -> std::io::Result<DeviceTls> {
        self.0.accept(stream).await
    }
}

pin_project_lite::pin_project! {
    /// A connection's future that takes itself off the open-connection count when it ends (or
    /// is dropped by the runtime).
    struct Counted<F> {
        #[pin]
        connection: F,
        inner: Option<Arc<Inner>>,
    }

    impl<F> PinnedDrop for Counted<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(inner) = this.project().inner.take() {
                inner.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl<F: Future<Output = ()>> Future for Counted<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().connection.poll(cx)
    }
}

pub(crate) async fn serve(
    inner: Arc<Inner>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // The connection's future itself, not wrapped in another that would hold the stream twice.
    serve_with(inner, listener, tls, shutdown, |inner, tls| {
        crate::driver::run_connection(inner, tls, "mqtt-tls")
    })
    .await
}

/// The accept loop, running `handle` on each connection after its TLS handshake.
pub(crate) async fn serve_with<F, Fut>(
    inner: Arc<Inner>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
    handle: F,
) -> std::io::Result<()>
where
    F: Fn(Arc<Inner>, DeviceTls) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let acceptor = Arc::new(Acceptor::new(tls));
    let tracker = TaskTracker::new();
    let cfg: &TransportConfig = &inner.config;
    let mut bucket = Bucket::new(cfg.accept_rate_per_sec, cfg.accept_burst);
    let mut sweep = tokio::time::interval(TransportConfig::ms(cfg.sweep_interval_ms.max(10)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let handshake_timeout = TransportConfig::ms(cfg.tls_handshake_timeout_ms);
    loop {
        if let Some(wait) = bucket.take() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => break,
            }
            continue;
        }
        let accepted = loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break None,
                _ = sweep.tick() => {
                    let now = inner.clock.now();
                    inner.sweep.run(now);
                    inner.broker.expire(now);
                }
                r = listener.accept() => break Some(r),
            }
        };
        let Some(accepted) = accepted else { break };
        let (stream, _peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if inner.connections.load(Ordering::Relaxed) >= inner.config.max_connections {
            drop(stream);
            continue;
        }
        tune(&stream, &inner.config.socket);
        inner.connections.fetch_add(1, Ordering::Relaxed);
        let inner = inner.clone();
        let acceptor = acceptor.clone();
        let handle = handle.clone();
        let connections = tracker.clone();
        // The handshake runs in a task of its own; the connection gets a new task holding
        // exactly its future. Composed in one task, the handshake's state and a second copy of
        // the stream would stay in every connection's memory for its whole life.
        tracker.spawn(async move {
            let accepted = tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await;
            match accepted {
                // One that ends after the drain began is kicked as it registers (`Sweep::add`).
                Ok(Ok(tls)) => {
                    let connection = handle(inner.clone(), tls);
                    connections.spawn(Counted {
                        connection,
                        inner: Some(inner),
                    });
                }
                _ => {
                    inner.connections.fetch_sub(1, Ordering::Relaxed);
                }
            }
        });
    }
    drop(listener);
    // Drain: every session is told the server is shutting down, then given time to close.
    inner.sweep.kick_all(reason::SERVER_SHUTTING_DOWN);
    tracker.close();
    let _ = tokio::time::timeout(
        TransportConfig::ms(inner.config.drain_timeout_ms),
        tracker.wait(),
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_accept_bucket_allows_a_burst_then_paces() {
        let mut b = Bucket::new(1, 2);
        assert_eq!(b.take(), None);
        assert_eq!(b.take(), None);
        // At one connection a second, the third waits most of a second.
        let wait = b.take().expect("the burst is spent");
        assert!(wait > Duration::from_millis(500));
    }
}
