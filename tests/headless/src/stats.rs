//! What arrives: per received track, RTP sequence continuity, our payload marks, latency and
//! keyframes. Pure bookkeeping (no I/O), so it is unit-tested on its own.

use std::collections::BTreeMap;

use roundtable_signaling::SlotInfo;

use crate::payload::{self, Codec};

/// How many latency samples a track keeps (about 5.5 hours of audio at 50 pkt/s).
pub const MAX_LATENCY_SAMPLES: usize = 1_000_000;

/// Window for telling a duplicate from a late packet.
const WINDOW: u64 = 1024;

/// Counts arrivals of one sequence-numbered stream: order, holes, duplicates.
///
/// Values are extended (never wrap); [`extend_seq16`] turns RTP's 16-bit numbers into such
/// values.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    first: Option<u64>,
    highest: Option<u64>,
    unique: u64,
    duplicates: u64,
    late: u64,
    gaps: u64,
    skipped: u64,
    seen: Vec<u64>,
}

impl SeqTracker {
    /// Records one arrival.
    pub fn push(&mut self, v: u64) {
        if self.seen.is_empty() {
            self.seen = vec![0; (WINDOW / 64) as usize];
        }
        let Some(high) = self.highest else {
            self.first = Some(v);
            self.highest = Some(v);
            self.unique = 1;
            self.set(v);
            return;
        };
        if v > high {
            if v > high + 1 {
                self.gaps += 1;
                self.skipped += v - high - 1;
            }
            // Forget the window slots the new highest value reuses.
            if v - high >= WINDOW {
                self.seen.iter_mut().for_each(|w| *w = 0);
            } else {
                for x in high + 1..=v {
                    self.clear(x);
                }
            }
            self.highest = Some(v);
            self.unique += 1;
            self.set(v);
        } else if high - v >= WINDOW || self.first.is_some_and(|f| v < f) {
            // Too old to tell (or before the first one): late, and counted as received.
            self.late += 1;
            self.unique += 1;
            if self.first.is_some_and(|f| v < f) {
                self.first = Some(v);
            }
        } else if self.get(v) {
            self.duplicates += 1;
        } else {
            self.late += 1;
            self.unique += 1;
            self.set(v);
        }
    }

    fn set(&mut self, v: u64) {
        let i = (v % WINDOW) as usize;
        self.seen[i / 64] |= 1 << (i % 64);
    }

    fn clear(&mut self, v: u64) {
        let i = (v % WINDOW) as usize;
        self.seen[i / 64] &= !(1 << (i % 64));
    }

    fn get(&self, v: u64) -> bool {
        let i = (v % WINDOW) as usize;
        self.seen[i / 64] & (1 << (i % 64)) != 0
    }

    /// The highest value seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// A snapshot of the counters.
    pub fn summary(&self) -> SeqSummary {
        let expected = match (self.first, self.highest) {
            (Some(f), Some(h)) => h - f + 1,
            _ => 0,
        };
        SeqSummary {
            first: self.first,
            highest: self.highest,
            expected,
            received: self.unique,
            missing: expected.saturating_sub(self.unique),
            duplicates: self.duplicates,
            late: self.late,
            gaps: self.gaps,
            skipped: self.skipped,
        }
    }
}

/// Extends a 16-bit RTP sequence number to the value closest to `highest` (the previous
/// extended highest). The first value is placed at 65536 + `seq` so a slightly older packet
/// can still come before it.
pub fn extend_seq16(seq: u16, highest: Option<u64>) -> u64 {
    let Some(high) = highest else {
        return 65_536 + u64::from(seq);
    };
    let base = high & !0xffff;
    let candidate = base | u64::from(seq);
    [
        candidate.wrapping_sub(65_536),
        candidate,
        candidate + 65_536,
    ]
    .into_iter()
    .filter(|c| *c < u64::MAX / 2)
    .min_by_key(|c| c.abs_diff(high))
    .unwrap_or(candidate)
}

/// Counters of one sequence-numbered stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeqSummary {
    /// The first (lowest) value seen.
    pub first: Option<u64>,
    /// The highest value seen.
    pub highest: Option<u64>,
    /// `highest - first + 1`.
    pub expected: u64,
    /// Distinct values received.
    pub received: u64,
    /// `expected - received`: never arrived (so far).
    pub missing: u64,
    /// Arrived more than once.
    pub duplicates: u64,
    /// Arrived after a higher value (reordered or retransmitted).
    pub late: u64,
    /// Forward jumps by more than one (discontinuities).
    pub gaps: u64,
    /// Values jumped over by those gaps (some may arrive later, see `late`).
    pub skipped: u64,
}

/// One-way delay summary, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min_us: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: u64,
}

impl LatencySummary {
    /// Summarises samples (in any order).
    pub fn of(samples: &[u32]) -> LatencySummary {
        if samples.is_empty() {
            return LatencySummary::default();
        }
        let mut s = samples.to_vec();
        s.sort_unstable();
        let pick = |q: f64| u64::from(s[((s.len() - 1) as f64 * q).round() as usize]);
        LatencySummary {
            count: s.len() as u64,
            min_us: u64::from(s[0]),
            p50_us: pick(0.50),
            p99_us: pick(0.99),
            max_us: u64::from(s[s.len() - 1]),
            mean_us: s.iter().map(|x| u64::from(*x)).sum::<u64>() / s.len() as u64,
        }
    }
}

/// What arrived from one sending stream (one [stream tag](crate::stream_tag)) on a track.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRecv {
    /// Packets carrying this tag.
    pub packets: u64,
    /// Our payload sequence numbers (from the sender's [`Mark`](crate::Mark)).
    pub seq: SeqSummary,
}

/// A snapshot of one received track (one m-line of the subscribe connection).
#[derive(Debug, Clone, PartialEq)]
pub struct TrackStats {
    /// The m-line's `mid`.
    pub mid: String,
    /// What the server said this m-line carries (from the latest `subscribe_offer`).
    pub slot: Option<SlotInfo>,
    /// `audio` or `video`.
    pub kind: String,
    /// SSRCs seen, in order of first appearance (one, if the server rewrites as it should).
    pub ssrcs: Vec<u32>,
    /// RTP packets received.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// First RTP sequence number received.
    pub first_seq: Option<u16>,
    /// Last RTP sequence number received (in arrival order).
    pub last_seq: Option<u16>,
    /// RTP sequence continuity (extended sequence numbers).
    pub rtp: SeqSummary,
    /// VP8 keyframes (frame starts with P=0) received.
    pub keyframes: u64,
    /// Packets whose payload carried no [`Mark`](crate::Mark).
    pub unmarked: u64,
    /// Times the stream tag changed from one packet to the next (speaker or layer switches).
    pub tag_switches: u64,
    /// Per sending stream tag: our payload sequence numbers.
    pub streams: BTreeMap<u32, StreamRecv>,
    /// One-way delay from the sender's `sent_us` to our receipt.
    pub latency: LatencySummary,
}

/// Per-track bookkeeping behind [`TrackStats`].
#[derive(Debug, Clone)]
pub struct TrackRecorder {
    mid: String,
    codec: Codec,
    ssrcs: Vec<u32>,
    packets: u64,
    bytes: u64,
    first_seq: Option<u16>,
    last_seq: Option<u16>,
    rtp: SeqTracker,
    keyframes: u64,
    unmarked: u64,
    last_tag: Option<u32>,
    tag_switches: u64,
    streams: BTreeMap<u32, (u64, SeqTracker)>,
    latency: Vec<u32>,
}

impl TrackRecorder {
    /// A recorder for the m-line `mid` carrying `codec`.
    pub fn new(mid: &str, codec: Codec) -> TrackRecorder {
        TrackRecorder {
            mid: mid.to_owned(),
            codec,
            ssrcs: Vec::new(),
            packets: 0,
            bytes: 0,
            first_seq: None,
            last_seq: None,
            rtp: SeqTracker::default(),
            keyframes: 0,
            unmarked: 0,
            last_tag: None,
            tag_switches: 0,
            streams: BTreeMap::new(),
            latency: Vec::new(),
        }
    }

    /// Records one received packet at `now_us` (microseconds since the UNIX epoch).
    pub fn record(&mut self, ssrc: u32, seq: u16, payload: &[u8], now_us: u64) {
        if !self.ssrcs.contains(&ssrc) {
            self.ssrcs.push(ssrc);
        }
        self.packets += 1;
        self.bytes += payload.len() as u64;
        self.first_seq.get_or_insert(seq);
        self.last_seq = Some(seq);
        self.rtp.push(extend_seq16(seq, self.rtp.highest()));
        let parsed = payload::parse(self.codec, payload);
        if parsed.keyframe {
            self.keyframes += 1;
        }
        let Some(mark) = parsed.mark else {
            self.unmarked += 1;
            return;
        };
        if self.last_tag.is_some_and(|t| t != mark.stream) {
            self.tag_switches += 1;
        }
        self.last_tag = Some(mark.stream);
        let (n, tracker) = self.streams.entry(mark.stream).or_default();
        *n += 1;
        tracker.push(u64::from(mark.seq));
        if self.latency.len() < MAX_LATENCY_SAMPLES {
            let delay = now_us.saturating_sub(mark.sent_us).min(u64::from(u32::MAX));
            self.latency.push(delay as u32);
        }
    }

    /// The latency samples so far, in arrival order (µs).
    pub fn latency_samples(&self) -> &[u32] {
        &self.latency
    }

    /// A snapshot.
    pub fn snapshot(&self, slot: Option<SlotInfo>) -> TrackStats {
        TrackStats {
            mid: self.mid.clone(),
            slot,
            kind: match self.codec {
                Codec::Opus => "audio".into(),
                Codec::Vp8 => "video".into(),
            },
            ssrcs: self.ssrcs.clone(),
            packets: self.packets,
            bytes: self.bytes,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            rtp: self.rtp.summary(),
            keyframes: self.keyframes,
            unmarked: self.unmarked,
            tag_switches: self.tag_switches,
            streams: self
                .streams
                .iter()
                .map(|(tag, (n, t))| {
                    (
                        *tag,
                        StreamRecv {
                            packets: *n,
                            seq: t.summary(),
                        },
                    )
                })
                .collect(),
            latency: LatencySummary::of(&self.latency),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{Mark, StreamKind, Vp8Packet, opus_payload, stream_tag, vp8_payload};

    fn track(values: &[u64]) -> SeqSummary {
        let mut t = SeqTracker::default();
        for v in values {
            t.push(*v);
        }
        t.summary()
    }

    #[test]
    fn in_order_stream_has_no_gaps() {
        let s = track(&[5, 6, 7, 8]);
        assert_eq!(
            s,
            SeqSummary {
                first: Some(5),
                highest: Some(8),
                expected: 4,
                received: 4,
                ..Default::default()
            }
        );
    }

    #[test]
    fn gaps_duplicates_and_late_arrivals() {
        // 3 and 4 skipped; 4 arrives late (retransmission); 6 twice.
        let s = track(&[1, 2, 5, 6, 4, 6, 7]);
        assert_eq!(s.expected, 7);
        assert_eq!(s.received, 6);
        assert_eq!(s.missing, 1, "3 never came");
        assert_eq!(s.gaps, 1);
        assert_eq!(s.skipped, 2);
        assert_eq!(s.late, 1);
        assert_eq!(s.duplicates, 1);
    }

    #[test]
    fn the_window_forgets_old_values_after_a_long_jump() {
        let s = track(&[0, 1, 5000, 1]);
        assert_eq!(s.gaps, 1);
        assert_eq!(s.duplicates, 0, "too old to tell: counted as late");
        assert_eq!(s.late, 1);
        // Within the window a repeat after the slot was reused is not a duplicate.
        let s = track(&[0, 1024, 0]);
        assert_eq!(s.duplicates, 0);
    }

    #[test]
    fn rtp_sequence_numbers_extend_across_wrap() {
        let mut t = SeqTracker::default();
        let mut high = None;
        for seq in [65_533u16, 65_534, 65_535, 0, 1, 2] {
            let v = extend_seq16(seq, high);
            t.push(v);
            high = t.highest();
        }
        let s = t.summary();
        assert_eq!((s.expected, s.received, s.gaps), (6, 6, 0));
        // A late packet from before the wrap still lands below.
        assert_eq!(extend_seq16(65_535, high), high.unwrap() - 3);
        // First value: room below it.
        assert_eq!(extend_seq16(0, None), 65_536);
        assert_eq!(extend_seq16(65_535, Some(65_536)), 65_535);
    }

    #[test]
    fn latency_percentiles() {
        let samples: Vec<u32> = (1..=100).collect();
        let l = LatencySummary::of(&samples);
        assert_eq!((l.count, l.min_us, l.max_us), (100, 1, 100));
        assert_eq!(l.p50_us, 51);
        assert_eq!(l.p99_us, 99);
        assert_eq!(l.mean_us, 50);
        assert_eq!(LatencySummary::of(&[]), LatencySummary::default());
    }

    #[test]
    fn recorder_counts_marks_latency_keyframes_and_switches() {
        let a = stream_tag("room", StreamKind::Video(2));
        let b = stream_tag("delegate", StreamKind::Video(2));
        let mut r = TrackRecorder::new("2", Codec::Vp8);
        let pkt = |tag, seq, start, keyframe| {
            vp8_payload(&Vp8Packet {
                start,
                keyframe,
                picture_id: seq as u16,
                size: (640, 360),
                mark: Mark {
                    stream: tag,
                    seq,
                    sent_us: 1_000_000,
                },
                len: 1100,
            })
        };
        r.record(9, 100, &pkt(a, 0, true, true), 1_000_500);
        r.record(9, 101, &pkt(a, 1, false, true), 1_000_700);
        r.record(9, 103, &pkt(a, 3, true, false), 1_000_900);
        // The server switches the slot to another speaker at a keyframe: SSRC and RTP
        // sequence stay continuous, the tag changes.
        r.record(9, 104, &pkt(b, 40, true, true), 1_001_000);
        r.record(9, 105, &[0x90, 0x80, 0x80, 0x01], 1_001_000);
        let s = r.snapshot(None);
        assert_eq!(s.kind, "video");
        assert_eq!(s.ssrcs, vec![9]);
        assert_eq!((s.packets, s.bytes), (5, 4 * 1100 + 4));
        assert_eq!((s.first_seq, s.last_seq), (Some(100), Some(105)));
        assert_eq!((s.rtp.gaps, s.rtp.missing), (1, 1));
        assert_eq!(s.keyframes, 2);
        assert_eq!(s.unmarked, 1);
        assert_eq!(s.tag_switches, 1);
        assert_eq!(s.streams[&a].packets, 3);
        assert_eq!(s.streams[&a].seq.missing, 1);
        assert_eq!(s.streams[&b].seq.first, Some(40));
        assert_eq!(s.latency.count, 4);
        assert_eq!((s.latency.min_us, s.latency.max_us), (500, 1000));
    }

    #[test]
    fn recorder_reads_opus() {
        let tag = stream_tag("room", StreamKind::Audio);
        let mut r = TrackRecorder::new("0", Codec::Opus);
        for i in 0..10u32 {
            let m = Mark {
                stream: tag,
                seq: i,
                sent_us: 10,
            };
            r.record(1, i as u16, &opus_payload(m, 100), 30);
        }
        let s = r.snapshot(None);
        assert_eq!(s.kind, "audio");
        assert_eq!(s.streams[&tag].seq.received, 10);
        assert_eq!(s.latency.p50_us, 20);
        assert_eq!(s.keyframes, 0);
    }
}
