//! The headless client against a stand-in server on loopback: a minimal websocket server that
//! speaks roundtable's media signaling and forwards RTP with the async `webrtc` crate (one
//! layer per video track, SSRC rewritten, PLI every 500 ms; ICE-lite like the real server). Real ICE, DTLS and SRTP; no
//! roundtable server involved, so this checks the client alone until the real engine speaks
//! media (see server.rs beside this file).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roundtable_headless::{Client, ClientOptions, PublishSpec, StreamKind, stream_tag};
use roundtable_signaling::SlotInfo;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine,
};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceCandidateInit,
    RTCPeerConnectionIceEvent, RTCSessionDescription, SettingEngineBuilder,
    register_default_interceptors,
};

type Out = mpsc::UnboundedSender<Value>;

/// One subscriber's output tracks.
struct Sub {
    out: Out,
    pc: Arc<dyn PeerConnection>,
    audio: (Arc<TrackLocalStaticRTP>, u32),
    video: (Arc<TrackLocalStaticRTP>, u32),
}

#[derive(Default)]
struct Fake {
    subs: Mutex<Vec<Arc<Sub>>>,
    /// `ice_servers` for the welcome.
    ice_servers: Value,
    /// Every candidate clients sent.
    candidates: std::sync::Mutex<Vec<String>>,
}

struct Handler {
    pc: &'static str,
    out: Out,
    fake: Option<Arc<Fake>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(c) = event.candidate.to_json() {
            let _ = self.out.send(json!({
                "type": "ice_candidate", "pc": self.pc, "candidate": c.candidate,
                "sdp_mid": "0", "sdp_m_line_index": 0
            }));
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(fake) = self.fake.clone() {
            tokio::spawn(forward(track, fake));
        }
    }
}

async fn new_pc(handler: Handler) -> Arc<dyn PeerConnection> {
    let mut me = MediaEngine::default();
    me.register_default_codecs().unwrap();
    let registry = register_default_interceptors(Registry::new(), &mut me).unwrap();
    // ICE-lite, as the real server is.
    let settings = SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .with_lite(true)
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_setting_engine(settings)
        .with_handler(Arc::new(handler))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .unwrap();
    Arc::new(pc)
}

fn output_track(
    kind: RtpCodecKind,
    mime: &str,
    clock: u32,
    channels: u16,
    name: &str,
) -> (Arc<TrackLocalStaticRTP>, u32) {
    let ssrc = rand::random::<u32>();
    let track = MediaStreamTrack::new(
        format!("fake-{name}"),
        name.to_owned(),
        name.to_owned(),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate: clock,
                channels,
                sdp_fmtp_line: if mime == MIME_TYPE_OPUS {
                    "minptime=10;useinbandfec=1".into()
                } else {
                    String::new()
                },
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    );
    (Arc::new(TrackLocalStaticRTP::new(track)), ssrc)
}

/// `mid`s of the m-lines of an SDP, in order.
fn mids(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| m.trim().to_owned())
        .collect()
}

/// Forwards one published track to every subscriber: audio as is, video from one layer
/// (`f`, or the only one), SSRC rewritten and extensions stripped. Asks for a keyframe on the
/// forwarded video SSRC every 500 ms.
async fn forward(track: Arc<dyn TrackRemote>, fake: Arc<Fake>) {
    let kind = track.kind().await;
    let mut chosen: Option<u32> = None;
    while let Some(event) = track.poll().await {
        match event {
            TrackRemoteEvent::OnOpen(init) => {
                let rid = init.rid.clone().unwrap_or_default();
                if kind == RtpCodecKind::Video && (rid.is_empty() || rid == "f") {
                    chosen = Some(init.ssrc);
                    let pli = track.clone();
                    let ssrc = init.ssrc;
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            let p = PictureLossIndication {
                                sender_ssrc: 0,
                                media_ssrc: ssrc,
                            };
                            if pli.write_rtcp(vec![Box::new(p)]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
            TrackRemoteEvent::OnRtpPacket(pkt) => {
                if kind == RtpCodecKind::Video && chosen != Some(pkt.header.ssrc) {
                    continue;
                }
                let subs = fake.subs.lock().await.clone();
                for sub in subs {
                    let (out, ssrc) = if kind == RtpCodecKind::Audio {
                        &sub.audio
                    } else {
                        &sub.video
                    };
                    let mut p = pkt.clone();
                    p.header.ssrc = *ssrc;
                    p.header.extension = false;
                    p.header.extensions.clear();
                    p.header.extensions_padding = 0;
                    let _ = out.write_rtp(p).await;
                }
            }
            _ => {}
        }
    }
}

/// Sends a subscribe offer with the sub's current transceivers; slots: audio and video of
/// `pub`, then `speaker` for any further m-line.
async fn offer(sub: &Sub) {
    let offer = sub.pc.create_offer(None).await.unwrap();
    sub.pc.set_local_description(offer.clone()).await.unwrap();
    let slots: Vec<Value> = mids(&offer.sdp)
        .into_iter()
        .enumerate()
        .map(|(i, mid)| match i {
            0 => json!({"slot": "track", "mid": mid, "participant": "pub", "source": "microphone", "kind": "audio"}),
            1 => json!({"slot": "track", "mid": mid, "participant": "pub", "source": "camera", "kind": "video"}),
            _ => json!({"slot": "speaker", "mid": mid}),
        })
        .collect();
    let _ = sub
        .out
        .send(json!({"type": "subscribe_offer", "sdp": offer.sdp, "slots": slots}));
}

impl Fake {
    /// Adds a video m-line to every subscriber's connection and re-offers.
    async fn reoffer_all(&self) {
        for sub in self.subs.lock().await.iter() {
            let (t, _) = output_track(RtpCodecKind::Video, MIME_TYPE_VP8, 90_000, 0, "extra");
            sub.pc.add_track(t as Arc<dyn TrackLocal>).await.unwrap();
            offer(sub).await;
        }
    }
}

async fn connection(stream: tokio::net::TcpStream, fake: Arc<Fake>) {
    let ws = tokio_tungstenite::accept_async(stream).await.unwrap();
    let (mut sink, mut rx) = ws.split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<Value>();
    tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink
                .send(Message::Text(m.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut publish: Option<Arc<dyn PeerConnection>> = None;
    let mut sub: Option<Arc<Sub>> = None;
    while let Some(Ok(m)) = rx.next().await {
        let Message::Text(t) = m else { continue };
        let m: Value = serde_json::from_str(t.as_str()).unwrap();
        let id = m["id"].clone();
        let ack = json!({"type": "ack", "id": id});
        match m["type"].as_str().unwrap() {
            "hello" => {
                let mut welcome = json!({
                    "type": "welcome", "protocol": 1, "server_time": 0, "seq": 0,
                    "you": {"id": "p1"}, "snapshot": {"floor": {"policy": "moderated"}, "agenda": {}}
                });
                if !fake.ice_servers.is_null() {
                    welcome["ice_servers"] = fake.ice_servers.clone();
                }
                let _ = out.send(welcome);
                let pc = new_pc(Handler {
                    pc: "subscribe",
                    out: out.clone(),
                    fake: None,
                })
                .await;
                let audio = output_track(RtpCodecKind::Audio, MIME_TYPE_OPUS, 48_000, 2, "audio");
                let video = output_track(RtpCodecKind::Video, MIME_TYPE_VP8, 90_000, 0, "video");
                pc.add_track(audio.0.clone() as Arc<dyn TrackLocal>)
                    .await
                    .unwrap();
                pc.add_track(video.0.clone() as Arc<dyn TrackLocal>)
                    .await
                    .unwrap();
                let s = Arc::new(Sub {
                    out: out.clone(),
                    pc,
                    audio,
                    video,
                });
                offer(&s).await;
                fake.subs.lock().await.push(s.clone());
                sub = Some(s);
                let _ = out.send(json!({"type": "event", "seq": 1, "at": 0,
                    "event": {"type": "participant_joined"}, "floor": {"policy": "moderated", "n": 1}}));
            }
            "ping" => {
                let _ = out.send(json!({"type": "pong", "id": id, "client_time": m["client_time"], "server_time": 1}));
            }
            "publish" => {
                let pc = new_pc(Handler {
                    pc: "publish",
                    out: out.clone(),
                    fake: Some(fake.clone()),
                })
                .await;
                let sdp = m["sdp"].as_str().unwrap().to_owned();
                if sdp.contains("a=rid:") {
                    assert!(sdp.contains("a=simulcast:send q;h;f"), "{sdp}");
                    // Like a browser: mid on every m-line, transport-cc on every packet.
                    assert_eq!(sdp.matches("rtp-hdrext:sdes:mid").count(), 2, "{sdp}");
                    assert_eq!(sdp.matches("transport-wide-cc").count(), 2, "{sdp}");
                }
                pc.set_remote_description(RTCSessionDescription::offer(sdp).unwrap())
                    .await
                    .unwrap();
                let answer = pc.create_answer(None).await.unwrap();
                pc.set_local_description(answer.clone()).await.unwrap();
                assert!(answer.sdp.contains("a=ice-lite"));
                let _ = out.send(json!({"type": "publish_answer", "sdp": answer.sdp}));
                let _ = out.send(ack);
                publish = Some(pc);
            }
            "subscribe_answer" => {
                let s = sub.as_ref().unwrap();
                let sdp = m["sdp"].as_str().unwrap().to_owned();
                s.pc.set_remote_description(RTCSessionDescription::answer(sdp).unwrap())
                    .await
                    .unwrap();
                let _ = out.send(ack);
            }
            "ice_candidate" => {
                let pc = if m["pc"] == "publish" {
                    publish.clone()
                } else {
                    sub.as_ref().map(|s| s.pc.clone())
                };
                fake.candidates
                    .lock()
                    .unwrap()
                    .push(m["candidate"].as_str().unwrap().to_owned());
                let c = RTCIceCandidateInit {
                    candidate: m["candidate"].as_str().unwrap().to_owned(),
                    sdp_mid: m["sdp_mid"].as_str().map(str::to_owned),
                    sdp_mline_index: m["sdp_m_line_index"].as_u64().map(|i| i as u16),
                    ..Default::default()
                };
                match pc {
                    Some(pc) if !c.candidate.is_empty() => match pc.add_ice_candidate(c).await {
                        Ok(()) => drop(out.send(ack)),
                        Err(e) => drop(out.send(json!({"type": "error", "id": id, "code": "invalid_value", "message": e.to_string()}))),
                    },
                    _ => drop(out.send(ack)),
                }
            }
            "agenda_start" => {
                let _ = out
                    .send(json!({"type": "error", "id": id, "code": "forbidden", "message": "no"}));
            }
            _ => {
                let _ = out.send(ack);
            }
        }
    }
    if let Some(pc) = publish {
        let _ = pc.close().await;
    }
    if let Some(s) = sub {
        fake.subs.lock().await.retain(|x| !Arc::ptr_eq(x, &s));
        let _ = s.pc.close().await;
    }
}

async fn start_fake() -> (String, Arc<Fake>) {
    start_fake_with(Value::Null).await
}

async fn start_fake_with(ice_servers: Value) -> (String, Arc<Fake>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = Arc::new(Fake {
        ice_servers,
        ..Default::default()
    });
    let f = fake.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(connection(s, f.clone()));
        }
    });
    (format!("ws://{addr}"), fake)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_simulcast_and_receives_through_a_loopback_forwarder() {
    let (base, fake) = start_fake().await;
    let publisher = Client::join(&base, "pub").await.expect("join");
    let viewer = Client::join(&base, "viewer").await.expect("join");
    assert_eq!(publisher.participant(), "p1");
    assert_eq!(publisher.floor()["policy"], "moderated");

    // Commands: ack, error, pong; events.
    let e = publisher
        .cmd(json!({"type": "agenda_start"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("forbidden"));
    let pong = publisher
        .cmd(json!({"type": "ping", "client_time": 5}))
        .await
        .unwrap();
    assert_eq!(pong["type"], "pong");
    let ev = viewer.wait_event("participant_joined").await.unwrap();
    assert_eq!(ev["seq"], 1);
    assert_eq!(viewer.floor()["n"], 1);

    let sent = publisher
        .publish(PublishSpec {
            audio: true,
            video_layers: 3,
            keyframe_interval: Duration::ZERO,
            ..Default::default()
        })
        .await
        .expect("publish");
    assert_eq!(sent.len(), 4);
    assert_eq!(
        sent.iter().map(|s| s.rid.clone()).collect::<Vec<_>>(),
        vec![None, Some("q".into()), Some("h".into()), Some("f".into())]
    );
    publisher.wait_published().await.expect("publish connected");
    viewer.wait_subscribed(1).await.unwrap();

    // Audio and the `f` layer reach the viewer, in order, with marks and latency.
    let audio_tag = stream_tag("p1", StreamKind::Audio);
    let f_tag = stream_tag("p1", StreamKind::Video(2));
    let stats = viewer
        .wait_stats(Duration::from_secs(10), |s| {
            s.len() == 2 && s.iter().all(|t| t.packets >= 100)
        })
        .await
        .expect("media arrives");
    let audio = stats.iter().find(|t| t.kind == "audio").unwrap();
    let video = stats.iter().find(|t| t.kind == "video").unwrap();
    assert!(matches!(&audio.slot, Some(SlotInfo::Track { kind, .. }) if kind == "audio"));
    assert_eq!(audio.ssrcs.len(), 1);
    assert_eq!(audio.rtp.gaps, 0, "{audio:?}");
    assert_eq!(audio.rtp.duplicates, 0);
    assert_eq!(audio.unmarked, 0);
    assert_eq!(
        audio.streams.keys().copied().collect::<Vec<_>>(),
        vec![audio_tag]
    );
    assert!(audio.latency.count >= 100);
    assert!(audio.latency.p50_us < 50_000, "{:?}", audio.latency);
    assert_eq!(
        video.streams.keys().copied().collect::<Vec<_>>(),
        vec![f_tag]
    );
    assert!(video.keyframes >= 1, "first frame is a keyframe");
    assert_eq!(video.rtp.gaps, 0, "{video:?}");

    // The forwarder's PLIs reach the `f` layer only, and each makes a keyframe.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let sent = publisher.sent_stats();
    let f = sent.iter().find(|s| s.rid.as_deref() == Some("f")).unwrap();
    let q = sent.iter().find(|s| s.rid.as_deref() == Some("q")).unwrap();
    assert!(f.keyframe_requests >= 1, "{f:?}");
    assert!(f.keyframes >= 2, "{f:?}");
    assert_eq!(q.keyframe_requests, 0);
    assert_eq!(q.keyframes, 1);
    assert!(
        sent.iter().all(|s| s.errors == 0 && s.packets > 0),
        "{sent:?}"
    );
    let v = viewer.stats();
    let video = v.iter().find(|t| t.kind == "video").unwrap();
    assert!(video.keyframes >= 2, "{video:?}");

    // A re-offer adds an m-line; the tracks already playing carry on without a gap.
    let before = viewer.stats();
    fake.reoffer_all().await;
    viewer.wait_subscribed(2).await.unwrap();
    assert_eq!(viewer.slots().len(), 3);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = viewer.stats();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.mid, b.mid);
        assert!(a.packets > b.packets + 20, "{} kept playing: {a:?}", a.mid);
        assert_eq!(a.rtp.gaps, 0, "{a:?}");
        assert_eq!(a.ssrcs.len(), 1, "{a:?}");
    }
    assert!(viewer.errors().is_empty(), "{:?}", viewer.errors());
    assert!(publisher.errors().is_empty(), "{:?}", publisher.errors());

    publisher.close().await;
    viewer.close().await;
    assert!(
        publisher
            .cmd(json!({"type": "ping", "client_time": 1}))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_trickle_single_layer() {
    let (base, _fake) = start_fake().await;
    let opts = ClientOptions {
        trickle: false,
        ..Default::default()
    };
    let c = Client::join_with(&base, "x", opts).await.unwrap();
    let sent = c
        .publish(PublishSpec {
            video_layers: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].rid, None);
    let s = c
        .wait_stats(Duration::from_secs(10), |s| {
            s.len() == 2 && s.iter().all(|t| t.packets >= 20)
        })
        .await
        .expect("own media comes back");
    let video = s.iter().find(|t| t.kind == "video").unwrap();
    assert_eq!(
        video.streams.keys().copied().collect::<Vec<_>>(),
        vec![stream_tag("p1", StreamKind::Video(2))]
    );
    assert!(c.errors().is_empty(), "{:?}", c.errors());
    c.close().await;
}

fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

async fn cycle(base: &str) {
    let c = Client::join(base, "cycle").await.unwrap();
    c.publish(PublishSpec {
        video_layers: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    c.wait_stats(Duration::from_secs(10), |s| {
        s.len() == 2 && s.iter().all(|t| t.packets >= 5)
    })
    .await
    .unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_leaves_no_tasks_or_sockets() {
    let (base, _fake) = start_fake().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    cycle(&base).await; // warm-up
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (tasks, sockets) = (metrics.num_alive_tasks(), open_sockets());
    for _ in 0..5 {
        cycle(&base).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metrics.num_alive_tasks(), tasks, "tasks");
    assert_eq!(open_sockets(), sockets, "sockets");
}

/// coturn on loopback with a static long-term credential; killed on drop.
struct Coturn {
    child: std::process::Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl Coturn {
    fn start() -> Option<Coturn> {
        let bin = ["/usr/bin/turnserver", "/usr/sbin/turnserver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())?;
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = std::env::temp_dir().join(format!("rt-coturn-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let conf = dir.join("turnserver.conf");
        std::fs::write(
            &conf,
            format!(
                "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\n\
                 min-port=40000\nmax-port=40999\nrealm=roundtable.test\nlt-cred-mech\n\
                 user=headless:relay-secret\nfingerprint\nno-tls\nno-dtls\nno-cli\n\
                 allow-loopback-peers\nno-software-attribute\nsimple-log\n\
                 log-file={}\npidfile={}\nuserdb={}\n",
                dir.join("turn.log").display(),
                dir.join("turn.pid").display(),
                dir.join("turn.db").display(),
            ),
        )
        .ok()?;
        let child = std::process::Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Coturn {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_goes_through_coturn() {
    let Some(turn) = Coturn::start() else {
        eprintln!("coturn not installed (apt-get install coturn): skipped");
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let servers = json!([{
        "urls": [format!("turn:127.0.0.1:{}?transport=udp", turn.port)],
        "username": "headless",
        "credential": "relay-secret"
    }]);
    let (base, fake) = start_fake_with(servers).await;
    let opts = ClientOptions {
        relay_only: true,
        ..Default::default()
    };
    let c = Client::join_with(&base, "relay", opts).await.unwrap();
    assert_eq!(c.ice_servers().len(), 1);
    c.publish(PublishSpec {
        video_layers: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    c.wait_stats(Duration::from_secs(15), |s| {
        s.len() == 2 && s.iter().all(|t| t.packets >= 20)
    })
    .await
    .expect("media through the relay");
    let candidates = fake.candidates.lock().unwrap().clone();
    let real: Vec<&String> = candidates.iter().filter(|c| !c.is_empty()).collect();
    assert!(!real.is_empty());
    assert!(
        real.iter().all(|c| c.contains("typ relay")),
        "relay only: {candidates:?}"
    );
    assert!(c.errors().is_empty(), "{:?}", c.errors());
    c.close().await;
}

/// Process CPU time (user + system), from /proc (10 ms resolution).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    // After the command name: field 3 (state) is token 0, so utime (14) and stime (15) are
    // tokens 11 and 12.
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = n(11) + n(12);
    Duration::from_millis(ticks * 10)
}

/// How much CPU the async webrtc layer costs per packet on this machine: one publisher
/// (audio + three layers) and `VIEWERS` viewers through the stand-in forwarder, all in this
/// process. Prints; run with
/// `cargo test --release -p roundtable-headless --test loopback cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, prints numbers"]
async fn cost_of_the_async_layer_per_packet() {
    const VIEWERS: usize = 10;
    let (base, _fake) = start_fake().await;
    let publisher = Client::join(&base, "pub").await.unwrap();
    let mut viewers = Vec::new();
    for i in 0..VIEWERS {
        viewers.push(Client::join(&base, &format!("v{i}")).await.unwrap());
    }
    publisher
        .publish(PublishSpec {
            video_layers: 3,
            keyframe_interval: Duration::ZERO,
            ..Default::default()
        })
        .await
        .unwrap();
    for v in &viewers {
        v.wait_stats(Duration::from_secs(20), |s| {
            s.len() == 2 && s.iter().all(|t| t.packets > 10)
        })
        .await
        .unwrap();
    }
    let count = |vs: &[Client]| -> (u64, u64) {
        let sent: u64 = publisher.sent_stats().iter().map(|s| s.packets).sum();
        let recv: u64 = vs
            .iter()
            .chain(std::iter::once(&publisher))
            .flat_map(|v| v.stats())
            .map(|t| t.packets)
            .sum();
        (sent, recv)
    };
    let (s0, r0) = count(&viewers);
    let c0 = cpu_time();
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (s1, r1) = count(&viewers);
    let cpu = cpu_time() - c0;
    let wall = t0.elapsed();
    let (sent, recv) = (s1 - s0, r1 - r0);
    // Each received packet was also forwarded once by the stand-in (same crate, same cost).
    let handled = sent + 2 * recv;
    let mut lat: Vec<u32> = viewers
        .iter()
        .flat_map(|v| {
            v.stats()
                .into_iter()
                .flat_map(|t| v.latency_samples(&t.mid))
                .collect::<Vec<_>>()
        })
        .collect();
    lat.sort_unstable();
    let l = roundtable_headless::LatencySummary::of(&lat);
    eprintln!(
        "viewers {VIEWERS}: sent {sent} pkts, received {recv} in {wall:?}, CPU {cpu:?} \
         ({:.1}% of one core); {:.1} us CPU per packet handled ({handled} = sent + 2 x received); \
         latency p50 {} us p99 {} us",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / handled as f64,
        l.p50_us,
        l.p99_us
    );
    for v in &viewers {
        v.close().await;
    }
    publisher.close().await;
}
