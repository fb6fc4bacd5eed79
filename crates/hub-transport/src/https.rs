//! HTTPS for the Web API (feature `http`): a TLS listener that `axum::serve` accepts.
//!
//! Every application serving the hub's routers over TLS needs the same few things: handshakes
//! that run concurrently (one slow or stalled client must not hold up the others), a handshake
//! timeout, a cap on handshakes in progress, and the ALPN protocols the server speaks.
//! [`TlsListener`] does that and hands finished TLS streams to axum, so graceful shutdown is
//! axum's own `with_graceful_shutdown`.
//!
//! ```no_run
//! # async fn run(
//! #     tls: std::sync::Arc<rustls::ServerConfig>,
//! #     shutdown: tokio::sync::oneshot::Receiver<()>,
//! # ) -> std::io::Result<()> {
//! use hub_transport::https::{HttpsConfig, TlsListener};
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! let listener = TlsListener::new(tcp, tls, HttpsConfig::default());
//! let app = axum::Router::new();
//! axum::serve(listener, app)
//!     .with_graceful_shutdown(async { let _ = shutdown.await; })
//!     .await
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Limits of the HTTPS listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpsConfig {
    /// A TLS handshake not finished within this time is dropped (default 10 s).
    pub handshake_timeout: Duration,
    /// At most this many handshakes run at once; further connections wait in the kernel's
    /// accept queue (default 256).
    pub max_concurrent_handshakes: usize,
}

impl Default for HttpsConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_concurrent_handshakes: 256,
        }
    }
}

/// A TLS listener for `axum::serve`. Accepting and handshaking run on a task of their own;
/// dropping the listener (when axum's server stops) stops that task.
#[derive(Debug)]
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `tls` on `tcp`. Set `tls.alpn_protocols` to `[b"http/1.1"]` (or add `h2`
    /// if the server speaks it) before calling.
    pub fn new(tcp: TcpListener, tls: Arc<rustls::ServerConfig>, config: HttpsConfig) -> Self {
        let local_addr = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        // A small queue: finished handshakes wait here only until axum takes them.
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(tls), config, tx));
        Self {
            local_addr,
            ready,
            acceptor,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    config: HttpsConfig,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(config.max_concurrent_handshakes.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ready = tx.clone();
        let timeout = config.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
        if tx.is_closed() {
            return;
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends when the listener is dropped, so this is never reached
            // while axum still polls; wait forever rather than invent a connection.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
