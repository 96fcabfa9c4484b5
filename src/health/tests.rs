//! The monitor, driven with synthetic samples and the time as an input.

use super::*;
use crate::media::meter::{ReceiverSample, StreamCounters, StreamSample};

/// A publisher sample at `t` ms: audio and a two-layer camera, each at its full rate since 0,
/// with `lost` of every 100 packets missing, the last packet at `last` (None: now).
fn up(t: i64, lost_pct: u64, last: Option<i64>, level: u8) -> LinkSample {
    let secs = t as u64 / 1000;
    let stream = |ssrc: u32, video: bool, layer: u8, pps: u64| {
        let expected = pps * secs;
        StreamSample {
            ssrc,
            video,
            layer,
            counters: StreamCounters {
                packets: expected - expected * lost_pct / 100,
                bytes: expected * 1000,
                expected,
                frames: if video { 30 * secs } else { 0 },
                keyframes: 1,
                jitter_ms: 3.0,
                last_packet_ms: Some(last.unwrap_or(t)),
                last_keyframe_ms: Some(0),
                level: (!video).then_some(level),
            },
        }
    };
    LinkSample {
        at_ms: t,
        streams: vec![
            stream(1, false, 0, 50),
            stream(2, true, 0, 100),
            stream(3, true, 1, 200),
        ],
        rtt_ms: Some(20.0),
        ..LinkSample::default()
    }
}

fn down(t: i64, loss: f64, candidate: Option<CandidateType>) -> LinkSample {
    LinkSample {
        at_ms: t,
        sent_packets: t as u64 / 2,
        sent_bytes: t as u64 * 100,
        receiver: Some(ReceiverSample {
            fraction_lost: loss,
            jitter_ms: 4.0,
            reports: 1,
        }),
        rtt_ms: Some(30.0),
        candidate,
        ..LinkSample::default()
    }
}

/// Runs `secs` seconds: a sample every 500 ms, a tick every second; returns every change.
fn run(
    m: &mut Monitor,
    from: i64,
    secs: i64,
    holders: &[String],
    mut sample: impl FnMut(i64) -> Vec<(&'static str, Link, LinkSample)>,
) -> Vec<(i64, AlertInfo)> {
    let mut changes = Vec::new();
    let mut t = from;
    while t < from + secs * 1000 {
        t += 500;
        let mut out = TickOut::default();
        for (who, link, s) in sample(t) {
            m.sample(t, who, link, s, &mut out);
        }
        if t % 1000 == 0 {
            let o = m.tick(t, holders, 10.0, t % 2000 == 0);
            out.changes.extend(o.changes);
        }
        changes.extend(out.changes.into_iter().map(|a| (t, a)));
    }
    changes
}

fn score_of(m: &Monitor, who: &str, dir: Direction) -> u8 {
    let row = m.rows().into_iter().find(|r| r.participant == who).unwrap();
    match dir {
        Direction::Up => row.up.unwrap().score,
        Direction::Down => row.down.unwrap().score,
    }
}

#[test]
fn eight_percent_uplink_loss_makes_the_score_poor_and_raises_a_loss_alert_then_recovers() {
    let mut m = Monitor::new();
    let clean = run(&mut m, 0, 10, &[], |t| {
        vec![("d1", Link::Publish, up(t, 0, None, 40))]
    });
    assert!(clean.is_empty(), "{clean:?}");
    assert!(score_of(&m, "d1", Direction::Up) > 80);
    // Loss from t = 10 s: the sample counters carry the loss of the whole stream, so feed
    // the loss only into what comes after.
    let base = up(10_000, 0, None, 40);
    let lossy = |t: i64| {
        let mut s = up(t, 0, None, 40);
        for (x, b) in s.streams.iter_mut().zip(&base.streams) {
            let new = x.counters.expected - b.counters.expected;
            x.counters.packets = b.counters.packets + new - new * 8 / 100;
        }
        s
    };
    let mut poor_at = None;
    let mut changes = Vec::new();
    for i in 1..=30 {
        let t = 10_000 + i * 500;
        changes.extend(run(&mut m, t - 500, 0, &[], |_| vec![]));
        let mut out = TickOut::default();
        m.sample(t, "d1", Link::Publish, lossy(t), &mut out);
        if t % 1000 == 0 {
            out.changes.extend(m.tick(t, &[], 10.0, true).changes);
            if poor_at.is_none() && score_of(&m, "d1", Direction::Up) <= 40 {
                poor_at = Some(t);
            }
        }
        changes.extend(out.changes.into_iter().map(|a| (t, a)));
    }
    let poor_at = poor_at.expect("poor");
    assert!(
        poor_at - 10_000 <= 4_000,
        "poor {} ms after the loss began",
        poor_at - 10_000
    );
    let row = m
        .rows()
        .into_iter()
        .find(|r| r.participant == "d1")
        .unwrap();
    assert_eq!(
        row.up.as_ref().unwrap().cause,
        Some(roundtable_signaling::HealthCause::Loss)
    );
    assert!((row.up.as_ref().unwrap().loss_pct - 8.0).abs() < 1.0);
    let loss: Vec<_> = changes
        .iter()
        .filter(|(_, a)| a.kind == AlertKind::Loss)
        .collect();
    assert_eq!(loss.len(), 1, "{loss:?}");
    let (at, a) = loss[0];
    assert!(
        (LOSS_ALERT_MS..=LOSS_ALERT_MS + 1_500).contains(&(at - 10_000)),
        "raised {} ms after the loss began",
        at - 10_000
    );
    assert_eq!(a.participant.as_deref(), Some("d1"));
    assert_eq!(a.direction, Some(Direction::Up));
    assert!(!a.floor);
    // The loss stops: the score recovers (slowly) and the alert clears.
    let end = lossy(25_000);
    let healed = |t: i64| {
        let mut s = up(t, 0, None, 40);
        for (x, b) in s.streams.iter_mut().zip(&end.streams) {
            x.counters.packets = b.counters.packets + (x.counters.expected - b.counters.expected);
        }
        s
    };
    let after = run(&mut m, 25_000, 20, &[], |t| {
        vec![("d1", Link::Publish, healed(t))]
    });
    assert!(score_of(&m, "d1", Direction::Up) > 80, "recovered");
    assert!(
        after
            .iter()
            .any(|(_, a)| a.kind == AlertKind::Loss && a.cleared_at.is_some())
    );
    assert!(
        m.open_alerts().iter().all(|a| a.cleared_at.is_some()),
        "cleared"
    );
}

#[test]
fn a_publisher_that_stops_sending_is_dry_within_four_seconds() {
    let mut m = Monitor::new();
    run(&mut m, 0, 5, &[], |t| {
        vec![("d1", Link::Publish, up(t, 0, None, 40))]
    });
    // It stops at 5 s: the counters freeze.
    let changes = run(&mut m, 5_000, 6, &[], |t| {
        let mut s = up(5_000, 0, None, 40);
        s.at_ms = t;
        vec![("d1", Link::Publish, s)]
    });
    let dry: Vec<_> = changes
        .iter()
        .filter(|(_, a)| a.kind == AlertKind::Dry)
        .collect();
    assert_eq!(dry.len(), 1);
    assert!(
        dry[0].0 - 5_000 <= 3_500,
        "dry {} ms after the last packet",
        dry[0].0 - 5_000
    );
    assert!(
        dry[0].1.detail.contains("no audio packets"),
        "{}",
        dry[0].1.detail
    );
    assert_eq!(score_of(&m, "d1", Direction::Up), 0);
    // It resumes: the alert clears.
    let back = run(&mut m, 11_000, 2, &[], |t| {
        vec![("d1", Link::Publish, up(t, 0, None, 40))]
    });
    assert!(
        back.iter()
            .any(|(_, a)| a.kind == AlertKind::Dry && a.cleared_at.is_some())
    );
}

#[test]
fn a_floor_holder_sending_silence_raises_dead_mic_and_the_chair_gets_it() {
    let mut m = Monitor::new();
    let holders = vec!["d1".to_owned()];
    // Not holding the floor: silence is fine.
    let quiet = run(&mut m, 0, 15, &[], |t| {
        vec![("d1", Link::Publish, up(t, 0, None, 127))]
    });
    assert!(quiet.is_empty(), "{quiet:?}");
    // Granted, still silent: dead mic after 10 s.
    let changes = run(&mut m, 15_000, 12, &holders, |t| {
        vec![("d1", Link::Publish, up(t, 0, None, 127))]
    });
    let dead: Vec<_> = changes
        .iter()
        .filter(|(_, a)| a.kind == AlertKind::DeadMic)
        .collect();
    assert_eq!(dead.len(), 1);
    assert!((DEAD_MIC_MS..=DEAD_MIC_MS + 1_000).contains(&(dead[0].0 - 15_000)));
    assert!(dead[0].1.floor, "a floor alert");
    // They speak: cleared.
    let speak = run(&mut m, 27_000, 2, &holders, |t| {
        vec![("d1", Link::Publish, up(t, 0, None, 30))]
    });
    assert!(
        speak
            .iter()
            .any(|(_, a)| a.kind == AlertKind::DeadMic && a.cleared_at.is_some())
    );
}

#[test]
fn sound_from_someone_without_the_floor_relay_and_cpu_alerts() {
    let mut m = Monitor::new();
    let mut out = TickOut::default();
    m.speech(1_000, "d2", true, false, &mut out);
    assert_eq!(out.changes.len(), 1);
    assert_eq!(out.changes[0].kind, AlertKind::SoundWithoutFloor);
    assert!(out.changes[0].floor);
    m.speech(2_000, "d2", true, false, &mut out);
    assert_eq!(out.changes.len(), 1, "raised once");
    m.speech(3_000, "d2", false, false, &mut out);
    assert_eq!(out.changes[1].cleared_at, Some(3_000));
    // A subscriber on a relay.
    let mut out = TickOut::default();
    m.sample(
        4_000,
        "d3",
        Link::Subscribe,
        down(4_000, 0.0, Some(CandidateType::Relay)),
        &mut out,
    );
    assert_eq!(out.changes[0].kind, AlertKind::RelayOnly);
    // CPU: over 80 % for 5 s.
    let mut raised = None;
    for s in 5..15 {
        let o = m.tick(s * 1000, &[], 95.0, false);
        if let Some(a) = o.changes.iter().find(|a| a.kind == AlertKind::CpuHigh) {
            raised = Some((s * 1000, a.clone()));
        }
    }
    let (at, a) = raised.expect("cpu alert");
    assert_eq!(at, 10_000);
    assert!(a.participant.is_none());
    let o = m.tick(16_000, &[], 20.0, false);
    assert!(
        o.changes
            .iter()
            .any(|a| a.kind == AlertKind::CpuHigh && a.cleared_at.is_some())
    );
}

#[test]
fn alerts_are_acknowledged_once_and_the_open_list_keeps_what_needs_attention() {
    let mut m = Monitor::new();
    let mut out = TickOut::default();
    m.speech(1_000, "d2", true, false, &mut out);
    let id = out.changes[0].id;
    assert_eq!(m.open_alerts().len(), 1);
    let a = m.ack(id, "tech", 1_500).unwrap();
    assert_eq!(a.acked_by.as_deref(), Some("tech"));
    assert_eq!(m.ack(id, "tech", 1_600), Err(HealthError::AlreadyAcked(id)));
    assert_eq!(
        m.ack(999, "tech", 1_600),
        Err(HealthError::UnknownAlert(999))
    );
    assert_eq!(m.open_alerts().len(), 1, "acknowledged but still on");
    m.speech(2_000, "d2", false, false, &mut out);
    assert!(m.open_alerts().is_empty(), "cleared and acknowledged");
    // Cleared but not acknowledged: still listed.
    m.speech(3_000, "d2", true, false, &mut out);
    m.speech(4_000, "d2", false, false, &mut out);
    assert_eq!(m.open_alerts().len(), 1);
}

#[test]
fn the_downlink_is_scored_from_receiver_reports_and_client_freezes() {
    let mut m = Monitor::new();
    run(&mut m, 0, 6, &[], |t| {
        vec![(
            "d1",
            Link::Subscribe,
            down(t, 0.0, Some(CandidateType::Host)),
        )]
    });
    assert!(score_of(&m, "d1", Direction::Down) > 90);
    let row = m
        .rows()
        .into_iter()
        .find(|r| r.participant == "d1")
        .unwrap();
    assert_eq!(row.candidate, Some(CandidateType::Host));
    assert_eq!(row.down.as_ref().unwrap().history.len(), 3);
    // The client reports freezes: a frozen alert and a lower score.
    m.client_report(
        "d1",
        ClientReport {
            at: 6_000,
            down: Some(roundtable_signaling::ClientDown {
                freeze_count: Some(0),
                ..Default::default()
            }),
            up: None,
            candidate: None,
        },
    );
    m.client_report(
        "d1",
        ClientReport {
            at: 6_500,
            down: Some(roundtable_signaling::ClientDown {
                freeze_count: Some(2),
                ..Default::default()
            }),
            up: None,
            candidate: None,
        },
    );
    let changes = run(&mut m, 6_000, 2, &[], |t| {
        vec![("d1", Link::Subscribe, down(t, 0.0, None))]
    });
    assert!(
        changes
            .iter()
            .any(|(_, a)| a.kind == AlertKind::Frozen && a.direction == Some(Direction::Down))
    );
    assert!(score_of(&m, "d1", Direction::Down) < 60);
    // 20 % reported loss: poor.
    run(&mut m, 8_000, 6, &[], |t| {
        vec![("d1", Link::Subscribe, down(t, 0.2, None))]
    });
    assert!(score_of(&m, "d1", Direction::Down) <= 40);
}

#[test]
fn client_reports_out_of_range_are_refused() {
    let ok = ClientReport {
        at: 0,
        up: Some(roundtable_signaling::ClientUp {
            fps: Some(30.0),
            audio_level: Some(0.5),
            ..Default::default()
        }),
        down: None,
        candidate: None,
    };
    assert!(validate(&ok).is_ok());
    for bad in [
        roundtable_signaling::ClientUp {
            fps: Some(f64::NAN),
            ..Default::default()
        },
        roundtable_signaling::ClientUp {
            fps: Some(-1.0),
            ..Default::default()
        },
        roundtable_signaling::ClientUp {
            audio_level: Some(2.0),
            ..Default::default()
        },
        roundtable_signaling::ClientUp {
            height: Some(10_000),
            ..Default::default()
        },
        roundtable_signaling::ClientUp {
            available_kbps: Some(f64::INFINITY),
            ..Default::default()
        },
    ] {
        let r = ClientReport {
            at: 0,
            up: Some(bad.clone()),
            down: None,
            candidate: None,
        };
        assert!(validate(&r).is_err(), "{bad:?}");
    }
}

#[test]
fn one_simulcast_layer_pausing_is_not_dry_and_a_burst_of_loss_is_not_a_loss_alert() {
    let mut m = Monitor::new();
    // The top layer stops at 2 s (a browser's bandwidth estimate fell); audio and the low
    // layer go on.
    let changes = run(&mut m, 0, 12, &[], |t| {
        let mut s = up(t, 0, None, 40);
        s.streams[2].counters.last_packet_ms = Some(t.min(2_000));
        vec![("d1", Link::Publish, s)]
    });
    assert!(
        changes.iter().all(|(_, a)| a.kind != AlertKind::Dry),
        "{changes:?}"
    );
    let row = m
        .rows()
        .into_iter()
        .find(|r| r.participant == "d1")
        .unwrap();
    assert_ne!(
        row.up.unwrap().cause,
        Some(roundtable_signaling::HealthCause::Dry)
    );
    // One second of 60 % loss lifts a 10 s mean over 5 %, but it is a burst: no alert.
    let mut m = Monitor::new();
    let mut lost = 0u64;
    let changes = run(&mut m, 0, 25, &[], |t| {
        let mut s = up(t, 0, None, 40);
        if t > 12_000 && t <= 13_000 {
            lost += 150;
        }
        for x in s.streams.iter_mut() {
            x.counters.packets -= lost.min(x.counters.packets) / 3;
        }
        vec![("d1", Link::Publish, s)]
    });
    assert!(
        changes.iter().all(|(_, a)| a.kind != AlertKind::Loss),
        "{changes:?}"
    );
}
