//! A TLS listener for `axum::serve`: TCP connections are accepted in a
//! background task and each handshake runs in its own task with a deadline, so
//! a slow or hostile client never holds up the others. Failed handshakes are
//! logged (a warning at most every [`WARN_EVERY`], the rest at debug).

use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes done and not yet taken by the server.
const READY_QUEUE: usize = 128;
/// Refused handshakes are warned about at most this often.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serve TLS with `config` on `tcp`; must be called inside a tokio runtime.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let accepting = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), tx));
        Ok(TlsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let refused = Arc::new(Refusals::default());
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors and the like: back off a little, as axum does.
                tracing::error!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, done, refused) = (acceptor.clone(), ready.clone(), refused.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = done.send((tls, peer)).await;
                }
                Ok(Err(e)) => refused.note(peer, &e.to_string()),
                Err(_) => refused.note(peer, "no handshake within 10 s"),
            }
        });
        if ready.is_closed() {
            return;
        }
    }
}

/// Refused handshakes: one warning per [`WARN_EVERY`] saying how many more there were.
#[derive(Default)]
struct Refusals {
    last_warn: Mutex<Option<Instant>>,
    quiet: AtomicU64,
}

impl Refusals {
    fn note(&self, peer: SocketAddr, error: &str) {
        let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            let more = self.quiet.swap(0, Ordering::Relaxed);
            tracing::warn!(%peer, error, refused_since_last_warning = more, "TLS handshake refused");
        } else {
            self.quiet.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, error, "TLS handshake refused");
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this side is gone or aborted.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
