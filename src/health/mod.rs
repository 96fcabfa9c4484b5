//! # Stream health (pure): scores, alerts, history
//!
//! A [`Monitor`] per meeting, owned by the meeting task. It takes the engine's connection
//! samples ([`crate::media::meter::LinkSample`], every 500 ms), the clients' own reports
//! (`client_stats`), speech changes and the floor holders, all with the time as an input, and
//! gives each participant a score per direction ([`score`]) and raises and clears alerts. It
//! does no I/O: the meeting sends what it returns.
//!
//! Alert rules (each with a time, a cause, and an acknowledge):
//! - `dry`: a published stream with no packet for [`DRY_MS`] (3 s);
//! - `frozen`: the client reports a new video freeze, or no frames while video is sent to it;
//! - `loss`: loss over 5 % for 10 s ([`LOSS_ALERT_PCT`], [`LOSS_ALERT_MS`]);
//! - `dead_mic`: a floor holder's microphone silent (level ≥ [`SILENT_LEVEL`] -dBov, or no
//!   packets) for [`DEAD_MIC_MS`] (10 s);
//! - `sound_without_floor`: speech detected from someone whose audio the floor gate holds back;
//! - `relay_only`: the client's selected candidate is a TURN relay;
//! - `cpu_high`: the server's CPU over 80 % of a core for 5 s.

pub mod cpu;
pub mod score;

use std::collections::{BTreeMap, HashMap, VecDeque};

use roundtable_signaling::{
    AlertInfo, AlertKind, CandidateType, ClientReport, Direction, ForceLayer, Millis,
    ParticipantHealth, StreamHealth,
};

use crate::media::meter::{self, LinkSample};
use score::{Interval, Smoothed};

/// A published stream with no packet for this long is dry.
pub const DRY_MS: i64 = 3_000;
/// Loss alert threshold, percent.
pub const LOSS_ALERT_PCT: f64 = 5.0;
/// Loss must stay over the threshold this long.
pub const LOSS_ALERT_MS: i64 = 10_000;
/// A floor holder's microphone this quiet (RFC 6464 level, -dBov) counts as silent.
pub const SILENT_LEVEL: u8 = 90;
/// A floor holder's microphone silent this long is dead.
pub const DEAD_MIC_MS: i64 = 10_000;
/// CPU alert threshold, percent of one core, and how long.
pub const CPU_ALERT_PCT: f64 = 80.0;
/// How long the CPU must stay high.
pub const CPU_ALERT_MS: i64 = 5_000;
/// Scores are kept this many reports back (5 minutes at one report every 2 s).
pub const HISTORY_POINTS: usize = 150;
/// Alerts kept (the log is bounded; the oldest cleared ones go first).
pub const MAX_ALERTS: usize = 200;
/// Opus at 20 ms frames.
const AUDIO_PPS: f64 = 50.0;

/// An alert's identity while it is on: its kind, whose, which direction.
type AlertKey = (AlertKind, Option<String>, Option<Direction>);

/// A participant's media connection, as the meeting knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Their camera and microphone (or the room's program).
    Publish,
    /// Their screen share.
    Screen,
    /// What they receive.
    Subscribe,
}

#[derive(Debug, Default)]
struct Dir {
    /// The newest sample.
    latest: Option<LinkSample>,
    /// The sample the last score was computed up to.
    scored: Option<LinkSample>,
    smooth: Smoothed,
    shown: Option<StreamHealth>,
    history: VecDeque<u8>,
    /// The loss of each of the last 10 scoring intervals (1 s), percent, newest last.
    losses: VecDeque<f64>,
}

#[derive(Debug, Default)]
struct Part {
    up: Dir,
    screen: Option<LinkSample>,
    down: Dir,
    client: Option<ClientReport>,
    /// Freezes the client had reported at the last score.
    freezes_scored: Option<u32>,
    freezes_new: u32,
    force: Option<ForceLayer>,
    level: Option<u8>,
    silent_since: Option<i64>,
    speaking_unheard: bool,
    /// The frozen alert is cleared this long after the last freeze.
    last_freeze_at: Option<i64>,
}

/// Everything a tick produced.
#[derive(Debug, Default)]
pub struct TickOut {
    /// Alerts raised, cleared or changed, to announce.
    pub changes: Vec<AlertInfo>,
}

/// Why an acknowledge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// No alert with that id.
    #[error("no alert {0}")]
    UnknownAlert(u64),
    /// Already acknowledged.
    #[error("alert {0} is already acknowledged")]
    AlreadyAcked(u64),
    /// A value out of range in a client report.
    #[error("{0}")]
    BadReport(String),
}

/// The stream health of one meeting.
#[derive(Debug, Default)]
pub struct Monitor {
    parts: BTreeMap<String, Part>,
    alerts: BTreeMap<u64, AlertInfo>,
    /// Open alert per (kind, participant, direction).
    open: HashMap<AlertKey, u64>,
    next_alert: u64,
    cpu_high_since: Option<i64>,
    cpu_pct: f64,
}

impl Monitor {
    /// An empty monitor; alert ids start at 1.
    pub fn new() -> Monitor {
        Monitor::first_alert_id(1)
    }

    /// An empty monitor whose alert ids start at `first` (the meeting passes its clock's
    /// milliseconds, so ids never repeat across restarts of the server).
    pub fn first_alert_id(first: u64) -> Monitor {
        Monitor {
            next_alert: first.max(1),
            ..Monitor::default()
        }
    }

    /// A connection sample. `now` is the meeting's clock (alert times); the sample's own
    /// times are the engine's.
    pub fn sample(
        &mut self,
        now: Millis,
        participant: &str,
        link: Link,
        sample: LinkSample,
        out: &mut TickOut,
    ) {
        let part = self.parts.entry(participant.to_owned()).or_default();
        match link {
            Link::Publish => {
                // Dry: the audio, or every layer of the video, sent before and has been quiet
                // for DRY_MS (a browser pauses single simulcast layers when its bandwidth
                // estimate falls: that is a layer, not a dry stream).
                let dry = dry_stream(&sample);
                if let Some(level) = sample
                    .streams
                    .iter()
                    .filter(|s| !s.video)
                    .find_map(|s| s.counters.level)
                {
                    part.level = Some(level);
                }
                let detail = dry.map(|s| {
                    format!(
                        "no {} packets for {:.1} s",
                        if s.video { "video" } else { "audio" },
                        (sample.at_ms - s.counters.last_packet_ms.unwrap_or(sample.at_ms)) as f64
                            / 1000.0
                    )
                });
                part.up.latest = Some(sample);
                let key = (
                    AlertKind::Dry,
                    Some(participant.to_owned()),
                    Some(Direction::Up),
                );
                self.set(now, key, detail, out);
            }
            Link::Screen => part.screen = Some(sample),
            Link::Subscribe => {
                let relay = sample.candidate == Some(CandidateType::Relay);
                part.down.latest = Some(sample);
                let key = (AlertKind::RelayOnly, Some(participant.to_owned()), None);
                self.set(
                    now,
                    key,
                    relay.then(|| "the connection goes through a TURN relay".to_owned()),
                    out,
                );
            }
        }
    }

    /// A client's own report (validated by the caller with [`validate`]).
    pub fn client_report(&mut self, participant: &str, report: ClientReport) {
        let part = self.parts.entry(participant.to_owned()).or_default();
        if let Some(f) = report.down.as_ref().and_then(|d| d.freeze_count) {
            let before = part.freezes_scored.unwrap_or(f);
            if f > before {
                part.freezes_new += f - before;
            }
            part.freezes_scored = Some(f);
        }
        part.client = Some(report);
    }

    /// Speech detected or ended; `heard`: the floor gate passes it.
    pub fn speech(
        &mut self,
        now: Millis,
        participant: &str,
        speaking: bool,
        heard: bool,
        out: &mut TickOut,
    ) {
        let part = self.parts.entry(participant.to_owned()).or_default();
        part.speaking_unheard = speaking && !heard;
        let on = part.speaking_unheard;
        let key = (
            AlertKind::SoundWithoutFloor,
            Some(participant.to_owned()),
            Some(Direction::Up),
        );
        self.set(
            now,
            key,
            on.then(|| "speech from a microphone the floor gate holds back".to_owned()),
            out,
        );
    }

    /// A participant left: their alerts clear, their row goes.
    pub fn remove(&mut self, now: Millis, participant: &str, out: &mut TickOut) {
        self.parts.remove(participant);
        let keys: Vec<_> = self
            .open
            .keys()
            .filter(|k| k.1.as_deref() == Some(participant))
            .cloned()
            .collect();
        for k in keys {
            self.set(now, k, None, out);
        }
    }

    /// A link went away (unpublished): its direction is no longer shown and its alerts clear.
    pub fn link_closed(&mut self, now: Millis, participant: &str, link: Link, out: &mut TickOut) {
        let dir = match link {
            Link::Publish => Direction::Up,
            Link::Subscribe => Direction::Down,
            Link::Screen => {
                if let Some(p) = self.parts.get_mut(participant) {
                    p.screen = None;
                }
                return;
            }
        };
        if let Some(p) = self.parts.get_mut(participant) {
            match dir {
                Direction::Up => {
                    p.up = Dir::default();
                    p.level = None;
                    p.silent_since = None;
                }
                Direction::Down => p.down = Dir::default(),
            }
        }
        let keys: Vec<_> = self
            .open
            .keys()
            .filter(|k| k.1.as_deref() == Some(participant) && k.2 == Some(dir))
            .cloned()
            .collect();
        for k in keys {
            self.set(now, k, None, out);
        }
    }

    /// A technician's override, shown on the row.
    pub fn set_force(&mut self, participant: &str, force: ForceLayer) {
        let p = self.parts.entry(participant.to_owned()).or_default();
        p.force = (force != ForceLayer::Auto).then_some(force);
    }

    /// Scores every participant from the samples since the last tick and evaluates the
    /// time-based alerts. Call it once a second. `holders`: who holds the floor (dead mic).
    /// `report`: also append a history point (every 2 s).
    pub fn tick(&mut self, now: Millis, holders: &[String], cpu_pct: f64, report: bool) -> TickOut {
        let mut out = TickOut::default();
        self.cpu_pct = cpu_pct;
        // CPU.
        if cpu_pct > CPU_ALERT_PCT {
            self.cpu_high_since.get_or_insert(now);
        } else if cpu_pct < CPU_ALERT_PCT - 10.0 {
            self.cpu_high_since = None;
        }
        let cpu = match self.cpu_high_since {
            Some(t) if now - t >= CPU_ALERT_MS => {
                Some(format!("server CPU at {cpu_pct:.0} % of a core"))
            }
            Some(_) => self
                .open
                .contains_key(&(AlertKind::CpuHigh, None, None))
                .then(|| format!("server CPU at {cpu_pct:.0} % of a core")),
            None => None,
        };
        self.set(now, (AlertKind::CpuHigh, None, None), cpu, &mut out);
        let names: Vec<String> = self.parts.keys().cloned().collect();
        for name in names {
            let mut pending: Vec<(AlertKey, Option<String>)> = Vec::new();
            let holder = holders.contains(&name);
            let open_loss = |d: Direction| {
                self.open
                    .contains_key(&(AlertKind::Loss, Some(name.clone()), Some(d)))
            };
            let (open_up, open_down) = (open_loss(Direction::Up), open_loss(Direction::Down));
            let Some(part) = self.parts.get_mut(&name) else {
                continue;
            };
            // Granted while speaking: their audio is heard now.
            if holder && part.speaking_unheard {
                part.speaking_unheard = false;
                pending.push((
                    (
                        AlertKind::SoundWithoutFloor,
                        Some(name.clone()),
                        Some(Direction::Up),
                    ),
                    None,
                ));
            }
            let freezes = std::mem::take(&mut part.freezes_new);
            if freezes > 0 {
                part.last_freeze_at = Some(now);
            }
            let client_fps0 = part
                .client
                .as_ref()
                .and_then(|c| c.down.as_ref())
                .and_then(|d| d.fps)
                .is_some_and(|f| f == 0.0)
                && part.client.as_ref().is_some_and(|c| now - c.at <= 5_000);
            // Up. The RTT is the client's, measured on what we send it.
            let rtt = part.down.latest.as_ref().and_then(|s| s.rtt_ms);
            let limited = part
                .client
                .as_ref()
                .filter(|c| now - c.at <= 5_000)
                .and_then(|c| c.up.as_ref()?.quality_limitation)
                == Some(roundtable_signaling::QualityLimitation::Bandwidth);
            if let Some(h) = score_up(&mut part.up, rtt, limited, report) {
                let loss = h.loss_pct;
                part.up.shown = Some(h);
                lossy(&mut part.up, now, loss);
                pending.push((
                    (AlertKind::Loss, Some(name.clone()), Some(Direction::Up)),
                    loss_alert(&part.up, open_up, "uplink"),
                ));
            }
            // Down.
            if let Some(h) = score_down(&mut part.down, freezes, report) {
                let loss = h.loss_pct;
                part.down.shown = Some(h);
                lossy(&mut part.down, now, loss);
                pending.push((
                    (AlertKind::Loss, Some(name.clone()), Some(Direction::Down)),
                    loss_alert(&part.down, open_down, "downlink"),
                ));
                let frozen = part.last_freeze_at.is_some_and(|t| now - t < 10_000)
                    || (client_fps0 && part.down.shown.as_ref().is_some_and(|s| s.kbps > 50.0));
                pending.push((
                    (AlertKind::Frozen, Some(name.clone()), Some(Direction::Down)),
                    frozen.then(|| {
                        if freezes > 0 {
                            format!("the client reports {freezes} new video freeze(s)")
                        } else {
                            "the client decodes no video frames although video is sent".to_owned()
                        }
                    }),
                ));
            }
            // Dead mic: a holder whose microphone is silent or sends nothing.
            let audio = part
                .up
                .latest
                .as_ref()
                .and_then(|s| s.streams.iter().find(|x| !x.video).copied());
            let silent = match audio {
                None => false,
                Some(a) => {
                    let dry = part.up.latest.as_ref().is_some_and(|s| {
                        a.counters
                            .last_packet_ms
                            .is_none_or(|t| s.at_ms - t >= 1_000)
                    });
                    dry || part.level.is_none_or(|l| l >= SILENT_LEVEL)
                }
            };
            if holder && silent {
                part.silent_since.get_or_insert(now);
            } else {
                part.silent_since = None;
            }
            let dead = part
                .silent_since
                .filter(|t| now - t >= DEAD_MIC_MS)
                .map(|t| {
                    format!(
                        "the floor holder's microphone has been silent for {} s",
                        (now - t) / 1000
                    )
                });
            pending.push((
                (AlertKind::DeadMic, Some(name.clone()), Some(Direction::Up)),
                dead,
            ));
            for (key, detail) in pending {
                // A loss alert stays on with its first detail until cleared.
                self.set(now, key, detail, &mut out);
            }
        }
        out
    }

    /// Acknowledges an alert.
    pub fn ack(&mut self, id: u64, by: &str, now: Millis) -> Result<AlertInfo, HealthError> {
        let a = self
            .alerts
            .get_mut(&id)
            .ok_or(HealthError::UnknownAlert(id))?;
        if a.acked_by.is_some() {
            return Err(HealthError::AlreadyAcked(id));
        }
        a.acked_by = Some(by.to_owned());
        a.acked_at = Some(now);
        Ok(a.clone())
    }

    /// An alert by id.
    pub fn alert(&self, id: u64) -> Option<&AlertInfo> {
        self.alerts.get(&id)
    }

    /// Alerts still on or not yet acknowledged, oldest first.
    pub fn open_alerts(&self) -> Vec<AlertInfo> {
        self.alerts
            .values()
            .filter(|a| a.cleared_at.is_none() || a.acked_by.is_none())
            .cloned()
            .collect()
    }

    /// Every alert kept, oldest first (for the minutes and the history).
    pub fn all_alerts(&self) -> impl Iterator<Item = &AlertInfo> {
        self.alerts.values()
    }

    /// The rows of the `health` message.
    pub fn rows(&self) -> Vec<ParticipantHealth> {
        self.parts
            .iter()
            .filter(|(_, p)| p.up.shown.is_some() || p.down.shown.is_some())
            .map(|(id, p)| ParticipantHealth {
                participant: id.clone(),
                // What only the client knows (the size it sends, what it decodes) comes
                // from its last report.
                up: p.up.shown.clone().map(|mut h| {
                    h.history = p.up.history.iter().copied().collect();
                    h.height = p.client.as_ref().and_then(|c| c.up.as_ref()?.height);
                    h
                }),
                down: p.down.shown.clone().map(|mut h| {
                    h.history = p.down.history.iter().copied().collect();
                    let d = p.client.as_ref().and_then(|c| c.down.as_ref());
                    h.fps = d.and_then(|d| d.fps);
                    h.height = d.and_then(|d| d.height);
                    h
                }),
                candidate: p
                    .down
                    .latest
                    .as_ref()
                    .and_then(|s| s.candidate)
                    .or_else(|| p.client.as_ref().and_then(|c| c.candidate)),
                level: p.level,
                client: p.client.clone(),
                force: p.force,
            })
            .collect()
    }

    /// The CPU figure of the last tick.
    pub fn cpu_pct(&self) -> f64 {
        self.cpu_pct
    }

    /// Raises, keeps or clears the alert `key`: `detail` Some means the condition holds.
    fn set(&mut self, now: Millis, key: AlertKey, detail: Option<String>, out: &mut TickOut) {
        match (self.open.get(&key).copied(), detail) {
            (None, Some(detail)) => {
                let id = self.next_alert;
                self.next_alert += 1;
                let floor = matches!(key.0, AlertKind::DeadMic | AlertKind::SoundWithoutFloor);
                let a = AlertInfo {
                    id,
                    kind: key.0,
                    participant: key.1.clone(),
                    direction: key.2,
                    detail,
                    raised_at: now,
                    cleared_at: None,
                    acked_by: None,
                    acked_at: None,
                    floor,
                };
                out.changes.push(a.clone());
                self.alerts.insert(id, a);
                self.open.insert(key, id);
                self.trim();
            }
            (Some(id), None) => {
                self.open.remove(&key);
                if let Some(a) = self.alerts.get_mut(&id) {
                    a.cleared_at = Some(now);
                    out.changes.push(a.clone());
                }
            }
            _ => {}
        }
    }

    /// Keeps at most [`MAX_ALERTS`], dropping the oldest cleared ones; alerts still on are
    /// never dropped (their condition would raise them again at once).
    fn trim(&mut self) {
        while self.alerts.len() > MAX_ALERTS {
            let oldest = self
                .alerts
                .values()
                .find(|a| a.cleared_at.is_some())
                .map(|a| a.id);
            match oldest {
                Some(id) => {
                    self.alerts.remove(&id);
                }
                None => break,
            }
        }
    }
}

/// A kind of stream that has gone dry: the audio, or the video when every layer is quiet (the
/// most recently active stream of that kind is returned).
fn dry_stream(s: &LinkSample) -> Option<&meter::StreamSample> {
    [false, true].into_iter().find_map(|video| {
        let latest = s
            .streams
            .iter()
            .filter(|x| x.video == video && x.counters.last_packet_ms.is_some())
            .max_by_key(|x| x.counters.last_packet_ms)?;
        let t = latest.counters.last_packet_ms?;
        (s.at_ms - t >= DRY_MS).then_some(latest)
    })
}

/// Keeps the last [`LOSS_ALERT_MS`] of per-second losses.
fn lossy(d: &mut Dir, _now: Millis, loss_pct: f64) {
    let n = (LOSS_ALERT_MS / 1000) as usize;
    if d.losses.len() == n {
        d.losses.pop_front();
    }
    d.losses.push_back(loss_pct);
}

/// The loss alert's condition. Raised when the loss has been over [`LOSS_ALERT_PCT`] for
/// [`LOSS_ALERT_MS`]: the mean of the last 10 s over 5 %, and every one of those seconds over
/// half that (sustained, not a burst that lifts the mean). Once on, it stays on until the last
/// 5 s average under half the threshold.
fn loss_alert(d: &Dir, open: bool, what: &str) -> Option<String> {
    let n = (LOSS_ALERT_MS / 1000) as usize;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let all: Vec<f64> = d.losses.iter().copied().collect();
    let on = if open {
        let recent = &all[all.len().saturating_sub(5)..];
        mean(recent) >= LOSS_ALERT_PCT / 2.0
    } else {
        all.len() == n
            && mean(&all) > LOSS_ALERT_PCT
            && all.iter().all(|x| *x > LOSS_ALERT_PCT / 2.0)
    };
    on.then(|| {
        format!(
            "{what} loss {:.1} % over the last {} s (alert over {LOSS_ALERT_PCT} % for {} s)",
            mean(&all),
            all.len(),
            LOSS_ALERT_MS / 1000
        )
    })
}

/// Scores the uplink from the samples since the last score.
fn score_up(d: &mut Dir, rtt_ms: Option<f64>, limited: bool, report: bool) -> Option<StreamHealth> {
    let now = d.latest.clone()?;
    if d.scored.as_ref().is_some_and(|s| s.at_ms == now.at_ms) {
        // No sample since the last score (the connection is not up): nothing new to judge.
        return None;
    }
    let prev = d.scored.replace(now.clone());
    let secs = prev
        .as_ref()
        .map_or(0.0, |p| (now.at_ms - p.at_ms) as f64 / 1000.0);
    let before = |ssrc: u32| {
        prev.as_ref()
            .and_then(|p| p.streams.iter().find(|s| s.ssrc == ssrc))
            .map(|s| s.counters)
            .unwrap_or_default()
    };
    let mut i = Interval {
        secs,
        ..Interval::default()
    };
    let (mut bytes, mut frames, mut fps_secs) = (0u64, 0u64, 0.0);
    let mut top: Option<(u8, u64)> = None;
    let (mut published, mut flowing) = (0u8, 0u8);
    let mut audio_only = true;
    for s in &now.streams {
        let b = before(s.ssrc);
        let c = s.counters;
        i.expected += c.expected.saturating_sub(b.expected);
        i.received += c.packets.saturating_sub(b.packets);
        bytes += c.bytes.saturating_sub(b.bytes);
        i.jitter_ms = i.jitter_ms.max(c.jitter_ms);
        if s.video {
            audio_only = false;
            published += 1;
            let got = c.packets.saturating_sub(b.packets);
            if got > 0 {
                flowing += 1;
            }
            if top.is_none_or(|(l, _)| s.layer > l) && got > 0 {
                top = Some((s.layer, c.frames.saturating_sub(b.frames)));
            }
        }
    }
    i.dry = dry_stream(&now).is_some();
    if let Some((_, f)) = top {
        frames = f;
        fps_secs = secs;
    }
    if published > 1 {
        i.layers = Some((published, flowing));
    }
    if audio_only {
        i.full_rate_pps = AUDIO_PPS;
    }
    i.rtt_ms = now.rtt_ms.or(rtt_ms);
    i.bandwidth_limited = limited && !audio_only;
    if prev.is_none() || secs <= 0.0 {
        return d.shown.clone().or_else(|| Some(fresh(&i)));
    }
    let (raw, cause) = score::raw(&i);
    let value = d.smooth.push(raw, i.dry);
    if report {
        push_history(&mut d.history, value);
    }
    let loss = score::loss(&i);
    Some(StreamHealth {
        score: value,
        grade: score::grade(value),
        cause: if value < 95 { cause } else { None },
        mos: audio_only.then(|| round2(score::mos(loss, i.rtt_ms.unwrap_or(0.0), i.jitter_ms))),
        loss_pct: round1(loss * 100.0),
        jitter_ms: round1(i.jitter_ms),
        rtt_ms: i.rtt_ms.map(round1),
        kbps: round1(bytes as f64 * 8.0 / 1000.0 / secs),
        fps: (fps_secs > 0.0).then(|| round1(frames as f64 / fps_secs)),
        height: None,
        history: Vec::new(),
    })
}

/// Scores the downlink: the subscriber's receiver reports and its own freeze count.
fn score_down(d: &mut Dir, freezes: u32, report: bool) -> Option<StreamHealth> {
    let now = d.latest.clone()?;
    if d.scored.as_ref().is_some_and(|s| s.at_ms == now.at_ms) {
        return None;
    }
    let prev = d.scored.replace(now.clone());
    let secs = prev
        .as_ref()
        .map_or(0.0, |p| (now.at_ms - p.at_ms) as f64 / 1000.0);
    let rr = now.receiver.unwrap_or_default();
    let i = Interval {
        secs,
        reported_loss: Some(rr.fraction_lost),
        jitter_ms: rr.jitter_ms,
        rtt_ms: now.rtt_ms,
        freezes,
        ..Interval::default()
    };
    let sent = now
        .sent_bytes
        .saturating_sub(prev.as_ref().map_or(0, |p| p.sent_bytes));
    if prev.is_none() || secs <= 0.0 {
        return d.shown.clone().or_else(|| Some(fresh(&i)));
    }
    let (raw, cause) = score::raw(&i);
    let value = d.smooth.push(raw, false);
    if report {
        push_history(&mut d.history, value);
    }
    Some(StreamHealth {
        score: value,
        grade: score::grade(value),
        cause: if value < 95 { cause } else { None },
        mos: None,
        loss_pct: round1(rr.fraction_lost * 100.0),
        jitter_ms: round1(rr.jitter_ms),
        rtt_ms: now.rtt_ms.map(round1),
        kbps: round1(sent as f64 * 8.0 / 1000.0 / secs),
        fps: None,
        height: None,
        history: Vec::new(),
    })
}

fn fresh(i: &Interval) -> StreamHealth {
    StreamHealth {
        score: 100,
        grade: score::grade(100),
        cause: None,
        mos: None,
        loss_pct: 0.0,
        jitter_ms: round1(i.jitter_ms),
        rtt_ms: i.rtt_ms.map(round1),
        kbps: 0.0,
        fps: None,
        height: None,
        history: Vec::new(),
    }
}

fn push_history(h: &mut VecDeque<u8>, v: u8) {
    if h.len() == HISTORY_POINTS {
        h.pop_front();
    }
    h.push_back(v);
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Checks a client's report: every number finite and in range. What is checked is listed in
/// docs/SECURITY.md.
pub fn validate(r: &ClientReport) -> Result<(), HealthError> {
    fn range(name: &str, v: Option<f64>, max: f64) -> Result<(), HealthError> {
        match v {
            Some(x) if !x.is_finite() || !(0.0..=max).contains(&x) => Err(HealthError::BadReport(
                format!("{name} must be a number from 0 to {max}"),
            )),
            _ => Ok(()),
        }
    }
    fn height(name: &str, v: Option<u32>) -> Result<(), HealthError> {
        match v {
            Some(h) if h > 4320 => Err(HealthError::BadReport(format!(
                "{name} must be at most 4320"
            ))),
            _ => Ok(()),
        }
    }
    if let Some(u) = &r.up {
        range("up.available_kbps", u.available_kbps, 10_000_000.0)?;
        range("up.fps", u.fps, 240.0)?;
        range("up.audio_level", u.audio_level, 1.0)?;
        height("up.height", u.height)?;
    }
    if let Some(d) = &r.down {
        range("down.fps", d.fps, 240.0)?;
        range("down.jitter_buffer_ms", d.jitter_buffer_ms, 60_000.0)?;
        range("down.audio_level", d.audio_level, 1.0)?;
        height("down.height", d.height)?;
        if d.freeze_count.is_some_and(|f| f > 1_000_000) {
            return Err(HealthError::BadReport(
                "down.freeze_count must be at most 1000000".into(),
            ));
        }
    }
    Ok(())
}

/// Keeps the meter module's sampling period visible here (the monitor assumes it).
pub const SAMPLE_PERIOD_MS: i64 = meter::SAMPLE_PERIOD_MS;

#[cfg(test)]
mod tests;
