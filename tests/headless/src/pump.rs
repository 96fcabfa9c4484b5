//! The synthetic media pump: Opus-sized audio at 50 packets/s and VP8-sized video frames per
//! layer, with keyframes on a timer and on request (PLI/FIR).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use roundtable_signaling::MediaSource;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};

use crate::payload::{Mark, StreamKind, Vp8Packet, opus_payload, vp8_payload};

/// The rate and shape of one video stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerRate {
    /// Frames per second.
    pub fps: u32,
    /// RTP packets per frame (each [`PublishSpec::packet_size`] bytes).
    pub packets_per_frame: u32,
    /// RTP packets per keyframe.
    pub keyframe_packets: u32,
    /// Width and height written into keyframe headers.
    pub size: (u16, u16),
}

impl LayerRate {
    /// `q`: 320x180, 15 fps, 1 packet per frame (about 130 kbit/s).
    pub const LOW: LayerRate = LayerRate {
        fps: 15,
        packets_per_frame: 1,
        keyframe_packets: 4,
        size: (320, 180),
    };
    /// `h`: 640x360, 30 fps, 2 packets per frame (about 530 kbit/s).
    pub const MEDIUM: LayerRate = LayerRate {
        fps: 30,
        packets_per_frame: 2,
        keyframe_packets: 8,
        size: (640, 360),
    };
    /// `f`: 1280x720, 30 fps, 5 packets per frame (about 1.3 Mbit/s).
    pub const HIGH: LayerRate = LayerRate {
        fps: 30,
        packets_per_frame: 5,
        keyframe_packets: 20,
        size: (1280, 720),
    };
    /// Screen share: 1920x1080, 5 fps, 4 packets per frame, large keyframes.
    pub const SCREEN: LayerRate = LayerRate {
        fps: 5,
        packets_per_frame: 4,
        keyframe_packets: 30,
        size: (1920, 1080),
    };
}

/// What to publish, and how much of it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishSpec {
    /// An Opus track (`microphone`, or `program` with `source_program`).
    pub audio: bool,
    /// Camera video: 0 (none), 1 (one stream), 2 (simulcast, rids `q`, `h`) or 3 (simulcast,
    /// rids `q`, `h`, `f`).
    pub video_layers: u8,
    /// A VP8 screen-share track (`screen`).
    pub screen: bool,
    /// Publish audio and camera as the room's `program` instead of `microphone`/`camera`.
    pub source_program: bool,
    /// Audio payload sizes, uniformly between these bounds (bytes).
    pub audio_size: (usize, usize),
    /// Audio packet interval (20 ms: 50 packets/s).
    pub audio_interval: Duration,
    /// RFC 6464 level (0 = loud .. 127 = silence) sent with the voice-activity bit when the
    /// extension is negotiated; `None` sends no level. Change it live with
    /// [`Client::set_audio_level`](crate::Client::set_audio_level).
    pub audio_level: Option<u8>,
    /// Simulcast layers `q`, `h`, `f` (with `video_layers` 2 or 3; 2 uses the first two).
    pub layers: [LayerRate; 3],
    /// The one stream with `video_layers: 1`.
    pub single_layer: LayerRate,
    /// The screen share.
    pub screen_rate: LayerRate,
    /// Video RTP payload size (bytes).
    pub packet_size: usize,
    /// A keyframe at least this often (`Duration::ZERO`: only the first one and on request).
    pub keyframe_interval: Duration,
}

impl Default for PublishSpec {
    fn default() -> PublishSpec {
        PublishSpec {
            audio: true,
            video_layers: 1,
            screen: false,
            source_program: false,
            audio_size: (80, 160),
            audio_interval: Duration::from_millis(20),
            audio_level: Some(30),
            layers: [LayerRate::LOW, LayerRate::MEDIUM, LayerRate::HIGH],
            single_layer: LayerRate::HIGH,
            screen_rate: LayerRate::SCREEN,
            packet_size: 1100,
            keyframe_interval: Duration::from_secs(3),
        }
    }
}

/// Send-side counters of one stream.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    frames: AtomicU64,
    keyframes: AtomicU64,
    keyframe_requests: AtomicU64,
    errors: AtomicU64,
    /// A PLI/FIR arrived: the next frame is a keyframe.
    keyframe_wanted: AtomicBool,
    last_error: StdMutex<Option<String>>,
}

/// A snapshot of what one published stream has sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentStats {
    /// What it carries.
    pub source: MediaSource,
    /// Which stream of the participant (audio, video layer, screen).
    pub stream: StreamKind,
    /// The [stream tag](crate::stream_tag) in every payload.
    pub tag: u32,
    /// The m-line's `mid` in the publish offer.
    pub mid: String,
    /// The simulcast `rid`, if any.
    pub rid: Option<String>,
    /// The RTP SSRC.
    pub ssrc: u32,
    /// RTP packets written.
    pub packets: u64,
    /// Payload bytes written.
    pub bytes: u64,
    /// Video frames (audio: packets).
    pub frames: u64,
    /// Keyframes sent.
    pub keyframes: u64,
    /// PLI/FIR received for this SSRC.
    pub keyframe_requests: u64,
    /// `write_rtp` failures (packets not sent; not counted in `packets`).
    pub errors: u64,
    /// The last such failure.
    pub last_error: Option<String>,
}

/// One stream the pump sends: its identity, the negotiated header bytes and counters.
#[derive(Debug, Clone)]
pub(crate) struct OutStream {
    pub source: MediaSource,
    pub stream: StreamKind,
    pub tag: u32,
    pub mid: String,
    pub rid: Option<String>,
    pub ssrc: u32,
    pub payload_type: u8,
    /// Extension (id, value) pairs put on every packet (mid, rid).
    pub extensions: Vec<(u8, Bytes)>,
    /// The negotiated audio level extension id.
    pub audio_level_id: Option<u8>,
    pub counters: Arc<Counters>,
    /// The client's uplink faults (shared by its streams).
    pub faults: Arc<Faults>,
}

/// Uplink fault injection: packets dropped before they leave, as a lossy uplink would (they
/// never reach the NACK buffer, so they cannot be repaired), or none sent at all.
#[derive(Debug, Default)]
pub struct Faults {
    /// Share of RTP packets dropped, per mille.
    pub loss_permille: AtomicU32,
    /// Send nothing.
    pub paused: AtomicBool,
    rng: AtomicU32,
}

impl Faults {
    fn drop_now(&self) -> bool {
        if self.paused.load(Ordering::Relaxed) {
            return true;
        }
        let p = self.loss_permille.load(Ordering::Relaxed);
        if p == 0 {
            return false;
        }
        // xorshift32; races between streams only make it more random.
        let mut x = self.rng.load(Ordering::Relaxed);
        if x == 0 {
            x = 0x9E37_79B9;
        }
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng.store(x, Ordering::Relaxed);
        x % 1000 < p
    }
}

impl OutStream {
    pub fn snapshot(&self) -> SentStats {
        let c = &self.counters;
        SentStats {
            source: self.source,
            stream: self.stream,
            tag: self.tag,
            mid: self.mid.clone(),
            rid: self.rid.clone(),
            ssrc: self.ssrc,
            packets: c.packets.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            frames: c.frames.load(Ordering::Relaxed),
            keyframes: c.keyframes.load(Ordering::Relaxed),
            keyframe_requests: c.keyframe_requests.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Asks for a keyframe at the next frame (as a PLI would).
    pub fn request_keyframe(&self) {
        self.counters.keyframe_wanted.store(true, Ordering::Relaxed);
    }
}

/// `AUDIO_LEVEL_NONE` in [`AudioLevel`]: no extension.
pub(crate) const AUDIO_LEVEL_NONE: u8 = u8::MAX;

/// The live audio level shared by the pump and the client.
pub(crate) type AudioLevel = Arc<AtomicU8>;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

async fn write(track: &TrackLocalStaticRTP, s: &OutStream, mut pkt: rtp::Packet) {
    if s.faults.drop_now() {
        return;
    }
    for (id, value) in &s.extensions {
        if let Err(e) = pkt.header.set_extension(*id, value.clone()) {
            fail(s, format!("extension {id}: {e}"));
            return;
        }
    }
    let len = pkt.payload.len() as u64;
    // `write_rtp` waits while the connection's driver does not drain its queue: a second of
    // that is a stall, counted as an error (the packet is not sent).
    match tokio::time::timeout(Duration::from_secs(1), track.write_rtp(pkt)).await {
        Ok(Ok(())) => {
            s.counters.packets.fetch_add(1, Ordering::Relaxed);
            s.counters.bytes.fetch_add(len, Ordering::Relaxed);
        }
        Ok(Err(e)) => fail(s, e.to_string()),
        Err(_) => fail(
            s,
            "write_rtp blocked for 1 s (the driver is not draining)".into(),
        ),
    }
}

fn fail(s: &OutStream, e: String) {
    s.counters.errors.fetch_add(1, Ordering::Relaxed);
    *s.counters
        .last_error
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(e);
}

fn header(s: &OutStream, seq: u16, timestamp: u32, marker: bool) -> rtp::header::Header {
    rtp::header::Header {
        version: 2,
        marker,
        payload_type: s.payload_type,
        sequence_number: seq,
        timestamp,
        ssrc: s.ssrc,
        ..Default::default()
    }
}

/// Sends Opus-sized packets every `spec.audio_interval` until aborted.
pub(crate) async fn run_audio(
    track: Arc<TrackLocalStaticRTP>,
    s: OutStream,
    spec: PublishSpec,
    level: AudioLevel,
) {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut seq: u16 = rng.random();
    let mut ts: u32 = rng.random();
    let step = (48_000 * spec.audio_interval.as_micros() / 1_000_000) as u32;
    let (lo, hi) = (
        spec.audio_size.0.min(spec.audio_size.1),
        spec.audio_size.0.max(spec.audio_size.1),
    );
    let mut tick = tokio::time::interval(spec.audio_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u32 = 0;
    loop {
        tick.tick().await;
        let len = rng.random_range(lo..=hi);
        let payload = opus_payload(
            Mark {
                stream: s.tag,
                seq: n,
                sent_us: now_us(),
            },
            len,
        );
        let mut pkt = rtp::Packet {
            header: header(&s, seq, ts, n == 0),
            payload: Bytes::from(payload),
        };
        let l = level.load(Ordering::Relaxed);
        if let Some(id) = s.audio_level_id
            && l != AUDIO_LEVEL_NONE
        {
            // RFC 6464: V bit (voice activity) + 7-bit level in -dBov.
            let _ = pkt
                .header
                .set_extension(id, Bytes::copy_from_slice(&[0x80 | (l & 0x7f)]));
        }
        write(&track, &s, pkt).await;
        s.counters.frames.fetch_add(1, Ordering::Relaxed);
        n = n.wrapping_add(1);
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(step);
    }
}

/// Sends VP8-sized frames at `rate` until aborted; a keyframe first, then every
/// `keyframe_interval` and at the frame after a keyframe request.
pub(crate) async fn run_video(
    track: Arc<TrackLocalStaticRTP>,
    s: OutStream,
    rate: LayerRate,
    packet_size: usize,
    keyframe_interval: Duration,
) {
    let mut seq: u16 = rand::random();
    let mut ts: u32 = rand::random();
    let mut picture_id: u16 = rand::random::<u16>() & 0x7fff;
    let fps = rate.fps.max(1);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / u64::from(fps)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u32 = 0;
    let mut last_keyframe: Option<tokio::time::Instant> = None;
    loop {
        tick.tick().await;
        let now = tokio::time::Instant::now();
        let wanted = s.counters.keyframe_wanted.swap(false, Ordering::Relaxed);
        let keyframe = wanted
            || last_keyframe.is_none_or(|t| {
                !keyframe_interval.is_zero() && now.duration_since(t) >= keyframe_interval
            });
        if keyframe {
            last_keyframe = Some(now);
            s.counters.keyframes.fetch_add(1, Ordering::Relaxed);
        }
        let count = if keyframe {
            rate.keyframe_packets
        } else {
            rate.packets_per_frame
        }
        .max(1);
        for i in 0..count {
            let payload = vp8_payload(&Vp8Packet {
                start: i == 0,
                keyframe,
                picture_id,
                size: rate.size,
                mark: Mark {
                    stream: s.tag,
                    seq: n,
                    sent_us: now_us(),
                },
                len: packet_size,
            });
            let pkt = rtp::Packet {
                header: header(&s, seq, ts, i + 1 == count),
                payload: Bytes::from(payload),
            };
            write(&track, &s, pkt).await;
            n = n.wrapping_add(1);
            seq = seq.wrapping_add(1);
        }
        s.counters.frames.fetch_add(1, Ordering::Relaxed);
        picture_id = (picture_id + 1) & 0x7fff;
        ts = ts.wrapping_add(90_000 / fps);
    }
}

/// Reads RTCP feedback delivered to a sending track and turns PLI/FIR into keyframe requests
/// for the stream with that SSRC. Ends when the track is unbound (connection closed).
pub(crate) async fn run_feedback(track: Arc<TrackLocalStaticRTP>, streams: Vec<OutStream>) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        for p in packets {
            let any = p.as_any();
            let ssrcs: Vec<u32> = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                vec![pli.media_ssrc]
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                let mut v: Vec<u32> = fir.fir.iter().map(|e| e.ssrc).collect();
                v.push(fir.media_ssrc);
                v
            } else {
                continue;
            };
            for s in &streams {
                if ssrcs.contains(&s.ssrc) {
                    s.counters.keyframe_requests.fetch_add(1, Ordering::Relaxed);
                    s.request_keyframe();
                }
            }
        }
    }
}
