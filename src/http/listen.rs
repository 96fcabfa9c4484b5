//! # The accept loop: TLS, per-address limits, slow clients
//!
//! [`serve`] accepts TCP connections itself instead of `axum::serve`, for what a public
//! venue server needs before a request reaches the router:
//! - **TLS** with rustls when `server.tls_cert` and `server.tls_key` are set (PEM files); the
//!   handshake has [`HANDSHAKE_TIMEOUT`] to finish.
//! - **Per-address limits**: at most `server.max_connections_per_ip` open connections and
//!   `server.connections_per_ip_per_sec` new ones (token bucket, burst ten times that) per
//!   remote IP address. Over the limit a plain connection gets a bare `429` and is closed.
//! - **Slow clients** (slowloris, half-open sockets): the first byte and then the whole request
//!   head must arrive within [`HEADER_READ_TIMEOUT`] each.
//! - `TCP_NODELAY` on every socket (events are small frames sent back to back).
//!
//! Connections are served by hyper with upgrades (websockets), and end gracefully when the
//! shutdown flag turns true: in-flight requests finish within [`DRAIN_TIMEOUT`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use dashmap::DashMap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// Time for a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for a request's head (request line and headers) to arrive.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for in-flight requests after shutdown begins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors of the listener's set-up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// A certificate or key file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PEM content is not a certificate chain and a private key rustls accepts.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Loads a PEM certificate chain and private key into a TLS acceptor (HTTP/1.1 only: the
/// websocket upgrade needs it).
pub fn tls_acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, ListenError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| ListenError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ListenError::Tls(format!("{cert}: {e}")))?;
    if chain.is_empty() {
        return Err(ListenError::Tls(format!("{cert}: no certificate in it")));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| ListenError::Tls(format!("{key}: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ListenError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| ListenError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Per-address limits (0 turns one off).
#[derive(Debug, Clone, Copy)]
pub struct AddrLimits {
    /// Open connections per remote IP.
    pub max_open: u32,
    /// New connections per second per remote IP (burst: ten times this).
    pub per_sec: u32,
}

#[derive(Debug)]
struct Slot {
    open: u32,
    tokens: f64,
    refilled: Instant,
}

/// Open connections and a token bucket per remote IP.
#[derive(Debug, Default)]
pub struct PerAddr {
    slots: DashMap<IpAddr, Slot>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many open.
    Open,
    /// Too many new ones per second.
    Rate,
}

/// Holds one open connection of an address; dropping it frees the place.
#[derive(Debug)]
pub struct Admitted {
    table: Arc<PerAddr>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let empty = match self.table.slots.get_mut(&self.ip) {
            Some(mut s) => {
                s.open = s.open.saturating_sub(1);
                s.open == 0
            }
            None => false,
        };
        if empty {
            // Forget idle addresses whose bucket is full again, so the table stays small.
            self.table.slots.remove_if(&self.ip, |_, s| {
                s.open == 0 && s.refilled.elapsed().as_secs() > 10
            });
        }
    }
}

impl PerAddr {
    /// Admits a new connection from `ip` at `now`, or says why not.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: AddrLimits,
        now: Instant,
    ) -> Result<Admitted, Refusal> {
        let mut slot = self.slots.entry(ip).or_insert_with(|| Slot {
            open: 0,
            tokens: f64::from(limits.per_sec) * 10.0,
            refilled: now,
        });
        if limits.max_open > 0 && slot.open >= limits.max_open {
            return Err(Refusal::Open);
        }
        if limits.per_sec > 0 {
            let burst = f64::from(limits.per_sec) * 10.0;
            let dt = now.saturating_duration_since(slot.refilled).as_secs_f64();
            slot.tokens = (slot.tokens + dt * f64::from(limits.per_sec)).min(burst);
            slot.refilled = now;
            if slot.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            slot.tokens -= 1.0;
        }
        slot.open += 1;
        Ok(Admitted {
            table: self.clone(),
            ip,
        })
    }

    /// Forgets addresses with nothing open whose bucket has had time to fill again.
    pub fn sweep(&self, now: Instant) {
        self.slots.retain(|_, s| {
            s.open > 0 || now.saturating_duration_since(s.refilled) < Duration::from_secs(10)
        });
    }

    /// Addresses with an entry (tests, metrics).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no address has an entry.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Counters of the accept loop.
#[derive(Debug, Default)]
pub struct ListenCounters {
    /// Connections refused by the per-address limits.
    pub refused: std::sync::atomic::AtomicU64,
    /// TLS handshakes that failed or timed out.
    pub tls_failed: std::sync::atomic::AtomicU64,
}

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    limits: AddrLimits,
    counters: Arc<ListenCounters>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let table = Arc::new(PerAddr::default());
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: keep going.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        while tasks.try_join_next().is_some() {}
        if table.len() > 4096 {
            table.sweep(Instant::now());
        }
        let admitted = match table.admit(peer.ip(), limits, Instant::now()) {
            Ok(a) => a,
            Err(why) => {
                counters
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                debug!(%peer, ?why, "connection refused by the per-address limit");
                if tls.is_none() {
                    tasks.spawn(refuse(tcp));
                }
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "could not set TCP_NODELAY");
        }
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        let counters = counters.clone();
        // The place is held by the connection, and by a websocket it upgrades to (the
        // handler keeps a clone for the socket's life).
        let admitted = Arc::new(admitted);
        tasks.spawn(async move {
            // A connection that sends nothing at all is not a request yet, and hyper's header
            // timer starts with the first byte: wait for one, within the same bound.
            let mut first = [0u8; 1];
            match tokio::time::timeout(HEADER_READ_TIMEOUT, tcp.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => {
                    debug!(%peer, "no request within the header timeout: closed");
                    return;
                }
            }
            match tls {
                None => connection(tcp, peer, app, admitted, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => connection(stream, peer, app, admitted, stop).await,
                        Ok(Err(e)) => {
                            counters
                                .tls_failed
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            counters
                                .tls_failed
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            debug!(%peer, "TLS handshake timed out");
                        }
                    }
                }
            }
        });
    }
    info!("no longer accepting connections");
    // In-flight requests finish (each connection drains on the same flag).
    let _ = tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    Ok(())
}

/// A bare `429` for a connection over the per-address limit.
async fn refuse(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        tcp.write_all(
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        ),
    )
    .await;
    let _ = tcp.shutdown().await;
}

/// One connection: HTTP/1.1 with upgrades, a header timeout, and a graceful end on `stop`.
async fn connection<S>(
    io: S,
    peer: SocketAddr,
    app: Router,
    admitted: Arc<Admitted>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Every request carries the connection's place (`Extension<Arc<Admitted>>`), so that a
    // websocket keeps it after hyper lets go of the upgraded socket.
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            use tower_service::Service as _;
            req.extensions_mut().insert(admitted.clone());
            let mut app = app.clone();
            async move { app.call(req).await }
        });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        }
        () = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_open_connections_and_its_rate_and_no_more() {
        let table = Arc::new(PerAddr::default());
        let ip: IpAddr = [10, 0, 0, 1].into();
        let other: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        let limits = AddrLimits {
            max_open: 3,
            per_sec: 0,
        };
        let held: Vec<_> = (0..3)
            .map(|_| table.admit(ip, limits, t0).expect("admitted"))
            .collect();
        assert_eq!(table.admit(ip, limits, t0).err(), Some(Refusal::Open));
        assert!(table.admit(other, limits, t0).is_ok(), "per address");
        drop(held);
        assert!(table.admit(ip, limits, t0).is_ok(), "freed on drop");

        let table = Arc::new(PerAddr::default());
        let limits = AddrLimits {
            max_open: 0,
            per_sec: 2,
        };
        // A burst of 20, then 2 a second.
        for _ in 0..20 {
            drop(table.admit(ip, limits, t0).expect("burst"));
        }
        assert_eq!(table.admit(ip, limits, t0).err(), Some(Refusal::Rate));
        let t1 = t0 + Duration::from_millis(500);
        assert!(table.admit(ip, limits, t1).is_ok());
        assert_eq!(table.admit(ip, limits, t1).err(), Some(Refusal::Rate));
    }
}
