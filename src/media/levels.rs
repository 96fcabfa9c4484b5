//! # Voice activity from RFC 6464 audio levels (pure)
//!
//! Every Opus packet from a browser carries the sender's audio level in the
//! `ssrc-audio-level` header extension: 0 (loudest, 0 dBov) to 127 (silence, -127 dBov). A
//! [`VoiceActivity`] per published microphone turns those into a speaking / not speaking state,
//! in windows of [`WINDOW_MS`]: a window in which at least half the packets are louder than
//! [`ACTIVE_LEVEL`] starts speech; two windows in a row with less than a fifth end it (so a
//! breath between words does not flap the state). A window with no packets at all (the sender
//! stopped, or DTX with nothing to send) counts as quiet. The state is read before the floor
//! gate, so a delegate talking without the floor is seen too.
//!
//! LiveKit uses the same extension with a 500 ms update and a threshold of 30-35 (-30 to -35
//! dBov); we take 40 because a delegate's laptop microphone at arm's length often sits there.

/// Milliseconds on the caller's clock.
pub type Millis = i64;

/// Length of a measuring window.
pub const WINDOW_MS: Millis = 500;

/// Levels at or below this (louder than -40 dBov) count as voice.
pub const ACTIVE_LEVEL: u8 = 40;

/// A change of speaking state, with the window's mean level (0 loud … 127 silent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Speech {
    /// Speaking now.
    pub speaking: bool,
    /// Mean level of the window that decided it, -dBov.
    pub level: u8,
}

/// Voice activity of one audio stream. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct VoiceActivity {
    window_start: Option<Millis>,
    packets: u32,
    active: u32,
    level_sum: u32,
    speaking: bool,
    quiet_windows: u8,
    /// Mean level of the last closed window (127 when it had no packets).
    last_level: u8,
}

impl VoiceActivity {
    /// A stream that has not spoken.
    pub fn new() -> VoiceActivity {
        VoiceActivity {
            last_level: 127,
            ..VoiceActivity::default()
        }
    }

    /// Whether it is speaking now.
    pub fn speaking(&self) -> bool {
        self.speaking
    }

    /// Mean level of the last closed window, -dBov (127: silence or nothing received).
    pub fn level(&self) -> u8 {
        self.last_level
    }

    /// One packet's level (0..=127; larger values are clamped).
    pub fn packet(&mut self, now: Millis, level: u8) -> Option<Speech> {
        let change = self.tick(now);
        self.window_start.get_or_insert(now);
        let level = level.min(127);
        self.packets += 1;
        self.level_sum += u32::from(level);
        if level <= ACTIVE_LEVEL {
            self.active += 1;
        }
        change
    }

    /// Closes every window that has ended by `now` (call it regularly: a stream that stops
    /// sending must stop speaking).
    pub fn tick(&mut self, now: Millis) -> Option<Speech> {
        let mut change = None;
        while let Some(start) = self.window_start {
            if now - start < WINDOW_MS {
                break;
            }
            if let Some(c) = self.close_window() {
                change = Some(c);
            }
            // Skip empty windows at once: one more is enough to register the silence.
            let next = start + WINDOW_MS;
            self.window_start = if now - next >= WINDOW_MS && !self.speaking {
                None
            } else {
                Some(next)
            };
        }
        change
    }

    fn close_window(&mut self) -> Option<Speech> {
        let (packets, active) = (self.packets, self.active);
        self.last_level = self
            .level_sum
            .checked_div(packets)
            .map_or(127, |mean| mean.min(127) as u8);
        self.packets = 0;
        self.active = 0;
        self.level_sum = 0;
        let was = self.speaking;
        if !self.speaking {
            if packets > 0 && active * 2 >= packets {
                self.speaking = true;
                self.quiet_windows = 0;
            }
        } else if packets == 0 || active * 5 < packets {
            self.quiet_windows += 1;
            if self.quiet_windows >= 2 {
                self.speaking = false;
            }
        } else {
            self.quiet_windows = 0;
        }
        (self.speaking != was).then_some(Speech {
            speaking: self.speaking,
            level: self.last_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds 20 ms packets of `level` from `from` for `ms`; returns the changes.
    fn feed(v: &mut VoiceActivity, from: Millis, ms: Millis, level: u8) -> Vec<(Millis, Speech)> {
        let mut out = Vec::new();
        let mut t = from;
        while t < from + ms {
            if let Some(c) = v.packet(t, level) {
                out.push((t, c));
            }
            t += 20;
        }
        out
    }

    #[test]
    fn speech_starts_within_a_window_and_ends_after_two_quiet_ones() {
        let mut v = VoiceActivity::new();
        assert!(
            feed(&mut v, 0, 2_000, 127).is_empty(),
            "silence stays silent"
        );
        let on = feed(&mut v, 2_000, 2_000, 25);
        assert_eq!(on.len(), 1, "{on:?}");
        assert!(on[0].1.speaking);
        assert!(
            on[0].0 <= 2_000 + 2 * WINDOW_MS,
            "within two windows: {on:?}"
        );
        assert_eq!(on[0].1.level, 25);
        let off = feed(&mut v, 4_000, 2_000, 127);
        assert_eq!(off.len(), 1, "{off:?}");
        assert!(!off[0].1.speaking);
        assert!(off[0].0 <= 4_000 + 3 * WINDOW_MS, "{off:?}");
    }

    #[test]
    fn a_short_pause_between_words_does_not_end_speech() {
        let mut v = VoiceActivity::new();
        feed(&mut v, 0, 1_000, 20);
        assert!(v.speaking());
        // 400 ms of breath: at most one quiet window.
        assert!(feed(&mut v, 1_000, 400, 127).is_empty());
        assert!(feed(&mut v, 1_400, 1_000, 20).is_empty());
        assert!(v.speaking());
    }

    #[test]
    fn a_stream_that_stops_sending_stops_speaking_on_tick() {
        let mut v = VoiceActivity::new();
        feed(&mut v, 0, 1_000, 20);
        assert!(v.speaking());
        let mut changes = Vec::new();
        for t in (1_000..4_000).step_by(250) {
            changes.extend(v.tick(t));
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(!changes[0].speaking);
        assert_eq!(v.level(), 127);
    }

    #[test]
    fn background_noise_below_the_threshold_is_not_speech() {
        let mut v = VoiceActivity::new();
        assert!(feed(&mut v, 0, 5_000, 55).is_empty());
        assert!(!v.speaking());
        assert_eq!(v.level(), 55);
    }

    #[test]
    fn out_of_range_levels_and_time_going_backwards_do_not_panic() {
        let mut v = VoiceActivity::new();
        let _ = v.packet(1_000, 255);
        let _ = v.packet(0, 0);
        let _ = v.tick(-5);
        let _ = v.tick(i64::MAX / 2);
        let _ = v.packet(i64::MAX / 2 + 1, 10);
    }
}
