//! A headless roundtable participant for tests and benchmarks, on the async `webrtc` 0.21
//! crate: it joins over the websocket, publishes synthetic Opus and VP8 RTP, answers the
//! server's subscribe offers, and counts and checks what arrives.
//!
//! ```no_run
//! # async fn demo(base: &str, token: &str) -> roundtable_headless::Result<()> {
//! use roundtable_headless::{Client, PublishSpec};
//! let room = Client::join(base, token).await?; // base "ws://127.0.0.1:8080", an invite token
//! room.publish(PublishSpec { video_layers: 3, source_program: true, ..Default::default() })
//!     .await?; // audio + simulcast q/h/f, sent once the publish connection is up
//! room.cmd(serde_json::json!({"type": "agenda_start"})).await?; // ack, or Error::Command
//! let granted = room.wait_event("floor_granted").await?; // the whole event message
//! let tracks = room.stats(); // per received mid: RTP gaps, marks, latency, keyframes, slot
//! let sent = room.sent_stats(); // per published stream: packets, keyframes, PLIs received
//! room.close().await; // both connections, the websocket, every task
//! # let _ = (granted, tracks, sent); Ok(()) }
//! ```
//!
//! Two peer connections, as docs/PROTOCOL.md says: **publish** (we offer; `publish_answer`) and
//! **subscribe** (every `subscribe_offer`, first or re-offer, is answered automatically). ICE
//! trickles both ways; ours waits until the server knows the connection. Both bind 127.0.0.1
//! ([`ClientOptions::bind_ip`]) with mDNS off; [`ClientOptions::relay_only`] forces TURN. Each
//! payload carries a [`Mark`] (stream tag, own sequence, send time): see [`payload`]. Packets
//! carry mid/rid, transport-cc and audio-level extensions when negotiated; PLI/FIR make the next
//! frame a keyframe. Dropping a client without [`Client::close`] leaves its sockets to the runtime.
//! [`Client::drop_connection`] loses the websocket as a dropped network does (no close frame) and
//! [`Client::resume`] comes back with `resume_seq`, keeping the peer connections the server held.
//!
//! [`JanusClient`] is the same participant against Janus VideoRoom (its HTTP API), for the
//! side-by-side benchmark: the same peer connection setup, pumps, marks and recorders, Janus's
//! signaling instead of ours.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod janus;
pub mod payload;
mod peer;
mod pump;
pub mod stats;

pub use client::{Client, ClientOptions, Resumption};
pub use janus::{JanusClient, JanusStream};
pub use payload::{Mark, StreamKind, stream_tag};
pub use pump::{LayerRate, PublishSpec, SentStats};
pub use stats::{LatencySummary, SeqSummary, StreamRecv, TrackStats};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered a command with an `error`.
    #[error("server error {code}: {message}")]
    Command {
        /// The error `code`.
        code: String,
        /// The error `message`.
        message: String,
    },
    /// Something did not happen in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The websocket is closed.
    #[error("connection closed")]
    Closed,
    /// The server sent something the protocol does not allow here.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The caller asked for something this client does not do.
    #[error("usage: {0}")]
    Usage(String),
    /// A media negotiation or connection step failed.
    #[error("media: {0}")]
    Media(String),
    /// The websocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// JSON did not parse.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The webrtc crate failed.
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
}

impl Error {
    /// The server's error code, for [`Error::Command`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Command { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
