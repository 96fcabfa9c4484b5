//! One webrtc peer connection (publish or subscribe): construction, trickle ICE both ways, and
//! the event handler.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Instant;

use roundtable_signaling::{IceServer, PeerConnectionKind};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::interceptor_registry::configure_twcc_sender_only;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8, MediaEngine,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::sansio::Protocol;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceGatheringState, RTCIceServer, RTCIceTransportPolicy,
    RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription, SettingEngineBuilder,
    register_default_interceptors,
};

use crate::client::{ClientOptions, Outbox};
use crate::{Error, Result};

/// The RFC 6464 audio level header extension.
pub(crate) const AUDIO_LEVEL_URI: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
/// The SDES mid header extension.
pub(crate) const MID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
/// The SDES rtp-stream-id (rid) header extension.
pub(crate) const RID_URI: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";

/// Payload types we offer on the publish connection (what Chrome uses for them).
pub(crate) const OPUS_PT: u8 = 111;
pub(crate) const VP8_PT: u8 = 96;
const VP8_RTX_PT: u8 = 97;

/// Our local ICE candidates, held back until the server knows the connection.
#[derive(Default)]
struct LocalCandidates {
    /// The offer/answer has been sent: candidates go out at once.
    ready: bool,
    /// The `mid` our candidates name (the first m-line's).
    mid: Option<String>,
    /// Gathered before `ready`.
    pending: Vec<String>,
}

/// The server's candidates, held back until the remote description is set.
#[derive(Default)]
struct RemoteCandidates {
    remote_set: bool,
    pending: Vec<RTCIceCandidateInit>,
}

/// A peer connection and the signaling state around it.
pub(crate) struct Peer {
    pub kind: PeerConnectionKind,
    pub pc: Arc<dyn PeerConnection>,
    local: Arc<StdMutex<LocalCandidates>>,
    remote: tokio::sync::Mutex<RemoteCandidates>,
    /// The connection state, as the handler last saw it.
    pub state: watch::Receiver<RTCPeerConnectionState>,
    gathered: watch::Receiver<bool>,
    outbox: Arc<Outbox>,
    trickle: bool,
    /// ICE over TCP only (dials the server's `tcp passive` candidate itself).
    tcp_only: bool,
}

impl Peer {
    /// Builds a peer connection bound to `opts.bind_ip` with the welcome's ICE servers.
    /// Remote tracks (subscribe connection) are sent to `tracks`.
    pub async fn new(
        kind: PeerConnectionKind,
        opts: &ClientOptions,
        ice_servers: &[IceServer],
        outbox: Arc<Outbox>,
        tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
    ) -> Result<Arc<Peer>> {
        let mut media_engine = MediaEngine::default();
        match kind {
            PeerConnectionKind::Publish | PeerConnectionKind::Screen => {
                register_publish_codecs(&mut media_engine, opts)?
            }
            // The server offers; accept whatever a browser would.
            PeerConnectionKind::Subscribe => media_engine.register_default_codecs()?,
        }
        // Like a browser: audio level on audio, mid on every m-line (the defaults register
        // mid, rid and repaired-rid for video only).
        for (uri, kind) in [
            (AUDIO_LEVEL_URI, RtpCodecKind::Audio),
            (MID_URI, RtpCodecKind::Audio),
        ] {
            media_engine.register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                kind,
                None,
            )?;
        }
        let mut registry =
            register_default_interceptors(rtc::interceptor::Registry::new(), &mut media_engine)?;
        if kind != PeerConnectionKind::Subscribe {
            // Transport-wide sequence numbers on what we send, as browsers do.
            registry = configure_twcc_sender_only(registry, &mut media_engine)?;
            // Inbound RTCP stops at the end of the interceptor chain; this one lets PLI and FIR
            // through to the sender's track so the pump can answer with a keyframe.
            registry = registry.with(Slot::from(14_000), KeyframeRequests::default());
        }

        let servers = if opts.use_ice_servers {
            ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(servers)
            .with_ice_transport_policy(if opts.relay_only {
                RTCIceTransportPolicy::Relay
            } else {
                RTCIceTransportPolicy::All
            })
            .build();
        // No mDNS: by default the crate opens a multicast socket on 5353 per connection.
        let mut settings =
            SettingEngineBuilder::new().with_multicast_dns_mode(MulticastDnsMode::Disabled);
        if kind == PeerConnectionKind::Subscribe {
            // The server's subscribe offer says `a=setup:active`: answer `passive`, as a
            // browser does (the core's answerer would otherwise pick `active` too).
            settings = settings
                .with_answering_dtls_role(rtc::peer_connection::transport::RTCDtlsRole::Server);
        }
        if opts.tcp_only {
            settings = settings.with_network_types(vec![rtc::ice::network_type::NetworkType::Tcp4]);
        }
        let settings = settings.build();

        let (state_tx, state_rx) = watch::channel(RTCPeerConnectionState::New);
        let (gathered_tx, gathered_rx) = watch::channel(false);
        let local = Arc::new(StdMutex::new(LocalCandidates::default()));
        let handler = Arc::new(Handler {
            kind,
            outbox: outbox.clone(),
            local: local.clone(),
            state: state_tx,
            tracks,
            trickle: opts.trickle,
            gathered: gathered_tx,
        });
        let builder = PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_media_engine(media_engine)
            .with_setting_engine(settings)
            .with_interceptor_registry(registry)
            .with_handler(handler);
        let builder = if opts.tcp_only {
            builder.with_tcp_addrs(vec![SocketAddr::new(opts.bind_ip, 0).to_string()])
        } else {
            builder.with_udp_addrs(vec![SocketAddr::new(opts.bind_ip, 0).to_string()])
        };
        let pc = builder.build().await?;
        Ok(Arc::new(Peer {
            kind,
            pc: Arc::new(pc),
            local,
            remote: tokio::sync::Mutex::new(RemoteCandidates::default()),
            state: state_rx,
            gathered: gathered_rx,
            outbox,
            trickle: opts.trickle,
            tcp_only: opts.tcp_only,
        }))
    }

    /// The server now knows this connection (our offer or answer was sent): send the
    /// candidates gathered so far and every later one at once. `sdp` is what we sent; its first
    /// `mid` names our candidates.
    pub fn local_ready(&self, sdp: &str) {
        let pending = {
            let mut l = self.local.lock().unwrap_or_else(|e| e.into_inner());
            if l.mid.is_none() {
                l.mid = first_mid(sdp);
            }
            l.ready = true;
            std::mem::take(&mut l.pending)
        };
        if !self.trickle {
            return;
        }
        let mid = self.mid();
        for candidate in pending {
            self.outbox
                .send_background(candidate_message(self.kind, &candidate, mid.as_deref()));
        }
    }

    fn mid(&self) -> Option<String> {
        self.local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mid
            .clone()
    }

    /// Sets the server's description and applies the candidates that came before it.
    pub async fn set_remote(&self, desc: RTCSessionDescription) -> Result<()> {
        let mut remote = self.remote.lock().await;
        // The async crate dials a `tcp passive` candidate only when it is added with
        // `add_ice_candidate`, not when it comes in the SDP (as the server's do): add them
        // again, as a browser would use them.
        let tcp_passive: Vec<RTCIceCandidateInit> = {
            let mut mid = None;
            let mut found = Vec::new();
            for line in desc.sdp.lines() {
                let line = line.trim_end_matches('\r');
                if let Some(m) = line.strip_prefix("a=mid:") {
                    mid = Some(m.to_owned());
                } else if let Some(c) = line.strip_prefix("a=") {
                    let fields: Vec<&str> = c.split_whitespace().collect();
                    let tcp = fields.get(2).is_some_and(|p| p.eq_ignore_ascii_case("tcp"));
                    if c.starts_with("candidate:") && tcp && c.ends_with("tcptype passive") {
                        found.push(RTCIceCandidateInit {
                            candidate: c.to_owned(),
                            sdp_mid: mid.clone(),
                            ..Default::default()
                        });
                    }
                }
            }
            found
        };
        self.pc.set_remote_description(desc).await?;
        remote.remote_set = true;
        if self.tcp_only {
            for c in tcp_passive.into_iter().take(1) {
                if let Err(e) = self.pc.add_ice_candidate(c).await {
                    self.outbox
                        .note_error(format!("{:?} tcp candidate: {e}", self.kind));
                }
            }
        }
        for c in std::mem::take(&mut remote.pending) {
            if let Err(e) = self.pc.add_ice_candidate(c).await {
                self.outbox
                    .note_error(format!("{:?} candidate: {e}", self.kind));
            }
        }
        Ok(())
    }

    /// Adds a server candidate now, or after the remote description is set.
    pub async fn add_remote_candidate(&self, c: RTCIceCandidateInit) -> Result<()> {
        let mut remote = self.remote.lock().await;
        if remote.remote_set {
            self.pc.add_ice_candidate(c).await?;
        } else {
            remote.pending.push(c);
        }
        Ok(())
    }

    /// Waits until the connection is `Connected` (error if it fails or closes first).
    pub async fn connected(&self) -> Result<()> {
        let mut rx = self.state.clone();
        loop {
            match *rx.borrow_and_update() {
                RTCPeerConnectionState::Connected => return Ok(()),
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                    return Err(Error::Media(format!("{:?} connection failed", self.kind)));
                }
                _ => {}
            }
            if rx.changed().await.is_err() {
                return Err(Error::Closed);
            }
        }
    }

    /// Waits (at most `timeout`) until ICE gathering is complete; for non-trickle use.
    pub async fn gathered(&self, timeout: std::time::Duration) {
        let mut rx = self.gathered.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .map(|m| m.trim().to_owned())
}

fn candidate_message(kind: PeerConnectionKind, candidate: &str, mid: Option<&str>) -> Value {
    let mut m = json!({"type": "ice_candidate", "pc": kind, "candidate": candidate});
    if let Some(mid) = mid {
        m["sdp_mid"] = json!(mid);
        m["sdp_m_line_index"] = json!(0);
    }
    m
}

fn register_publish_codecs(me: &mut MediaEngine, opts: &ClientOptions) -> Result<()> {
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48_000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: OPUS_PT,
        },
        RtpCodecKind::Audio,
    )?;
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    };
    me.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90_000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![
                    fb("goog-remb", ""),
                    fb("transport-cc", ""),
                    fb("ccm", "fir"),
                    fb("nack", ""),
                    fb("nack", "pli"),
                ],
            },
            payload_type: VP8_PT,
        },
        RtpCodecKind::Video,
    )?;
    if opts.publish_rtx {
        me.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: 90_000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={VP8_PT}"),
                    rtcp_feedback: vec![],
                },
                payload_type: VP8_RTX_PT,
            },
            RtpCodecKind::Video,
        )?;
    }
    Ok(())
}

/// The webrtc event handler of one connection. Holds no reference to the connection itself.
struct Handler {
    kind: PeerConnectionKind,
    outbox: Arc<Outbox>,
    local: Arc<StdMutex<LocalCandidates>>,
    state: watch::Sender<RTCPeerConnectionState>,
    tracks: Option<mpsc::UnboundedSender<Arc<dyn TrackRemote>>>,
    trickle: bool,
    gathered: watch::Sender<bool>,
}

impl Handler {
    fn candidate(&self, candidate: String) {
        let send = {
            let mut l = self.local.lock().unwrap_or_else(|e| e.into_inner());
            if l.ready {
                Some(l.mid.clone())
            } else {
                l.pending.push(candidate.clone());
                None
            }
        };
        if let Some(mid) = send
            && self.trickle
        {
            self.outbox
                .send_background(candidate_message(self.kind, &candidate, mid.as_deref()));
        }
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        match event.candidate.to_json() {
            Ok(init) => self.candidate(init.candidate),
            Err(e) => self
                .outbox
                .note_error(format!("{:?} local candidate: {e}", self.kind)),
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            // Once per generation of candidates (a re-offer does not gather again).
            if !self.gathered.send_replace(true) {
                // End of candidates.
                self.candidate(String::new());
            }
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::debug!(pc = ?self.kind, ?state, "connection state");
        let _ = self.state.send(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        if let Some(tx) = &self.tracks {
            let _ = tx.send(track);
        }
    }
}

/// Marks inbound PLI and FIR for delivery to the application (the sending track's `poll`).
/// Every other inbound RTCP packet stops here, as it would at the end of the default chain.
#[derive(Default)]
struct KeyframeRequests {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyframeRequests {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> std::result::Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| {
                    let any = p.as_any();
                    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
                })
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> std::result::Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyframeRequests {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_mid_and_candidate_messages() {
        let sdp =
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\nm=video 9 x 96\r\na=mid:1\r\n";
        assert_eq!(first_mid(sdp).as_deref(), Some("0"));
        assert_eq!(first_mid("v=0\r\n"), None);
        let m = candidate_message(
            PeerConnectionKind::Subscribe,
            "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
            Some("0"),
        );
        assert_eq!(m["pc"], "subscribe");
        assert_eq!(m["sdp_mid"], "0");
        assert_eq!(m["sdp_m_line_index"], 0);
        // The message parses as the protocol's client command.
        let mut with_id = m.clone();
        with_id["id"] = json!("x");
        roundtable_signaling::parse_client_message(&with_id.to_string()).expect("valid command");
        let end = candidate_message(PeerConnectionKind::Publish, "", None);
        assert_eq!(end["candidate"], "");
        assert!(end.get("sdp_mid").is_none());
    }
}
