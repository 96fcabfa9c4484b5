//! A stand-in server for the headless client's tests: a minimal websocket server that speaks
//! roundtable's media signaling and forwards RTP with the async `webrtc` crate (one layer per
//! video track, SSRC rewritten and extensions stripped, PLI every 500 ms, ICE-lite like the
//! real server). Real ICE, DTLS and SRTP.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
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
pub struct Fake {
    subs: Mutex<Vec<Arc<Sub>>>,
    /// `ice_servers` for the welcome.
    pub ice_servers: Value,
    /// Every candidate clients sent.
    pub candidates: std::sync::Mutex<Vec<String>>,
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
    pub async fn reoffer_all(&self) {
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
                let kind = if m["pc"] == "screen" {
                    "screen"
                } else {
                    "publish"
                };
                let _ = out.send(json!({"type": "publish_answer", "pc": kind, "sdp": answer.sdp}));
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
                let pc = if m["pc"] != "subscribe" {
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

pub async fn start_fake() -> (String, Arc<Fake>) {
    start_fake_with(Value::Null).await
}

pub async fn start_fake_with(ice_servers: Value) -> (String, Arc<Fake>) {
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
