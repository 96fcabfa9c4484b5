//! The client: websocket session, dispatch of server messages, the two peer connections.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use roundtable_signaling::{IceServer, MediaSource, PeerConnectionKind, SlotInfo};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8};
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{RTCIceCandidateInit, RTCPeerConnectionState, RTCSessionDescription};
use webrtc::rtp_transceiver::RtpTransceiver;

use crate::payload::{Codec, StreamKind, stream_tag};
use crate::peer::{AUDIO_LEVEL_URI, MID_URI, Peer, RID_URI};
use crate::pump::{self, AUDIO_LEVEL_NONE, Counters, OutStream, PublishSpec, SentStats};
use crate::stats::{TrackRecorder, TrackStats};
use crate::{Error, Result};

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Local address the peer connections bind (port 0). Default 127.0.0.1: the crate skips
    /// loopback when it expands 0.0.0.0, and tests run on loopback.
    pub bind_ip: IpAddr,
    /// Gather relay candidates only (`RTCIceTransportPolicy::Relay`), for the TURN test.
    pub relay_only: bool,
    /// ICE over TCP only (`tcptype active` candidates, no UDP), for the ICE-TCP test.
    pub tcp_only: bool,
    /// Use the `ice_servers` from the welcome (default true).
    pub use_ice_servers: bool,
    /// Trickle our ICE candidates with `ice_candidate` (default). Without, the offer/answer is
    /// sent once gathering completes, with the candidates in it.
    pub trickle: bool,
    /// Offer RTX for VP8 on the publish connection (default false: the SFU core cannot
    /// de-encapsulate RTX on rid layers, so NACKs are answered on the primary SSRC).
    pub publish_rtx: bool,
    /// How long a command, an answer or a negotiation step may take.
    pub timeout: Duration,
    /// Most events kept unconsumed for [`Client::wait_event`] (oldest dropped first).
    pub max_events: usize,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            relay_only: false,
            tcp_only: false,
            use_ice_servers: true,
            trickle: true,
            publish_rtx: false,
            timeout: Duration::from_secs(10),
            max_events: 10_000,
        }
    }
}

/// What the server answered a command with, when it was not an `ack`.
enum Pending {
    /// A caller waits for the reply.
    Waiter(oneshot::Sender<Value>),
    /// Sent by a background task: an `error` is recorded in [`Client::errors`].
    Background(String),
}

/// The websocket's outgoing side: ids, replies, and errors nobody waits for.
pub(crate) struct Outbox {
    /// The current websocket's writer (replaced by a resume).
    tx: StdMutex<mpsc::UnboundedSender<Message>>,
    next_id: AtomicU64,
    pending: StdMutex<HashMap<String, Pending>>,
    errors: StdMutex<Vec<String>>,
}

impl Outbox {
    /// An outbox with no websocket behind it (sends fail quietly); errors are still noted.
    pub(crate) fn detached() -> Outbox {
        Outbox {
            tx: StdMutex::new(mpsc::unbounded_channel().0),
            next_id: AtomicU64::new(0),
            pending: StdMutex::new(HashMap::new()),
            errors: StdMutex::new(Vec::new()),
        }
    }

    /// The errors noted so far.
    pub(crate) fn error_list(&self) -> Vec<String> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn next_id(&self) -> String {
        format!("h{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn send_text(&self, text: String) -> Result<()> {
        self.send(Message::Text(text.into()))
    }

    fn send(&self, m: Message) -> Result<()> {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(m)
            .map_err(|_| Error::Closed)
    }

    /// Points the outbox at a new websocket writer.
    fn replace(&self, tx: mpsc::UnboundedSender<Message>) {
        *self.tx.lock().unwrap_or_else(|e| e.into_inner()) = tx;
    }

    /// Sends a command whose reply is awaited through the returned receiver.
    fn start(&self, mut command: Value) -> Result<(String, oneshot::Receiver<Value>)> {
        let id = self.next_id();
        command["id"] = json!(id);
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id.clone(), Pending::Waiter(tx));
        if let Err(e) = self.send_text(command.to_string()) {
            self.lock_pending().remove(&id);
            return Err(e);
        }
        Ok((id, rx))
    }

    /// Sends a command nobody waits for; an `error` reply is recorded.
    pub(crate) fn send_background(&self, mut command: Value) {
        let id = self.next_id();
        command["id"] = json!(id);
        let label = command["type"].as_str().unwrap_or("?").to_owned();
        self.lock_pending()
            .insert(id.clone(), Pending::Background(label));
        if self.send_text(command.to_string()).is_err() {
            self.lock_pending().remove(&id);
        }
    }

    pub(crate) fn note_error(&self, e: String) {
        tracing::debug!(error = %e, "headless client");
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Routes a reply (ack, error, pong) to whoever sent the command.
    fn reply(&self, m: Value) {
        let Some(id) = m["id"].as_str() else {
            self.note_error(format!("server error without id: {m}"));
            return;
        };
        match self.lock_pending().remove(id) {
            Some(Pending::Waiter(tx)) => {
                let _ = tx.send(m);
            }
            Some(Pending::Background(label)) if m["type"] == "error" => {
                self.note_error(format!("{label}: {m}"));
            }
            _ => {}
        }
    }
}

/// Events not yet consumed, and the latest views.
struct EventLog {
    unconsumed: VecDeque<Value>,
    floor: Value,
    agenda: Value,
    last_seq: u64,
    /// Events whose `seq` was not the one after the last (over every connection, resumes
    /// included): a gap, and a repeated or older one.
    gaps: u64,
    duplicates: u64,
    goodbye: Option<String>,
}

/// The received tracks' recorders, keyed by `mid`, and what the server says each carries.
#[derive(Default)]
pub(crate) struct Reception {
    recorders: BTreeMap<String, TrackRecorder>,
    slots: Vec<SlotInfo>,
    /// `subscribe_slots` messages received (m-lines relabeled without an offer).
    relabels: u64,
}

impl Reception {
    /// Every received track's stats.
    pub(crate) fn stats(&self) -> Vec<TrackStats> {
        self.recorders
            .iter()
            .map(|(mid, rec)| rec.snapshot(slot_of(&self.slots, mid)))
            .collect()
    }

    /// How many delay samples the track on `mid` has.
    pub(crate) fn latency_count(&self, mid: &str) -> usize {
        self.recorders
            .get(mid)
            .map_or(0, |r| r.latency_samples().len())
    }

    /// Raw one-way delay samples (µs) of the track on `mid`, in arrival order.
    pub(crate) fn latency_samples(&self, mid: &str) -> Vec<u32> {
        self.recorders
            .get(mid)
            .map(|r| r.latency_samples().to_vec())
            .unwrap_or_default()
    }
}

/// The background tasks of a client (pumps, feedback and track readers), aborted together.
#[derive(Default)]
pub(crate) struct Tasks(StdMutex<Vec<JoinHandle<()>>>);

impl Tasks {
    pub(crate) fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        let h = tokio::spawn(f);
        let mut tasks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(h);
    }

    pub(crate) fn abort_all(&self) {
        let tasks = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for t in &tasks {
            t.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in self
            .0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// A track to publish: the track, its source, and its streams (kind, SSRC, rid).
pub(crate) type PlannedTrack = (
    Arc<TrackLocalStaticRTP>,
    MediaSource,
    Vec<(StreamKind, u32, Option<String>)>,
);

/// What a publish produced: the streams and the task-side handles.
pub(crate) struct Published {
    pub(crate) streams: Vec<OutStream>,
    audio_level: Arc<AtomicU8>,
}

struct Inner {
    opts: ClientOptions,
    outbox: Arc<Outbox>,
    /// Where a resume connects (with the session token of a one-time invite).
    reconnect_url: String,
    welcome: Value,
    participant: String,
    ice_servers: Vec<IceServer>,
    events: StdMutex<EventLog>,
    /// Counts event messages received (wakes `wait_event`).
    event_count: watch::Sender<u64>,
    reception: Arc<StdMutex<Reception>>,
    /// Counts subscribe answers sent (wakes `wait_subscribed`).
    subscribe_count: watch::Sender<u64>,
    publish: tokio::sync::Mutex<Option<Arc<Peer>>>,
    /// The screen-share connection (`publish` with `pc: screen`).
    screen: tokio::sync::Mutex<Option<Arc<Peer>>>,
    subscribe: tokio::sync::Mutex<Option<Arc<Peer>>>,
    /// The reader applies `publish_answer` and reports here.
    publish_answer: StdMutex<Option<oneshot::Sender<Result<()>>>>,
    /// Server candidates that arrived before their connection existed.
    early_candidates: tokio::sync::Mutex<Vec<(PeerConnectionKind, RTCIceCandidateInit)>>,
    published: StdMutex<Option<Published>>,
    /// Uplink faults of every stream this client sends.
    faults: Arc<pump::Faults>,
    /// The websocket writer and reader.
    io: StdMutex<Vec<JoinHandle<()>>>,
    /// Everything else: pumps, feedback readers, track readers.
    tasks: Arc<Tasks>,
    closed: AtomicBool,
}

impl Inner {
    fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(f);
    }

    /// Stops every pump and reader (first, so nothing writes into a closing connection), then
    /// closes the peer connections.
    async fn close_media(&self) {
        self.tasks.abort_all();
        let publish = self.publish.lock().await.take();
        let screen = self.screen.lock().await.take();
        let subscribe = self.subscribe.lock().await.take();
        for p in [publish, screen, subscribe].into_iter().flatten() {
            p.close().await;
        }
    }
}

/// What [`Client::resume`] got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumption {
    /// `resumed` (true), or a fresh `welcome` (false: too far behind, or the grace period
    /// was over).
    pub resumed: bool,
    /// The server kept the peer connections (`resumed.media_held`).
    pub media_held: bool,
    /// The `seq` it resumed from (`resumed`) or is at (`welcome`).
    pub seq: u64,
}

/// A headless participant: one websocket session, a publish and a subscribe connection.
///
/// Cloning is cheap and shares the session.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("participant", &self.inner.participant)
            .finish()
    }
}

fn ws_url(base: &str, token: &str) -> String {
    let base = base.trim_end_matches('/');
    let base = base.strip_suffix("/ws").unwrap_or(base);
    format!("{base}/ws?token={token}")
}

/// A refused upgrade carries the server's JSON error (`token_expired`, ...): keep its code.
fn refused(e: tokio_tungstenite::tungstenite::Error) -> Error {
    if let tokio_tungstenite::tungstenite::Error::Http(resp) = &e
        && let Some(body) = resp.body()
        && let Ok(v) = serde_json::from_slice::<Value>(body)
        && let Some(code) = v["code"].as_str()
    {
        return Error::Command {
            code: code.to_owned(),
            message: v["message"].as_str().unwrap_or("").to_owned(),
        };
    }
    Error::Ws(e)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Client {
    /// Joins with default options: websocket to `{base_ws_url}/ws?token=…`, `hello`, and waits
    /// for the `welcome`. `base_ws_url` is e.g. `ws://127.0.0.1:8080`.
    pub async fn join(base_ws_url: &str, token: &str) -> Result<Client> {
        Client::join_with(base_ws_url, token, ClientOptions::default()).await
    }

    /// Joins with the given options.
    pub async fn join_with(base_ws_url: &str, token: &str, opts: ClientOptions) -> Result<Client> {
        let url = ws_url(base_ws_url, token);
        let hello = json!({"id": "hello", "type": "hello", "protocol": 1});
        let (ws, welcome) = open(&url, hello, &opts).await?;
        if welcome["type"] != "welcome" {
            return Err(Error::Protocol(format!("expected welcome, got {welcome}")));
        }
        let participant = welcome["you"]["id"].as_str().unwrap_or("").to_owned();
        let ice_servers: Vec<IceServer> =
            serde_json::from_value(welcome["ice_servers"].clone()).unwrap_or_default();
        // Pointed at the websocket by `start_io`.
        let outbox = Arc::new(Outbox::detached());
        let events = EventLog {
            unconsumed: VecDeque::new(),
            floor: welcome["snapshot"]["floor"].clone(),
            agenda: welcome["snapshot"]["agenda"].clone(),
            last_seq: welcome["seq"].as_u64().unwrap_or(0),
            gaps: 0,
            duplicates: 0,
            goodbye: None,
        };
        // A one-time invite opens once: later connections use the session token.
        let reconnect_url = match welcome["session_token"].as_str() {
            Some(t) => ws_url(base_ws_url, t),
            None => url,
        };
        let inner = Arc::new(Inner {
            opts,
            outbox,
            reconnect_url,
            welcome,
            participant,
            ice_servers,
            events: StdMutex::new(events),
            event_count: watch::channel(0).0,
            reception: Arc::new(StdMutex::new(Reception::default())),
            subscribe_count: watch::channel(0).0,
            publish: tokio::sync::Mutex::new(None),
            screen: tokio::sync::Mutex::new(None),
            subscribe: tokio::sync::Mutex::new(None),
            publish_answer: StdMutex::new(None),
            early_candidates: tokio::sync::Mutex::new(Vec::new()),
            published: StdMutex::new(None),
            faults: Arc::default(),
            io: StdMutex::new(Vec::new()),
            tasks: Arc::default(),
            closed: AtomicBool::new(false),
        });
        start_io(&inner, ws);
        Ok(Client { inner })
    }

    /// Loses the websocket as a dropped network does: no close frame, the TCP connection just
    /// ends. The peer connections stay. Commands fail with [`Error::Closed`] until
    /// [`resume`](Self::resume); replies still awaited are failed.
    pub fn drop_connection(&self) {
        let io = std::mem::take(&mut *self.inner.io.lock().unwrap_or_else(|e| e.into_inner()));
        for t in io {
            t.abort();
        }
        self.inner.outbox.replace(mpsc::unbounded_channel().0);
        self.inner.outbox.lock_pending().clear();
    }

    /// Connects again with `resume_seq` (the last event received), as a browser does after a
    /// drop. On `resumed` the events missed follow (they arrive like any others: gaps and
    /// repeats are counted, see [`event_gaps`](Self::event_gaps)); with `media_held` the peer
    /// connections are kept and the server re-offers the subscribe one with an ICE restart,
    /// answered as usual. On a `welcome` (too far behind, or the grace period over) the
    /// server has let the media go: the local peer connections are closed too, and the views
    /// are the welcome's snapshot.
    pub async fn resume(&self) -> Result<Resumption> {
        let inner = &self.inner;
        self.drop_connection();
        let from = self.last_seq();
        let hello = json!({"id": "hello", "type": "hello", "protocol": 1, "resume_seq": from});
        let (ws, first) = open(&inner.reconnect_url, hello, &inner.opts).await?;
        let resumed = first["type"] == "resumed";
        let r = Resumption {
            resumed,
            media_held: resumed && first["media_held"] == true,
            seq: first["seq"].as_u64().unwrap_or(0),
        };
        if resumed {
            if r.seq != from {
                return Err(Error::Protocol(format!(
                    "resumed from {} when asked for {from}",
                    r.seq
                )));
            }
        } else {
            let mut log = self.lock_events();
            log.floor = first["snapshot"]["floor"].clone();
            log.agenda = first["snapshot"]["agenda"].clone();
            log.last_seq = r.seq;
        }
        if !r.media_held {
            inner.close_media().await;
            *inner.published.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        inner.closed.store(false, Ordering::SeqCst);
        start_io(inner, ws);
        Ok(r)
    }

    /// Events received whose `seq` was not the next one: `(gaps, repeats)`, over every
    /// connection of this client (resumes included). Both stay 0 when resumes lose nothing.
    pub fn event_gaps(&self) -> (u64, u64) {
        let log = self.lock_events();
        (log.gaps, log.duplicates)
    }

    /// The `welcome` message.
    pub fn welcome(&self) -> &Value {
        &self.inner.welcome
    }

    /// This participant's id (`welcome.you.id`).
    pub fn participant(&self) -> &str {
        &self.inner.participant
    }

    /// The ICE servers from the welcome.
    pub fn ice_servers(&self) -> &[IceServer] {
        &self.inner.ice_servers
    }

    /// Sends a command (an `id` is added) and returns its `ack` (or `pong` for a `ping`). An
    /// `error` reply becomes [`Error::Command`] with the server's code.
    pub async fn cmd(&self, command: Value) -> Result<Value> {
        let (_, rx) = self.inner.outbox.start(command)?;
        self.await_reply(rx, "command").await
    }

    async fn await_reply(&self, rx: oneshot::Receiver<Value>, what: &str) -> Result<Value> {
        let reply = tokio::time::timeout(self.inner.opts.timeout, rx)
            .await
            .map_err(|_| Error::Timeout(format!("reply to {what}")))?
            .map_err(|_| Error::Closed)?;
        if reply["type"] == "error" {
            return Err(Error::Command {
                code: reply["code"].as_str().unwrap_or("").to_owned(),
                message: reply["message"].as_str().unwrap_or("").to_owned(),
            });
        }
        Ok(reply)
    }

    /// Sends a raw text frame (for bad-input tests). Replies are not tracked.
    pub fn send_raw(&self, text: &str) -> Result<()> {
        self.inner.outbox.send_text(text.to_owned())
    }

    /// Waits for the next event whose `event.type` is `kind`; returns the whole event message
    /// but for its `floor` and `agenda` views, which [`floor`](Self::floor) and
    /// [`agenda`](Self::agenda) keep. Events before it are dropped.
    pub async fn wait_event(&self, kind: &str) -> Result<Value> {
        self.wait_event_where(kind, |_| true).await
    }

    /// Like [`wait_event`](Self::wait_event), for an event that also satisfies `pred` (given
    /// the inner `event` object).
    pub async fn wait_event_where(
        &self,
        kind: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let mut rx = self.inner.event_count.subscribe();
        let deadline = tokio::time::Instant::now() + self.inner.opts.timeout;
        loop {
            {
                let mut log = self.lock_events();
                if let Some(pos) = log
                    .unconsumed
                    .iter()
                    .position(|m| m["event"]["type"] == kind && pred(&m["event"]))
                {
                    log.unconsumed.drain(..pos);
                    return log.unconsumed.pop_front().ok_or(Error::Closed);
                }
                if self.inner.closed.load(Ordering::Relaxed) {
                    return Err(Error::Closed);
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(Error::Closed),
                Err(_) => return Err(Error::Timeout(format!("{kind} event"))),
            }
        }
    }

    /// Events received and not yet consumed by `wait_event`.
    pub fn events(&self) -> Vec<Value> {
        self.lock_events().unconsumed.iter().cloned().collect()
    }

    /// The latest floor view (from the welcome, then from events).
    pub fn floor(&self) -> Value {
        self.lock_events().floor.clone()
    }

    /// The latest agenda view.
    pub fn agenda(&self) -> Value {
        self.lock_events().agenda.clone()
    }

    /// The `seq` of the last event received.
    pub fn last_seq(&self) -> u64 {
        self.lock_events().last_seq
    }

    /// The `goodbye` reason, if the server sent one.
    pub fn goodbye(&self) -> Option<String> {
        self.lock_events().goodbye.clone()
    }

    /// Errors nobody waited for: error replies to background commands (`subscribe_answer`,
    /// `ice_candidate`), errors without an id, failed negotiation steps.
    pub fn errors(&self) -> Vec<String> {
        self.inner
            .outbox
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn lock_events(&self) -> std::sync::MutexGuard<'_, EventLog> {
        self.inner.events.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes what `spec` asks for: builds the publish connection and its tracks, sends
    /// `publish` with the offer and the mid → source map, applies the `publish_answer`, and
    /// starts the pump (which waits until the connection is up). Once per client.
    pub async fn publish(&self, spec: PublishSpec) -> Result<Vec<SentStats>> {
        if spec.screen {
            return Err(Error::Usage(
                "a screen share goes on its own connection: publish_screen".into(),
            ));
        }
        self.publish_on(PeerConnectionKind::Publish, spec).await
    }

    /// Shares a screen on a second sending connection (`publish` with `pc: screen`), as a
    /// browser does so the camera's connection is never renegotiated. `spec.screen_rate` sets
    /// the stream; the other fields are ignored.
    pub async fn publish_screen(&self, spec: PublishSpec) -> Result<Vec<SentStats>> {
        let spec = PublishSpec {
            audio: false,
            video_layers: 0,
            screen: true,
            ..spec
        };
        self.publish_on(PeerConnectionKind::Screen, spec).await
    }

    /// Stops the screen share (`unpublish`, `pc: screen`) and closes its connection.
    pub async fn unpublish_screen(&self) -> Result<()> {
        let peer = self.inner.screen.lock().await.take();
        let (_, ack) = self
            .inner
            .outbox
            .start(json!({"type": "unpublish", "pc": "screen"}))?;
        self.await_reply(ack, "unpublish").await?;
        if let Some(p) = peer {
            p.close().await;
        }
        Ok(())
    }

    async fn publish_on(
        &self,
        kind: PeerConnectionKind,
        spec: PublishSpec,
    ) -> Result<Vec<SentStats>> {
        let inner = &self.inner;
        if spec.video_layers > 3 {
            return Err(Error::Usage("video_layers must be 0 to 3".into()));
        }
        let mut publish = match kind {
            PeerConnectionKind::Screen => inner.screen.lock().await,
            _ => inner.publish.lock().await,
        };
        if publish.is_some() {
            return Err(Error::Usage("already published".into()));
        }
        let peer = Peer::new(
            kind,
            &inner.opts,
            &inner.ice_servers,
            inner.outbox.clone(),
            None,
        )
        .await?;
        *publish = Some(peer.clone());
        drop(publish);

        let (stream_id, planned) = plan_tracks(&inner.participant, &spec)?;
        let (transceivers, sdp, mids) =
            offer_tracks(&peer, &inner.opts, &planned, &stream_id).await?;
        let tracks: Vec<Value> = planned
            .iter()
            .zip(&mids)
            .map(|((_, source, _), mid)| json!({"mid": mid, "source": source}))
            .collect();

        let (answer_tx, answer_rx) = oneshot::channel();
        *inner
            .publish_answer
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(answer_tx);
        let (_, ack) = inner
            .outbox
            .start(json!({"type": "publish", "pc": kind, "sdp": sdp, "tracks": tracks}))?;
        peer.local_ready(&sdp);
        self.await_reply(ack, "publish").await?;
        // The answer came before the ack, and the reader applied it before reading the ack.
        tokio::time::timeout(inner.opts.timeout, answer_rx)
            .await
            .map_err(|_| Error::Timeout("publish_answer".into()))?
            .map_err(|_| Error::Protocol("publish acked without publish_answer".into()))??;

        let published = start_pumps(
            &inner.tasks,
            &peer,
            planned,
            &transceivers,
            &mids,
            &spec,
            &inner.participant,
            &inner.faults,
        )
        .await?;
        let snapshot = published.streams.iter().map(OutStream::snapshot).collect();
        *inner.published.lock().unwrap_or_else(|e| e.into_inner()) = Some(published);
        Ok(snapshot)
    }

    /// What each published stream has sent so far.
    pub fn sent_stats(&self) -> Vec<SentStats> {
        self.inner
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| p.streams.iter().map(OutStream::snapshot).collect())
            .unwrap_or_default()
    }

    /// Drops this share (per mille) of the RTP it sends, before it leaves: a lossy uplink.
    pub fn set_uplink_loss(&self, permille: u32) {
        self.inner
            .faults
            .loss_permille
            .store(permille.min(1000), std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops (or resumes) sending any RTP, the connection staying up: a dead encoder.
    pub fn pause_sending(&self, paused: bool) {
        self.inner
            .faults
            .paused
            .store(paused, std::sync::atomic::Ordering::Relaxed);
    }

    /// Changes the RFC 6464 level sent with audio (`None`: no extension).
    pub fn set_audio_level(&self, level: Option<u8>) {
        if let Some(p) = self
            .inner
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            p.audio_level.store(
                level.map_or(AUDIO_LEVEL_NONE, |l| l & 0x7f),
                Ordering::Relaxed,
            );
        }
    }

    /// Makes every published video stream send a keyframe at its next frame.
    pub fn force_keyframe(&self) {
        if let Some(p) = self
            .inner
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            p.streams.iter().for_each(OutStream::request_keyframe);
        }
    }

    /// Waits until the publish connection is connected.
    pub async fn wait_published(&self) -> Result<()> {
        let peer = self
            .inner
            .publish
            .lock()
            .await
            .clone()
            .ok_or_else(|| Error::Usage("not published".into()))?;
        tokio::time::timeout(self.inner.opts.timeout, peer.connected())
            .await
            .map_err(|_| Error::Timeout("publish connection".into()))?
    }

    /// Asks to receive media (`media_preferences`): the first call makes the server open the
    /// subscribe connection with a `subscribe_offer`, answered automatically.
    pub async fn subscribe(&self, thumbnails: bool) -> Result<()> {
        self.cmd(serde_json::json!({"type": "media_preferences", "thumbnails": thumbnails}))
            .await
            .map(|_| ())
    }

    /// Waits until at least `n` subscribe offers have been answered.
    pub async fn wait_subscribed(&self, n: u64) -> Result<()> {
        let mut rx = self.inner.subscribe_count.subscribe();
        tokio::time::timeout(self.inner.opts.timeout, rx.wait_for(|c| *c >= n))
            .await
            .map_err(|_| Error::Timeout(format!("{n} subscribe offers")))?
            .map(|_| ())
            .map_err(|_| Error::Closed)
    }

    /// The subscribe connection's state (`New` before the first offer).
    pub async fn subscribe_state(&self) -> RTCPeerConnectionState {
        match self.inner.subscribe.lock().await.as_ref() {
            Some(p) => *p.state.borrow(),
            None => RTCPeerConnectionState::New,
        }
    }

    /// Drops the subscribe connection without telling the server (a client that stops
    /// reading: a crashed tab, a frozen laptop). The websocket stays.
    pub async fn vanish_subscriber(&self) {
        if let Some(p) = self.inner.subscribe.lock().await.take() {
            p.close().await;
        }
    }

    /// How many subscribe offers were answered.
    pub fn subscribe_offers(&self) -> u64 {
        *self.inner.subscribe_count.borrow()
    }

    /// How many `subscribe_slots` messages relabeled the subscribe connection's m-lines.
    pub fn relabels(&self) -> u64 {
        self.lock_reception().relabels
    }

    /// The slots of the latest `subscribe_offer` or `subscribe_slots`.
    pub fn slots(&self) -> Vec<SlotInfo> {
        self.lock_reception().slots.clone()
    }

    /// A snapshot per received track, keyed by `mid`, with the slot the server named for it.
    pub fn stats(&self) -> Vec<TrackStats> {
        self.lock_reception().stats()
    }

    /// The received track on `mid`, if any packet arrived on it.
    pub fn track_stats(&self, mid: &str) -> Option<TrackStats> {
        let r = self.lock_reception();
        r.recorders
            .get(mid)
            .map(|rec| rec.snapshot(slot_of(&r.slots, mid)))
    }

    /// Raw one-way delay samples (µs) of the track on `mid`, in arrival order.
    pub fn latency_samples(&self, mid: &str) -> Vec<u32> {
        self.lock_reception().latency_samples(mid)
    }

    /// How many delay samples the track on `mid` has (without copying them).
    pub fn latency_count(&self, mid: &str) -> usize {
        self.lock_reception().latency_count(mid)
    }

    /// Polls [`stats`](Self::stats) every 20 ms until `pred` holds (or the timeout).
    pub async fn wait_stats(
        &self,
        timeout: Duration,
        pred: impl Fn(&[TrackStats]) -> bool,
    ) -> Result<Vec<TrackStats>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.stats();
            if pred(&s) {
                return Ok(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(format!("stats condition; have {s:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock_reception(&self) -> std::sync::MutexGuard<'_, Reception> {
        self.inner
            .reception
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Closes both peer connections and the websocket, and stops every task.
    pub async fn close(&self) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        inner.close_media().await;
        let _ = inner.outbox.send(Message::Close(None));
        // Give the writer a moment to send the close frame, then stop reader and writer.
        let io: Vec<JoinHandle<()>> =
            std::mem::take(&mut *inner.io.lock().unwrap_or_else(|e| e.into_inner()));
        for t in io {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_millis(500), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        inner.event_count.send_modify(|c| *c += 1);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let io = self.io.get_mut().unwrap_or_else(|e| e.into_inner());
        for t in io.drain(..) {
            t.abort();
        }
    }
}

fn slot_of(slots: &[SlotInfo], mid: &str) -> Option<SlotInfo> {
    slots
        .iter()
        .find(|s| {
            let m = match s {
                SlotInfo::Track { mid, .. }
                | SlotInfo::Speaker { mid }
                | SlotInfo::Screen { mid } => mid,
            };
            m == mid
        })
        .cloned()
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the websocket, sends `hello` and returns the first answer that is not an event:
/// `welcome` or `resumed` (an `error` becomes [`Error::Command`]).
async fn open(url: &str, hello: Value, opts: &ClientOptions) -> Result<(WsStream, Value)> {
    let (mut ws, _) = tokio::time::timeout(opts.timeout, connect_async(url))
        .await
        .map_err(|_| Error::Timeout("websocket connect".into()))?
        .map_err(refused)?;
    ws.send(Message::Text(hello.to_string().into())).await?;
    loop {
        let m = tokio::time::timeout(opts.timeout, ws.next())
            .await
            .map_err(|_| Error::Timeout("welcome".into()))?
            .ok_or(Error::Closed)??;
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(t.as_str())?;
        match v["type"].as_str() {
            Some("welcome" | "resumed") => return Ok((ws, v)),
            Some("event") => continue,
            Some("error") => {
                return Err(Error::Command {
                    code: v["code"].as_str().unwrap_or("").to_owned(),
                    message: v["message"].as_str().unwrap_or("").to_owned(),
                });
            }
            _ => return Err(Error::Protocol(format!("expected welcome, got {v}"))),
        }
    }
}

/// Starts the writer and the reader of `ws`, the outbox writing to it.
fn start_io(inner: &Arc<Inner>, ws: WsStream) {
    let (sink, stream) = ws.split();
    let (tx, rx) = mpsc::unbounded_channel();
    inner.outbox.replace(tx);
    *inner.io.lock().unwrap_or_else(|e| e.into_inner()) = vec![
        tokio::spawn(write_loop(sink, rx)),
        tokio::spawn(read_loop(Arc::downgrade(inner), stream)),
    ];
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        Message,
    >,
    mut rx: mpsc::UnboundedReceiver<Message>,
) {
    while let Some(m) = rx.recv().await {
        let close = matches!(m, Message::Close(_));
        if sink.send(m).await.is_err() || close {
            break;
        }
    }
    let _ = sink.close().await;
}

async fn read_loop(
    inner: Weak<Inner>,
    mut stream: futures_util::stream::SplitStream<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    >,
) {
    while let Some(m) = stream.next().await {
        let Ok(m) = m else { break };
        let text = match m {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some(inner) = inner.upgrade() else { break };
        let v: Value = match serde_json::from_str(text.as_str()) {
            Ok(v) => v,
            Err(e) => {
                inner
                    .outbox
                    .note_error(format!("server sent non-JSON: {e}"));
                continue;
            }
        };
        dispatch(&inner, v).await;
    }
    if let Some(inner) = inner.upgrade() {
        inner.closed.store(true, Ordering::SeqCst);
        // Fail every waiter.
        inner.outbox.lock_pending().clear();
        inner.event_count.send_modify(|c| *c += 1);
    }
}

async fn dispatch(inner: &Arc<Inner>, mut m: Value) {
    match m["type"].as_str().unwrap_or("") {
        "ack" | "error" | "pong" => inner.outbox.reply(m),
        "event" => {
            // The views move out of the message (kept once, not with every event: with a
            // long queue each is tens of KiB).
            let floor = m.as_object_mut().and_then(|o| o.remove("floor"));
            let agenda = m.as_object_mut().and_then(|o| o.remove("agenda"));
            let mut log = inner.events.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = floor.filter(|f| !f.is_null()) {
                log.floor = f;
            }
            if let Some(a) = agenda.filter(|a| !a.is_null()) {
                log.agenda = a;
            }
            if let Some(seq) = m["seq"].as_u64() {
                if seq <= log.last_seq {
                    log.duplicates += 1;
                } else if seq != log.last_seq + 1 {
                    log.gaps += 1;
                }
                log.last_seq = seq;
            }
            log.unconsumed.push_back(m);
            while log.unconsumed.len() > inner.opts.max_events {
                log.unconsumed.pop_front();
            }
            drop(log);
            inner.event_count.send_modify(|c| *c += 1);
        }
        // Not events on the wire, but waited for like them: `wait_event("speaking")`,
        // `wait_event("health")`, `wait_event("alert")`.
        kind @ ("speaking" | "health" | "alert") => {
            let mut log = inner.events.lock().unwrap_or_else(|e| e.into_inner());
            log.unconsumed
                .push_back(serde_json::json!({"type": kind, "event": m}));
            while log.unconsumed.len() > inner.opts.max_events {
                log.unconsumed.pop_front();
            }
            drop(log);
            inner.event_count.send_modify(|c| *c += 1);
        }
        "goodbye" => {
            inner
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .goodbye = m["reason"].as_str().map(str::to_owned);
        }
        "publish_answer" => {
            let result = apply_publish_answer(inner, &m).await;
            if let Err(e) = &result {
                inner.outbox.note_error(format!("publish_answer: {e}"));
            }
            let waiter = inner
                .publish_answer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(tx) = waiter {
                let _ = tx.send(result);
            }
        }
        "subscribe_offer" => {
            if let Err(e) = answer_subscribe_offer(inner, &m).await {
                inner.outbox.note_error(format!("subscribe_offer: {e}"));
            }
        }
        "subscribe_slots" => match serde_json::from_value::<Vec<SlotInfo>>(m["slots"].clone()) {
            Ok(slots) => {
                let mut r = inner.reception.lock().unwrap_or_else(|e| e.into_inner());
                r.slots = slots;
                r.relabels += 1;
            }
            Err(e) => inner.outbox.note_error(format!("subscribe_slots: {e}")),
        },
        "ice_candidate" => {
            if let Err(e) = add_server_candidate(inner, &m).await {
                inner.outbox.note_error(format!("ice_candidate: {e}"));
            }
        }
        other => inner
            .outbox
            .note_error(format!("unexpected server message {other}: {m}")),
    }
}

async fn apply_publish_answer(inner: &Arc<Inner>, m: &Value) -> Result<()> {
    let sdp = m["sdp"]
        .as_str()
        .ok_or_else(|| Error::Protocol("publish_answer without sdp".into()))?;
    let screen = m["pc"] == "screen";
    let peer = if screen {
        inner.screen.lock().await.clone()
    } else {
        inner.publish.lock().await.clone()
    }
    .ok_or_else(|| Error::Protocol("publish_answer without a publish".into()))?;
    peer.set_remote(RTCSessionDescription::answer(sdp.to_owned())?)
        .await?;
    apply_early_candidates(inner, &peer).await;
    Ok(())
}

/// The tracks `spec` asks for, each with its planned streams (mid, PT and extension ids come
/// with the negotiation). Returns the stream id (`rt-{participant}`) too.
pub(crate) fn plan_tracks(
    participant: &str,
    spec: &PublishSpec,
) -> Result<(String, Vec<PlannedTrack>)> {
    // The tracks, each with its planned streams (mid, PT and extension ids come later).
    let mut planned: Vec<PlannedTrack> = Vec::new();
    let stream_id = format!("rt-{participant}");
    let (audio_source, camera_source) = if spec.source_program {
        (MediaSource::Program, MediaSource::Program)
    } else {
        (MediaSource::Microphone, MediaSource::Camera)
    };
    let coding =
        |mime: &str, clock: u32, channels: u16, rid: &str, ssrc: u32| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: rid.to_owned(),
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate: clock,
                channels,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        };
    if spec.audio {
        let ssrc: u32 = rand::random();
        let track = MediaStreamTrack::new(
            stream_id.clone(),
            "audio".into(),
            "audio".into(),
            RtpCodecKind::Audio,
            vec![coding(MIME_TYPE_OPUS, 48_000, 2, "", ssrc)],
        );
        planned.push((
            Arc::new(TrackLocalStaticRTP::new(track)),
            audio_source,
            vec![(StreamKind::Audio, ssrc, None)],
        ));
    }
    if spec.video_layers > 0 {
        let layers: Vec<(StreamKind, u32, Option<String>)> = if spec.video_layers >= 2 {
            ["q", "h", "f"][..usize::from(spec.video_layers)]
                .iter()
                .enumerate()
                .map(|(i, rid)| {
                    (
                        StreamKind::Video(i as u8),
                        rand::random(),
                        Some(rid.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(StreamKind::Video(2), rand::random(), None)]
        };
        let codings = layers
            .iter()
            .map(|(_, ssrc, rid)| {
                coding(
                    MIME_TYPE_VP8,
                    90_000,
                    0,
                    rid.as_deref().unwrap_or(""),
                    *ssrc,
                )
            })
            .collect();
        let track = MediaStreamTrack::new(
            stream_id.clone(),
            "camera".into(),
            "camera".into(),
            RtpCodecKind::Video,
            codings,
        );
        planned.push((
            Arc::new(TrackLocalStaticRTP::new(track)),
            camera_source,
            layers,
        ));
    }
    if spec.screen {
        let ssrc: u32 = rand::random();
        let track = MediaStreamTrack::new(
            stream_id.clone(),
            "screen".into(),
            "screen".into(),
            RtpCodecKind::Video,
            vec![coding(MIME_TYPE_VP8, 90_000, 0, "", ssrc)],
        );
        planned.push((
            Arc::new(TrackLocalStaticRTP::new(track)),
            MediaSource::Screen,
            vec![(StreamKind::Screen, ssrc, None)],
        ));
    }
    if planned.is_empty() {
        return Err(Error::Usage("nothing to publish".into()));
    }

    Ok((stream_id, planned))
}

/// Adds a send-only transceiver per planned track and makes the offer: returns the
/// transceivers, the offer's SDP (with the candidates when `opts.trickle` is off) and the mids.
pub(crate) async fn offer_tracks(
    peer: &Peer,
    opts: &ClientOptions,
    planned: &[PlannedTrack],
    stream_id: &str,
) -> Result<(Vec<Arc<dyn RtpTransceiver>>, String, Vec<String>)> {
    let mut transceivers: Vec<Arc<dyn RtpTransceiver>> = Vec::new();
    for (track, _, _) in planned {
        let t = peer
            .pc
            .add_transceiver_from_track(
                track.clone(),
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![stream_id.to_owned()],
                    send_encodings: vec![],
                }),
            )
            .await?;
        transceivers.push(t);
    }
    let offer = peer.pc.create_offer(None).await?;
    peer.pc.set_local_description(offer.clone()).await?;
    let sdp = if opts.trickle {
        offer.sdp
    } else {
        peer.gathered(opts.timeout).await;
        peer.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or(offer.sdp)
    };
    let mut mids = Vec::new();
    for t in &transceivers {
        mids.push(
            t.mid()
                .await?
                .ok_or_else(|| Error::Media("transceiver without mid after offer".into()))?,
        );
    }
    Ok((transceivers, sdp, mids))
}

/// Once the answer is applied: reads what was negotiated (payload types, extension ids) and
/// starts a pump per stream (each waits until the connection is up) and a feedback reader per
/// track.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_pumps(
    tasks: &Tasks,
    peer: &Arc<Peer>,
    planned: Vec<PlannedTrack>,
    transceivers: &[Arc<dyn RtpTransceiver>],
    mids: &[String],
    spec: &PublishSpec,
    participant: &str,
    faults: &Arc<pump::Faults>,
) -> Result<Published> {
    // What was negotiated: payload types and header extension ids per sender.
    let audio_level = Arc::new(AtomicU8::new(spec.audio_level.unwrap_or(AUDIO_LEVEL_NONE)));
    let mut all = Vec::new();
    for (((track, source, layers), t), mid) in planned.into_iter().zip(transceivers).zip(mids) {
        let sender = t
            .sender()
            .await?
            .ok_or_else(|| Error::Media("transceiver lost its sender".into()))?;
        let params = sender.get_parameters().await?;
        let ext = |uri: &str| {
            params
                .rtp_parameters
                .header_extensions
                .iter()
                .find(|e| e.uri == uri)
                .map(|e| e.id as u8)
        };
        let want = if layers[0].0 == StreamKind::Audio {
            MIME_TYPE_OPUS
        } else {
            MIME_TYPE_VP8
        };
        let payload_type = params
            .rtp_parameters
            .codecs
            .iter()
            .find(|c| c.rtp_codec.mime_type.eq_ignore_ascii_case(want))
            .map(|c| c.payload_type)
            .ok_or_else(|| Error::Media(format!("{want} not negotiated on mid {mid}")))?;
        let streams: Vec<OutStream> = layers
            .iter()
            .map(|(kind, ssrc, rid)| {
                let mut extensions = Vec::new();
                if let Some(id) = ext(MID_URI) {
                    extensions.push((id, Bytes::from(mid.clone())));
                }
                if let (Some(id), Some(rid)) = (ext(RID_URI), rid) {
                    extensions.push((id, Bytes::from(rid.clone())));
                }
                OutStream {
                    source,
                    stream: *kind,
                    tag: stream_tag(participant, *kind),
                    mid: mid.clone(),
                    rid: rid.clone(),
                    ssrc: *ssrc,
                    payload_type,
                    extensions,
                    audio_level_id: ext(AUDIO_LEVEL_URI),
                    counters: Arc::new(Counters::default()),
                    faults: faults.clone(),
                }
            })
            .collect();
        tasks.spawn(pump::run_feedback(track.clone(), streams.clone()));
        for s in &streams {
            let (track, s, spec, level, peer) = (
                track.clone(),
                s.clone(),
                spec.clone(),
                audio_level.clone(),
                peer.clone(),
            );
            tasks.spawn(async move {
                if peer.connected().await.is_err() {
                    return;
                }
                match s.stream {
                    StreamKind::Audio => pump::run_audio(track, s, spec, level).await,
                    StreamKind::Video(layer) => {
                        let rate = if spec.video_layers >= 2 {
                            spec.layers[usize::from(layer.min(2))]
                        } else {
                            spec.single_layer
                        };
                        pump::run_video(track, s, rate, spec.packet_size, spec.keyframe_interval)
                            .await
                    }
                    StreamKind::Screen => {
                        pump::run_video(
                            track,
                            s,
                            spec.screen_rate,
                            spec.packet_size,
                            spec.keyframe_interval,
                        )
                        .await
                    }
                }
            });
        }
        all.extend(streams);
    }
    Ok(Published {
        streams: all,
        audio_level,
    })
}

async fn answer_subscribe_offer(inner: &Arc<Inner>, m: &Value) -> Result<()> {
    let sdp = m["sdp"]
        .as_str()
        .ok_or_else(|| Error::Protocol("subscribe_offer without sdp".into()))?;
    let slots: Vec<SlotInfo> = serde_json::from_value(m["slots"].clone())?;
    let peer = {
        let mut sub = inner.subscribe.lock().await;
        match sub.as_ref() {
            Some(p) => p.clone(),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                let p = Peer::new(
                    PeerConnectionKind::Subscribe,
                    &inner.opts,
                    &inner.ice_servers,
                    inner.outbox.clone(),
                    Some(tx),
                )
                .await?;
                inner.spawn(route_tracks(
                    rx,
                    Arc::downgrade(&p),
                    inner.reception.clone(),
                    Arc::downgrade(&inner.tasks),
                ));
                *sub = Some(p.clone());
                p
            }
        }
    };
    inner
        .reception
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .slots = slots;
    peer.set_remote(RTCSessionDescription::offer(sdp.to_owned())?)
        .await?;
    apply_early_candidates(inner, &peer).await;
    let answer = peer.pc.create_answer(None).await?;
    peer.pc.set_local_description(answer.clone()).await?;
    let sdp = if inner.opts.trickle {
        answer.sdp
    } else {
        peer.gathered(inner.opts.timeout).await;
        peer.pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or(answer.sdp)
    };
    inner
        .outbox
        .send_background(json!({"type": "subscribe_answer", "sdp": sdp}));
    peer.local_ready(&sdp);
    inner.subscribe_count.send_modify(|c| *c += 1);
    Ok(())
}

async fn apply_early_candidates(inner: &Arc<Inner>, peer: &Peer) {
    let early: Vec<RTCIceCandidateInit> = {
        let mut all = inner.early_candidates.lock().await;
        let (mine, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|(k, _)| *k == peer.kind);
        *all = rest;
        mine.into_iter().map(|(_, c)| c).collect()
    };
    for c in early {
        if let Err(e) = peer.add_remote_candidate(c).await {
            inner.outbox.note_error(format!("early candidate: {e}"));
        }
    }
}

async fn add_server_candidate(inner: &Arc<Inner>, m: &Value) -> Result<()> {
    let kind: PeerConnectionKind = serde_json::from_value(m["pc"].clone())?;
    let init = RTCIceCandidateInit {
        candidate: m["candidate"].as_str().unwrap_or("").to_owned(),
        sdp_mid: m["sdp_mid"].as_str().map(str::to_owned),
        sdp_mline_index: m["sdp_m_line_index"].as_u64().map(|i| i as u16),
        ..Default::default()
    };
    let peer = match kind {
        PeerConnectionKind::Publish => inner.publish.lock().await.clone(),
        PeerConnectionKind::Screen => inner.screen.lock().await.clone(),
        PeerConnectionKind::Subscribe => inner.subscribe.lock().await.clone(),
    };
    match peer {
        Some(p) => p.add_remote_candidate(init).await,
        None => {
            inner.early_candidates.lock().await.push((kind, init));
            Ok(())
        }
    }
}

/// Spawns a reader per remote track of the subscribe connection.
pub(crate) async fn route_tracks(
    mut rx: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
    peer: Weak<Peer>,
    reception: Arc<StdMutex<Reception>>,
    tasks: Weak<Tasks>,
) {
    while let Some(track) = rx.recv().await {
        let Some(tasks) = tasks.upgrade() else { return };
        tasks.spawn(read_track(track, peer.clone(), reception.clone()));
    }
}

/// Records every packet of one remote track under its `mid`.
async fn read_track(
    track: Arc<dyn TrackRemote>,
    peer: Weak<Peer>,
    reception: Arc<StdMutex<Reception>>,
) {
    let kind = track.kind().await;
    let codec = if kind == RtpCodecKind::Audio {
        Codec::Opus
    } else {
        Codec::Vp8
    };
    let mut mid: Option<String> = None;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnOpen(init) if mid.is_none() => {
                mid = mid_of(&peer, init.receiver_id.into()).await;
            }
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                let now = now_us();
                let key = match &mid {
                    Some(m) => m.clone(),
                    None => format!("track:{}", track.track_id().await),
                };
                let mut r = reception.lock().unwrap_or_else(|e| e.into_inner());
                r.recorders
                    .entry(key.clone())
                    .or_insert_with(|| TrackRecorder::new(&key, codec))
                    .record(
                        pkt.header.ssrc,
                        pkt.header.sequence_number,
                        &pkt.payload,
                        now,
                    );
            }
            TrackRemoteEvent::OnEnded => break,
            _ => {}
        }
    }
}

async fn mid_of(peer: &Weak<Peer>, transceiver: usize) -> Option<String> {
    let peer = peer.upgrade()?;
    for t in peer.pc.get_transceivers().await {
        if t.id() == transceiver {
            return t.mid().await.ok().flatten();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_url_takes_a_base_with_or_without_ws() {
        assert_eq!(
            ws_url("ws://127.0.0.1:8080", "t"),
            "ws://127.0.0.1:8080/ws?token=t"
        );
        assert_eq!(
            ws_url("ws://127.0.0.1:8080/", "t"),
            "ws://127.0.0.1:8080/ws?token=t"
        );
        assert_eq!(ws_url("ws://h/ws", "t"), "ws://h/ws?token=t");
    }

    #[test]
    fn slots_are_found_by_mid() {
        let slots: Vec<SlotInfo> = serde_json::from_value(json!([
            {"slot": "track", "mid": "0", "participant": "room", "source": "program", "kind": "audio"},
            {"slot": "speaker", "mid": "2"}
        ]))
        .unwrap();
        assert!(matches!(
            slot_of(&slots, "2"),
            Some(SlotInfo::Speaker { .. })
        ));
        assert!(matches!(slot_of(&slots, "0"), Some(SlotInfo::Track { .. })));
        assert_eq!(slot_of(&slots, "1"), None);
    }
}
