//! The media engine against real WebRTC clients over loopback: real ICE, DTLS and SRTP on real
//! UDP sockets. The clients are the async `webrtc` crate (each binds its own socket on
//! 127.0.0.1, mDNS off); the engine serves them all from its one socket.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use roundtable::media::engine::{
    ConnId, ConnState, KeyframeKind, MediaConfig, MediaEngine, MediaError, MediaEvent, MediaEvents,
    MediaHandle, MediaKind, OutTrackInfo, TrackSpec,
};
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use rtc::sansio::Protocol;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine as ClientMediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, register_default_interceptors,
};

const STEP: Duration = Duration::from_secs(10);
const PT_OPUS: u8 = 111;
const PT_VP8: u8 = 96;

fn opus() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/opus".to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: PT_OPUS,
    }
}

fn vp8() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "video/VP8".to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: String::new(),
            rtcp_feedback: vec![],
        },
        payload_type: PT_VP8,
    }
}

// ---------------------------------------------------------------------------------------------
// A client: the async webrtc crate, one socket on 127.0.0.1
// ---------------------------------------------------------------------------------------------

/// What a client's handler reports.
enum ClientEvent {
    GatheringComplete,
    State(RTCPeerConnectionState),
    Track(Arc<dyn TrackRemote>),
    Rtp(rtp::Packet),
}

struct Handler {
    tx: mpsc::UnboundedSender<ClientEvent>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.tx.send(ClientEvent::GatheringComplete);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(ClientEvent::State(state));
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tx.send(ClientEvent::Track(Arc::clone(&track)));
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(event) = track.poll().await {
                if let TrackRemoteEvent::OnRtpPacket(packet) = event
                    && tx.send(ClientEvent::Rtp(packet)).is_err()
                {
                    break;
                }
            }
        });
    }
}

/// Lets PLIs through to the client application (the publisher checks it gets them); the
/// default chain drops inbound RTCP.
#[derive(Default)]
struct PliToApp {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for PliToApp {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            packets.retain(|p| p.as_any().is::<PictureLossIndication>());
            if packets.is_empty() {
                return Ok(());
            }
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }
    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }
    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }
    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for PliToApp {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}

struct Client {
    pc: Box<dyn PeerConnection>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    /// Packets that arrived while the test waited for something else.
    rtp: VecDeque<rtp::Packet>,
    tracks: Vec<Arc<dyn TrackRemote>>,
}

impl Client {
    async fn new() -> Client {
        let mut media_engine = ClientMediaEngine::default();
        media_engine
            .register_codec(opus(), RtpCodecKind::Audio)
            .unwrap();
        media_engine
            .register_codec(vp8(), RtpCodecKind::Video)
            .unwrap();
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)
            .unwrap()
            .with(Slot::from(14_000), PliToApp::default());
        // When answering (subscriber), answer the server's `a=setup:active` with `passive`,
        // as browsers do.
        let setting_engine = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
            .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Server)
            .build();
        let (tx, events) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .with_setting_engine(setting_engine)
            .with_interceptor_registry(registry)
            .with_handler(Arc::new(Handler { tx }))
            .with_udp_addrs(vec!["127.0.0.1:0"])
            .build()
            .await
            .unwrap();
        Client {
            pc: Box::new(pc),
            events,
            rtp: VecDeque::new(),
            tracks: Vec::new(),
        }
    }

    /// The next state or gathering event; media is set aside.
    async fn next_signal(&mut self) -> ClientEvent {
        loop {
            let event = timeout(STEP, self.events.recv())
                .await
                .expect("client event in time")
                .expect("client handler alive");
            match event {
                ClientEvent::Rtp(p) => self.rtp.push_back(p),
                ClientEvent::Track(t) => self.tracks.push(t),
                e => return e,
            }
        }
    }

    async fn wait_gathering(&mut self) {
        while !matches!(self.next_signal().await, ClientEvent::GatheringComplete) {}
    }

    async fn wait_connected(&mut self) {
        loop {
            match self.next_signal().await {
                ClientEvent::State(RTCPeerConnectionState::Connected) => return,
                ClientEvent::State(RTCPeerConnectionState::Failed) => panic!("client failed"),
                _ => {}
            }
        }
    }

    async fn next_rtp(&mut self) -> rtp::Packet {
        loop {
            if let Some(p) = self.rtp.pop_front() {
                return p;
            }
            let event = timeout(STEP, self.events.recv())
                .await
                .expect("RTP in time")
                .expect("client handler alive");
            match event {
                ClientEvent::Rtp(p) => return p,
                ClientEvent::Track(t) => self.tracks.push(t),
                _ => {}
            }
        }
    }

    /// The remote track carrying `ssrc` (waits for it to be announced).
    async fn remote_track(&mut self, ssrc: u32) -> Arc<dyn TrackRemote> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            for t in &self.tracks {
                if t.ssrcs().await.contains(&ssrc) {
                    return Arc::clone(t);
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no track for {ssrc}"
            );
            if let Ok(Some(event)) = timeout(Duration::from_millis(50), self.events.recv()).await {
                match event {
                    ClientEvent::Rtp(p) => self.rtp.push_back(p),
                    ClientEvent::Track(t) => self.tracks.push(t),
                    _ => {}
                }
            }
        }
    }

    /// Our offer, after gathering so that it holds our candidate.
    async fn offer(&mut self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        self.wait_gathering().await;
        self.pc.local_description().await.unwrap().sdp
    }

    /// Our answer to `offer_sdp`; on the first negotiation, after gathering.
    async fn answer(&mut self, offer_sdp: String, first: bool) -> String {
        let offer = RTCSessionDescription::offer(offer_sdp).unwrap();
        self.pc.set_remote_description(offer).await.unwrap();
        let answer = self.pc.create_answer(None).await.unwrap();
        self.pc.set_local_description(answer).await.unwrap();
        if first {
            self.wait_gathering().await;
        }
        self.pc.local_description().await.unwrap().sdp
    }
}

fn local_track(kind: RtpCodecKind, ssrc: u32) -> Arc<TrackLocalStaticRTP> {
    let codec = match kind {
        RtpCodecKind::Audio => opus(),
        _ => vp8(),
    };
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "publisher".to_owned(),
        format!("publisher-{kind}"),
        format!("publisher-{kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: codec.rtp_codec,
            ..Default::default()
        }],
    )))
}

/// A synthetic packet: the payload starts with the sequence number, so a receiver can check
/// that what arrived is what was sent.
fn packet(pt: u8, ssrc: u32, seq: u16, ts: u32, size: usize) -> rtp::Packet {
    let mut payload = vec![0xAB; size];
    payload[..2].copy_from_slice(&seq.to_be_bytes());
    rtp::Packet {
        header: rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc,
            marker: true,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    }
}

/// Sends synthetic media on `track` every `interval` until aborted: Opus-sized packets for
/// audio (20 ms of 48 kHz per packet), 1,000-byte packets for video. Sequence numbers start
/// near the wrap so every test crosses it.
fn pump(track: Arc<TrackLocalStaticRTP>, kind: RtpCodecKind, ssrc: u32) -> JoinHandle<()> {
    let (pt, size, ts_step, interval) = match kind {
        RtpCodecKind::Audio => (PT_OPUS, 120, 960, Duration::from_millis(4)),
        _ => (PT_VP8, 1000, 3000, Duration::from_millis(3)),
    };
    tokio::spawn(async move {
        let mut seq: u16 = 65_300;
        let mut ts: u32 = 1;
        loop {
            if track
                .write_rtp(packet(pt, ssrc, seq, ts, size))
                .await
                .is_err()
            {
                return;
            }
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(ts_step);
            tokio::time::sleep(interval).await;
        }
    })
}

// ---------------------------------------------------------------------------------------------
// The engine side
// ---------------------------------------------------------------------------------------------

/// The engine's events, with the ones a test is not waiting for yet kept aside.
struct Events {
    rx: MediaEvents,
    seen: Vec<MediaEvent>,
}

impl Events {
    async fn wait_for<T>(&mut self, mut pick: impl FnMut(&MediaEvent) -> Option<T>) -> T {
        if let Some(i) = self.seen.iter().position(|e| pick(e).is_some()) {
            return pick(&self.seen.remove(i)).unwrap();
        }
        loop {
            let event = timeout(STEP, self.rx.recv())
                .await
                .expect("engine event in time")
                .expect("engine alive");
            if let MediaEvent::ConnectionState { conn, state } = &event {
                assert_ne!(*state, ConnState::Failed, "{conn} failed");
            }
            match pick(&event) {
                Some(t) => return t,
                None => self.seen.push(event),
            }
        }
    }

    async fn connected(&mut self, id: ConnId) {
        self.wait_for(|e| match e {
            MediaEvent::ConnectionState { conn, state }
                if *conn == id && *state == ConnState::Connected =>
            {
                Some(())
            }
            _ => None,
        })
        .await
    }

    async fn track_opened(&mut self, id: ConnId, want: u32) -> MediaKind {
        self.wait_for(|e| match e {
            MediaEvent::TrackOpened {
                conn, kind, ssrc, ..
            } if *conn == id && *ssrc == want => Some(*kind),
            _ => None,
        })
        .await
    }
}

async fn start_engine() -> (MediaHandle, Events) {
    start_engine_with(MediaConfig::default()).await
}

async fn start_engine_with(config: MediaConfig) -> (MediaHandle, Events) {
    let (handle, rx, addr) = MediaEngine::start(config).unwrap();
    assert_ne!(addr.port(), 0);
    (handle, Events { rx, seen: vec![] })
}

async fn stop_engine(engine: MediaHandle) {
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .unwrap();
}

fn spec(kind: MediaKind, name: &str) -> TrackSpec {
    TrackSpec {
        kind,
        stream_id: "program".to_owned(),
        track_id: name.to_owned(),
    }
}

/// A publishing client with one local track per `(kind, ssrc)`, connected to the engine.
async fn publisher(
    engine: &MediaHandle,
    events: &mut Events,
    id: ConnId,
    tracks: &[(RtpCodecKind, u32)],
) -> (Client, Vec<Arc<TrackLocalStaticRTP>>) {
    let mut client = Client::new().await;
    let mut locals = Vec::new();
    for &(kind, ssrc) in tracks {
        let track = local_track(kind, ssrc);
        client
            .pc
            .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        locals.push(track);
    }
    let offer = client.offer().await;
    let answer = engine.create_publisher(id, offer).await.unwrap();
    client
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    client.wait_connected().await;
    events.connected(id).await;
    (client, locals)
}

/// A subscribing client to which the engine offers `specs`, connected.
async fn subscriber(
    engine: &MediaHandle,
    events: &mut Events,
    id: ConnId,
    specs: Vec<TrackSpec>,
) -> (Client, Vec<OutTrackInfo>) {
    let mut client = Client::new().await;
    let offer = engine.create_subscriber(id, specs).await.unwrap();
    let answer = client.answer(offer.sdp, true).await;
    engine.set_answer(id, answer).await.unwrap();
    client.wait_connected().await;
    events.connected(id).await;
    (client, offer.tracks)
}

/// Collects packets until every SSRC in `want` has `n`; returns them per SSRC.
async fn collect(client: &mut Client, want: &[u32], n: usize) -> HashMap<u32, Vec<rtp::Packet>> {
    let mut got: HashMap<u32, Vec<rtp::Packet>> = want.iter().map(|s| (*s, vec![])).collect();
    while got.values().any(|v| v.len() < n) {
        let p = client.next_rtp().await;
        if let Some(v) = got.get_mut(&p.header.ssrc)
            && v.len() < n
        {
            v.push(p);
        }
    }
    got
}

/// Every packet intact and the sequence numbers continuous.
fn assert_continuous(packets: &[rtp::Packet], pt: u8, size: usize) {
    for p in packets {
        assert_eq!(p.header.payload_type, pt);
        assert_eq!(p.payload.len(), size);
        assert_eq!(&p.payload[..2], &p.header.sequence_number.to_be_bytes());
    }
    let seqs: Vec<u16> = packets.iter().map(|p| p.header.sequence_number).collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0].wrapping_add(1), "continuous: {seqs:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_video_fan_out_to_two_subscribers_in_order() {
    let (engine, mut events) = start_engine().await;
    let room = ConnId(1);
    let (a_ssrc, v_ssrc) = (0x1111_0001, 0x1111_0002);

    let mut subs = Vec::new();
    for id in [ConnId(2), ConnId(3)] {
        let specs = vec![
            spec(MediaKind::Audio, "room-audio"),
            spec(MediaKind::Video, "room-video"),
        ];
        subs.push((id, subscriber(&engine, &mut events, id, specs).await));
    }
    let (room_client, locals) = publisher(
        &engine,
        &mut events,
        room,
        &[(RtpCodecKind::Audio, a_ssrc), (RtpCodecKind::Video, v_ssrc)],
    )
    .await;

    let pumps = [
        pump(Arc::clone(&locals[0]), RtpCodecKind::Audio, a_ssrc),
        pump(Arc::clone(&locals[1]), RtpCodecKind::Video, v_ssrc),
    ];
    assert_eq!(events.track_opened(room, a_ssrc).await, MediaKind::Audio);
    assert_eq!(events.track_opened(room, v_ssrc).await, MediaKind::Video);
    for (id, (_, tracks)) in &subs {
        engine
            .forward(room, a_ssrc, *id, tracks[0].id)
            .await
            .unwrap();
        engine
            .forward(room, v_ssrc, *id, tracks[1].id)
            .await
            .unwrap();
    }

    const N: usize = 300;
    for (_, (client, tracks)) in &mut subs {
        let (audio, video) = (tracks[0].ssrc, tracks[1].ssrc);
        let got = collect(client, &[audio, video], N).await;
        assert_continuous(&got[&audio], PT_OPUS, 120);
        assert_continuous(&got[&video], PT_VP8, 1000);
    }
    for p in pumps {
        p.abort();
    }

    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.connections, 3);
    assert!(stats.rtp_forwarded >= 4 * N as u64, "{stats:?}");
    assert_eq!(stats.forward_errors, 0, "{stats:?}");

    for id in [room, ConnId(2), ConnId(3)] {
        engine.remove_connection(id).await.unwrap();
    }
    assert_eq!(engine.stats().await.unwrap().connections, 0);
    room_client.pc.close().await.unwrap();
    for (_, (client, _)) in subs {
        client.pc.close().await.unwrap();
    }
    stop_engine(engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_reach_the_app_and_the_publisher() {
    let (engine, mut events) = start_engine().await;
    let (pub_id, sub_id) = (ConnId(10), ConnId(11));
    let v_ssrc = 0x2222_0001;
    let (mut sub, tracks) = subscriber(
        &engine,
        &mut events,
        sub_id,
        vec![spec(MediaKind::Video, "cam")],
    )
    .await;
    let (_pub_client, locals) = publisher(
        &engine,
        &mut events,
        pub_id,
        &[(RtpCodecKind::Video, v_ssrc)],
    )
    .await;
    let pumper = pump(Arc::clone(&locals[0]), RtpCodecKind::Video, v_ssrc);
    events.track_opened(pub_id, v_ssrc).await;
    engine
        .forward(pub_id, v_ssrc, sub_id, tracks[0].id)
        .await
        .unwrap();
    sub.next_rtp().await;

    // Subscriber → engine: a PLI on the track we send becomes an event.
    let remote = sub.remote_track(tracks[0].ssrc).await;
    remote
        .write_rtcp(vec![Box::new(PictureLossIndication {
            sender_ssrc: 0,
            media_ssrc: tracks[0].ssrc,
        })])
        .await
        .unwrap();
    let (track, kind) = events
        .wait_for(|e| match e {
            MediaEvent::KeyframeRequest { conn, track, kind } if *conn == sub_id => {
                Some((*track, *kind))
            }
            _ => None,
        })
        .await;
    assert_eq!((track, kind), (tracks[0].id, KeyframeKind::Pli));

    // Engine → publisher: request_keyframe sends a PLI for the publisher's SSRC.
    engine.request_keyframe(pub_id, v_ssrc).await.unwrap();
    let media_ssrc = timeout(STEP, async {
        loop {
            match locals[0].poll().await {
                Some(TrackLocalEvent::OnRtcpPacket(packets)) => {
                    if let Some(pli) = packets
                        .iter()
                        .find_map(|p| p.as_any().downcast_ref::<PictureLossIndication>())
                    {
                        return pli.media_ssrc;
                    }
                }
                Some(_) => {}
                None => panic!("publisher track unbound"),
            }
        }
    })
    .await
    .expect("PLI at the publisher");
    assert_eq!(media_ssrc, v_ssrc);
    assert!(matches!(
        engine.request_keyframe(pub_id, 0xdead).await,
        Err(MediaError::UnknownTrack(_))
    ));

    pumper.abort();
    stop_engine(engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_track_renegotiates_without_a_gap_in_the_playing_one() {
    let (engine, mut events) = start_engine().await;
    let (pub_id, sub_id) = (ConnId(20), ConnId(21));
    let (a_ssrc, v_ssrc) = (0x3333_0001, 0x3333_0002);
    let (mut sub, tracks) = subscriber(
        &engine,
        &mut events,
        sub_id,
        vec![spec(MediaKind::Audio, "mic")],
    )
    .await;
    let (_pub_client, locals) = publisher(
        &engine,
        &mut events,
        pub_id,
        &[(RtpCodecKind::Audio, a_ssrc), (RtpCodecKind::Video, v_ssrc)],
    )
    .await;
    let pumps = [
        pump(Arc::clone(&locals[0]), RtpCodecKind::Audio, a_ssrc),
        pump(Arc::clone(&locals[1]), RtpCodecKind::Video, v_ssrc),
    ];
    events.track_opened(pub_id, a_ssrc).await;
    events.track_opened(pub_id, v_ssrc).await;
    engine
        .forward(pub_id, a_ssrc, sub_id, tracks[0].id)
        .await
        .unwrap();
    let audio = tracks[0].ssrc;
    let before = collect(&mut sub, &[audio], 50).await;

    // Server-driven renegotiation while audio plays.
    let (video, offer) = engine
        .add_track(sub_id, spec(MediaKind::Video, "cam"))
        .await
        .unwrap();
    // One offer at a time.
    assert!(matches!(
        engine
            .add_track(sub_id, spec(MediaKind::Video, "second"))
            .await,
        Err(MediaError::NegotiationPending(_))
    ));
    let answer = sub.answer(offer, false).await;
    engine.set_answer(sub_id, answer).await.unwrap();
    engine
        .forward(pub_id, v_ssrc, sub_id, video.id)
        .await
        .unwrap();

    let after = collect(&mut sub, &[audio, video.ssrc], 150).await;
    let mut all_audio = before[&audio].clone();
    all_audio.extend(after[&audio].iter().cloned());
    assert_continuous(&all_audio, PT_OPUS, 120);
    assert_continuous(&after[&video.ssrc], PT_VP8, 1000);

    for p in pumps {
        p.abort();
    }
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.forward_errors, 0, "{stats:?}");
    stop_engine(engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_harms_no_one() {
    let (engine, mut events) = start_engine().await;

    // A working pair first, so we can check it is unaffected.
    let (pub_id, sub_id) = (ConnId(30), ConnId(31));
    let a_ssrc = 0x4444_0001;
    let (mut sub, tracks) = subscriber(
        &engine,
        &mut events,
        sub_id,
        vec![spec(MediaKind::Audio, "mic")],
    )
    .await;
    let (_pub_client, locals) = publisher(
        &engine,
        &mut events,
        pub_id,
        &[(RtpCodecKind::Audio, a_ssrc)],
    )
    .await;
    let pumper = pump(Arc::clone(&locals[0]), RtpCodecKind::Audio, a_ssrc);
    events.track_opened(pub_id, a_ssrc).await;
    engine
        .forward(pub_id, a_ssrc, sub_id, tracks[0].id)
        .await
        .unwrap();
    collect(&mut sub, &[tracks[0].ssrc], 20).await;

    // Garbage SDP.
    let err = engine
        .create_publisher(ConnId(40), "this is not sdp".to_owned())
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::Rtc(_)), "{err}");
    // Oversized SDP.
    let err = engine
        .create_publisher(ConnId(41), "v=0\r\n".repeat(20_000))
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::SdpTooLarge(_)), "{err}");
    // An offer with no codec we take (H264 only).
    let h264_only = {
        let mut media_engine = ClientMediaEngine::default();
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: RTCRtpCodec {
                        mime_type: "video/H264".to_owned(),
                        clock_rate: 90000,
                        channels: 0,
                        sdp_fmtp_line: "packetization-mode=1;profile-level-id=42e01f".to_owned(),
                        rtcp_feedback: vec![],
                    },
                    payload_type: 102,
                },
                RtpCodecKind::Video,
            )
            .unwrap();
        let mut pc = rtc::peer_connection::RTCPeerConnectionBuilder::new()
            .with_media_engine(media_engine)
            .build(Instant::now())
            .unwrap();
        pc.add_transceiver_from_kind(RtpCodecKind::Video, None)
            .unwrap();
        pc.create_offer(None).unwrap().sdp
    };
    let err = engine
        .create_publisher(ConnId(42), h264_only)
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::NoSupportedCodec), "{err}");
    // Commands for connections that do not exist, or of the wrong role, or duplicate ids.
    assert!(matches!(
        engine.set_answer(ConnId(99), "v=0".to_owned()).await,
        Err(MediaError::UnknownConnection(ConnId(99)))
    ));
    assert!(matches!(
        engine.add_remote_candidate(ConnId(99), String::new()).await,
        Err(MediaError::UnknownConnection(_))
    ));
    assert!(matches!(
        engine.set_answer(pub_id, "v=0".to_owned()).await,
        Err(MediaError::WrongRole(..))
    ));
    assert!(matches!(
        engine.add_track(pub_id, spec(MediaKind::Audio, "x")).await,
        Err(MediaError::WrongRole(..))
    ));
    assert!(matches!(
        engine.create_subscriber(sub_id, vec![]).await,
        Err(MediaError::DuplicateConnection(_))
    ));
    assert!(matches!(
        engine
            .forward(
                pub_id,
                a_ssrc,
                sub_id,
                roundtable::media::engine::OutTrackId(9999)
            )
            .await,
        Err(MediaError::UnknownTrack(_))
    ));
    assert!(matches!(
        engine.remove_connection(ConnId(99)).await,
        Err(MediaError::UnknownConnection(_))
    ));

    // None of it disturbed the pair, and nothing was left behind.
    let got = collect(&mut sub, &[tracks[0].ssrc], 100).await;
    assert_continuous(&got[&tracks[0].ssrc], PT_OPUS, 120);
    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.connections, 2, "{stats:?}");
    pumper.abort();
    stop_engine(engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_with_nothing_to_receive_yet_still_connects() {
    let (engine, mut events) = start_engine().await;
    let (_client, tracks) = subscriber(&engine, &mut events, ConnId(50), vec![]).await;
    assert!(tracks.is_empty());
    stop_engine(engine).await;
}

// ---------------------------------------------------------------------------------------------
// Simulcast
// ---------------------------------------------------------------------------------------------

/// The extmap id of `uri` in `sdp`.
fn extmap_id(sdp: &str, uri: &str) -> u8 {
    sdp.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("a=extmap:")?;
            let (id, u) = rest.split_once(' ')?;
            (u.trim() == uri).then(|| id.split('/').next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no extmap for {uri}"))
}

/// The mid of the first `m=video` section of `sdp`.
fn video_mid(sdp: &str) -> String {
    let section = sdp.split("m=video").nth(1).expect("a video section");
    section
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .expect("a mid")
        .trim()
        .to_owned()
}

fn simulcast_track(layers: &[(&str, u32)]) -> Arc<TrackLocalStaticRTP> {
    Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "publisher".to_owned(),
        "publisher-camera".to_owned(),
        "publisher-camera".to_owned(),
        RtpCodecKind::Video,
        layers
            .iter()
            .map(|(rid, ssrc)| RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    rid: (*rid).to_owned(),
                    ssrc: Some(*ssrc),
                    ..Default::default()
                },
                codec: vp8().rtp_codec,
                ..Default::default()
            })
            .collect(),
    )))
}

/// Sends the three layers like a browser: the first packets of each layer carry the mid and
/// rid header extensions, later ones do not (Chrome stops once RTCP shows the stream is known).
fn pump_simulcast(
    track: Arc<TrackLocalStaticRTP>,
    layers: Vec<(String, u32)>,
    mid: String,
    (mid_id, rid_id): (u8, u8),
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seq: u16 = 65_400;
        let mut ts: u32 = 1;
        for n in 0u32.. {
            for (rid, ssrc) in &layers {
                let mut p = packet(PT_VP8, *ssrc, seq, ts, 600);
                if n < 30 {
                    p.header
                        .set_extension(mid_id, Bytes::from(mid.clone().into_bytes()))
                        .unwrap();
                    p.header
                        .set_extension(rid_id, Bytes::from(rid.clone().into_bytes()))
                        .unwrap();
                }
                if track.write_rtp(p).await.is_err() {
                    return;
                }
            }
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(3000);
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    })
}

/// A publishing client with optional audio (declared SSRC) and a three-layer simulcast camera
/// (rid q/h/f), connected to the engine and sending; returns once the engine has opened every
/// stream.
struct SimulcastPublisher {
    client: Client,
    layers: [(&'static str, u32); 3],
    pumps: Vec<JoinHandle<()>>,
}

async fn simulcast_publisher(
    engine: &MediaHandle,
    events: &mut Events,
    id: ConnId,
    audio_ssrc: Option<u32>,
    base: u32,
) -> SimulcastPublisher {
    let layers = [("q", base + 1), ("h", base + 2), ("f", base + 3)];
    let mut client = Client::new().await;
    let audio = audio_ssrc.map(|ssrc| (local_track(RtpCodecKind::Audio, ssrc), ssrc));
    if let Some((track, _)) = &audio {
        client
            .pc
            .add_track(Arc::clone(track) as Arc<dyn TrackLocal>)
            .await
            .unwrap();
    }
    let camera = simulcast_track(&layers);
    client
        .pc
        .add_track(Arc::clone(&camera) as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = client.offer().await;
    assert!(offer.contains("a=simulcast:send"), "{offer}");
    let ids = (
        extmap_id(&offer, "urn:ietf:params:rtp-hdrext:sdes:mid"),
        extmap_id(&offer, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"),
    );
    let mid = video_mid(&offer);
    let answer = engine.create_publisher(id, offer).await.unwrap();
    assert!(answer.contains("a=simulcast:recv"), "{answer}");
    client
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();
    client.wait_connected().await;
    events.connected(id).await;

    let mut pumps = vec![pump_simulcast(
        Arc::clone(&camera),
        layers.iter().map(|(r, s)| ((*r).to_owned(), *s)).collect(),
        mid,
        ids,
    )];
    if let Some((track, ssrc)) = &audio {
        pumps.push(pump(Arc::clone(track), RtpCodecKind::Audio, *ssrc));
        assert_eq!(events.track_opened(id, *ssrc).await, MediaKind::Audio);
    }
    for (want_rid, want_ssrc) in layers {
        let rid = events
            .wait_for(|e| match e {
                MediaEvent::TrackOpened {
                    conn,
                    ssrc,
                    rid,
                    kind,
                    ..
                } if *conn == id && *ssrc == want_ssrc => {
                    assert_eq!(*kind, MediaKind::Video);
                    Some(rid.clone())
                }
                _ => None,
            })
            .await;
        assert_eq!(rid.as_deref(), Some(want_rid));
    }
    SimulcastPublisher {
        client,
        layers,
        pumps,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_layers_open_by_rid_and_each_can_be_forwarded() {
    let (engine, mut events) = start_engine().await;
    let (pub_id, sub_id) = (ConnId(60), ConnId(61));
    let (mut sub, tracks) = subscriber(
        &engine,
        &mut events,
        sub_id,
        vec![
            spec(MediaKind::Video, "cam-low"),
            spec(MediaKind::Video, "cam-high"),
        ],
    )
    .await;
    let publisher = simulcast_publisher(&engine, &mut events, pub_id, None, 0x5555_0000).await;
    let (q, f) = (publisher.layers[0].1, publisher.layers[2].1);
    engine
        .forward(pub_id, q, sub_id, tracks[0].id)
        .await
        .unwrap();
    engine
        .forward(pub_id, f, sub_id, tracks[1].id)
        .await
        .unwrap();
    // Well past the packets with extensions: these are bound by SSRC alone.
    let got = collect(&mut sub, &[tracks[0].ssrc, tracks[1].ssrc], 150).await;
    assert_continuous(&got[&tracks[0].ssrc], PT_VP8, 600);
    assert_continuous(&got[&tracks[1].ssrc], PT_VP8, 600);
    for p in publisher.pumps {
        p.abort();
    }
    stop_engine(engine).await;
}

/// rtc 0.21.1 replaces every receiver's track when an answer is applied (`start_rtp`): a
/// simulcast layer's SSRC binding is lost, and a browser no longer sends the mid/rid extensions
/// that could rebind it, so the layers are dropped from then on. A declared-SSRC track (audio)
/// rebinds on its next packet and fires `TrackOpened` again. This test pins that behaviour
/// (docs/MEDIA-NOTES.md): if it fails, upstream changed and the workaround (no publisher
/// renegotiation; a new publish connection per new source) can be revisited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_renegotiation_loses_simulcast_layers_in_rtc_0_21_1() {
    let (engine, mut events) = start_engine().await;
    let (pub_id, sub_id) = (ConnId(70), ConnId(71));
    let (mut sub, tracks) = subscriber(
        &engine,
        &mut events,
        sub_id,
        vec![spec(MediaKind::Audio, "mic"), spec(MediaKind::Video, "cam")],
    )
    .await;
    let a_ssrc = 0x6666_0010;
    let mut publisher =
        simulcast_publisher(&engine, &mut events, pub_id, Some(a_ssrc), 0x6666_0000).await;
    let h = publisher.layers[1].1;
    engine
        .forward(pub_id, a_ssrc, sub_id, tracks[0].id)
        .await
        .unwrap();
    engine
        .forward(pub_id, h, sub_id, tracks[1].id)
        .await
        .unwrap();
    let (audio, video) = (tracks[0].ssrc, tracks[1].ssrc);
    let before = collect(&mut sub, &[audio, video], 150).await;

    // The publisher adds a second microphone and renegotiates while everything flows.
    let mic2 = local_track(RtpCodecKind::Audio, 0x6666_0020);
    let client = &mut publisher.client;
    client
        .pc
        .add_track(Arc::clone(&mic2) as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = client.pc.create_offer(None).await.unwrap();
    client.pc.set_local_description(offer).await.unwrap();
    let offer = client.pc.local_description().await.unwrap().sdp;
    let answer = engine.update_publisher(pub_id, offer).await.unwrap();
    client
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();

    // Audio carries on without a gap, announced once more.
    let after = collect(&mut sub, &[audio], 150).await;
    let mut all = before[&audio].clone();
    all.extend(after[&audio].iter().cloned());
    assert_continuous(&all, PT_OPUS, 120);
    assert_eq!(events.track_opened(pub_id, a_ssrc).await, MediaKind::Audio);

    // Video stopped at the renegotiation: nothing from the layer for a while, though the
    // publisher still sends it.
    sub.rtp.clear();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut late_video = 0;
    while tokio::time::Instant::now() < deadline {
        if sub.next_rtp().await.header.ssrc == video {
            late_video += 1;
        }
    }
    assert!(
        late_video <= 5,
        "{late_video} video packets after renegotiation: has rtc fixed start_rtp?"
    );

    for p in publisher.pumps {
        p.abort();
    }
    stop_engine(engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_connects_is_removed_after_the_connect_timeout() {
    let (engine, mut events) = start_engine_with(MediaConfig {
        connect_timeout: Duration::from_millis(300),
        ..MediaConfig::default()
    })
    .await;
    // A subscriber offer nobody answers, and a publisher whose client goes silent.
    engine
        .create_subscriber(ConnId(80), vec![spec(MediaKind::Audio, "mic")])
        .await
        .unwrap();
    let mut client = Client::new().await;
    client
        .pc
        .add_track(local_track(RtpCodecKind::Audio, 1) as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = client.offer().await;
    client.pc.close().await.unwrap();
    engine.create_publisher(ConnId(81), offer).await.unwrap();
    assert_eq!(engine.stats().await.unwrap().connections, 2);

    for id in [ConnId(80), ConnId(81)] {
        events
            .wait_for(|e| matches!(e, MediaEvent::TimedOut { conn } if *conn == id).then_some(()))
            .await;
    }
    assert_eq!(engine.stats().await.unwrap().connections, 0);
    assert!(matches!(
        engine.remove_connection(ConnId(80)).await,
        Err(MediaError::UnknownConnection(_))
    ));
    // The ids can be used again.
    engine
        .create_subscriber(ConnId(80), vec![spec(MediaKind::Audio, "mic")])
        .await
        .unwrap();
    stop_engine(engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unspecified_bind_address_works_with_an_advertised_ip() {
    let err = MediaEngine::start(MediaConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..MediaConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, MediaError::Config(_)), "{err}");

    // Bound to every interface, advertising loopback: the candidate address is not the
    // socket's, and ICE must still accept the checks.
    let (engine, mut events) = start_engine_with(MediaConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        advertise_ip: Some("127.0.0.1".parse().unwrap()),
        ..MediaConfig::default()
    })
    .await;
    let (_client, tracks) = subscriber(
        &engine,
        &mut events,
        ConnId(90),
        vec![spec(MediaKind::Audio, "mic")],
    )
    .await;
    assert_eq!(tracks.len(), 1);
    stop_engine(engine).await;
}

// ---------------------------------------------------------------------------------------------
// The router in the engine
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_gate_in_the_engine_passes_audio_only_while_the_floor_is_held() {
    use roundtable::media::engine::{RoomId, RouterOp};
    use roundtable::media::router::{Kind, MediaRole, PeerId, Slot, SlotChange, Source, TrackId};

    let (engine, mut events) = start_engine().await;
    let room = RoomId(1);
    let (room_peer, d1) = (PeerId(1), PeerId(2));
    let mic = TrackId(20);
    let (pub_id, sub_id) = (ConnId(30), ConnId(31));
    let a_ssrc = 0x3333_0001;

    engine
        .router(room, RouterOp::AddPeer(room_peer, MediaRole::Room))
        .await
        .unwrap();
    engine
        .router(room, RouterOp::AddPeer(d1, MediaRole::Delegate))
        .await
        .unwrap();
    let changes = engine
        .router(
            room,
            RouterOp::Publish {
                peer: d1,
                track: mic,
                kind: Kind::Audio,
                source: Source::Microphone,
                layers: 1,
            },
        )
        .await
        .unwrap();
    assert!(changes.iter().any(|c| matches!(
        c,
        SlotChange::Added { peer, slot: Slot::Track(t), .. } if *peer == room_peer && *t == mic
    )));
    // An observer-like listener may not publish: a clear error.
    engine
        .router(room, RouterOp::AddPeer(PeerId(9), MediaRole::Listener))
        .await
        .unwrap();
    let refused = engine
        .router(
            room,
            RouterOp::Publish {
                peer: PeerId(9),
                track: TrackId(99),
                kind: Kind::Audio,
                source: Source::Microphone,
                layers: 1,
            },
        )
        .await;
    assert!(matches!(refused, Err(MediaError::Router(_))), "{refused:?}");

    // The room subscribes to the delegate's microphone.
    let (mut room_client, tracks) = subscriber(
        &engine,
        &mut events,
        sub_id,
        vec![spec(MediaKind::Audio, "d1-mic")],
    )
    .await;
    engine
        .bind_egress(room, room_peer, Slot::Track(mic), sub_id, tracks[0].id)
        .await
        .unwrap();
    let (_d1_client, locals) = publisher(
        &engine,
        &mut events,
        pub_id,
        &[(RtpCodecKind::Audio, a_ssrc)],
    )
    .await;
    let p = pump(Arc::clone(&locals[0]), RtpCodecKind::Audio, a_ssrc);
    assert_eq!(events.track_opened(pub_id, a_ssrc).await, MediaKind::Audio);
    engine
        .bind_ingress(pub_id, a_ssrc, MediaKind::Audio, room, mic, 0)
        .await
        .unwrap();
    engine
        .router(
            room,
            RouterOp::SetFloor {
                moderated: true,
                holders: vec![],
                presenters: vec![],
            },
        )
        .await
        .unwrap();

    // Gate closed: nothing reaches the room, and the drops are counted.
    tokio::time::sleep(Duration::from_millis(300)).await;
    room_client.rtp.clear();
    while room_client.events.try_recv().is_ok() {}
    assert!(
        timeout(Duration::from_millis(400), room_client.next_rtp())
            .await
            .is_err(),
        "audio leaked through a closed gate"
    );
    let dropped = engine.gate_dropped(room, d1).await.unwrap();
    assert!(dropped > 20, "dropped {dropped}");

    // Granted: the next packets pass, continuous.
    engine
        .router(
            room,
            RouterOp::SetFloor {
                moderated: true,
                holders: vec![d1],
                presenters: vec![],
            },
        )
        .await
        .unwrap();
    let got = collect(&mut room_client, &[tracks[0].ssrc], 100).await;
    let seqs: Vec<u16> = got[&tracks[0].ssrc]
        .iter()
        .map(|p| p.header.sequence_number)
        .collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[1], pair[0].wrapping_add(1), "continuous: {seqs:?}");
    }
    // Revoked: the gate closes at once.
    engine
        .router(
            room,
            RouterOp::SetFloor {
                moderated: true,
                holders: vec![],
                presenters: vec![],
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    room_client.rtp.clear();
    while room_client.events.try_recv().is_ok() {}
    assert!(
        timeout(Duration::from_millis(400), room_client.next_rtp())
            .await
            .is_err(),
        "audio after the revoke"
    );
    assert!(engine.gate_dropped(room, d1).await.unwrap() > dropped);
    p.abort();
    stop_engine(engine).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_offers_negotiate_opus_fec_and_dtx() {
    let (engine, _events) = start_engine().await;
    let offer = engine
        .create_subscriber(ConnId(77), vec![spec(MediaKind::Audio, "voice")])
        .await
        .unwrap();
    let fmtp = offer
        .sdp
        .lines()
        .find(|l| l.starts_with("a=fmtp:111"))
        .unwrap_or_default()
        .to_owned();
    assert!(fmtp.contains("useinbandfec=1"), "{fmtp}");
    assert!(fmtp.contains("usedtx=1"), "{fmtp}");
    engine.remove_connection(ConnId(77)).await.unwrap();
    stop_engine(engine).await;
}
