//! The same headless participant against **Janus VideoRoom** (1.1.x, multistream API) through
//! Janus's HTTP API, for the side-by-side benchmark (docs/PERFORMANCE.md). Media is exactly the
//! roundtable client's: the same peer connection setup, the same pumps and payload marks, the
//! same receive-side recorders; only the signaling differs.
//!
//! ```no_run
//! # async fn demo() -> roundtable_headless::Result<()> {
//! use roundtable_headless::{ClientOptions, JanusClient, JanusStream, PublishSpec};
//! let opts = ClientOptions { bind_ip: "10.77.0.1".parse().unwrap(), ..Default::default() };
//! let api = "http://10.77.0.2:8088/janus";
//! let room = JanusClient::join(api, 1234, "room", opts.clone()).await?; // a publisher in room 1234
//! room.publish(PublishSpec { video_layers: 3, ..Default::default() }).await?;
//! room.wait_published().await?;
//! let viewer = JanusClient::join(api, 1234, "viewer", opts).await?;
//! viewer.subscribe(&[
//!     JanusStream { feed: room.feed(), mid: room.mids()[0].clone(), substream: None },
//!     JanusStream { feed: room.feed(), mid: room.mids()[1].clone(), substream: Some(2) },
//! ]).await?;
//! let tracks = viewer.stats(); // per received mid, as `Client::stats`
//! # let _ = tracks; Ok(()) }
//! ```
//!
//! The flow (one Janus session per participant, as a browser's `janus.js` keeps it):
//! `create` → `attach` (videoroom) → `join` as publisher (its feed id) → `publish` with the
//! offer, the answer in the event; to receive, a second handle: `join` as subscriber with
//! `streams: [{feed, mid, substream}]` (Janus offers) → `start` with our answer. Janus is
//! half-trickle: its candidates are in its SDP; ours go in our SDP (gathering completes before
//! we send), then a `trickle` `completed`. A long poll (`GET /janus/<session>?maxev=…`) brings
//! the asynchronous events, matched to requests by transaction; a `keepalive` every 20 s keeps
//! the session. Subscribers may join a feed only once its publisher's connection is up (else
//! Janus answers "No such feed").

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use roundtable_signaling::PeerConnectionKind;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use webrtc::peer_connection::RTCSessionDescription;

use crate::client::{
    ClientOptions, Outbox, Published, Reception, Tasks, offer_tracks, plan_tracks, route_tracks,
    start_pumps,
};
use crate::peer::Peer;
use crate::pump::{self, OutStream, PublishSpec, SentStats};
use crate::stats::TrackStats;
use crate::{Error, Result};

/// One stream a subscriber asks Janus for: a publisher's `feed` id and the publisher's `mid`,
/// with the simulcast layer to forward as Janus numbers it (`None`: Janus's default). Janus
/// takes the first rid of the publisher's `a=simulcast` for its *highest* substream; this
/// client offers low first (`q;h;f`), so our layer `l` of `n` is Janus's `n - 1 - l`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JanusStream {
    /// The publisher's feed id ([`JanusClient::feed`]).
    pub feed: u64,
    /// The publisher's mid of the stream ([`JanusClient::mids`]).
    pub mid: String,
    /// Janus's simulcast substream (see above).
    pub substream: Option<u8>,
}

/// The API address split for a plain HTTP/1.1 request.
#[derive(Debug, Clone)]
struct Api {
    /// `host:port`
    addr: String,
    /// `/janus`
    path: String,
}

impl Api {
    fn parse(url: &str) -> Result<Api> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| Error::Usage(format!("Janus API must be http://…, not {url}")))?;
        let (addr, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/janus"),
        };
        Ok(Api {
            addr: addr.to_owned(),
            path: path.trim_end_matches('/').to_owned(),
        })
    }

    /// One request on its own connection (`Connection: close`), the body read to the end;
    /// at most a minute (a long poll answers within 30 s).
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        tokio::time::timeout(Duration::from_secs(60), self.call_once(method, path, body))
            .await
            .map_err(|_| Error::Timeout(format!("Janus {method} {path}")))?
    }

    async fn call_once(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let req = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.path,
            self.addr,
            body.len()
        );
        let mut s = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| Error::Media(format!("Janus at {}: {e}", self.addr)))?;
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| Error::Media(format!("Janus write: {e}")))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .await
            .map_err(|e| Error::Media(format!("Janus read: {e}")))?;
        let split = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| Error::Protocol("Janus answered without a header end".into()))?;
        let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
        let payload = &buf[split + 4..];
        if !head.starts_with("http/1.1 200") && !head.starts_with("http/1.0 200") {
            return Err(Error::Protocol(format!(
                "Janus answered {}",
                head.lines().next().unwrap_or("")
            )));
        }
        let payload = if head.contains("transfer-encoding: chunked") {
            dechunk(payload)
        } else {
            payload.to_vec()
        };
        Ok(serde_json::from_slice(&payload)?)
    }
}

/// The body of a chunked HTTP/1.1 response (bytes: a chunk may end inside a character).
fn dechunk(mut s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = s.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&s[..eol]);
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        let rest = &s[eol + 2..];
        if n == 0 || rest.len() < n {
            break;
        }
        out.extend_from_slice(&rest[..n]);
        s = rest[n..].strip_prefix(b"\r\n").unwrap_or(&rest[n..]);
    }
    out
}

struct Inner {
    api: Api,
    opts: ClientOptions,
    room: u64,
    session: u64,
    publisher_handle: u64,
    /// The feed id, known once the `join` is answered.
    feed: AtomicU64,
    transactions: AtomicU64,
    /// Requests whose event has not come yet, by transaction.
    waiting: StdMutex<HashMap<String, oneshot::Sender<Value>>>,
    outbox: Arc<Outbox>,
    reception: Arc<StdMutex<Reception>>,
    publish: tokio::sync::Mutex<Option<Arc<Peer>>>,
    subscribe: tokio::sync::Mutex<Option<(u64, Arc<Peer>)>>,
    published: StdMutex<Option<(Published, Vec<String>)>>,
    faults: Arc<pump::Faults>,
    tasks: Arc<Tasks>,
    poller: StdMutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

/// A headless participant in a Janus VideoRoom: a publisher handle (joined at once) and, after
/// [`subscribe`](Self::subscribe), a subscriber handle. Cloning shares it.
#[derive(Clone)]
pub struct JanusClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JanusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JanusClient")
            .field("session", &self.inner.session)
            .field("feed", &self.inner.feed.load(Ordering::Relaxed))
            .finish()
    }
}

fn janus_error(v: &Value) -> Option<Error> {
    if v["janus"] == "error" {
        return Some(Error::Command {
            code: v["error"]["code"].to_string(),
            message: v["error"]["reason"].as_str().unwrap_or("").to_owned(),
        });
    }
    let data = &v["plugindata"]["data"];
    if data["error"].is_string() || data["error_code"].is_number() {
        return Some(Error::Command {
            code: data["error_code"].to_string(),
            message: data["error"].as_str().unwrap_or("").to_owned(),
        });
    }
    None
}

impl JanusClient {
    /// Creates a session on the Janus HTTP API at `api` (`http://host:port/janus`), attaches
    /// the VideoRoom plugin and joins `room` as a publisher named `display` (nothing published
    /// yet). The peer connections will bind `opts.bind_ip`; `opts.trickle` is ignored (Janus
    /// gets our candidates in the SDP).
    pub async fn join(
        api: &str,
        room: u64,
        display: &str,
        mut opts: ClientOptions,
    ) -> Result<JanusClient> {
        opts.trickle = false;
        let api = Api::parse(api)?;
        let tx = || format!("t{}", rand::random::<u64>());
        let created = api
            .call(
                "POST",
                "",
                Some(&json!({"janus": "create", "transaction": tx()})),
            )
            .await?;
        if let Some(e) = janus_error(&created) {
            return Err(e);
        }
        let session = created["data"]["id"]
            .as_u64()
            .ok_or_else(|| Error::Protocol(format!("create answered {created}")))?;
        let handle = attach(&api, session).await?;
        let inner = Arc::new(Inner {
            api,
            opts,
            room,
            session,
            publisher_handle: handle,
            feed: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            waiting: StdMutex::new(HashMap::new()),
            outbox: Arc::new(Outbox::detached()),
            reception: Arc::default(),
            publish: tokio::sync::Mutex::new(None),
            subscribe: tokio::sync::Mutex::new(None),
            published: StdMutex::new(None),
            faults: Arc::default(),
            tasks: Arc::default(),
            poller: StdMutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        start_poller(&inner);
        let client = JanusClient { inner };
        let joined = match message(
            &client.inner,
            handle,
            json!({"request": "join", "ptype": "publisher", "room": room, "display": display}),
            None,
        )
        .await
        {
            Ok(j) => j,
            Err(e) => {
                client.close().await; // the session goes now, not at Janus's timeout
                return Err(e);
            }
        };
        let inner = client.inner;
        let feed = joined["plugindata"]["data"]["id"]
            .as_u64()
            .ok_or_else(|| Error::Protocol(format!("join answered {joined}")))?;
        inner.feed.store(feed, Ordering::Relaxed);
        Ok(JanusClient { inner })
    }

    /// This publisher's feed id in the room.
    pub fn feed(&self) -> u64 {
        self.inner.feed.load(Ordering::Relaxed)
    }

    /// The mids of what [`publish`](Self::publish) sent (audio first, then video), as
    /// subscribers name them in [`JanusStream::mid`].
    pub fn mids(&self) -> Vec<String> {
        self.inner
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, mids)| mids.clone())
            .unwrap_or_default()
    }

    /// Publishes what `spec` asks for (as [`Client::publish`](crate::Client::publish): the same
    /// tracks, simulcast rids and pumps) with the VideoRoom `publish` request.
    pub async fn publish(&self, spec: PublishSpec) -> Result<Vec<SentStats>> {
        let inner = &self.inner;
        if spec.video_layers > 3 {
            return Err(Error::Usage("video_layers must be 0 to 3".into()));
        }
        let peer = {
            let mut publish = inner.publish.lock().await;
            if publish.is_some() {
                return Err(Error::Usage("already published".into()));
            }
            let peer = Peer::new(
                PeerConnectionKind::Publish,
                &inner.opts,
                &[],
                inner.outbox.clone(),
                None,
            )
            .await?;
            *publish = Some(peer.clone());
            peer
        };
        let participant = format!("janus-{}", inner.feed.load(Ordering::Relaxed));
        let (stream_id, planned) = plan_tracks(&participant, &spec)?;
        let (transceivers, sdp, mids) =
            offer_tracks(&peer, &inner.opts, &planned, &stream_id).await?;
        let answer = message(
            inner,
            inner.publisher_handle,
            json!({"request": "publish", "audio": spec.audio, "video": spec.video_layers > 0}),
            Some(json!({"type": "offer", "sdp": sdp})),
        )
        .await?;
        let sdp = answer["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| Error::Protocol(format!("publish answered without jsep: {answer}")))?;
        peer.set_remote(RTCSessionDescription::answer(sdp.to_owned())?)
            .await?;
        trickle_done(inner, inner.publisher_handle).await;
        let published = start_pumps(
            &inner.tasks,
            &peer,
            planned,
            &transceivers,
            &mids,
            &spec,
            &participant,
            &inner.faults,
        )
        .await?;
        let snapshot = published.streams.iter().map(OutStream::snapshot).collect();
        *inner.published.lock().unwrap_or_else(|e| e.into_inner()) = Some((published, mids));
        Ok(snapshot)
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

    /// Subscribes to `streams` on a new subscriber handle: `join` as subscriber (Janus offers),
    /// our answer with `start`. Once per client.
    pub async fn subscribe(&self, streams: &[JanusStream]) -> Result<()> {
        let inner = &self.inner;
        let mut sub = inner.subscribe.lock().await;
        if sub.is_some() {
            return Err(Error::Usage("already subscribed".into()));
        }
        let handle = attach(&inner.api, inner.session).await?;
        let list: Vec<Value> = streams
            .iter()
            .map(|s| {
                let mut v = json!({"feed": s.feed, "mid": s.mid});
                if let Some(l) = s.substream {
                    v["substream"] = json!(l);
                }
                v
            })
            .collect();
        let offer = message(
            inner,
            handle,
            json!({"request": "join", "ptype": "subscriber", "room": inner.room, "streams": list}),
            None,
        )
        .await?;
        let sdp = offer["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| Error::Protocol(format!("subscriber join without jsep: {offer}")))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let peer = Peer::new(
            PeerConnectionKind::Subscribe,
            &inner.opts,
            &[],
            inner.outbox.clone(),
            Some(tx),
        )
        .await?;
        inner.tasks.spawn(route_tracks(
            rx,
            Arc::downgrade(&peer),
            inner.reception.clone(),
            Arc::downgrade(&inner.tasks),
        ));
        *sub = Some((handle, peer.clone()));
        drop(sub);
        peer.set_remote(RTCSessionDescription::offer(sdp.to_owned())?)
            .await?;
        let answer = peer.pc.create_answer(None).await?;
        peer.pc.set_local_description(answer.clone()).await?;
        peer.gathered(inner.opts.timeout).await;
        let sdp = peer
            .pc
            .local_description()
            .await
            .map(|d| d.sdp)
            .unwrap_or(answer.sdp);
        message(
            inner,
            handle,
            json!({"request": "start"}),
            Some(json!({"type": "answer", "sdp": sdp})),
        )
        .await?;
        trickle_done(inner, handle).await;
        Ok(())
    }

    /// Every received track's stats, by mid (as [`Client::stats`](crate::Client::stats)).
    pub fn stats(&self) -> Vec<TrackStats> {
        self.inner
            .reception
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats()
    }

    /// Raw one-way delay samples (µs) of the track on `mid`, in arrival order.
    pub fn latency_samples(&self, mid: &str) -> Vec<u32> {
        self.inner
            .reception
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latency_samples(mid)
    }

    /// How many delay samples the track on `mid` has (without copying them).
    pub fn latency_count(&self, mid: &str) -> usize {
        self.inner
            .reception
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .latency_count(mid)
    }

    /// What each published stream has sent so far.
    pub fn sent_stats(&self) -> Vec<SentStats> {
        self.inner
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(p, _)| p.streams.iter().map(OutStream::snapshot).collect())
            .unwrap_or_default()
    }

    /// Errors nobody waited for (Janus `hangup` events, failed negotiation steps).
    pub fn errors(&self) -> Vec<String> {
        self.inner.outbox.error_list()
    }

    /// Stops the pumps, closes both connections and destroys the Janus session.
    pub async fn close(&self) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        inner.tasks.abort_all();
        let publish = inner.publish.lock().await.take();
        let subscribe = inner.subscribe.lock().await.take().map(|(_, p)| p);
        for p in [publish, subscribe].into_iter().flatten() {
            p.close().await;
        }
        let _ = inner
            .api
            .call(
                "POST",
                &format!("/{}", inner.session),
                Some(&json!({"janus": "destroy", "transaction": "bye"})),
            )
            .await;
        for t in std::mem::take(&mut *inner.poller.lock().unwrap_or_else(|e| e.into_inner())) {
            t.abort();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self
            .poller
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

async fn attach(api: &Api, session: u64) -> Result<u64> {
    let attached = api
        .call(
            "POST",
            &format!("/{session}"),
            Some(
                &json!({"janus": "attach", "plugin": "janus.plugin.videoroom",
                "transaction": format!("a{}", rand::random::<u64>())}),
            ),
        )
        .await?;
    if let Some(e) = janus_error(&attached) {
        return Err(e);
    }
    attached["data"]["id"]
        .as_u64()
        .ok_or_else(|| Error::Protocol(format!("attach answered {attached}")))
}

/// Sends a plugin message and returns the plugin's answer: at once when Janus answers
/// synchronously (`success`), else the event carrying the same transaction.
async fn message(
    inner: &Arc<Inner>,
    handle: u64,
    body: Value,
    jsep: Option<Value>,
) -> Result<Value> {
    let transaction = format!("m{}", inner.transactions.fetch_add(1, Ordering::Relaxed));
    let (tx, rx) = oneshot::channel();
    inner
        .waiting
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(transaction.clone(), tx);
    let mut req = json!({"janus": "message", "transaction": transaction, "body": body});
    if let Some(j) = jsep {
        req["jsep"] = j;
    }
    let forget = || {
        inner
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&transaction);
    };
    let reply = match inner
        .api
        .call("POST", &format!("/{}/{handle}", inner.session), Some(&req))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            forget();
            return Err(e);
        }
    };
    if let Some(e) = janus_error(&reply) {
        forget();
        return Err(e);
    }
    if reply["janus"] == "success" {
        forget();
        return Ok(reply);
    }
    let event = tokio::time::timeout(inner.opts.timeout, rx)
        .await
        .map_err(|_| {
            forget();
            Error::Timeout(format!("Janus event for {}", req["body"]["request"]))
        })?
        .map_err(|_| Error::Closed)?;
    if let Some(e) = janus_error(&event) {
        return Err(e);
    }
    Ok(event)
}

/// Tells Janus our candidates are all in the SDP.
async fn trickle_done(inner: &Inner, handle: u64) {
    let r = inner
        .api
        .call(
            "POST",
            &format!("/{}/{handle}", inner.session),
            Some(&json!({"janus": "trickle", "transaction": "done",
                "candidate": {"completed": true}})),
        )
        .await;
    if let Err(e) = r {
        inner.outbox.note_error(format!("trickle completed: {e}"));
    }
}

/// The long poll: delivers events to the requests waiting for them, notes hang-ups, and sends
/// a keepalive every 20 s. Holds the client weakly (stops once it is gone).
fn start_poller(inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    let (api, session) = (inner.api.clone(), inner.session);
    let poll = tokio::spawn(async move {
        let mut last_keepalive = tokio::time::Instant::now();
        loop {
            let got = api.call("GET", &format!("/{session}?maxev=10"), None).await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.closed.load(Ordering::Relaxed) {
                return;
            }
            match got {
                Ok(v) if v["janus"] == "error" => {
                    // The session is gone (timed out or destroyed): say so, poll slowly.
                    inner.outbox.note_error(format!("long poll: {v}"));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok(v) => {
                    let events = match v {
                        Value::Array(a) => a,
                        other => vec![other],
                    };
                    for ev in events {
                        deliver(&inner, ev);
                    }
                }
                Err(e) => {
                    inner.outbox.note_error(format!("long poll: {e}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            if last_keepalive.elapsed() > Duration::from_secs(20) {
                last_keepalive = tokio::time::Instant::now();
                let _ = api
                    .call(
                        "POST",
                        &format!("/{session}"),
                        Some(&json!({"janus": "keepalive", "transaction": "ka"})),
                    )
                    .await;
            }
        }
    });
    inner
        .poller
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(poll);
}

fn deliver(inner: &Inner, ev: Value) {
    match ev["janus"].as_str() {
        Some("keepalive") | Some("ack") | Some("webrtcup") | Some("media") | None => {}
        Some("hangup") | Some("detached") => {
            inner.outbox.note_error(format!("janus: {ev}"));
        }
        _ => {
            if let Some(t) = ev["transaction"].as_str()
                && let Some(w) = inner
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(t)
            {
                let _ = w.send(ev);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_url_splits() {
        let a = Api::parse("http://10.77.0.2:8088/janus").unwrap();
        assert_eq!(
            (a.addr.as_str(), a.path.as_str()),
            ("10.77.0.2:8088", "/janus")
        );
        let a = Api::parse("http://h:1").unwrap();
        assert_eq!(a.path, "/janus");
        assert!(Api::parse("https://h/janus").is_err());
    }

    #[test]
    fn a_chunked_body_is_joined() {
        assert_eq!(
            dechunk(b"3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n"),
            b"{\"a\":1}".to_vec()
        );
        // A chunk boundary inside a two-byte character.
        assert_eq!(
            dechunk(b"1\r\n\xc3\r\n1\r\n\xa9\r\n0\r\n\r\n"),
            "é".as_bytes().to_vec()
        );
    }

    #[test]
    fn plugin_errors_are_errors() {
        let e = janus_error(&json!({"janus": "event", "plugindata": {"data": {
            "videoroom": "event", "error_code": 428, "error": "No such feed"}}}));
        assert!(matches!(e, Some(Error::Command { ref message, .. }) if message == "No such feed"));
        assert!(
            janus_error(
                &json!({"janus": "event", "plugindata": {"data": {"videoroom": "joined"}}})
            )
            .is_none()
        );
    }
}
