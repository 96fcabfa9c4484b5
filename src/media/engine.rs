//! # The media engine: webrtc-rs's sans-IO core on one thread and one UDP socket
//!
//! [`MediaEngine::start`] spawns one thread, `roundtable-media`, that owns:
//!
//! - **one UDP socket** shared by every peer connection (the one port a venue opens);
//! - every `rtc::RTCPeerConnection`, publishers (the client offers its tracks, we answer) and
//!   subscribers (we offer the tracks we will send, the client answers);
//! - a **demultiplexer**: a datagram goes to the connection its remote address is mapped to;
//!   a STUN message carrying USERNAME goes to the connection whose ICE ufrag is the part before
//!   the colon (the core draws each connection's ufrag; we read it from every local
//!   description, so the mapping exists before the client can send a check, and an ICE
//!   restart's new ufrag joins it while the previous one stays routable). Every STUN message
//!   a connection sends maps its destination to it, so answers to our own connectivity checks
//!   find their way back;
//! - **timers**: each connection's `poll_timeout`, kept in a min-heap;
//! - one DTLS certificate shared by all connections (generating one per connection costs an
//!   ECDSA key generation each);
//! - a minimal forwarding table (`ForwardTable`), to be replaced by the router;
//! - a connect deadline per connection ([`MediaConfig::connect_timeout`]): one that has not
//!   connected by then is removed and reported ([`MediaEvent::TimedOut`]).
//!
//! Nothing else in the crate sees an `rtc` type: async code talks to the thread through a
//! [`MediaHandle`] (commands, each answered on a oneshot) and hears from it through the
//! [`MediaEvent`] channel returned by `start`.
//!
//! ## The run-loop contract
//!
//! The core performs no I/O and reads no clock. The thread drives it like this, and anything
//! that touches a connection must keep to the same rules:
//!
//! 1. **Make one change** to a connection: `handle_read` (one datagram, tagged with the arrival
//!    instant, the remote address and, as local address, *the host candidate's address*: ICE
//!    drops STUN whose local address is not one of the connection's candidates),
//!    `handle_timeout`, a `write_rtp`/`write_rtcp`, or a negotiation call.
//! 2. **Drain it completely**: `poll_write` until `None` (each datagram goes to the socket),
//!    `poll_event` until `None`, `poll_read` until `None` (RTP is forwarded here, which makes
//!    *other* connections dirty), repeated until all three are empty. A change queues output
//!    but sends nothing; output left queued is only sent on the next change.
//! 3. **Re-arm its timer** from `poll_timeout`.
//! 4. **Drain every connection made dirty** in step 2 the same way, until none is dirty.
//!
//! The loop: take every pending command (each is a change, followed by 2-4), fire due timers
//! (each a change), then block in `recv_from` until the earliest deadline (at most
//! [`IDLE_WAIT`]). A command is followed by a one-byte datagram to the socket (the *wake*),
//! so the loop does not sleep through it; the wake datagram matches no connection and is
//! dropped like any unknown datagram.
//!
//! Writes to a connection before DTLS is up would fail inside the core and be logged, so
//! forwarding is gated on the connection being `Connected`.
//!
//! ## Traps (details and evidence in docs/MEDIA-NOTES.md)
//!
//! - Renegotiating a publisher resets the core's receivers: simulcast layers are lost (a
//!   browser stops sending the mid/rid extensions that would rebind them) and declared-SSRC
//!   streams are announced again. Give each new source its own publisher connection.
//! - Inbound RTCP is dropped at the end of the core's interceptor chain unless marked for the
//!   application; the engine's own interceptor keeps PLI and FIR only.
//! - `write_rtp` refuses header extension ids the subscriber did not negotiate; the forwarder
//!   strips every extension.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::levels::VoiceActivity;
use super::meter::{LinkSample, ReceiverSample, SAMPLE_PERIOD_MS, StreamMeter, StreamSample};
use super::router::{
    self, Forward, Incoming, MediaRole, PeerId, Router, RouterError, SlotChange, TrackId,
};
use super::rtp;
use super::sdp;
use super::tcp::{self, TcpInput, TcpSide};
use rtc::crypto::{RTCCryptoProvider, SignatureScheme};
use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::interceptor::{NackGeneratorBuilder, NackResponderBuilder};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine as RtcMediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::configuration::{RTCConfigurationBuilder, RTCOfferOptions};
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;

pub use super::stun::{is_stun, stun_local_ufrag};
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{
    CandidateConfig, CandidateHostConfig, RTCIceCandidate, RTCIceCandidateInit,
};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{
    RTCRtpReceiverId, RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit,
};
use rtc::sansio::Protocol;
use rtc::shared::tcp_framing::frame_packet_to;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, trace, warn};

/// Longest the loop blocks in `recv_from` when no timer is due sooner.
pub const IDLE_WAIT: Duration = Duration::from_millis(250);

/// Largest SDP accepted from a client (offers and answers).
pub const MAX_SDP_BYTES: usize = 64 * 1024;

/// Capacity of the event channel. Events are per connection and per track, not per packet; if
/// the application stops reading, further events are dropped and counted
/// ([`EngineStats::events_dropped`]) rather than blocking the media thread.
pub const EVENT_QUEUE: usize = 4096;

/// How often the routers are asked for keyframe requests to send.
const KEYFRAME_POLL: Duration = Duration::from_millis(50);

/// Receive buffer: larger than any datagram a WebRTC peer sends (they stay under the path MTU).
const RECV_BUF: usize = 2048;

/// Payload types we offer to subscribers. Publishers' payload types come from their offers and
/// are rewritten to these.
const PT_OPUS: u8 = 111;
const PT_VP8: u8 = 96;

/// Name of the media thread (visible in debuggers and `top -H`).
const THREAD_NAME: &str = "roundtable-media";

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// A peer connection's id, chosen by the caller and unique within the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// A router instance in the engine: one per meeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u32);

/// A change to a room's router (see `media::router`), answered with the slot changes it caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterOp {
    /// A peer arrives.
    AddPeer(PeerId, MediaRole),
    /// A peer leaves, with its tracks.
    RemovePeer(PeerId),
    /// A peer publishes a track.
    Publish {
        /// Owner.
        peer: PeerId,
        /// Track id (chosen by the caller, unique in the room).
        track: TrackId,
        /// Audio or video.
        kind: router::Kind,
        /// What it carries.
        source: router::Source,
        /// Simulcast layers.
        layers: u8,
    },
    /// A track ends.
    Unpublish(TrackId),
    /// The floor changed.
    SetFloor {
        /// Moderated mode (the gate is closed for delegates without the floor).
        moderated: bool,
        /// Holders in grant order.
        holders: Vec<PeerId>,
        /// Presenters.
        presenters: Vec<PeerId>,
    },
    /// Thumbnails on or off for a subscriber.
    SetThumbnails(PeerId, bool),
    /// Open microphones only (true), or every microphone, for a subscriber.
    SetOpenMicsOnly(PeerId, bool),
    /// A technician's override of what a subscriber receives.
    SetForce(PeerId, router::Force),
    /// The height a subscriber renders a slot at (picks the simulcast layer).
    SetRenderHeight(PeerId, router::Slot, Option<u32>),
}

/// A track the engine sends on a subscriber connection; unique within the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutTrackId(pub u64);

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Opus.
    Audio,
    /// VP8.
    Video,
}

/// Where the engine listens and what it advertises.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The UDP address to bind (port 0 picks one). Every peer connection uses this socket.
    pub bind: SocketAddr,
    /// The IP advertised in the host candidate (with the bound port), e.g. the public address
    /// of a 1:1 NAT. Required when `bind` is an unspecified address (`0.0.0.0`, `::`).
    pub advertise_ip: Option<IpAddr>,
    /// A connection that has not connected this long after it was created is removed (and
    /// [`MediaEvent::TimedOut`] sent): a client that never completes ICE leaks nothing.
    pub connect_timeout: Duration,
    /// Also listen for ICE-TCP (passive) on the bound address and port number, and advertise
    /// a `tcp passive` candidate beside the UDP one (see `media::tcp`).
    pub ice_tcp: bool,
    /// Measure every inbound stream and sample each connection for stream health
    /// ([`MediaEvent::Sample`]); off only to measure what it costs.
    pub health: bool,
}

/// The default connect timeout: above the core's own ICE failure timeout (25 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for MediaConfig {
    /// Loopback, any port, nothing advertised beyond it, [`DEFAULT_CONNECT_TIMEOUT`].
    fn default() -> Self {
        MediaConfig {
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            advertise_ip: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ice_tcp: false,
            health: true,
        }
    }
}

/// A track to send on a subscriber connection.
#[derive(Debug, Clone)]
pub struct TrackSpec {
    /// Audio (Opus) or video (VP8).
    pub kind: MediaKind,
    /// The `a=msid` stream id the client sees (groups audio and video of one participant).
    pub stream_id: String,
    /// The `a=msid` track id the client sees.
    pub track_id: String,
}

/// A track the engine sends, as created by [`MediaHandle::create_subscriber`] or
/// [`MediaHandle::add_track`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutTrackInfo {
    /// The engine's id for the track (used in [`MediaHandle::forward`]).
    pub id: OutTrackId,
    /// Audio or video.
    pub kind: MediaKind,
    /// The SSRC the subscriber sees for this track.
    pub ssrc: u32,
    /// The track id from the [`TrackSpec`].
    pub track_id: String,
}

/// The offer for a subscriber connection and the tracks it carries.
#[derive(Debug, Clone)]
pub struct SubscriberOffer {
    /// The SDP offer, with our host candidate and end-of-candidates.
    pub sdp: String,
    /// The tracks created by this call, in the order of the request.
    pub tracks: Vec<OutTrackInfo>,
}

/// A peer connection's state (the W3C `RTCPeerConnectionState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Created, nothing negotiated on the wire yet.
    New,
    /// ICE or DTLS in progress.
    Connecting,
    /// ICE and DTLS up: media flows.
    Connected,
    /// Consent checks are failing; may recover.
    Disconnected,
    /// ICE or DTLS failed; remove the connection.
    Failed,
    /// Closed.
    Closed,
}

/// What kind of keyframe request a subscriber sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeKind {
    /// RTCP Picture Loss Indication (RFC 4585).
    Pli,
    /// RTCP Full Intra Request (RFC 5104).
    Fir,
}

/// What the engine tells the async world.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    /// A connection changed state.
    ConnectionState {
        /// The connection.
        conn: ConnId,
        /// Its new state.
        state: ConnState,
    },
    /// The first RTP packet of an inbound stream arrived on a publisher connection: the stream
    /// can now be forwarded (by its `ssrc`). With simulcast, once per layer (`rid`).
    TrackOpened {
        /// The publisher connection.
        conn: ConnId,
        /// The track id the client announced (`a=msid`), or one the core made up.
        track: String,
        /// Audio or video.
        kind: MediaKind,
        /// The stream's SSRC.
        ssrc: u32,
        /// The simulcast layer (`rid`), if the stream is one.
        rid: Option<String>,
    },
    /// A connection did not connect within [`MediaConfig::connect_timeout`] and has been
    /// removed, routes and all.
    TimedOut {
        /// The connection (no longer known to the engine).
        conn: ConnId,
    },
    /// A published microphone started or stopped carrying speech (RFC 6464 audio levels,
    /// see `media::levels`), measured before the floor gate.
    Speaking {
        /// The publisher connection.
        conn: ConnId,
        /// The router's track.
        track: TrackId,
        /// Speaking now.
        speaking: bool,
        /// Mean level of the deciding window: 0 (loudest) to 127 (silence), -dBov.
        level: u8,
    },
    /// A connection's measurements, every [`SAMPLE_PERIOD_MS`] while it is connected.
    Sample {
        /// The connection.
        conn: ConnId,
        /// What it measured.
        sample: Box<LinkSample>,
    },
    /// A subscriber asked for a keyframe on a track we send it.
    KeyframeRequest {
        /// The subscriber connection.
        conn: ConnId,
        /// The track.
        track: OutTrackId,
        /// PLI or FIR.
        kind: KeyframeKind,
    },
}

/// The engine's counters (a snapshot, from [`MediaHandle::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Peer connections alive.
    pub connections: u64,
    /// Datagrams received on the socket.
    pub datagrams_in: u64,
    /// Datagrams that matched no connection (including wake datagrams).
    pub datagrams_unrouted: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
    /// RTP packets delivered by publisher connections.
    pub rtp_in: u64,
    /// RTP packets written to subscriber tracks.
    pub rtp_forwarded: u64,
    /// RTP packets a subscriber track refused (`write_rtp` errors).
    pub forward_errors: u64,
    /// Errors returned by the core while handling input or timers (the connection lives on).
    pub core_errors: u64,
    /// Events dropped because the event channel was full.
    pub events_dropped: u64,
    /// Outgoing RTP dropped by fault injection ([`MediaHandle::set_loss`]).
    pub rtp_dropped_by_loss: u64,
    /// Payload bytes of the RTP delivered by publishers.
    pub bytes_in: u64,
    /// Payload bytes of the RTP written to subscriber tracks.
    pub bytes_forwarded: u64,
    /// Audio packets the floor gate held back (all rooms).
    pub gate_dropped: u64,
    /// Keyframe requests (PLI) sent to publishers.
    pub plis_sent: u64,
    /// ICE restarts: subscriber connections re-offered with new credentials, and publisher
    /// offers that brought new ones.
    pub ice_restarts: u64,
    /// Keyframe requests (PLI, FIR) received from subscribers.
    pub keyframe_requests_in: u64,
    /// NACK packets received from subscribers (the responder repairs from its buffer).
    pub nacks_in: u64,
    /// Per datagram that was forwarded: from reading it off the socket to the last copy sent
    /// (the server's own share of the added latency; waiting in the socket's queue before the
    /// read is not in it).
    pub forward_latency: LatencyHistogram,
}

/// A latency histogram in microseconds: four buckets per power of two (values within ~19 % of
/// each other share a bucket), from 1 µs to ~1 min. `Copy`, no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u64; LatencyHistogram::BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; LatencyHistogram::BUCKETS],
        }
    }
}

impl LatencyHistogram {
    const BUCKETS: usize = 104;

    fn bucket(us: u64) -> usize {
        let us = us.max(1);
        let octave = 63 - us.leading_zeros() as usize;
        let sub = if octave >= 2 {
            ((us >> (octave - 2)) & 3) as usize
        } else {
            ((us << (2 - octave)) & 3) as usize
        };
        (octave * 4 + sub).min(Self::BUCKETS - 1)
    }

    /// The largest value that falls in bucket `i`.
    fn upper(i: usize) -> u64 {
        let (octave, sub) = (i / 4, (i % 4) as u64);
        let base = 1u64 << octave;
        let step = (base / 4).max(1);
        base + (sub + 1) * step - 1
    }

    /// Records one value.
    pub fn record(&mut self, us: u64) {
        self.counts[Self::bucket(us)] += 1;
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value at quantile `q` (0..=1): the upper edge of its bucket, in µs (0 when empty).
    pub fn quantile_us(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::upper(i);
            }
        }
        Self::upper(Self::BUCKETS - 1)
    }

    /// The bucket counts (for carrying a histogram between processes).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// A histogram from [`counts`](Self::counts) (missing buckets are empty, extra ignored).
    pub fn from_counts(counts: &[u64]) -> LatencyHistogram {
        let mut h = LatencyHistogram::default();
        for (o, c) in h.counts.iter_mut().zip(counts) {
            *o = *c;
        }
        h
    }

    /// What was recorded since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let mut out = *self;
        for (o, e) in out.counts.iter_mut().zip(earlier.counts.iter()) {
            *o = o.saturating_sub(*e);
        }
        out
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The socket could not be bound or configured, or the thread not started.
    #[error("media socket: {0}")]
    Io(#[from] io::Error),
    /// The configuration cannot work (e.g. an unspecified bind address without advertise_ip).
    #[error("media configuration: {0}")]
    Config(String),
    /// A connection with this id already exists.
    #[error("{0} already exists")]
    DuplicateConnection(ConnId),
    /// No connection with this id.
    #[error("{0} does not exist")]
    UnknownConnection(ConnId),
    /// No such track on this connection.
    #[error("unknown track on {0}")]
    UnknownTrack(ConnId),
    /// The connection is of the other role (e.g. `set_answer` on a publisher).
    #[error("{0} is not a {1} connection")]
    WrongRole(ConnId, &'static str),
    /// An offer of ours is still waiting for its answer; retry after [`MediaHandle::set_answer`].
    #[error("{0} is waiting for an answer")]
    NegotiationPending(ConnId),
    /// The SDP is larger than [`MAX_SDP_BYTES`].
    #[error("SDP too large ({0} bytes)")]
    SdpTooLarge(usize),
    /// The SDP offers no audio or video we can receive (we take Opus and VP8).
    #[error("no supported codec in the offer")]
    NoSupportedCodec,
    /// The core refused the SDP, candidate or call.
    #[error("webrtc: {0}")]
    Rtc(String),
    /// The media thread has stopped.
    #[error("the media engine has stopped")]
    Stopped,
    /// The router refused a change (e.g. a listener publishing).
    #[error("router: {0}")]
    Router(RouterError),
}

impl From<rtc::shared::error::Error> for MediaError {
    fn from(err: rtc::shared::error::Error) -> Self {
        MediaError::Rtc(err.to_string())
    }
}

/// The receiving end of the engine's events.
pub type MediaEvents = mpsc::Receiver<MediaEvent>;

/// Starts the engine.
#[derive(Debug)]
pub struct MediaEngine;

impl MediaEngine {
    /// Binds the socket, generates the shared DTLS certificate and spawns the media thread.
    /// Returns the handle, the event channel and the bound socket address.
    pub fn start(
        config: MediaConfig,
    ) -> Result<(MediaHandle, MediaEvents, SocketAddr), MediaError> {
        let socket = UdpSocket::bind(config.bind)?;
        let bound = socket.local_addr()?;
        let advertised_ip = match (config.advertise_ip, bound.ip()) {
            (Some(ip), _) => ip,
            (None, ip) if ip.is_unspecified() => {
                return Err(MediaError::Config(format!(
                    "bind address {bound} is unspecified: set advertise_ip"
                )));
            }
            (None, ip) => ip,
        };
        let candidate_addr = SocketAddr::new(advertised_ip, bound.port());
        let wake_addr = match bound.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bound.port())
            }
            _ => bound,
        };
        let waker = UdpSocket::bind(SocketAddr::new(
            match wake_addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            },
            0,
        ))?;
        waker.set_nonblocking(true)?;

        let crypto = rtc::crypto::default_provider()
            .map_err(|err| MediaError::Config(format!("crypto provider: {err}")))?;
        let params = CertificateParams::new(vec!["roundtable".to_owned()])
            .map_err(|err| MediaError::Config(format!("certificate parameters: {err}")))?;
        let certificate =
            RTCCertificate::generate(crypto.crypto(), SignatureScheme::EcdsaP256Sha256, params)?;
        let host_candidate = host_candidate(candidate_addr, false)?;

        // ICE-TCP on the same port number if it is free (else any, logged).
        let (tcp_tx, tcp_rx) = std_mpsc::channel::<TcpInput>();
        let (tcp_side, tcp_candidate, tcp_addr) = if config.ice_tcp {
            let listener = TcpListener::bind(bound).or_else(|err| {
                warn!(%bound, %err, "ICE-TCP: the UDP port number is taken on TCP; any port");
                TcpListener::bind(SocketAddr::new(bound.ip(), 0))
            })?;
            let waker = waker.try_clone()?;
            let side = tcp::start(listener, move |input| {
                let ok = tcp_tx.send(input).is_ok();
                let _ = waker.send_to(&[0], wake_addr);
                ok
            })?;
            let addr = SocketAddr::new(advertised_ip, side.addr.port());
            (Some(side), Some(host_candidate_tcp(addr)?), Some(addr))
        } else {
            (None, None, None)
        };

        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
        let engine = Engine {
            socket,
            candidate_addr,
            host_candidate,
            tcp_side,
            tcp_rx,
            tcp_candidate,
            tcp_addr,
            tcp_streams: HashMap::new(),
            by_tcp: HashMap::new(),
            tcp_buf: vec![0; 2 + 65_535],
            certificate,
            crypto,
            conns: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            timers: BinaryHeap::new(),
            table: ForwardTable::default(),
            rooms: Rooms::default(),
            epoch: Instant::now(),
            next_keyframe_poll: Instant::now(),
            next_sample: Instant::now(),
            dirty: VecDeque::new(),
            events: event_tx,
            stats: EngineStats::default(),
            next_track: 1,
            read_timeout: None,
            connect_timeout: config.connect_timeout,
            health: config.health,
            next_sweep: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || engine.run(cmd_rx))?;
        info!(%bound, %candidate_addr, "media engine started");
        let handle = MediaHandle {
            tx: cmd_tx,
            shared: Arc::new(Shared {
                waker,
                wake_addr,
                thread: Mutex::new(Some(thread)),
            }),
        };
        Ok((handle, event_rx, bound))
    }
}

/// The async world's way into the engine. Cheap to clone; the thread stops when every clone
/// is dropped (or on [`MediaHandle::shutdown`]).
#[derive(Clone)]
pub struct MediaHandle {
    tx: std_mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl fmt::Debug for MediaHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaHandle")
            .field("engine", &self.shared.wake_addr)
            .finish()
    }
}

struct Shared {
    /// Sends the one-byte wake datagram after each command.
    waker: UdpSocket,
    /// Where the engine's socket can be reached from this host.
    wake_addr: SocketAddr,
    /// The media thread, joined by `shutdown`.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn wake(&self) {
        // Best effort: if the datagram is lost, the loop still sees the command within IDLE_WAIT.
        let _ = self.waker.send_to(&[0], self.wake_addr);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone and with it the command sender: wake the loop so it notices.
        self.wake();
    }
}

impl MediaHandle {
    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, MediaError>>) -> Command,
    ) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| MediaError::Stopped)?;
        self.shared.wake();
        rx.await.map_err(|_| MediaError::Stopped)?
    }

    /// A client publishes: `offer_sdp` is its offer (sendonly audio/video, possibly simulcast).
    /// Returns our answer, complete with our host candidate and end-of-candidates.
    pub async fn create_publisher(
        &self,
        conn: ConnId,
        offer_sdp: String,
    ) -> Result<String, MediaError> {
        self.call(|reply| Command::CreatePublisher {
            conn,
            offer_sdp,
            reply,
        })
        .await
    }

    /// A publisher renegotiates (adds or removes a track): `offer_sdp` is its new offer.
    /// Returns our answer. See docs/MEDIA-NOTES.md for what the core does to the streams
    /// already flowing.
    pub async fn update_publisher(
        &self,
        conn: ConnId,
        offer_sdp: String,
    ) -> Result<String, MediaError> {
        self.call(|reply| Command::UpdatePublisher {
            conn,
            offer_sdp,
            reply,
        })
        .await
    }

    /// A client subscribes: we offer `tracks` (sendonly); an empty list offers a data channel
    /// instead, so the connection can come up before there is anything to send. Send the
    /// client's answer with [`MediaHandle::set_answer`].
    pub async fn create_subscriber(
        &self,
        conn: ConnId,
        tracks: Vec<TrackSpec>,
    ) -> Result<SubscriberOffer, MediaError> {
        self.call(|reply| Command::CreateSubscriber {
            conn,
            tracks,
            reply,
        })
        .await
    }

    /// The client's answer to our latest offer on a subscriber connection.
    pub async fn set_answer(&self, conn: ConnId, answer_sdp: String) -> Result<(), MediaError> {
        self.call(|reply| Command::SetAnswer {
            conn,
            answer_sdp,
            reply,
        })
        .await
    }

    /// Adds a track to a subscriber connection (server-driven renegotiation). Returns the track
    /// and the new offer, to be answered with [`MediaHandle::set_answer`].
    pub async fn add_track(
        &self,
        conn: ConnId,
        spec: TrackSpec,
    ) -> Result<(OutTrackInfo, String), MediaError> {
        self.call(|reply| Command::AddTrack { conn, spec, reply })
            .await
    }

    /// Restarts ICE on a subscriber connection: the new offer (new credentials, the same
    /// tracks), to be answered with [`MediaHandle::set_answer`]. Replaces an unanswered offer.
    pub async fn restart_subscriber(&self, conn: ConnId) -> Result<String, MediaError> {
        self.call(|reply| Command::RestartSubscriber { conn, reply })
            .await
    }

    /// A trickled remote ICE candidate (`candidate:...` line, or empty for end-of-candidates).
    pub async fn add_remote_candidate(
        &self,
        conn: ConnId,
        candidate: String,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::AddRemoteCandidate {
            conn,
            candidate,
            reply,
        })
        .await
    }

    /// Forwards the inbound stream `from_ssrc` of publisher `from` to track `to_track` of
    /// subscriber `to`: SSRC and payload type are rewritten, header extensions stripped.
    pub async fn forward(
        &self,
        from: ConnId,
        from_ssrc: u32,
        to: ConnId,
        to_track: OutTrackId,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Forward {
            route: (from, from_ssrc, to, to_track),
            add: true,
            reply,
        })
        .await
    }

    /// Undoes [`MediaHandle::forward`] (no error if the route did not exist).
    pub async fn unforward(
        &self,
        from: ConnId,
        from_ssrc: u32,
        to: ConnId,
        to_track: OutTrackId,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::Forward {
            route: (from, from_ssrc, to, to_track),
            add: false,
            reply,
        })
        .await
    }

    /// Applies a change to a room's router (created on first use); returns the slot changes
    /// the subscribers need negotiated.
    pub async fn router(&self, room: RoomId, op: RouterOp) -> Result<Vec<SlotChange>, MediaError> {
        self.call(|reply| Command::Router { room, op, reply }).await
    }

    /// Binds an inbound stream of a publisher connection to a router track and layer: its
    /// packets are routed by the room's router from now on.
    pub async fn bind_ingress(
        &self,
        conn: ConnId,
        ssrc: u32,
        kind: MediaKind,
        room: RoomId,
        track: TrackId,
        layer: u8,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::BindIngress {
            conn,
            ssrc,
            kind,
            at: (room, track, layer),
            reply,
        })
        .await
    }

    /// Binds a router slot of a subscriber to a track we send on its connection.
    pub async fn bind_egress(
        &self,
        room: RoomId,
        peer: PeerId,
        slot: router::Slot,
        conn: ConnId,
        track: OutTrackId,
    ) -> Result<(), MediaError> {
        self.call(|reply| Command::BindEgress {
            at: (room, peer, slot),
            to: (conn, track),
            reply,
        })
        .await
    }

    /// Fault injection for tests and soak runs: drop this share (per mille) of the RTP we send
    /// on a connection, as a lossy network would (retransmissions included).
    pub async fn set_loss(&self, conn: ConnId, permille: u16) -> Result<(), MediaError> {
        self.call(|reply| Command::SetLoss {
            conn,
            permille,
            reply,
        })
        .await
    }

    /// Asks every inbound video stream of a publisher connection for a keyframe now (a
    /// technician's action); returns how many were asked.
    pub async fn request_keyframes(&self, conn: ConnId) -> Result<usize, MediaError> {
        self.call(|reply| Command::RequestKeyframes { conn, reply })
            .await
    }

    /// Audio packets of `peer` dropped by the floor gate.
    pub async fn gate_dropped(&self, room: RoomId, peer: PeerId) -> Result<u64, MediaError> {
        self.call(|reply| Command::GateDropped { room, peer, reply })
            .await
    }

    /// Sends a PLI to the publisher `conn` for its inbound stream `ssrc`.
    pub async fn request_keyframe(&self, conn: ConnId, ssrc: u32) -> Result<(), MediaError> {
        self.call(|reply| Command::RequestKeyframe { conn, ssrc, reply })
            .await
    }

    /// Closes a connection (DTLS close_notify is sent) and forgets it and its routes.
    pub async fn remove_connection(&self, conn: ConnId) -> Result<(), MediaError> {
        self.call(|reply| Command::RemoveConnection { conn, reply })
            .await
    }

    /// The engine's counters.
    pub async fn stats(&self) -> Result<EngineStats, MediaError> {
        self.call(|reply| Command::Stats { reply }).await
    }

    /// Stops the thread (closing every connection) and waits for it. Blocks the caller for as
    /// long as the thread takes to finish its current iteration; call it from a blocking
    /// context (or `spawn_blocking`) in async code.
    pub fn shutdown(&self) {
        if self.tx.send(Command::Shutdown).is_ok() {
            self.shared.wake();
        }
        let thread = self
            .shared
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            warn!("media thread panicked");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

type Reply<T> = oneshot::Sender<Result<T, MediaError>>;

enum Command {
    CreatePublisher {
        conn: ConnId,
        offer_sdp: String,
        reply: Reply<String>,
    },
    UpdatePublisher {
        conn: ConnId,
        offer_sdp: String,
        reply: Reply<String>,
    },
    CreateSubscriber {
        conn: ConnId,
        tracks: Vec<TrackSpec>,
        reply: Reply<SubscriberOffer>,
    },
    SetAnswer {
        conn: ConnId,
        answer_sdp: String,
        reply: Reply<()>,
    },
    AddTrack {
        conn: ConnId,
        spec: TrackSpec,
        reply: Reply<(OutTrackInfo, String)>,
    },
    RestartSubscriber {
        conn: ConnId,
        reply: Reply<String>,
    },
    AddRemoteCandidate {
        conn: ConnId,
        candidate: String,
        reply: Reply<()>,
    },
    Forward {
        route: (ConnId, u32, ConnId, OutTrackId),
        add: bool,
        reply: Reply<()>,
    },
    RequestKeyframe {
        conn: ConnId,
        ssrc: u32,
        reply: Reply<()>,
    },
    RemoveConnection {
        conn: ConnId,
        reply: Reply<()>,
    },
    Stats {
        reply: Reply<EngineStats>,
    },
    Router {
        room: RoomId,
        op: RouterOp,
        reply: Reply<Vec<SlotChange>>,
    },
    BindIngress {
        conn: ConnId,
        ssrc: u32,
        kind: MediaKind,
        at: (RoomId, TrackId, u8),
        reply: Reply<()>,
    },
    BindEgress {
        at: (RoomId, PeerId, router::Slot),
        to: (ConnId, OutTrackId),
        reply: Reply<()>,
    },
    GateDropped {
        room: RoomId,
        peer: PeerId,
        reply: Reply<u64>,
    },
    SetLoss {
        conn: ConnId,
        permille: u16,
        reply: Reply<()>,
    },
    RequestKeyframes {
        conn: ConnId,
        reply: Reply<usize>,
    },
    Shutdown,
}

/// Where a bound inbound stream goes in its room's router.
#[derive(Debug, Clone, Copy)]
struct Ingress {
    room: RoomId,
    track: TrackId,
    layer: u8,
    video: bool,
}

/// A bound inbound stream: its route and its measurements.
#[derive(Debug, Clone)]
struct Bound {
    route: Ingress,
    meter: StreamMeter,
}

/// The routers and the bindings between their ids and the engine's.
#[derive(Debug, Default)]
struct Rooms {
    routers: HashMap<RoomId, Router>,
    ingress: HashMap<(ConnId, u32), Bound>,
    /// (room, track, layer) → the publisher stream, for keyframe requests.
    sources: HashMap<(RoomId, TrackId, u8), (ConnId, u32)>,
    egress: HashMap<(RoomId, PeerId, router::Slot), (ConnId, OutTrackId)>,
    /// Bindings of removed slots, kept until the router reuses their stream for a new slot.
    parked: HashMap<(RoomId, PeerId, router::Slot), (ConnId, OutTrackId)>,
    /// (subscriber, track) → its slot, for subscribers' keyframe requests.
    slots: HashMap<(ConnId, OutTrackId), (RoomId, PeerId, router::Slot)>,
    /// Voice activity per published audio track, with the publisher connection.
    voice: HashMap<(RoomId, TrackId), (ConnId, VoiceActivity)>,
    /// Speech changes found while routing, emitted after.
    speech: Vec<MediaEvent>,
    /// Reused per packet.
    out: Vec<Forward>,
    /// Reused per keyframe poll.
    keyframes: Vec<(TrackId, u8)>,
}

impl Rooms {
    fn forget_conn(&mut self, conn: ConnId) {
        self.ingress.retain(|(c, _), _| *c != conn);
        self.sources.retain(|_, (c, _)| *c != conn);
        self.egress.retain(|_, (c, _)| *c != conn);
        self.parked.retain(|_, (c, _)| *c != conn);
        self.voice.retain(|_, (c, _)| *c != conn);
        self.slots.retain(|(c, _), _| *c != conn);
    }
}

// ---------------------------------------------------------------------------------------------
// Forwarding table (temporary: the engine-agnostic router replaces this)
// ---------------------------------------------------------------------------------------------

/// Where an inbound stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    to: ConnId,
    track: OutTrackId,
}

/// The minimal routing table the engine uses until the router lands: inbound stream
/// `(publisher, ssrc)` → subscriber tracks. No layer selection, no sequence or timestamp
/// rewriting (one source per track, so the numbering passes through), no gate. The engine only
/// calls [`ForwardTable::routes`] per packet and `add`/`remove`/`forget_conn` per command, so
/// swapping it for the router touches those calls only.
#[derive(Debug, Default)]
struct ForwardTable {
    routes: HashMap<(ConnId, u32), Vec<Route>>,
}

impl ForwardTable {
    fn routes(&self, from: ConnId, ssrc: u32) -> &[Route] {
        self.routes
            .get(&(from, ssrc))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    fn add(&mut self, from: ConnId, ssrc: u32, route: Route) {
        // One source per subscriber track: a new route to the same track replaces the old.
        for others in self.routes.values_mut() {
            others.retain(|r| *r != route);
        }
        self.routes.retain(|_, r| !r.is_empty());
        self.routes.entry((from, ssrc)).or_default().push(route);
    }

    fn remove(&mut self, from: ConnId, ssrc: u32, route: Route) {
        if let Entry::Occupied(mut e) = self.routes.entry((from, ssrc)) {
            e.get_mut().retain(|r| *r != route);
            if e.get().is_empty() {
                e.remove();
            }
        }
    }

    fn forget_conn(&mut self, conn: ConnId) {
        self.routes.retain(|(from, _), routes| {
            routes.retain(|r| r.to != conn);
            *from != conn && !routes.is_empty()
        });
    }
}

// ---------------------------------------------------------------------------------------------
// The engine thread
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher,
    Subscriber,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        }
    }
}

struct OutTrack {
    sender: RTCRtpSenderId,
    ssrc: u32,
    pt: u8,
    video: bool,
}

impl Conn {
    /// A receiver report from the client about streams we send it.
    fn receiver_report(&mut self, rr: &ReceiverReport) {
        for r in &rr.reports {
            let Some(track) = self.out_by_ssrc.get(&r.ssrc) else {
                continue;
            };
            let video = self.out_tracks.get(track).is_some_and(|t| t.video);
            let clock = if video { 90.0 } else { 48.0 };
            let loss = f64::from(r.fraction_lost) / 256.0;
            let jitter = f64::from(r.jitter) / clock;
            let w = self.report_window.get_or_insert((0.0, 0.0));
            w.0 = w.0.max(loss);
            w.1 = w.1.max(jitter);
            self.reports.reports += 1;
            // RTT = now − LSR − DLSR, in 1/65536 s (RFC 3550 6.4.1), on the wall clock the
            // sender reports use.
            if r.last_sender_report != 0 {
                let since = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let now32 = ((rtc::shared::time::SystemInstant::unix2ntp(since) >> 16)
                    & 0xFFFF_FFFF) as u32;
                let rtt = now32
                    .wrapping_sub(r.last_sender_report)
                    .wrapping_sub(r.delay);
                let ms = f64::from(rtt) * 1000.0 / 65536.0;
                if ms < 60_000.0 {
                    self.rtt_ms = Some(ms);
                }
            }
        }
    }
}

struct Conn {
    pc: RTCPeerConnection,
    role: Role,
    /// Our ICE ufrags, the current one last: the one before stays routable while a restart
    /// settles (checks with the old credentials may still be in flight).
    ufrags: Vec<String>,
    /// Remote addresses mapped to this connection (removed with it).
    addrs: Vec<SocketAddr>,
    state: ConnState,
    /// Removed at this instant unless it has connected by then.
    connect_by: Option<Instant>,
    /// The deadline last pushed on the timer heap.
    deadline: Option<Instant>,
    dirty: bool,
    /// Fault injection: the share of outgoing RTP dropped, per mille (0: none).
    loss_permille: u16,
    /// xorshift state for the loss draw.
    loss_rng: u32,
    /// Inbound streams: SSRC → the receiver that owns it (for keyframe requests).
    inbound: HashMap<u32, RTCRtpReceiverId>,
    /// Tracks we send.
    out_tracks: HashMap<OutTrackId, OutTrack>,
    /// Our SSRC → track, to attribute inbound RTCP feedback.
    out_by_ssrc: HashMap<u32, OutTrackId>,
    /// The negotiated id of the RFC 6464 audio-level extension (publishers).
    audio_level_id: Option<u8>,
    /// RTP packets and payload bytes sent (subscribers), for stream health.
    sent_packets: u64,
    sent_bytes: u64,
    /// What the client's receiver reports said since the last sample (subscribers).
    reports: ReceiverSample,
    /// Worst loss and jitter of the reports since the last sample.
    report_window: Option<(f64, f64)>,
    /// Round-trip time from the last receiver report (LSR/DLSR), ms.
    rtt_ms: Option<f64>,
}

struct Engine {
    socket: UdpSocket,
    /// The host candidate's address: what we advertise, and the `local_addr` of every datagram
    /// handed to the core (ICE matches it against the local candidates).
    candidate_addr: SocketAddr,
    host_candidate: RTCIceCandidateInit,
    /// ICE-TCP: the acceptor (stopped when the engine ends), its inputs, our `tcp passive`
    /// candidate and its address, the writing end of each stream, and stream → connection.
    tcp_side: Option<TcpSide>,
    tcp_rx: std_mpsc::Receiver<TcpInput>,
    tcp_candidate: Option<RTCIceCandidateInit>,
    tcp_addr: Option<SocketAddr>,
    tcp_streams: HashMap<SocketAddr, TcpStream>,
    by_tcp: HashMap<SocketAddr, ConnId>,
    /// Framing buffer for TCP writes.
    tcp_buf: Vec<u8>,
    certificate: RTCCertificate,
    crypto: Arc<dyn RTCCryptoProvider>,
    conns: HashMap<ConnId, Conn>,
    by_addr: HashMap<SocketAddr, ConnId>,
    by_ufrag: HashMap<String, ConnId>,
    /// Min-heap of (deadline, connection); entries whose deadline is no longer the
    /// connection's are skipped when popped.
    timers: BinaryHeap<Reverse<(Instant, ConnId)>>,
    table: ForwardTable,
    rooms: Rooms,
    /// The router's clock starts here (milliseconds since).
    epoch: Instant,
    next_keyframe_poll: Instant,
    next_sample: Instant,
    dirty: VecDeque<ConnId>,
    events: mpsc::Sender<MediaEvent>,
    stats: EngineStats,
    next_track: u64,
    /// The read timeout currently set on the socket.
    read_timeout: Option<Duration>,
    connect_timeout: Duration,
    /// When to look for connections past their connect deadline next.
    next_sweep: Instant,
    /// Stream-health measurement on ([`MediaConfig::health`]).
    health: bool,
}

impl Engine {
    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; RECV_BUF];
        'run: loop {
            // 1. Commands.
            loop {
                match commands.try_recv() {
                    Ok(Command::Shutdown) | Err(std_mpsc::TryRecvError::Disconnected) => {
                        break 'run;
                    }
                    Ok(command) => self.command(command),
                    Err(std_mpsc::TryRecvError::Empty) => break,
                }
            }
            while let Ok(input) = self.tcp_rx.try_recv() {
                self.tcp_input(input);
            }
            self.flush_dirty();

            // 2. Timers.
            let now = Instant::now();
            self.fire_timers(now);
            self.flush_dirty();

            if now >= self.next_sweep {
                self.sweep(now);
            }
            if now >= self.next_keyframe_poll {
                self.poll_keyframes(now);
                self.next_keyframe_poll = now + KEYFRAME_POLL;
            }
            if self.health && now >= self.next_sample {
                self.sample(now);
                self.next_sample = now + Duration::from_millis(SAMPLE_PERIOD_MS as u64);
            }

            // 3. Wait for a datagram until the next deadline.
            let until = self
                .next_deadline()
                .map_or(self.next_sweep, |d| d.min(self.next_sweep));
            let wait = until
                .saturating_duration_since(Instant::now())
                .min(IDLE_WAIT);
            if wait.is_zero() {
                continue;
            }
            self.set_read_timeout(wait);
            match self.socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    self.receive(&buf[..n], from, TransportProtocol::UDP, Instant::now());
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                // ICMP port unreachable from an earlier send surfaces here on some systems.
                Err(err) if err.kind() == io::ErrorKind::ConnectionReset => {}
                Err(err) => {
                    warn!(%err, "media socket receive failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.remove_conn(id);
        }
        if let Some(side) = self.tcp_side.take() {
            side.stop();
        }
        for stream in self.tcp_streams.values() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        info!("media engine stopped");
    }

    fn set_read_timeout(&mut self, wait: Duration) {
        // Waking early is harmless (the loop just goes round); waking late is not. Only change
        // the socket option when the wait must shrink or has grown a lot.
        let wait = wait.max(Duration::from_micros(500));
        let change = match self.read_timeout {
            None => true,
            Some(current) => wait < current || wait > current * 2 + Duration::from_millis(1),
        };
        if change {
            if let Err(err) = self.socket.set_read_timeout(Some(wait)) {
                warn!(%err, "cannot set the media socket timeout");
            }
            self.read_timeout = Some(wait);
        }
    }

    // --- input ---------------------------------------------------------------------------

    /// One packet read off the socket or a TCP stream at `read_at`: handled, its output sent,
    /// and, if it was forwarded, the time to the last copy recorded in `forward_latency`.
    fn receive(
        &mut self,
        data: &[u8],
        from: SocketAddr,
        proto: TransportProtocol,
        read_at: Instant,
    ) {
        self.stats.datagrams_in += 1;
        let forwarded = self.stats.rtp_forwarded;
        self.input(data, from, proto, read_at);
        self.flush_dirty();
        if self.stats.rtp_forwarded != forwarded {
            let us = read_at.elapsed().as_micros() as u64;
            self.stats.forward_latency.record(us);
        }
    }

    /// What the TCP threads report.
    fn tcp_input(&mut self, input: TcpInput) {
        match input {
            TcpInput::Opened(peer, stream) => {
                self.tcp_streams.insert(peer, stream);
            }
            TcpInput::Packet(peer, data) => {
                self.receive(&data, peer, TransportProtocol::TCP, Instant::now());
            }
            TcpInput::Closed(peer) => self.close_tcp(peer),
        }
    }

    fn close_tcp(&mut self, peer: SocketAddr) {
        if let Some(stream) = self.tcp_streams.remove(&peer) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        self.by_tcp.remove(&peer);
        debug!(%peer, "ICE-TCP stream closed");
    }

    /// One packet from a peer, by UDP datagram or TCP frame.
    fn input(&mut self, data: &[u8], from: SocketAddr, proto: TransportProtocol, now: Instant) {
        let tcp = proto == TransportProtocol::TCP;
        let Some(id) = self.demux(data, from, tcp) else {
            self.stats.datagrams_unrouted += 1;
            trace!(%from, len = data.len(), tcp, "packet for no connection");
            return;
        };
        let local_addr = match (tcp, self.tcp_addr) {
            (true, Some(addr)) => addr,
            _ => self.candidate_addr,
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: proto,
            },
            message: BytesMut::from(data),
        };
        if let Err(err) = conn.pc.handle_read(msg) {
            self.stats.core_errors += 1;
            debug!(conn = %id, %err, "handle_read failed");
        }
        self.mark_dirty(id);
    }

    /// Which connection a datagram is for: STUN with USERNAME by our ufrag (authoritative),
    /// anything else by the remote address.
    fn demux(&mut self, data: &[u8], from: SocketAddr, tcp: bool) -> Option<ConnId> {
        if let Some(ufrag) = stun_local_ufrag(data) {
            if let Some(&id) = std::str::from_utf8(ufrag)
                .ok()
                .and_then(|u| self.by_ufrag.get(u))
            {
                // Map the address if it is free; an address already mapped to another
                // connection keeps its mapping (only the STUN goes by ufrag). A TCP stream
                // serves one connection.
                let map = if tcp {
                    &mut self.by_tcp
                } else {
                    &mut self.by_addr
                };
                if let Entry::Vacant(e) = map.entry(from) {
                    e.insert(id);
                    if !tcp {
                        if let Some(conn) = self.conns.get_mut(&id) {
                            conn.addrs.push(from);
                        }
                    }
                }
                return Some(id);
            }
        }
        if tcp {
            self.by_tcp.get(&from).copied()
        } else {
            self.by_addr.get(&from).copied()
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, id))) = self.timers.peek() {
            if deadline > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            if conn.deadline != Some(deadline) {
                continue; // stale entry
            }
            conn.deadline = None;
            if let Err(err) = conn.pc.handle_timeout(now) {
                self.stats.core_errors += 1;
                debug!(conn = %id, %err, "handle_timeout failed");
            }
            self.mark_dirty(id);
        }
        // Stale entries pile up when deadlines move; rebuild before the heap gets silly.
        if self.timers.len() > 4 * self.conns.len() + 64 {
            self.timers = self
                .conns
                .iter()
                .filter_map(|(id, c)| c.deadline.map(|d| Reverse((d, *id))))
                .collect();
        }
    }

    /// Removes the connections past their connect deadline.
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.connect_by.is_some_and(|by| by <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            info!(conn = %id, "connection did not connect in time; removed");
            self.remove_conn(id);
            self.emit(MediaEvent::TimedOut { conn: id });
        }
        // Streams that stopped sending stop speaking.
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as i64;
        let mut changes = Vec::new();
        for (&(_, track), (conn, vad)) in &mut self.rooms.voice {
            if let Some(c) = vad.tick(now_ms) {
                changes.push(MediaEvent::Speaking {
                    conn: *conn,
                    track,
                    speaking: c.speaking,
                    level: c.level,
                });
            }
        }
        for event in changes {
            self.emit(event);
        }
        self.next_sweep = now
            + (self.connect_timeout / 4)
                .clamp(Duration::from_millis(10), Duration::from_millis(250));
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((d, _))| *d)
    }

    // --- output --------------------------------------------------------------------------

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.get_mut(&id)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push_back(id);
        }
    }

    fn flush_dirty(&mut self) {
        while let Some(id) = self.dirty.pop_front() {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.dirty = false;
            }
            self.drain(id, Instant::now());
        }
    }

    /// Step 2 and 3 of the run-loop contract for one connection.
    fn drain(&mut self, id: ConnId, now: Instant) {
        loop {
            let mut progressed = false;
            progressed |= self.drain_writes(id);
            progressed |= self.drain_events(id);
            progressed |= self.drain_reads(id, now);
            if !progressed {
                break;
            }
        }
        if let Some(conn) = self.conns.get_mut(&id) {
            let mut next = conn.pc.poll_timeout();
            // A deadline that did not move past `now` would spin the loop; push it out a little.
            if let Some(d) = next
                && d <= now
            {
                next = Some(now + Duration::from_millis(1));
            }
            if next != conn.deadline {
                conn.deadline = next;
                if let Some(d) = next {
                    self.timers.push(Reverse((d, id)));
                }
            }
        }
    }

    fn drain_writes(&mut self, id: ConnId) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        let mut any = false;
        let mut broken = Vec::new();
        while let Some(out) = conn.pc.poll_write() {
            any = true;
            let to = out.transport.peer_addr;
            if out.transport.transport_protocol == TransportProtocol::TCP {
                if write_framed(&mut self.tcp_streams, &mut self.tcp_buf, to, &out.message) {
                    self.stats.datagrams_out += 1;
                } else {
                    self.stats.send_errors += 1;
                    broken.push(to);
                }
                continue;
            }
            // Our connectivity checks: map the destination so the answer finds its way back.
            if is_stun(&out.message)
                && let Entry::Vacant(e) = self.by_addr.entry(to)
            {
                e.insert(id);
                conn.addrs.push(to);
            }
            if conn.loss_permille > 0 && is_rtp(&out.message) {
                conn.loss_rng ^= conn.loss_rng << 13;
                conn.loss_rng ^= conn.loss_rng >> 17;
                conn.loss_rng ^= conn.loss_rng << 5;
                if conn.loss_rng % 1000 < u32::from(conn.loss_permille) {
                    self.stats.rtp_dropped_by_loss += 1;
                    continue;
                }
            }
            match self.socket.send_to(&out.message, to) {
                Ok(_) => self.stats.datagrams_out += 1,
                Err(err) => {
                    self.stats.send_errors += 1;
                    trace!(conn = %id, %to, %err, "send failed");
                }
            }
        }
        // A stream that would not take a packet in time (or is gone) is closed: its peer
        // falls back to another candidate pair, or reconnects.
        for peer in broken {
            if self.tcp_streams.contains_key(&peer) {
                debug!(conn = %id, %peer, "ICE-TCP write failed; closing the stream");
                self.close_tcp(peer);
            }
        }
        any
    }

    fn drain_events(&mut self, id: ConnId) -> bool {
        let mut any = false;
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return any;
            };
            let Some(event) = conn.pc.poll_event() else {
                return any;
            };
            any = true;
            match event {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    let state = match state {
                        RTCPeerConnectionState::Connecting => ConnState::Connecting,
                        RTCPeerConnectionState::Connected => ConnState::Connected,
                        RTCPeerConnectionState::Disconnected => ConnState::Disconnected,
                        RTCPeerConnectionState::Failed => ConnState::Failed,
                        RTCPeerConnectionState::Closed => ConnState::Closed,
                        _ => ConnState::New,
                    };
                    if state == ConnState::Connected {
                        conn.connect_by = None;
                    }
                    if conn.state != state {
                        conn.state = state;
                        debug!(conn = %id, ?state, "connection state");
                        if state == ConnState::Connected {
                            // A subscriber that just came up starts every video slot at a
                            // keyframe: tell its routers (requests merged with everyone's).
                            let mut peers: Vec<(RoomId, PeerId)> = self
                                .rooms
                                .slots
                                .iter()
                                .filter(|((c, _), _)| *c == id)
                                .map(|(_, &(room, peer, _))| (room, peer))
                                .collect();
                            peers.sort();
                            peers.dedup();
                            for (room, peer) in peers {
                                if let Some(r) = self.rooms.routers.get_mut(&room) {
                                    r.subscriber_connected(peer);
                                }
                            }
                        }
                        self.emit(MediaEvent::ConnectionState { conn: id, state });
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    conn.inbound.insert(init.ssrc, init.receiver_id);
                    let kind = conn
                        .pc
                        .rtp_receiver(init.receiver_id)
                        .map(|r| r.track().kind());
                    let kind = match kind {
                        Some(RtpCodecKind::Audio) => MediaKind::Audio,
                        Some(RtpCodecKind::Video) => MediaKind::Video,
                        _ => continue,
                    };
                    debug!(conn = %id, ssrc = init.ssrc, rid = ?init.rid, ?kind, "track opened");
                    self.emit(MediaEvent::TrackOpened {
                        conn: id,
                        track: init.track_id,
                        kind,
                        ssrc: init.ssrc,
                        rid: init.rid,
                    });
                }
                _ => {}
            }
        }
    }

    fn drain_reads(&mut self, id: ConnId, now: Instant) -> bool {
        let mut any = false;
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return any;
            };
            let Some(TaggedRTCMessage { message, .. }) = conn.pc.poll_read() else {
                return any;
            };
            any = true;
            match message {
                RTCMessage::RtpPacket(_track, packet) => {
                    self.stats.rtp_in += 1;
                    self.stats.bytes_in += packet.payload.len() as u64;
                    self.forward(id, packet, now);
                }
                RTCMessage::RtcpPacket(_track, packets) => {
                    for packet in &packets {
                        let any = packet.as_any();
                        if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                            if let Some(conn) = self.conns.get_mut(&id) {
                                conn.receiver_report(rr);
                            }
                            continue;
                        }
                        if any.is::<TransportLayerNack>() {
                            self.stats.nacks_in += 1;
                            continue;
                        }
                        self.stats.keyframe_requests_in += 1;
                        let (ssrcs, kind): (Vec<u32>, _) =
                            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                                (vec![pli.media_ssrc], KeyframeKind::Pli)
                            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                                (fir.fir.iter().map(|e| e.ssrc).collect(), KeyframeKind::Fir)
                            } else {
                                continue;
                            };
                        for ssrc in ssrcs {
                            let track = self
                                .conns
                                .get(&id)
                                .and_then(|c| c.out_by_ssrc.get(&ssrc).copied());
                            if let Some(track) = track {
                                if let Some(&(room, peer, slot)) =
                                    self.rooms.slots.get(&(id, track))
                                {
                                    if let Some(r) = self.rooms.routers.get_mut(&room) {
                                        r.subscriber_wants_keyframe(peer, slot);
                                    }
                                }
                                self.emit(MediaEvent::KeyframeRequest {
                                    conn: id,
                                    track,
                                    kind,
                                });
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// The per-packet path: route an inbound RTP packet to its subscriber tracks.
    fn forward(&mut self, from: ConnId, packet: rtc::rtp::Packet, now: Instant) {
        if let Some(bound) = self.rooms.ingress.get_mut(&(from, packet.header.ssrc)) {
            let ingress = bound.route;
            let arrival_us = now.saturating_duration_since(self.epoch).as_micros() as i64;
            let media = !packet.payload.is_empty();
            let level = if ingress.video {
                None
            } else {
                self.conns
                    .get(&from)
                    .and_then(|c| c.audio_level_id)
                    .and_then(|id| packet.header.get_extension(id))
                    .and_then(|b| rtp::audio_level(&b))
                    .map(|(_, l)| l)
            };
            let keyframe = ingress.video && media && rtp::vp8_keyframe(&packet.payload);
            if self.health {
                bound.meter.packet(
                    arrival_us,
                    packet.header.sequence_number,
                    packet.header.timestamp,
                    packet.payload.len(),
                    media,
                    keyframe,
                    level,
                );
            }
            self.route(from, ingress, packet, now, level, keyframe);
            if !self.rooms.speech.is_empty() {
                for event in std::mem::take(&mut self.rooms.speech) {
                    self.emit(event);
                }
            }
        } else {
            self.forward_by_table(from, packet, now);
        }
    }

    /// Routes a packet through its room's router: the gate, the layer and the slot decide;
    /// each copy gets the slot's SSRC and the router's sequence number and timestamp.
    fn route(
        &mut self,
        from: ConnId,
        ingress: Ingress,
        mut packet: rtc::rtp::Packet,
        now: Instant,
        level: Option<u8>,
        keyframe: bool,
    ) {
        // Padding only (a browser probing bandwidth on a layer's own stream, as no RTX is
        // negotiated): nothing to forward, and it must not make a paused layer look flowing.
        if packet.payload.is_empty() {
            if let Some(router) = self.rooms.routers.get_mut(&ingress.room) {
                router.skip(ingress.track, ingress.layer);
            }
            return;
        }
        let Self {
            rooms,
            conns,
            stats,
            dirty,
            epoch,
            ..
        } = self;
        let now_ms = now.saturating_duration_since(*epoch).as_millis() as i64;
        if !ingress.video {
            if let Some(level) = level {
                let (_, vad) = rooms
                    .voice
                    .entry((ingress.room, ingress.track))
                    .or_insert_with(|| (from, VoiceActivity::new()));
                if let Some(change) = vad.packet(now_ms, level) {
                    rooms.speech.push(MediaEvent::Speaking {
                        conn: from,
                        track: ingress.track,
                        speaking: change.speaking,
                        level: change.level,
                    });
                }
            }
        }
        let Some(router) = rooms.routers.get_mut(&ingress.room) else {
            return;
        };
        let incoming = Incoming {
            track: ingress.track,
            layer: ingress.layer,
            seq: packet.header.sequence_number,
            timestamp: packet.header.timestamp,
            keyframe,
        };
        rooms.out.clear();
        router.route(now_ms, &incoming, &mut rooms.out);
        if rooms.out.is_empty() {
            return;
        }
        strip_extensions(&mut packet.header);
        let payload_len = packet.payload.len() as u64;
        for f in &rooms.out {
            let Some(&(to, track_id)) = rooms.egress.get(&(ingress.room, f.peer, f.slot)) else {
                continue;
            };
            let Some(conn) = conns.get_mut(&to) else {
                continue;
            };
            if conn.state != ConnState::Connected {
                continue;
            }
            let Some(track) = conn.out_tracks.get(&track_id) else {
                continue;
            };
            let mut out = packet.clone();
            out.header.ssrc = track.ssrc;
            out.header.payload_type = track.pt;
            out.header.sequence_number = f.seq;
            out.header.timestamp = f.timestamp;
            let sender = track.sender;
            match conn
                .pc
                .rtp_sender(sender)
                .map(|mut s| s.write_rtp(now, out))
            {
                Some(Ok(())) => {
                    stats.rtp_forwarded += 1;
                    stats.bytes_forwarded += payload_len;
                    conn.sent_packets += 1;
                    conn.sent_bytes += payload_len;
                }
                Some(Err(err)) => {
                    stats.forward_errors += 1;
                    trace!(to = %to, %err, "write_rtp refused");
                }
                None => stats.forward_errors += 1,
            }
            if !conn.dirty {
                conn.dirty = true;
                dirty.push_back(to);
            }
        }
    }

    /// Samples every connected connection's measurements for stream health
    /// ([`MediaEvent::Sample`]).
    fn sample(&mut self, now: Instant) {
        let at_ms = now.saturating_duration_since(self.epoch).as_millis() as i64;
        let mut streams: HashMap<ConnId, Vec<StreamSample>> = HashMap::new();
        for ((conn, ssrc), bound) in self.rooms.ingress.iter_mut() {
            streams.entry(*conn).or_default().push(StreamSample {
                ssrc: *ssrc,
                video: bound.route.video,
                layer: bound.route.layer,
                counters: bound.meter.sample(),
            });
        }
        let mut out = Vec::new();
        for (id, conn) in self.conns.iter_mut() {
            if conn.state != ConnState::Connected {
                continue;
            }
            let receiver = conn
                .report_window
                .take()
                .map(|(loss, jitter)| ReceiverSample {
                    fraction_lost: loss,
                    jitter_ms: jitter,
                    reports: conn.reports.reports,
                });
            if let Some(r) = receiver {
                conn.reports = r;
            }
            let candidate = selected_remote_candidate(&mut conn.pc);
            let mut s = streams.remove(id).unwrap_or_default();
            s.sort_by_key(|x| x.ssrc);
            out.push(MediaEvent::Sample {
                conn: *id,
                sample: Box::new(LinkSample {
                    at_ms,
                    streams: s,
                    sent_packets: conn.sent_packets,
                    sent_bytes: conn.sent_bytes,
                    receiver: receiver.or((conn.reports.reports > 0).then_some(conn.reports)),
                    rtt_ms: conn.rtt_ms,
                    candidate,
                }),
            });
        }
        for e in out {
            self.emit(e);
        }
    }

    /// Sends the keyframe requests the routers want now (merged and throttled there).
    fn poll_keyframes(&mut self, now: Instant) {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as i64;
        let rooms: Vec<RoomId> = self.rooms.routers.keys().copied().collect();
        for room in rooms {
            let mut wanted = std::mem::take(&mut self.rooms.keyframes);
            wanted.clear();
            if let Some(router) = self.rooms.routers.get_mut(&room) {
                router.poll_keyframe_requests(now_ms, &mut wanted);
            }
            for (track, layer) in wanted.drain(..) {
                if let Some(&(conn, ssrc)) = self.rooms.sources.get(&(room, track, layer)) {
                    if let Err(err) = self.request_keyframe(conn, ssrc) {
                        trace!(%conn, %err, "keyframe request failed");
                    }
                    self.mark_dirty(conn);
                }
            }
            self.rooms.keyframes = wanted;
        }
        self.flush_dirty();
    }

    /// The forwarding table's path (streams not bound to a router).
    fn forward_by_table(&mut self, from: ConnId, mut packet: rtc::rtp::Packet, now: Instant) {
        let Self {
            table,
            conns,
            stats,
            dirty,
            ..
        } = self;
        let routes = table.routes(from, packet.header.ssrc);
        if routes.is_empty() {
            return;
        }
        // The publisher's extension ids mean nothing on the subscriber's connection (and
        // `write_rtp` refuses ids it did not negotiate): strip them all.
        strip_extensions(&mut packet.header);
        for route in routes {
            let Some(conn) = conns.get_mut(&route.to) else {
                continue;
            };
            if conn.state != ConnState::Connected {
                continue;
            }
            let Some(track) = conn.out_tracks.get(&route.track) else {
                continue;
            };
            let mut out = packet.clone();
            out.header.ssrc = track.ssrc;
            out.header.payload_type = track.pt;
            let sender = track.sender;
            match conn
                .pc
                .rtp_sender(sender)
                .map(|mut s| s.write_rtp(now, out))
            {
                Some(Ok(())) => stats.rtp_forwarded += 1,
                Some(Err(err)) => {
                    stats.forward_errors += 1;
                    trace!(to = %route.to, %err, "write_rtp refused");
                }
                None => stats.forward_errors += 1,
            }
            if !conn.dirty {
                conn.dirty = true;
                dirty.push_back(route.to);
            }
        }
    }

    fn emit(&mut self, event: MediaEvent) {
        if self.events.try_send(event).is_err() {
            self.stats.events_dropped += 1;
        }
    }

    // --- commands ------------------------------------------------------------------------

    fn command(&mut self, command: Command) {
        match command {
            Command::CreatePublisher {
                conn,
                offer_sdp,
                reply,
            } => {
                let _ = reply.send(self.create_publisher(conn, offer_sdp));
            }
            Command::UpdatePublisher {
                conn,
                offer_sdp,
                reply,
            } => {
                let result = self.update_publisher(conn, offer_sdp);
                self.mark_dirty(conn);
                let _ = reply.send(result);
            }
            Command::CreateSubscriber {
                conn,
                tracks,
                reply,
            } => {
                let _ = reply.send(self.create_subscriber(conn, tracks));
            }
            Command::SetAnswer {
                conn,
                answer_sdp,
                reply,
            } => {
                let _ = reply.send(self.set_answer(conn, answer_sdp));
            }
            Command::AddTrack { conn, spec, reply } => {
                let _ = reply.send(self.add_track(conn, spec));
            }
            Command::RestartSubscriber { conn, reply } => {
                let _ = reply.send(self.restart_subscriber(conn));
            }
            Command::AddRemoteCandidate {
                conn,
                candidate,
                reply,
            } => {
                let result = self.conn_mut(conn).and_then(|c| {
                    c.pc.add_remote_candidate(RTCIceCandidateInit {
                        candidate,
                        ..Default::default()
                    })
                    .map_err(MediaError::from)
                });
                self.mark_dirty(conn);
                let _ = reply.send(result);
            }
            Command::Forward { route, add, reply } => {
                let _ = reply.send(self.set_route(route, add));
            }
            Command::RequestKeyframe { conn, ssrc, reply } => {
                let result = self.request_keyframe(conn, ssrc);
                self.mark_dirty(conn);
                let _ = reply.send(result);
            }
            Command::RemoveConnection { conn, reply } => {
                let result = if self.conns.contains_key(&conn) {
                    self.remove_conn(conn);
                    Ok(())
                } else {
                    Err(MediaError::UnknownConnection(conn))
                };
                let _ = reply.send(result);
            }
            Command::Stats { reply } => {
                let mut stats = self.stats;
                stats.connections = self.conns.len() as u64;
                stats.gate_dropped = self
                    .rooms
                    .routers
                    .values()
                    .map(Router::gate_dropped_total)
                    .sum();
                let _ = reply.send(Ok(stats));
            }
            Command::Router { room, op, reply } => {
                let router = self
                    .rooms
                    .routers
                    .entry(room)
                    .or_insert_with(|| Router::new(true));
                let removed_peer = match op {
                    RouterOp::RemovePeer(peer) => Some(peer),
                    _ => None,
                };
                let result = match op {
                    RouterOp::AddPeer(peer, role) => {
                        router.add_peer(peer, role);
                        Ok(())
                    }
                    RouterOp::RemovePeer(peer) => {
                        router.remove_peer(peer);
                        Ok(())
                    }
                    RouterOp::Publish {
                        peer,
                        track,
                        kind,
                        source,
                        layers,
                    } => router.publish(peer, track, kind, source, layers),
                    RouterOp::Unpublish(track) => {
                        router.unpublish(track);
                        Ok(())
                    }
                    RouterOp::SetFloor {
                        moderated,
                        holders,
                        presenters,
                    } => {
                        router.set_floor(moderated, &holders, &presenters);
                        Ok(())
                    }
                    RouterOp::SetThumbnails(peer, on) => router.set_thumbnails(peer, on),
                    RouterOp::SetOpenMicsOnly(peer, on) => router.set_open_mics_only(peer, on),
                    RouterOp::SetForce(peer, force) => router.set_force(peer, force),
                    RouterOp::SetRenderHeight(peer, slot, h) => {
                        router.set_render_height(peer, slot, h)
                    }
                };
                let changes = router.take_changes();
                // Slots that went away park their binding; a slot that reuses a retired
                // stream takes the parked binding over (same sender, same m-line).
                for c in &changes {
                    match *c {
                        SlotChange::Removed { peer, slot } => {
                            if let Some(to) = self.rooms.egress.remove(&(room, peer, slot)) {
                                self.rooms.slots.remove(&to);
                                self.rooms.parked.insert((room, peer, slot), to);
                            }
                        }
                        SlotChange::Reused {
                            peer, from, slot, ..
                        } => {
                            if let Some(to) = self.rooms.parked.remove(&(room, peer, from)) {
                                self.rooms.egress.insert((room, peer, slot), to);
                                self.rooms.slots.insert(to, (room, peer, slot));
                            }
                        }
                        SlotChange::Added { .. } => {}
                    }
                }
                if let Some(gone) = removed_peer {
                    self.rooms
                        .parked
                        .retain(|(r, p, _), _| !(*r == room && *p == gone));
                }
                let _ = reply.send(result.map(|()| changes).map_err(MediaError::Router));
            }
            Command::BindIngress {
                conn,
                ssrc,
                kind,
                at: (room, track, layer),
                reply,
            } => {
                let video = kind == MediaKind::Video;
                let result = if self.conns.contains_key(&conn) {
                    self.rooms.ingress.insert(
                        (conn, ssrc),
                        Bound {
                            route: Ingress {
                                room,
                                track,
                                layer,
                                video,
                            },
                            meter: StreamMeter::new(if video { 90 } else { 48 }),
                        },
                    );
                    self.rooms
                        .sources
                        .insert((room, track, layer), (conn, ssrc));
                    Ok(())
                } else {
                    Err(MediaError::UnknownConnection(conn))
                };
                let _ = reply.send(result);
            }
            Command::BindEgress { at, to, reply } => {
                let result = match self.conns.get(&to.0) {
                    Some(c) if c.out_tracks.contains_key(&to.1) => {
                        let up = c.state == ConnState::Connected;
                        self.rooms.egress.insert(at, to);
                        self.rooms.slots.insert(to, at);
                        // Bound on a connection already up (it connected before its first
                        // slot was bound): its slots may ask for keyframes now.
                        if let Some(r) = self.rooms.routers.get_mut(&at.0) {
                            r.slot_bound(at.1, at.2);
                            if up {
                                r.subscriber_up(at.1);
                            }
                        }
                        Ok(())
                    }
                    Some(_) => Err(MediaError::UnknownTrack(to.0)),
                    None => Err(MediaError::UnknownConnection(to.0)),
                };
                let _ = reply.send(result);
            }
            Command::RequestKeyframes { conn, reply } => {
                let result = if self.conns.contains_key(&conn) {
                    let ssrcs: Vec<u32> = self
                        .rooms
                        .ingress
                        .iter()
                        .filter(|((c, _), b)| *c == conn && b.route.video)
                        .map(|((_, s), _)| *s)
                        .collect();
                    let mut n = 0;
                    for ssrc in ssrcs {
                        if self.request_keyframe(conn, ssrc).is_ok() {
                            n += 1;
                        }
                    }
                    self.mark_dirty(conn);
                    self.flush_dirty();
                    Ok(n)
                } else {
                    Err(MediaError::UnknownConnection(conn))
                };
                let _ = reply.send(result);
            }
            Command::SetLoss {
                conn,
                permille,
                reply,
            } => {
                let result = self.conn_mut(conn).map(|c| {
                    c.loss_permille = permille.min(1000);
                    c.loss_rng = 0x9E37_79B9 ^ (conn.0 as u32);
                });
                let _ = reply.send(result);
            }
            Command::GateDropped { room, peer, reply } => {
                let n = self
                    .rooms
                    .routers
                    .get(&room)
                    .map_or(0, |r| r.gate_dropped(peer));
                let _ = reply.send(Ok(n));
            }
            Command::Shutdown => {}
        }
    }

    fn conn_mut(&mut self, id: ConnId) -> Result<&mut Conn, MediaError> {
        self.conns
            .get_mut(&id)
            .ok_or(MediaError::UnknownConnection(id))
    }

    /// A peer connection with credentials of its own: the core draws random ones (a 16-letter
    /// ufrag) at build and again at every ICE restart, and [`Engine::learn_ufrag`] reads them
    /// back from each local description (pinned credentials would survive a restart).
    fn new_peer_connection(&self, role: Role) -> Result<RTCPeerConnection, MediaError> {
        let mut media_engine = RtcMediaEngine::default();
        register_codecs(&mut media_engine)?;
        let registry = interceptors(&mut media_engine, role)?;
        // Inbound RTCP stops at the end of the chain unless marked for the application; keep
        // the keyframe requests (subscribers asking for a keyframe on a track we send).
        let registry = registry.with(Slot::from(14_000), KeyframeRequestInterceptor::default());
        let setting_engine = SettingEngineBuilder::new()
            .with_crypto_provider(self.crypto.clone())
            // No mDNS: we have no socket for it, and `.local` names cannot be resolved here.
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            // Browsers' host candidates are `.local` names we cannot resolve, so their address
            // is learnt from their checks (peer-reflexive): nominate at once instead of the
            // core's 1 s wait for something better (we offer one host candidate; there is
            // nothing better to wait for). `Some`: `None` means the default.
            .with_prflx_acceptance_min_wait(Some(Duration::ZERO))
            .with_srflx_acceptance_min_wait(Some(Duration::ZERO))
            .with_relay_acceptance_min_wait(Some(Duration::from_millis(200)))
            // Check every 50 ms, up to 100 times (5 s) per pair, instead of 200 ms × 7: a pair
            // that fails is never tried again, and with 60 connections coming up at once on a
            // loaded machine 1.4 s was sometimes too short (the `baku` bench lost a subscriber).
            .with_ice_connection_attempts(Some(Duration::from_millis(50)), Some(100))
            .build();
        let configuration = RTCConfigurationBuilder::new()
            .with_certificates(vec![self.certificate.clone()])
            .build();
        Ok(RTCPeerConnectionBuilder::new()
            .with_configuration(configuration)
            .with_media_engine(media_engine)
            .with_setting_engine(setting_engine)
            .with_interceptor_registry(registry)
            .build(Instant::now())?)
    }

    fn insert_conn(&mut self, id: ConnId, pc: RTCPeerConnection, role: Role) {
        self.conns.insert(
            id,
            Conn {
                pc,
                role,
                ufrags: Vec::new(),
                addrs: Vec::new(),
                state: ConnState::New,
                connect_by: Some(Instant::now() + self.connect_timeout),
                deadline: None,
                dirty: false,
                loss_permille: 0,
                loss_rng: 1,
                inbound: HashMap::new(),
                out_tracks: HashMap::new(),
                out_by_ssrc: HashMap::new(),
                audio_level_id: None,
                sent_packets: 0,
                sent_bytes: 0,
                reports: ReceiverSample::default(),
                report_window: None,
                rtt_ms: None,
            },
        );
        self.mark_dirty(id);
    }

    /// Routes STUN for `ufrag` (read from the connection's latest local description) to
    /// `id`. A new ufrag (an ICE restart) becomes the current one; the one before stays
    /// routable until the next, older ones go. Ufrags are 16 random letters: a clash with
    /// another live connection is refused rather than stealing its checks.
    fn learn_ufrag(&mut self, id: ConnId, ufrag: String) -> Result<(), MediaError> {
        match self.by_ufrag.get(&ufrag) {
            Some(&owner) if owner == id => return Ok(()),
            Some(&owner) => {
                return Err(MediaError::Rtc(format!(
                    "ICE ufrag already used by connection {owner}"
                )));
            }
            None => {}
        }
        let conn = self.conn_mut(id)?;
        let restarted = !conn.ufrags.is_empty();
        conn.ufrags.push(ufrag.clone());
        let stale: Vec<String> = if conn.ufrags.len() > 2 {
            conn.ufrags.drain(..conn.ufrags.len() - 2).collect()
        } else {
            Vec::new()
        };
        for old in stale {
            self.by_ufrag.remove(&old);
        }
        self.by_ufrag.insert(ufrag, id);
        if restarted {
            self.stats.ice_restarts += 1;
        }
        Ok(())
    }

    /// An ICE restart of a subscriber connection: a new offer with new credentials (our
    /// candidates again, in case a failure dropped them), to be answered with
    /// [`Engine::set_answer`]. Media resumes once the new checks succeed; DTLS and SRTP stay.
    /// An offer still unanswered (its answer lost with a dropped websocket) is replaced.
    fn restart_subscriber(&mut self, id: ConnId) -> Result<String, MediaError> {
        let (host, tcp) = (self.host_candidate.clone(), self.tcp_candidate.clone());
        let conn = self.conn_mut(id)?;
        if conn.role != Role::Subscriber {
            return Err(MediaError::WrongRole(id, Role::Subscriber.name()));
        }
        if conn.pc.pending_local_description().is_some() {
            let rollback = RTCSessionDescription::rollback(None)?;
            conn.pc.set_local_description(Instant::now(), rollback)?;
        }
        add_our_candidates(&mut conn.pc, host, tcp)?;
        let offer = conn
            .pc
            .create_offer(Some(RTCOfferOptions { ice_restart: true }))?;
        conn.pc.set_local_description(Instant::now(), offer)?;
        conn.pc
            .add_local_candidate(RTCIceCandidateInit::default())?;
        let sdp = conn
            .pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| MediaError::Rtc("no local description".to_owned()))?;
        let ufrag = local_ufrag(&sdp)?;
        self.learn_ufrag(id, ufrag)?;
        self.mark_dirty(id);
        Ok(sdp::offer_as_dtls_client(&sdp))
    }

    fn create_publisher(&mut self, id: ConnId, offer_sdp: String) -> Result<String, MediaError> {
        if self.conns.contains_key(&id) {
            return Err(MediaError::DuplicateConnection(id));
        }
        check_sdp_size(&offer_sdp)?;
        let mut pc = self.new_peer_connection(Role::Publisher)?;
        let offer = RTCSessionDescription::offer(offer_sdp)?;
        pc.set_remote_description(Instant::now(), offer)?;
        add_our_candidates(
            &mut pc,
            self.host_candidate.clone(),
            self.tcp_candidate.clone(),
        )?;
        let answer = pc.create_answer(None)?;
        if !accepts_media(&answer.sdp) {
            return Err(MediaError::NoSupportedCodec);
        }
        pc.set_local_description(Instant::now(), answer)?;
        pc.add_local_candidate(RTCIceCandidateInit::default())?;
        let sdp = pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| MediaError::Rtc("no local description".to_owned()))?;
        let ufrag = local_ufrag(&sdp)?;
        self.insert_conn(id, pc, Role::Publisher);
        if let Err(e) = self.learn_ufrag(id, ufrag) {
            self.conns.remove(&id);
            return Err(e);
        }
        if let Some(c) = self.conns.get_mut(&id) {
            c.audio_level_id = sdp::extmap_id(&sdp, sdp::AUDIO_LEVEL_URI);
        }
        Ok(sdp::with_start_bitrate(&sdp, START_BITRATE_KBPS))
    }

    fn update_publisher(&mut self, id: ConnId, offer_sdp: String) -> Result<String, MediaError> {
        check_sdp_size(&offer_sdp)?;
        let (host, tcp) = (self.host_candidate.clone(), self.tcp_candidate.clone());
        let conn = self.conn_mut(id)?;
        if conn.role != Role::Publisher {
            return Err(MediaError::WrongRole(id, Role::Publisher.name()));
        }
        let offer = RTCSessionDescription::offer(offer_sdp)?;
        conn.pc.set_remote_description(Instant::now(), offer)?;
        let answered = (|| {
            // An offer with new ICE credentials (the client's ICE restart) restarts the agent
            // here; if it had failed, the agent dropped its local candidates: add ours again
            // (a candidate it still has is ignored).
            add_our_candidates(&mut conn.pc, host, tcp)?;
            let answer = conn.pc.create_answer(None)?;
            conn.pc.set_local_description(Instant::now(), answer)?;
            conn.pc
                .add_local_candidate(RTCIceCandidateInit::default())?;
            conn.pc
                .local_description()
                .map(|d| d.sdp)
                .ok_or_else(|| MediaError::Rtc("no local description".to_owned()))
        })();
        if let Ok(sdp) = &answered {
            conn.audio_level_id = sdp::extmap_id(sdp, sdp::AUDIO_LEVEL_URI);
        }
        let answered = answered.map(|sdp| sdp::with_start_bitrate(&sdp, START_BITRATE_KBPS));
        let answered = answered.and_then(|sdp| {
            let ufrag = local_ufrag(&sdp)?;
            self.learn_ufrag(id, ufrag)?;
            Ok(sdp)
        });
        if answered.is_err()
            && let Some(conn) = self.conns.get_mut(&id)
        {
            // Back to the last stable state, so the connection keeps working as before.
            let rolled_back = RTCSessionDescription::rollback(None)
                .and_then(|rollback| conn.pc.set_remote_description(Instant::now(), rollback));
            if let Err(err) = rolled_back {
                warn!(conn = %id, %err, "rollback after a failed renegotiation failed");
            }
        }
        answered
    }

    fn create_subscriber(
        &mut self,
        id: ConnId,
        specs: Vec<TrackSpec>,
    ) -> Result<SubscriberOffer, MediaError> {
        if self.conns.contains_key(&id) {
            return Err(MediaError::DuplicateConnection(id));
        }
        let mut pc = self.new_peer_connection(Role::Subscriber)?;
        let mut tracks = Vec::with_capacity(specs.len());
        let mut created = Vec::with_capacity(specs.len());
        for spec in specs {
            let (info, out) = self.new_out_track(&mut pc, spec)?;
            created.push((info.id, out));
            tracks.push(info);
        }
        if tracks.is_empty() {
            pc.create_data_channel("roundtable", None)?;
        }
        add_our_candidates(
            &mut pc,
            self.host_candidate.clone(),
            self.tcp_candidate.clone(),
        )?;
        let offer = pc.create_offer(None)?;
        pc.set_local_description(Instant::now(), offer)?;
        pc.add_local_candidate(RTCIceCandidateInit::default())?;
        let sdp = pc
            .local_description()
            .map(|d| d.sdp)
            .ok_or_else(|| MediaError::Rtc("no local description".to_owned()))?;
        let ufrag = local_ufrag(&sdp)?;
        self.insert_conn(id, pc, Role::Subscriber);
        if let Err(e) = self.learn_ufrag(id, ufrag) {
            self.conns.remove(&id);
            return Err(e);
        }
        let conn = self.conn_mut(id)?;
        for (track_id, out) in created {
            conn.out_by_ssrc.insert(out.ssrc, track_id);
            conn.out_tracks.insert(track_id, out);
        }
        Ok(SubscriberOffer {
            sdp: sdp::offer_as_dtls_client(&sdp),
            tracks,
        })
    }

    /// Adds a sendonly transceiver for `spec` to `pc` (not yet in `self.conns`).
    fn new_out_track(
        &mut self,
        pc: &mut RTCPeerConnection,
        spec: TrackSpec,
    ) -> Result<(OutTrackInfo, OutTrack), MediaError> {
        let (kind, codec, pt) = match spec.kind {
            MediaKind::Audio => (RtpCodecKind::Audio, opus_codec(), PT_OPUS),
            MediaKind::Video => (RtpCodecKind::Video, vp8_codec(), PT_VP8),
        };
        let ssrc = random_ssrc(pc);
        let encoding = RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec: codec.rtp_codec,
            ..Default::default()
        };
        let track = MediaStreamTrack::new(
            spec.stream_id.clone(),
            spec.track_id.clone(),
            spec.track_id.clone(),
            kind,
            vec![encoding.clone()],
        );
        let transceiver = pc.add_transceiver_from_track(
            track,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Sendonly,
                streams: vec![spec.stream_id],
                send_encodings: vec![encoding],
            }),
        )?;
        let sender = pc
            .rtp_transceiver(transceiver)
            .and_then(|t| t.sender())
            .ok_or_else(|| MediaError::Rtc("transceiver without sender".to_owned()))?;
        let id = OutTrackId(self.next_track);
        self.next_track += 1;
        Ok((
            OutTrackInfo {
                id,
                kind: spec.kind,
                ssrc,
                track_id: spec.track_id,
            },
            OutTrack {
                sender,
                ssrc,
                pt,
                video: spec.kind == MediaKind::Video,
            },
        ))
    }

    fn set_answer(&mut self, id: ConnId, answer_sdp: String) -> Result<(), MediaError> {
        check_sdp_size(&answer_sdp)?;
        let conn = self.conn_mut(id)?;
        if conn.role != Role::Subscriber {
            return Err(MediaError::WrongRole(id, Role::Subscriber.name()));
        }
        let answer = RTCSessionDescription::answer(answer_sdp)?;
        conn.pc.set_remote_description(Instant::now(), answer)?;
        // The answer fixes the payload types; ours are what we offered, but read them back.
        for track in conn.out_tracks.values_mut() {
            if let Some(mut sender) = conn.pc.rtp_sender(track.sender)
                && let Some(codec) = sender.get_parameters().rtp_parameters.codecs.first()
            {
                track.pt = codec.payload_type;
            }
        }
        self.mark_dirty(id);
        Ok(())
    }

    fn add_track(
        &mut self,
        id: ConnId,
        spec: TrackSpec,
    ) -> Result<(OutTrackInfo, String), MediaError> {
        let mut conn = self
            .conns
            .remove(&id)
            .ok_or(MediaError::UnknownConnection(id))?;
        let result = (|| {
            if conn.role != Role::Subscriber {
                return Err(MediaError::WrongRole(id, Role::Subscriber.name()));
            }
            if conn.pc.pending_local_description().is_some() {
                return Err(MediaError::NegotiationPending(id));
            }
            let (info, out) = self.new_out_track(&mut conn.pc, spec)?;
            let offer = conn.pc.create_offer(None)?;
            conn.pc.set_local_description(Instant::now(), offer)?;
            conn.pc
                .add_local_candidate(RTCIceCandidateInit::default())?;
            let sdp = conn
                .pc
                .local_description()
                .map(|d| d.sdp)
                .ok_or_else(|| MediaError::Rtc("no local description".to_owned()))?;
            conn.out_by_ssrc.insert(out.ssrc, info.id);
            conn.out_tracks.insert(info.id, out);
            Ok((info, sdp::offer_as_dtls_client(&sdp)))
        })();
        self.conns.insert(id, conn);
        self.mark_dirty(id);
        result
    }

    fn set_route(
        &mut self,
        (from, ssrc, to, track): (ConnId, u32, ConnId, OutTrackId),
        add: bool,
    ) -> Result<(), MediaError> {
        let route = Route { to, track };
        if !add {
            self.table.remove(from, ssrc, route);
            return Ok(());
        }
        if !self.conns.contains_key(&from) {
            return Err(MediaError::UnknownConnection(from));
        }
        let sub = self
            .conns
            .get(&to)
            .ok_or(MediaError::UnknownConnection(to))?;
        if !sub.out_tracks.contains_key(&track) {
            return Err(MediaError::UnknownTrack(to));
        }
        self.table.add(from, ssrc, route);
        Ok(())
    }

    fn request_keyframe(&mut self, id: ConnId, ssrc: u32) -> Result<(), MediaError> {
        let conn = self.conn_mut(id)?;
        let receiver = *conn
            .inbound
            .get(&ssrc)
            .ok_or(MediaError::UnknownTrack(id))?;
        let mut receiver = conn
            .pc
            .rtp_receiver(receiver)
            .ok_or(MediaError::UnknownTrack(id))?;
        receiver.write_rtcp(
            Instant::now(),
            vec![Box::new(PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            })],
        )?;
        self.stats.plis_sent += 1;
        Ok(())
    }

    fn remove_conn(&mut self, id: ConnId) {
        let Some(mut conn) = self.conns.remove(&id) else {
            return;
        };
        if let Err(err) = conn.pc.close() {
            debug!(conn = %id, %err, "close failed");
        }
        // Send what close queued (DTLS close_notify), so the peer learns at once.
        while let Some(out) = conn.pc.poll_write() {
            let to = out.transport.peer_addr;
            if out.transport.transport_protocol == TransportProtocol::TCP {
                write_framed(&mut self.tcp_streams, &mut self.tcp_buf, to, &out.message);
            } else {
                let _ = self.socket.send_to(&out.message, to);
            }
        }
        // Its TCP streams go with it.
        let streams: Vec<SocketAddr> = self
            .by_tcp
            .iter()
            .filter(|(_, c)| **c == id)
            .map(|(a, _)| *a)
            .collect();
        for peer in streams {
            self.close_tcp(peer);
        }
        for addr in &conn.addrs {
            if self.by_addr.get(addr) == Some(&id) {
                self.by_addr.remove(addr);
            }
        }
        for ufrag in &conn.ufrags {
            self.by_ufrag.remove(ufrag);
        }
        self.table.forget_conn(id);
        self.rooms.forget_conn(id);
        self.dirty.retain(|d| *d != id);
        debug!(conn = %id, "connection removed");
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The send rate a browser's congestion control starts from on a publish connection (kbit/s,
/// `x-google-start-bitrate` in our answer): the room's three layers need ~2.2 Mbit/s, and
/// Chrome's default start (300 kbit/s) pauses the upper layers for the first many seconds.
pub const START_BITRATE_KBPS: u32 = 2_000;

/// Packets the NACK responder keeps per outgoing stream for retransmission: 0.85 s of a
/// 150 packets/s high layer, 8.5 s of a 15 packets/s thumbnail; enough for NACK repair at
/// up to continental RTTs. The core's default (1,024 slots of 112 bytes, allocated up front for
/// every outgoing stream) cost ~3.5 MiB per participant in `baku` (docs/PERFORMANCE.md).
pub const NACK_BUFFER_PACKETS: u16 = 128;

/// Most NACKs sent for one missing packet (the core's default is unlimited: a storm risk when a
/// packet is gone for good).
const MAX_NACKS_PER_PACKET: u16 = 10;

/// The interceptor chain for a connection, by what it does: a publisher receives (NACK
/// generator, TWCC feedback, receiver reports); a subscriber sends (NACK responder with a
/// bounded buffer, sender reports). What `register_default_interceptors` installs, minus the
/// half each connection never uses, and with the buffer sized for an SFU.
fn interceptors(media_engine: &mut RtcMediaEngine, role: Role) -> Result<Registry, MediaError> {
    for parameter in ["", "pli"] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "nack".to_owned(),
                parameter: parameter.to_owned(),
            },
            RtpCodecKind::Video,
        );
    }
    configure_simulcast_extension_headers(media_engine)?;
    if role == Role::Publisher {
        // Read per packet for voice activity (`media::levels`); stripped before forwarding.
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: sdp::AUDIO_LEVEL_URI.to_owned(),
            },
            RtpCodecKind::Audio,
            None,
        )?;
    }
    let registry = match role {
        Role::Publisher => Registry::new().with(
            Slot::NackGenerator,
            NackGeneratorBuilder::new()
                .with_max_nacks_per_packet(MAX_NACKS_PER_PACKET)
                .build(),
        ),
        Role::Subscriber => Registry::new().with(
            Slot::NackResponder,
            NackResponderBuilder::new()
                .with_size(NACK_BUFFER_PACKETS)
                .build(),
        ),
    };
    let registry = configure_twcc_receiver_only(registry, media_engine)?;
    Ok(configure_rtcp_reports(registry))
}

fn host_candidate(addr: SocketAddr, tcp: bool) -> Result<RTCIceCandidateInit, MediaError> {
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: if tcp { "tcp" } else { "udp" }.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type: if tcp {
            rtc::ice::tcp_type::TcpType::Passive
        } else {
            Default::default()
        },
    }
    .new_candidate_host()?;
    Ok(RTCIceCandidate::from(&candidate).to_json()?)
}

/// Writes one packet framed (RFC 4571) on the TCP stream to `to`: false if there is no such
/// stream, the packet is too large to frame, or the write fails (or times out).
fn write_framed(
    streams: &mut HashMap<SocketAddr, TcpStream>,
    buf: &mut [u8],
    to: SocketAddr,
    packet: &[u8],
) -> bool {
    match (streams.get_mut(&to), frame_packet_to(packet, buf)) {
        (Some(stream), Some(n)) => stream.write_all(&buf[..n]).is_ok(),
        _ => false,
    }
}

/// Our `tcp passive` host candidate (ICE-TCP).
fn host_candidate_tcp(addr: SocketAddr) -> Result<RTCIceCandidateInit, MediaError> {
    host_candidate(addr, true)
}

fn opus_codec() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            // In-band FEC and DTX: a listening delegate muted by the gate costs almost nothing.
            sdp_fmtp_line: "minptime=10;useinbandfec=1;usedtx=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: PT_OPUS,
    }
}

fn vp8_codec() -> RTCRtpCodecParameters {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: MIME_TYPE_VP8.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            // No goog-remb: the core does not implement REMB. NACK and PLI are added by the
            // NACK interceptor's registration.
            rtcp_feedback: vec![fb("ccm", "fir")],
        },
        payload_type: PT_VP8,
    }
}

/// Opus and VP8 only. No RTX: the core cannot de-encapsulate RTX for simulcast layers
/// (rid-based), so publishers retransmit on the primary SSRC instead.
fn register_codecs(media_engine: &mut RtcMediaEngine) -> Result<(), MediaError> {
    media_engine.register_codec(opus_codec(), RtpCodecKind::Audio)?;
    media_engine.register_codec(vp8_codec(), RtpCodecKind::Video)?;
    Ok(())
}

fn check_sdp_size(sdp: &str) -> Result<(), MediaError> {
    if sdp.len() > MAX_SDP_BYTES {
        Err(MediaError::SdpTooLarge(sdp.len()))
    } else {
        Ok(())
    }
}

/// Whether an answer accepts at least one audio or video section (port not 0, a format).
fn accepts_media(answer: &str) -> bool {
    answer.lines().any(|line| {
        let Some(rest) = line
            .strip_prefix("m=audio ")
            .or_else(|| line.strip_prefix("m=video "))
        else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let port = fields.next().unwrap_or("0");
        let _proto = fields.next();
        port != "0" && fields.next().is_some()
    })
}

/// Our candidates: the host one on the shared socket and, with ICE-TCP, the `tcp passive` one.
fn add_our_candidates(
    pc: &mut RTCPeerConnection,
    host: RTCIceCandidateInit,
    tcp: Option<RTCIceCandidateInit>,
) -> Result<(), MediaError> {
    pc.add_local_candidate(host)?;
    if let Some(tcp) = tcp {
        pc.add_local_candidate(tcp)?;
    }
    Ok(())
}

/// Our ICE ufrag in a local description (`a=ice-ufrag:`, session or first media level).
fn local_ufrag(sdp: &str) -> Result<String, MediaError> {
    sdp::ice_ufrag(sdp).ok_or_else(|| MediaError::Rtc("local description without ice-ufrag".into()))
}

/// A random SSRC not used by a sender of `pc` yet.
fn random_ssrc(pc: &mut RTCPeerConnection) -> u32 {
    let used: Vec<u32> = pc
        .get_senders()
        .collect::<Vec<_>>()
        .into_iter()
        .filter_map(|id| {
            pc.rtp_sender(id)
                .map(|s| s.track().ssrcs().collect::<Vec<_>>())
        })
        .flatten()
        .collect();
    loop {
        let ssrc = rand::random::<u32>();
        if ssrc != 0 && !used.contains(&ssrc) {
            return ssrc;
        }
    }
}

fn strip_extensions(header: &mut rtc::rtp::header::Header) {
    if header.extension {
        header.extension = false;
        header.extensions.clear();
        header.extensions_padding = 0;
        header.extension_profile = 0;
    }
}

/// Whether a datagram is STUN (RFC 7983: first byte 0..=3, plus the magic cookie).
/// Whether a datagram is (S)RTP rather than RTCP, STUN or DTLS (RFC 7983, RFC 5761).
fn is_rtp(datagram: &[u8]) -> bool {
    match datagram {
        [first, second, ..] => (128..=191).contains(first) && !(192..=223).contains(second),
        _ => false,
    }
}

/// Passes inbound keyframe requests (PLI, FIR) on to the application and leaves every other
/// inbound RTCP packet to the interceptors before it (the default chain drops inbound RTCP at
/// its end unless a packet is marked [`Attribute::DeliverToApplication`]).
#[derive(Default)]
struct KeyframeRequestInterceptor {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequestInterceptor {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            // Keyframe requests, and receiver reports with a report block (stream health); a
            // compound is routed by its first packet's SSRC, so a report without one must go.
            packets.retain(|p| {
                let any = p.as_any();
                any.is::<PictureLossIndication>()
                    || any.is::<FullIntraRequest>()
                    || any.is::<TransportLayerNack>()
                    || any
                        .downcast_ref::<ReceiverReport>()
                        .is_some_and(|r| !r.reports.is_empty())
            });
            if packets.is_empty() {
                return Ok(());
            }
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for KeyframeRequestInterceptor {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

/// The client's candidate type on a connection's selected ICE pair.
fn selected_remote_candidate(
    pc: &mut RTCPeerConnection,
) -> Option<roundtable_signaling::CandidateType> {
    use rtc::peer_connection::transport::RTCIceCandidateType as T;
    let senders: Vec<_> = pc.get_senders().collect();
    let pair = senders
        .into_iter()
        .find_map(|id| {
            pc.rtp_sender(id)?
                .transport()?
                .ice_transport()
                .get_selected_candidate_pair()
        })
        .or_else(|| {
            let receivers: Vec<_> = pc.get_receivers().collect();
            receivers.into_iter().find_map(|id| {
                pc.rtp_receiver(id)?
                    .transport()?
                    .ice_transport()
                    .get_selected_candidate_pair()
            })
        })?;
    use roundtable_signaling::CandidateType as C;
    Some(match pair.remote().typ {
        T::Host => C::Host,
        T::Srflx => C::Srflx,
        T::Prflx => C::Prflx,
        T::Relay => C::Relay,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_with_username(username: &[u8]) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&0x0006u16.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        msg.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        msg.extend_from_slice(&[7; 12]);
        msg.extend_from_slice(&attr);
        msg
    }

    #[test]
    fn latency_histogram_quantiles_fall_in_the_right_bucket() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile_us(0.99), 0);
        for us in 1..=1000u64 {
            h.record(us);
        }
        let p50 = h.quantile_us(0.5);
        let p99 = h.quantile_us(0.99);
        assert!((500..=600).contains(&p50), "{p50}");
        assert!((990..=1_200).contains(&p99), "{p99}");
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 1002);
        let before = h;
        h.record(40);
        assert_eq!(h.since(&before).count(), 1);
        assert!(h.since(&before).quantile_us(1.0) >= 40);
        // From 4 µs up, a bucket's upper edge falls in it (below, buckets are coarser).
        for i in 8..LatencyHistogram::BUCKETS - 1 {
            assert_eq!(LatencyHistogram::bucket(LatencyHistogram::upper(i)), i);
        }
    }

    #[test]
    fn stun_username_gives_the_local_ufrag() {
        let msg = stun_with_username(b"abcd1234:remote");
        assert_eq!(stun_local_ufrag(&msg), Some(&b"abcd1234"[..]));
        let msg = stun_with_username(b"solo");
        assert_eq!(stun_local_ufrag(&msg), Some(&b"solo"[..]));
    }

    #[test]
    fn non_stun_and_truncated_stun_give_nothing() {
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
        assert_eq!(stun_local_ufrag(&[]), None);
        let mut msg = stun_with_username(b"abcd:efgh");
        msg.truncate(26);
        assert_eq!(stun_local_ufrag(&msg), None);
    }

    #[test]
    fn answer_with_only_rejected_sections_accepts_no_media() {
        assert!(accepts_media("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"));
        assert!(!accepts_media("v=0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\n"));
        assert!(!accepts_media(
            "v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        ));
    }

    #[test]
    fn forward_table_routes_and_forgets() {
        let mut table = ForwardTable::default();
        let a = ConnId(1);
        let b = ConnId(2);
        let t = OutTrackId(9);
        table.add(a, 42, Route { to: b, track: t });
        assert_eq!(table.routes(a, 42), &[Route { to: b, track: t }]);
        // A new source for the same track replaces the old one.
        table.add(a, 43, Route { to: b, track: t });
        assert!(table.routes(a, 42).is_empty());
        assert_eq!(table.routes(a, 43).len(), 1);
        table.forget_conn(b);
        assert!(table.routes(a, 43).is_empty());
    }
}
