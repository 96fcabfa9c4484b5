//! Per-stream measurements on the receive path (pure, no I/O, no allocation): what a
//! publisher's stream looks like on arrival, before any repair.
//!
//! One [`StreamMeter`] per inbound RTP stream (SSRC) counts packets and bytes, finds loss from
//! sequence gaps and the RFC 3550 interarrival jitter, counts frames (a new RTP timestamp) and
//! keyframes, and averages the RFC 6464 audio level. [`StreamMeter::sample`] reads the
//! counters; the caller keeps the previous sample to turn them into rates.

/// Counters of one inbound stream (cumulative since the stream began).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamCounters {
    /// Packets received (padding included, duplicates included).
    pub packets: u64,
    /// Payload and padding bytes received.
    pub bytes: u64,
    /// Packets expected from the sequence numbers (RFC 3550 A.3: highest − first + 1).
    pub expected: u64,
    /// Frames seen (video: distinct RTP timestamps of packets with a payload).
    pub frames: u64,
    /// Keyframes seen.
    pub keyframes: u64,
    /// Interarrival jitter (RFC 3550 6.4.1), ms.
    pub jitter_ms: f64,
    /// When the last packet arrived (ms, the caller's clock); None: none yet.
    pub last_packet_ms: Option<i64>,
    /// When the last keyframe arrived.
    pub last_keyframe_ms: Option<i64>,
    /// Mean RFC 6464 level (0 loudest … 127 silence) since the last sample, if any came.
    pub level: Option<u8>,
}

/// The measurements of one inbound RTP stream.
#[derive(Debug, Clone, Default)]
pub struct StreamMeter {
    c: StreamCounters,
    /// RTP clock rate, per ms.
    clock_khz: f64,
    /// Extended highest sequence number, and the first.
    max_ext: Option<u64>,
    base_ext: u64,
    /// Last transit time (arrival in RTP units − RTP timestamp).
    last_transit: Option<f64>,
    /// Jitter in RTP units.
    jitter: f64,
    last_ts: Option<u32>,
    level_sum: u32,
    level_count: u32,
}

impl StreamMeter {
    /// A meter for a stream with this RTP clock (90 for video, 48 for Opus).
    pub fn new(clock_khz: u32) -> StreamMeter {
        StreamMeter {
            clock_khz: f64::from(clock_khz.max(1)),
            ..StreamMeter::default()
        }
    }

    /// One packet: `arrival_us` on the caller's monotonic clock (µs), its RTP sequence
    /// number and timestamp, payload + padding size, whether it carries media (not padding
    /// only), starts a keyframe, and its audio level if the extension is there.
    #[allow(clippy::too_many_arguments)]
    pub fn packet(
        &mut self,
        arrival_us: i64,
        seq: u16,
        timestamp: u32,
        bytes: usize,
        media: bool,
        keyframe: bool,
        level: Option<u8>,
    ) {
        let c = &mut self.c;
        c.packets += 1;
        c.bytes += bytes as u64;
        let now_ms = arrival_us.div_euclid(1000);
        c.last_packet_ms = Some(now_ms);
        // Extended sequence number: the value nearest the highest so far.
        match self.max_ext {
            None => {
                self.base_ext = u64::from(seq) + (1 << 16);
                self.max_ext = Some(self.base_ext);
            }
            Some(max) => {
                let delta = seq.wrapping_sub(max as u16) as i16;
                let ext = (max as i64 + i64::from(delta)).max(0) as u64;
                if ext > max {
                    self.max_ext = Some(ext);
                }
            }
        }
        if let Some(max) = self.max_ext {
            c.expected = max.saturating_sub(self.base_ext) + 1;
        }
        if media {
            // RFC 3550 6.4.1 on packets with media (padding carries the timestamp of the
            // last frame sent, not of its own sending time).
            let arrival = arrival_us as f64 / 1000.0 * self.clock_khz;
            let transit = arrival - f64::from(timestamp);
            if let Some(last) = self.last_transit {
                let d = (transit - last).abs();
                if d < self.clock_khz * 10_000.0 {
                    self.jitter += (d - self.jitter) / 16.0;
                }
            }
            self.last_transit = Some(transit);
            c.jitter_ms = self.jitter / self.clock_khz;
            if self.last_ts != Some(timestamp) {
                self.last_ts = Some(timestamp);
                c.frames += 1;
            }
            if keyframe {
                c.keyframes += 1;
                c.last_keyframe_ms = Some(now_ms);
            }
        }
        if let Some(l) = level {
            self.level_sum += u32::from(l.min(127));
            self.level_count += 1;
        }
    }

    /// The counters now; the level average starts again.
    pub fn sample(&mut self) -> StreamCounters {
        let mut c = self.c;
        c.level = (self.level_count > 0).then(|| (self.level_sum / self.level_count) as u8);
        self.level_sum = 0;
        self.level_count = 0;
        c
    }
}

/// Loss between two samples, 0 to 1: packets expected but not received over the interval
/// (RFC 3550 A.3's fraction lost; duplicates and late repairs can make it negative: 0).
pub fn interval_loss(prev: &StreamCounters, now: &StreamCounters) -> f64 {
    let expected = now.expected.saturating_sub(prev.expected);
    let received = now.packets.saturating_sub(prev.packets);
    if expected == 0 {
        return 0.0;
    }
    (expected.saturating_sub(received)) as f64 / expected as f64
}

/// One inbound stream in a [`LinkSample`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamSample {
    /// SSRC.
    pub ssrc: u32,
    /// Video (else audio).
    pub video: bool,
    /// Simulcast layer (0 = lowest).
    pub layer: u8,
    /// The counters.
    pub counters: StreamCounters,
}

/// What a subscriber reported of the streams we send it (RTCP receiver reports).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReceiverSample {
    /// Worst fraction lost of the last reports, 0 to 1.
    pub fraction_lost: f64,
    /// Worst interarrival jitter of the last reports, ms.
    pub jitter_ms: f64,
    /// Reports received so far.
    pub reports: u64,
}

/// One connection's measurements at one moment (the engine sends one every
/// [`SAMPLE_PERIOD_MS`] for each connected connection).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkSample {
    /// When (ms on the engine's clock, the same clock as the counters' times).
    pub at_ms: i64,
    /// Inbound streams (a publisher connection).
    pub streams: Vec<StreamSample>,
    /// RTP packets sent on it (a subscriber connection).
    pub sent_packets: u64,
    /// RTP payload bytes sent on it.
    pub sent_bytes: u64,
    /// Receiver reports about what we send (a subscriber connection).
    pub receiver: Option<ReceiverSample>,
    /// Round-trip time to the client, ms (RTCP LSR/DLSR or ICE).
    pub rtt_ms: Option<f64>,
    /// The client's candidate type on the selected ICE pair.
    pub candidate: Option<roundtable_signaling::CandidateType>,
}

/// How often the engine samples each connection.
pub const SAMPLE_PERIOD_MS: i64 = 500;

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(m: &mut StreamMeter, n: u16, skip: impl Fn(u16) -> bool) {
        for i in 0..n {
            if skip(i) {
                continue;
            }
            let seq = 65_000u16.wrapping_add(i);
            m.packet(
                i64::from(i) * 20_000,
                seq,
                u32::from(i) * 960,
                100,
                true,
                false,
                Some(40),
            );
        }
    }

    #[test]
    fn counts_loss_from_gaps_across_the_sequence_wrap() {
        let mut m = StreamMeter::new(48);
        let a = m.sample();
        feed(&mut m, 1000, |i| i % 10 == 3);
        let b = m.sample();
        assert_eq!(b.expected, 1000, "first to highest");
        assert_eq!(b.packets, 900);
        let loss = interval_loss(&a, &b);
        assert!((loss - 0.1).abs() < 1e-9, "{loss}");
        assert_eq!(b.level, Some(40));
        assert_eq!(m.sample().level, None, "the level average restarts");
    }

    #[test]
    fn a_perfectly_paced_stream_has_no_jitter_and_a_jittery_one_has_some() {
        let mut m = StreamMeter::new(48);
        feed(&mut m, 500, |_| false);
        assert!(m.sample().jitter_ms < 0.001);
        let mut j = StreamMeter::new(48);
        for i in 0..500u16 {
            // Arrivals off by ±5 ms around the 20 ms pacing.
            let wobble = if i % 2 == 0 { 5_000 } else { -5_000 };
            j.packet(
                i64::from(i) * 20_000 + wobble,
                i,
                u32::from(i) * 960,
                100,
                true,
                false,
                None,
            );
        }
        let ms = j.sample().jitter_ms;
        assert!((8.0..=11.0).contains(&ms), "jitter {ms} ms (|D| = 10 ms)");
    }

    #[test]
    fn counts_frames_and_keyframes_and_ignores_padding_for_them() {
        let mut m = StreamMeter::new(90);
        // Three packets per frame, a keyframe every 10 frames, padding between.
        let mut seq = 0u16;
        for f in 0..30u32 {
            for p in 0..3 {
                m.packet(
                    i64::from(f) * 33_000,
                    seq,
                    f * 3000,
                    1000,
                    true,
                    p == 0 && f % 10 == 0,
                    None,
                );
                seq += 1;
            }
            m.packet(
                i64::from(f) * 33_000 + 100,
                seq,
                f * 3000,
                200,
                false,
                false,
                None,
            );
            seq += 1;
        }
        let c = m.sample();
        assert_eq!(c.frames, 30);
        assert_eq!(c.keyframes, 3);
        assert_eq!(c.packets, 120);
        assert_eq!(c.expected, 120);
        assert_eq!(c.last_keyframe_ms, Some(20 * 33));
    }

    #[test]
    fn reordered_and_duplicate_packets_do_not_count_as_loss() {
        let mut m = StreamMeter::new(48);
        let a = m.sample();
        for (i, seq) in [0u16, 2, 1, 3, 3, 4].into_iter().enumerate() {
            m.packet(
                i as i64 * 20_000,
                seq,
                u32::from(seq) * 960,
                10,
                true,
                false,
                None,
            );
        }
        let b = m.sample();
        assert_eq!(b.expected, 5);
        assert_eq!(interval_loss(&a, &b), 0.0);
    }
}
