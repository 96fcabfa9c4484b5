//! The media engine against real WebRTC clients over loopback: real ICE, DTLS and SRTP on real
//! UDP sockets. The clients are the async `webrtc` crate (each binds its own socket on
//! 127.0.0.1, mDNS off); the engine serves them all from its one socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use roundtable::media::engine::{
    ConnId, ConnState, MediaConfig, MediaEngine, MediaEvent, MediaEvents, MediaHandle, MediaKind,
    TrackSpec,
};
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::mpsc;
use tokio::time::timeout;
use webrtc::media_stream::MediaStreamTrack;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    MediaEngine as ClientMediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCIceGatheringState, RTCPeerConnectionState,
    RTCSessionDescription, Registry, SettingEngineBuilder, register_default_interceptors,
};

const STEP: Duration = Duration::from_secs(10);

fn opus() -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec {
            mime_type: "audio/opus".to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
            rtcp_feedback: vec![],
        },
        payload_type: 111,
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
        payload_type: 96,
    }
}

/// What a client's handler reports.
#[derive(Debug)]
enum ClientEvent {
    GatheringComplete,
    State(RTCPeerConnectionState),
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

struct Client {
    pc: Box<dyn PeerConnection>,
    events: mpsc::UnboundedReceiver<ClientEvent>,
    /// RTP packets that arrived while waiting for something else.
    early_rtp: Vec<rtp::Packet>,
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
        let registry = register_default_interceptors(Registry::new(), &mut media_engine).unwrap();
        let setting_engine = SettingEngineBuilder::new()
            .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
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
            early_rtp: Vec::new(),
        }
    }

    async fn next_event(&mut self) -> ClientEvent {
        timeout(STEP, self.events.recv())
            .await
            .expect("client event in time")
            .expect("client handler alive")
    }

    async fn wait_gathering(&mut self) {
        loop {
            match self.next_event().await {
                ClientEvent::GatheringComplete => return,
                ClientEvent::Rtp(p) => self.early_rtp.push(p),
                _ => {}
            }
        }
    }

    async fn wait_connected(&mut self) {
        loop {
            match self.next_event().await {
                ClientEvent::State(RTCPeerConnectionState::Connected) => return,
                ClientEvent::State(s @ RTCPeerConnectionState::Failed) => {
                    panic!("client connection {s}")
                }
                ClientEvent::Rtp(p) => self.early_rtp.push(p),
                _ => {}
            }
        }
    }

    async fn next_rtp(&mut self) -> rtp::Packet {
        if !self.early_rtp.is_empty() {
            return self.early_rtp.remove(0);
        }
        loop {
            if let ClientEvent::Rtp(p) = self.next_event().await {
                return p;
            }
        }
    }

    /// Offer (after gathering, so the SDP holds our candidate).
    async fn offer(&mut self) -> String {
        let offer = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(offer).await.unwrap();
        self.wait_gathering().await;
        self.pc.local_description().await.unwrap().sdp
    }

    /// Answer `offer_sdp` (after gathering).
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

fn local_track(
    kind: RtpCodecKind,
    codec: &RTCRtpCodecParameters,
    ssrc: u32,
) -> Arc<TrackLocalStaticRTP> {
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
            codec: codec.rtp_codec.clone(),
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

async fn next_media_event(events: &mut MediaEvents) -> MediaEvent {
    timeout(STEP, events.recv())
        .await
        .expect("engine event in time")
        .expect("engine alive")
}

async fn start_engine() -> (MediaHandle, MediaEvents) {
    let (handle, events, addr) = MediaEngine::start(MediaConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        advertise_ip: None,
    })
    .unwrap();
    assert_ne!(addr.port(), 0);
    (handle, events)
}

/// Waits for the engine to report each of `conns` connected; returns the other events seen.
async fn wait_engine_connected(events: &mut MediaEvents, conns: &[ConnId]) -> Vec<MediaEvent> {
    let mut pending: Vec<ConnId> = conns.to_vec();
    let mut other = Vec::new();
    while !pending.is_empty() {
        match next_media_event(events).await {
            MediaEvent::ConnectionState { conn, state } => {
                assert_ne!(state, ConnState::Failed, "{conn} failed");
                if state == ConnState::Connected {
                    pending.retain(|c| *c != conn);
                }
            }
            e => other.push(e),
        }
    }
    other
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opus_from_a_publisher_reaches_a_subscriber_in_order() {
    let (engine, mut events) = start_engine().await;
    let publisher_id = ConnId(1);
    let subscriber_id = ConnId(2);

    // Subscriber: the engine offers one audio track, the client answers.
    let mut subscriber = Client::new().await;
    let offer = engine
        .create_subscriber(
            subscriber_id,
            vec![TrackSpec {
                kind: MediaKind::Audio,
                stream_id: "delegate-1".to_owned(),
                track_id: "delegate-1-audio".to_owned(),
            }],
        )
        .await
        .unwrap();
    assert_eq!(offer.tracks.len(), 1);
    let out_track = offer.tracks[0].clone();
    let answer = subscriber.answer(offer.sdp, true).await;
    engine.set_answer(subscriber_id, answer).await.unwrap();

    // Publisher: the client offers one Opus track, the engine answers.
    let mut publisher = Client::new().await;
    let publisher_ssrc = 0x1234_5678;
    let track = local_track(RtpCodecKind::Audio, &opus(), publisher_ssrc);
    publisher
        .pc
        .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
        .await
        .unwrap();
    let offer = publisher.offer().await;
    let answer = engine.create_publisher(publisher_id, offer).await.unwrap();
    publisher
        .pc
        .set_remote_description(RTCSessionDescription::answer(answer).unwrap())
        .await
        .unwrap();

    publisher.wait_connected().await;
    subscriber.wait_connected().await;
    let mut seen = wait_engine_connected(&mut events, &[publisher_id, subscriber_id]).await;

    // Send until the engine has seen the stream, then route it to the subscriber.
    let mut seq: u16 = 65_000; // wraps during the test
    let mut ts: u32 = 0;
    let opened_ssrc = loop {
        if let Some(MediaEvent::TrackOpened {
            conn, kind, ssrc, ..
        }) = seen.pop()
        {
            assert_eq!(conn, publisher_id);
            assert_eq!(kind, MediaKind::Audio);
            break ssrc;
        }
        track
            .write_rtp(packet(111, publisher_ssrc, seq, ts, 120))
            .await
            .unwrap();
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(960);
        tokio::time::sleep(Duration::from_millis(5)).await;
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
    };
    assert_eq!(opened_ssrc, publisher_ssrc);
    engine
        .forward(publisher_id, opened_ssrc, subscriber_id, out_track.id)
        .await
        .unwrap();

    // Now every packet must arrive, in order, rewritten to the subscriber's SSRC.
    let sender = {
        let track = Arc::clone(&track);
        tokio::spawn(async move {
            for _ in 0..2000 {
                if track
                    .write_rtp(packet(111, publisher_ssrc, seq, ts, 120))
                    .await
                    .is_err()
                {
                    break;
                }
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(960);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    const WANT: usize = 300;
    let mut received: Vec<rtp::Packet> = Vec::with_capacity(WANT);
    while received.len() < WANT {
        received.push(subscriber.next_rtp().await);
    }
    sender.abort();

    for p in &received {
        assert_eq!(p.header.ssrc, out_track.ssrc, "rewritten SSRC");
        assert_eq!(p.header.payload_type, 111);
        assert_eq!(&p.payload[..2], &p.header.sequence_number.to_be_bytes());
        assert_eq!(p.payload.len(), 120);
    }
    let seqs: Vec<u16> = received.iter().map(|p| p.header.sequence_number).collect();
    for pair in seqs.windows(2) {
        assert_eq!(
            pair[1],
            pair[0].wrapping_add(1),
            "continuous sequence: {seqs:?}"
        );
    }

    let stats = engine.stats().await.unwrap();
    assert_eq!(stats.connections, 2);
    assert!(stats.rtp_forwarded >= WANT as u64, "{stats:?}");
    assert_eq!(stats.forward_errors, 0, "{stats:?}");

    engine.remove_connection(publisher_id).await.unwrap();
    engine.remove_connection(subscriber_id).await.unwrap();
    assert_eq!(engine.stats().await.unwrap().connections, 0);
    publisher.pc.close().await.unwrap();
    subscriber.pc.close().await.unwrap();
    let engine2 = engine.clone();
    tokio::task::spawn_blocking(move || engine2.shutdown())
        .await
        .unwrap();
}
