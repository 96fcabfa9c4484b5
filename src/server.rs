//! # Running the server
//!
//! [`prepare`] opens the journal, loads or creates the secret and starts one task per
//! meeting (each rebuilt from the journal). [`serve`] runs the HTTP server until `shutdown`
//! resolves, then tells every connection, stops the meetings and flushes the journal. [`run`]
//! does both; `main` and the integration tests call the same functions.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::auth::{self, AuthError, Secret};
use crate::clock::Clock;
use crate::config::Config;
use crate::http::{self, Limits, Shared};
use crate::meeting::{self, Counters, MeetingError};
use crate::store::{Journal, StoreError};

/// The journal's file name inside the data directory.
pub const JOURNAL_FILE: &str = "journal.sqlite3";

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The journal could not be opened.
    #[error("journal: {0}")]
    Store(#[from] StoreError),
    /// The secret could not be loaded or created.
    #[error("secret: {0}")]
    Auth(#[from] AuthError),
    /// A meeting could not be rebuilt.
    #[error("meeting: {0}")]
    Meeting(#[from] MeetingError),
    /// The listener failed.
    #[error("http: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate or key could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] crate::http::listen::ListenError),
    /// The media engine could not start (e.g. its UDP port is taken).
    #[error("media: {0}")]
    Media(#[from] crate::media::engine::MediaError),
}

/// A prepared server: meetings running, ready to serve.
pub struct Prepared {
    /// Shared state (secret, meetings, journal).
    pub shared: Arc<Shared>,
    /// The media engine's UDP address, when it runs.
    pub media_addr: Option<std::net::SocketAddr>,
    media: Option<crate::media::engine::MediaHandle>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    addr_limits: crate::http::listen::AddrLimits,
}

impl Prepared {
    /// The media engine, when it runs (tests and benchmarks read its counters).
    pub fn media(&self) -> Option<crate::media::engine::MediaHandle> {
        self.media.clone()
    }
}

/// The secret from the config, or the one stored in the data directory (created on first run).
pub fn secret(config: &Config) -> Result<Secret, AuthError> {
    if config.server.secret.is_empty() {
        Secret::load_or_create(&config.server.data_dir)
    } else {
        Secret::from_config(&config.server.secret)
    }
}

/// Opens the journal and starts every meeting.
pub async fn prepare(config: &Config, clock: Clock) -> Result<Prepared, ServerError> {
    let secret = secret(config)?;
    let tls = if config.server.tls_cert.trim().is_empty() {
        None
    } else {
        Some(crate::http::listen::tls_acceptor(
            config.server.tls_cert.trim(),
            config.server.tls_key.trim(),
        )?)
    };
    let path = config.server.data_dir.join(JOURNAL_FILE);
    let journal = tokio::task::spawn_blocking(move || Journal::open(&path))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let mut meetings = HashMap::new();
    let mut tasks = Vec::new();
    let media = Arc::new(config.media.clone());
    let (hub, media_addr) = if config.media.enabled {
        let engine_config = crate::media::engine::MediaConfig {
            bind: config.media.udp_addr,
            advertise_ip: config.media.advertise_ip.parse().ok(),
            ice_tcp: config.media.ice_tcp,
            health: config.media.health,
            ..Default::default()
        };
        let (engine, events, addr) = crate::media::engine::MediaEngine::start(engine_config)?;
        info!(%addr, "media engine listening (UDP)");
        (Some(meeting::MediaHub::new(engine, events)), Some(addr))
    } else {
        (None, None)
    };
    let invites = Arc::new(
        crate::invites::Invites::load(journal.clone())
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?,
    );
    for (room, m) in config.meetings.iter().enumerate() {
        let (handle, task) = meeting::start(
            m,
            meeting::Settings {
                grace_ms: i64::from(config.server.resume_grace_secs) * 1000,
                invites: invites.clone(),
                max_per_role: config.server.max_per_role.clone(),
            },
            media.clone(),
            hub.clone().map(|h| (h, room as u32 + 1)),
            journal.clone(),
            clock.clone(),
            counters.clone(),
            shutdown_rx.clone(),
        )
        .await?;
        meetings.insert(m.id.clone(), handle);
        tasks.push(task);
    }
    let shared = Arc::new(Shared {
        secret,
        meetings,
        journal,
        clock,
        invites,
        listen: Default::default(),
        limits: Limits {
            max_frame_bytes: config.server.max_frame_bytes as usize,
            commands_per_second: config.server.commands_per_second,
            command_burst: config.server.command_burst,
            allowed_origins: config
                .server
                .allowed_origins
                .iter()
                .map(|o| crate::http::origin_of(o))
                .chain(
                    (!config.server.public_url.trim().is_empty())
                        .then(|| crate::http::origin_of(&config.server.public_url)),
                )
                .collect(),
        },
        started: Instant::now(),
        next_conn: AtomicU64::new(1),
        ws_clients: AtomicU64::new(0),
        counters,
        media: hub.as_ref().map(|h| h.engine.clone()),
        shutdown: shutdown_rx,
    });
    Ok(Prepared {
        shared,
        media_addr,
        media: hub.map(|h| h.engine),
        shutdown_tx,
        tasks,
        tls,
        addr_limits: crate::http::listen::AddrLimits {
            max_open: config.server.max_connections_per_ip,
            per_sec: config.server.connections_per_ip_per_sec,
        },
    })
}

/// Serves until `shutdown` resolves; then closes connections, stops meetings and flushes
/// the journal (bounded to a few seconds).
pub async fn serve(
    listener: TcpListener,
    prepared: Prepared,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let Prepared {
        shared,
        shutdown_tx,
        tasks,
        media,
        tls,
        addr_limits,
        ..
    } = prepared;
    info!(addr = %listener.local_addr()?, tls = tls.is_some(), "listening");
    let app = http::app(shared.clone());
    let stop = shared.shutdown.clone();
    let tx = shutdown_tx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    // Our own accept loop (TLS, per-address limits, header timeout, TCP_NODELAY: events and
    // acks are small frames sent back to back, and Nagle's algorithm would hold each behind
    // the client's delayed ACK, ~40 ms; docs/PERFORMANCE.md).
    http::listen::serve(listener, app, tls, addr_limits, shared.listen.clone(), stop).await?;
    let _ = shutdown_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), shared.journal.flush()).await;
    if let Some(engine) = media {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::task::spawn_blocking(move || engine.shutdown()),
        )
        .await;
    }
    info!("stopped");
    Ok(())
}

/// [`prepare`] then [`serve`].
pub async fn run(
    listener: TcpListener,
    config: &Config,
    clock: Clock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let prepared = prepare(config, clock).await?;
    serve(listener, prepared, shutdown).await
}

/// One invite link per role for a meeting (the start-up links on loopback).
pub fn role_links(
    config: &Config,
    secret: &Secret,
    meeting: &str,
    now_unix: i64,
) -> Vec<(auth::Role, String)> {
    let ttl = u64::from(config.server.token_ttl_hours) * 3600;
    let base = config.server.base_url();
    let samples: [(auth::Role, &str, &str, &str); 6] = [
        (
            auth::Role::Moderator,
            "moderator",
            "Chair",
            "ECO Secretariat",
        ),
        (
            auth::Role::Delegate,
            "delegate-1",
            "Amina Karimova",
            "Kyrgyz Republic",
        ),
        (auth::Role::Room, "room", "Baku meeting room", "Host"),
        (
            auth::Role::Technician,
            "technician",
            "Room technician",
            "AV desk",
        ),
        (auth::Role::Observer, "observer", "Observer", ""),
        (
            auth::Role::Assistant,
            "assistant",
            "Floor assistant",
            "ECO Secretariat",
        ),
    ];
    samples
        .iter()
        .map(|(role, id, name, delegation)| {
            let claims =
                auth::new_invite(meeting, *role, Some(id), name, delegation, ttl, now_unix);
            (*role, auth::join_url(&base, &auth::sign(secret, &claims)))
        })
        .collect()
}
