//! Quality scores (pure): 0 to 100 per participant and direction, with the cause of each
//! drop, smoothed; and an estimated MOS for audio (ITU-T G.107 E-model).
//!
//! The packet score follows LiveKit's scorer (a simplified E-model): 100 minus a delay effect
//! (effective delay d = RTT/2 + 2·jitter: d/40, or (d − 120)/10 above 160 ms) minus a loss
//! effect. The loss effect is G.107's effective equipment impairment with no codec impairment,
//! 95·P/(P + Bpl), with a burst robustness Bpl of 4: 1 % loss costs 19 points, 2 % 32, 5 % 53,
//! 8 % 63 (poor), which is where a room would notice (video freezes, audio artefacts). Loss is
//! weighted by (packet rate / expected rate)² so that a silent microphone (Opus DTX sends few
//! packets) is not punished for the odd lost packet. Each missing simulcast layer costs 35, a
//! video freeze at the receiver 40, an encoder held back by its bandwidth estimate (the client
//! says `quality_limitation: bandwidth`) 25, a stream with no packets scores 0 ("dry").

use roundtable_signaling::{Grade, HealthCause};

/// What one direction of one participant did over a scoring interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Interval {
    /// Packets expected (all streams).
    pub expected: u64,
    /// Packets received (all streams).
    pub received: u64,
    /// Packets per second the streams would carry at full rate (for the DTX weighting);
    /// 0: no weighting.
    pub full_rate_pps: f64,
    /// Length of the interval, seconds.
    pub secs: f64,
    /// Worst interarrival jitter, ms.
    pub jitter_ms: f64,
    /// Round-trip time, ms (None: unknown, counts as 0).
    pub rtt_ms: Option<f64>,
    /// Simulcast layers published and flowing (video uplink).
    pub layers: Option<(u8, u8)>,
    /// Video freezes at the receiver in the interval.
    pub freezes: u32,
    /// Nothing arrived although the stream exists.
    pub dry: bool,
    /// Direct loss fraction, 0 to 1, when the packets are not counted here (a receiver report).
    pub reported_loss: Option<f64>,
    /// The sender's encoder says its bandwidth estimate holds it back (`client_stats`).
    pub bandwidth_limited: bool,
}

/// Bpl: burst packet-loss robustness in G.107's effective equipment impairment.
const BPL: f64 = 4.0;

/// Loss over the interval, 0 to 1.
pub fn loss(i: &Interval) -> f64 {
    if let Some(l) = i.reported_loss {
        return l.clamp(0.0, 1.0);
    }
    if i.expected == 0 {
        return 0.0;
    }
    (i.expected.saturating_sub(i.received)) as f64 / i.expected as f64
}

/// The raw score of an interval and the cause of its largest drop.
pub fn raw(i: &Interval) -> (f64, Option<HealthCause>) {
    if i.dry {
        return (0.0, Some(HealthCause::Dry));
    }
    let d = i.rtt_ms.unwrap_or(0.0) / 2.0 + 2.0 * i.jitter_ms;
    let delay = if d <= 160.0 {
        d / 40.0
    } else {
        (d - 120.0) / 10.0
    };
    let p = loss(i) * 100.0;
    let weight = if i.full_rate_pps > 0.0 && i.secs > 0.0 {
        let rate = i.received as f64 / i.secs;
        (rate / i.full_rate_pps).clamp(0.0, 1.0).powi(2)
    } else {
        1.0
    };
    let loss_effect = 95.0 * p / (p + BPL) * weight;
    let layer_effect = match i.layers {
        Some((published, flowing)) if flowing < published => 35.0 * f64::from(published - flowing),
        _ => 0.0,
    };
    let freeze_effect = 40.0 * f64::from(i.freezes.min(2));
    let bitrate_effect = if i.bandwidth_limited { 25.0 } else { 0.0 };
    let effects = [
        (bitrate_effect, HealthCause::Bitrate),
        (loss_effect, HealthCause::Loss),
        (delay, HealthCause::Delay),
        (layer_effect, HealthCause::Layer),
        (freeze_effect, HealthCause::Freeze),
    ];
    let total: f64 = effects.iter().map(|e| e.0).sum();
    let score = (100.0 - total).clamp(0.0, 100.0);
    let cause = effects
        .iter()
        .filter(|e| e.0 >= 1.0)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|e| e.1);
    (score, cause)
}

/// Grade of a score: above 80 excellent, above 40 good, else poor.
pub fn grade(score: u8) -> Grade {
    match score {
        81.. => Grade::Excellent,
        41..=80 => Grade::Good,
        _ => Grade::Poor,
    }
}

/// Estimated MOS of an audio stream, by the ITU-T G.107 E-model with Opus-like parameters
/// (Ie 0, Bpl 10): R = 93.2 − Id − Ie,eff, MOS = 1 + 0.035R + 7·10⁻⁶·R(R − 60)(100 − R).
pub fn mos(loss_fraction: f64, rtt_ms: f64, jitter_ms: f64) -> f64 {
    // One-way mouth-to-ear delay: half the RTT, a jitter buffer of two jitters, 20 ms framing.
    let d = rtt_ms / 2.0 + 2.0 * jitter_ms + 20.0;
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let p = loss_fraction.clamp(0.0, 1.0) * 100.0;
    let ie = 95.0 * p / (p + 10.0);
    let r = (93.2 - id - ie).clamp(0.0, 100.0);
    let m = 1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r);
    m.clamp(1.0, 4.5)
}

/// A smoothed score: falls fast, recovers slowly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smoothed {
    value: f64,
}

impl Default for Smoothed {
    fn default() -> Smoothed {
        Smoothed { value: 100.0 }
    }
}

/// Weight of a new lower value.
const FALL: f64 = 0.7;
/// Weight of a new higher value.
const RISE: f64 = 0.25;

impl Smoothed {
    /// Takes a raw score; a dry stream drops to 0 at once.
    pub fn push(&mut self, raw: f64, dry: bool) -> u8 {
        if dry {
            self.value = 0.0;
        } else {
            let w = if raw < self.value { FALL } else { RISE };
            self.value += w * (raw - self.value);
        }
        self.get()
    }

    /// The score now.
    pub fn get(&self) -> u8 {
        self.value.round().clamp(0.0, 100.0) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixtures: an interval and the raw score (±1) and cause expected of it.
    #[test]
    fn fixtures_score_as_expected() {
        let clean = Interval {
            expected: 500,
            received: 500,
            secs: 1.0,
            jitter_ms: 2.0,
            rtt_ms: Some(20.0),
            ..Interval::default()
        };
        let with = |f: &dyn Fn(&mut Interval)| {
            let mut i = clean;
            f(&mut i);
            i
        };
        let cases: Vec<(&str, Interval, f64, Option<HealthCause>)> = vec![
            ("clean LAN", clean, 99.6, None),
            (
                "1 % loss",
                with(&|i| i.received = 495),
                80.6,
                Some(HealthCause::Loss),
            ),
            (
                "2 % loss",
                with(&|i| i.received = 490),
                67.9,
                Some(HealthCause::Loss),
            ),
            (
                "5 % loss",
                with(&|i| i.received = 475),
                46.8,
                Some(HealthCause::Loss),
            ),
            (
                "8 % loss: poor",
                with(&|i| i.received = 460),
                36.3,
                Some(HealthCause::Loss),
            ),
            (
                "300 ms RTT, 40 ms jitter",
                with(&|i| {
                    i.rtt_ms = Some(300.0);
                    i.jitter_ms = 40.0;
                }),
                88.0,
                Some(HealthCause::Delay),
            ),
            (
                "a layer missing",
                with(&|i| i.layers = Some((3, 2))),
                64.6,
                Some(HealthCause::Layer),
            ),
            (
                "a freeze",
                with(&|i| i.freezes = 1),
                59.6,
                Some(HealthCause::Freeze),
            ),
            (
                "held back by bandwidth",
                with(&|i| i.bandwidth_limited = true),
                74.6,
                Some(HealthCause::Bitrate),
            ),
            ("dry", with(&|i| i.dry = true), 0.0, Some(HealthCause::Dry)),
            (
                "DTX: 2 of 5 packets lost at 5 pps of 50 is not punished much",
                Interval {
                    expected: 5,
                    received: 3,
                    secs: 1.0,
                    full_rate_pps: 50.0,
                    ..Interval::default()
                },
                99.6,
                None,
            ),
            (
                "a receiver report of 10 % loss",
                with(&|i| i.reported_loss = Some(0.10)),
                31.7,
                Some(HealthCause::Loss),
            ),
        ];
        for (name, i, want, cause) in cases {
            let (got, why) = raw(&i);
            assert!(
                (got - want).abs() <= 1.0,
                "{name}: {got:.1}, expected {want}"
            );
            assert_eq!(why, cause, "{name}");
        }
    }

    #[test]
    fn grades() {
        assert_eq!(grade(100), Grade::Excellent);
        assert_eq!(grade(81), Grade::Excellent);
        assert_eq!(grade(80), Grade::Good);
        assert_eq!(grade(41), Grade::Good);
        assert_eq!(grade(40), Grade::Poor);
        assert_eq!(grade(0), Grade::Poor);
    }

    #[test]
    fn mos_fixtures() {
        // A clean call is near the E-model's best, 4.4; loss and delay bring it down.
        let clean = mos(0.0, 20.0, 2.0);
        assert!((4.3..=4.45).contains(&clean), "{clean}");
        let lossy = mos(0.05, 20.0, 2.0);
        assert!((2.9..=3.5).contains(&lossy), "5 % loss: {lossy}");
        let far = mos(0.0, 600.0, 20.0);
        assert!((3.2..=3.9).contains(&far), "600 ms RTT: {far}");
        assert_eq!(mos(1.0, 0.0, 0.0), 1.0);
        assert!(mos(0.0, 1e9, 1e9) >= 1.0);
    }

    #[test]
    fn smoothing_falls_fast_and_recovers_slowly() {
        let mut s = Smoothed::default();
        let falls: Vec<u8> = (0..3).map(|_| s.push(36.0, false)).collect();
        assert_eq!(falls, vec![55, 42, 38], "poor after three intervals");
        let mut rises = Vec::new();
        for _ in 0..3 {
            rises.push(s.push(100.0, false));
        }
        assert!(rises[0] < 60 && rises[2] < 80, "recovers slowly: {rises:?}");
        for _ in 0..20 {
            s.push(100.0, false);
        }
        assert!(s.get() >= 99);
        assert_eq!(s.push(100.0, true), 0, "dry drops at once");
    }

    proptest::proptest! {
        #[test]
        fn scores_stay_in_range_and_never_rise_with_more_loss(
            expected in 0u64..10_000,
            lost_a in 0u64..10_000,
            extra in 0u64..10_000,
            jitter in 0.0f64..10_000.0,
            rtt in proptest::option::of(0.0f64..100_000.0),
            freezes in 0u32..10,
        ) {
            let a = Interval {
                expected,
                received: expected.saturating_sub(lost_a),
                secs: 1.0,
                jitter_ms: jitter,
                rtt_ms: rtt,
                freezes,
                ..Interval::default()
            };
            let b = Interval { received: a.received.saturating_sub(extra), ..a };
            let (sa, _) = raw(&a);
            let (sb, _) = raw(&b);
            proptest::prop_assert!((0.0..=100.0).contains(&sa));
            proptest::prop_assert!(sb <= sa + 1e-9);
            let m = mos(loss(&a), rtt.unwrap_or(0.0), jitter);
            proptest::prop_assert!((1.0..=4.5).contains(&m));
        }
    }
}
