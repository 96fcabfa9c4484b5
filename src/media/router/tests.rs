//! Router tests: policy, gate, layer switching at keyframes with continuous rewriting,
//! keyframe request merging and throttling. No sockets.

use super::*;

const ROOM: PeerId = PeerId(1);
const CHAIR: PeerId = PeerId(2);
const D1: PeerId = PeerId(10);
const D2: PeerId = PeerId(11);
const D3: PeerId = PeerId(12);

const PROG_V: TrackId = TrackId(100);
const PROG_A: TrackId = TrackId(101);
const D1_MIC: TrackId = TrackId(110);
const D1_CAM: TrackId = TrackId(111);
const D2_MIC: TrackId = TrackId(120);
const D2_CAM: TrackId = TrackId(121);
const D2_SCREEN: TrackId = TrackId(122);

fn meeting() -> Router {
    let mut r = Router::new(true);
    r.add_peer(ROOM, MediaRole::Room);
    r.add_peer(CHAIR, MediaRole::Moderator);
    r.add_peer(D1, MediaRole::Delegate);
    r.add_peer(D2, MediaRole::Delegate);
    // Their subscribing connections are up (see the tests of connections coming up).
    for p in [ROOM, CHAIR, D1, D2] {
        r.subscriber_up(p);
    }
    r.publish(ROOM, PROG_V, Kind::Video, Source::Program, 3)
        .unwrap();
    r.publish(ROOM, PROG_A, Kind::Audio, Source::Program, 1)
        .unwrap();
    r.publish(D1, D1_MIC, Kind::Audio, Source::Microphone, 1)
        .unwrap();
    r.publish(D1, D1_CAM, Kind::Video, Source::Camera, 2)
        .unwrap();
    r.publish(D2, D2_MIC, Kind::Audio, Source::Microphone, 1)
        .unwrap();
    r.publish(D2, D2_CAM, Kind::Video, Source::Camera, 2)
        .unwrap();
    bind_all(&mut r);
    r
}

/// Marks every stream as bound to a sender, as the engine does once it has negotiated them.
fn bind_all(r: &mut Router) {
    for d in r.downs.values_mut() {
        d.bound = true;
    }
}

fn pkt(track: TrackId, layer: u8, seq: u16, ts: u32, keyframe: bool) -> Incoming {
    Incoming {
        track,
        layer,
        seq,
        timestamp: ts,
        keyframe,
    }
}

fn route(r: &mut Router, now: Millis, p: Incoming) -> Vec<Forward> {
    let mut out = Vec::new();
    r.route(now, &p, &mut out);
    out
}

fn to(out: &[Forward], peer: PeerId, slot: Slot) -> Option<Forward> {
    out.iter()
        .find(|f| f.peer == peer && f.slot == slot)
        .copied()
}

#[test]
fn delegates_receive_the_room_program_on_the_high_layer_and_the_room_does_not() {
    let mut r = meeting();
    let out = route(&mut r, 0, pkt(PROG_V, 2, 1, 1000, true));
    let peers: Vec<PeerId> = out.iter().map(|f| f.peer).collect();
    assert!(peers.contains(&D1) && peers.contains(&D2) && peers.contains(&CHAIR));
    assert!(
        !peers.contains(&ROOM),
        "the room never gets its own feed back"
    );
    // The low layer goes nowhere: nobody wants it.
    assert!(route(&mut r, 0, pkt(PROG_V, 0, 1, 1000, true)).is_empty());
}

#[test]
fn the_floor_gate_drops_delegate_audio_until_granted_and_counts() {
    let mut r = meeting();
    assert!(route(&mut r, 0, pkt(D1_MIC, 0, 1, 0, false)).is_empty());
    assert!(route(&mut r, 20, pkt(D1_MIC, 0, 2, 960, false)).is_empty());
    assert_eq!(r.gate_dropped(D1), 2);
    r.set_floor(true, &[D1], &[]);
    let out = route(&mut r, 40, pkt(D1_MIC, 0, 3, 1920, false));
    assert!(
        to(&out, ROOM, Slot::Track(D1_MIC)).is_some(),
        "the room hears the floor holder"
    );
    assert!(to(&out, D2, Slot::Track(D1_MIC)).is_some());
    r.set_floor(true, &[], &[]);
    assert!(route(&mut r, 60, pkt(D1_MIC, 0, 4, 2880, false)).is_empty());
    assert_eq!(r.gate_dropped(D1), 3);
    // Open mode: everyone passes. The moderator and the room always pass.
    r.set_floor(false, &[], &[]);
    assert!(!route(&mut r, 80, pkt(D1_MIC, 0, 5, 3840, false)).is_empty());
    assert!(r.gate_open(CHAIR) && r.gate_open(ROOM));
}

#[test]
fn audio_sequence_numbers_stay_continuous_across_a_closed_gate() {
    let mut r = meeting();
    r.set_floor(true, &[D1], &[]);
    let a = to(
        &route(&mut r, 0, pkt(D1_MIC, 0, 100, 0, false)),
        ROOM,
        Slot::Track(D1_MIC),
    )
    .unwrap();
    r.set_floor(true, &[], &[]);
    route(&mut r, 20, pkt(D1_MIC, 0, 101, 960, false));
    r.set_floor(true, &[D1], &[]);
    let b = to(
        &route(&mut r, 40, pkt(D1_MIC, 0, 102, 1920, false)),
        ROOM,
        Slot::Track(D1_MIC),
    )
    .unwrap();
    // The same stream (SSRC), numbered on from the last packet sent: the packet held back
    // is no gap to the receiver (no NACK, no loss in its reports); the timestamp moved on.
    assert_eq!(a.ssrc, b.ssrc);
    assert_eq!(b.seq.wrapping_sub(a.seq), 1);
    assert!(b.timestamp.wrapping_sub(a.timestamp) >= 960);
}

#[test]
fn a_forum_subscriber_keeps_no_stream_for_microphones_it_never_negotiated() {
    // The forum: the room asks for open microphones before anything was negotiated.
    let mut r = Router::new(true);
    r.add_peer(ROOM, MediaRole::Room);
    r.subscriber_up(ROOM);
    for (i, p) in [D1, D2, D3].into_iter().enumerate() {
        r.add_peer(p, MediaRole::Delegate);
        r.publish(
            p,
            TrackId(500 + i as u32),
            Kind::Audio,
            Source::Microphone,
            1,
        )
        .unwrap();
    }
    r.set_open_mics_only(ROOM, true).unwrap();
    assert_eq!(r.retired(ROOM), 0, "nothing bound, nothing kept");
    r.take_changes();
    // The first speaker: a new stream, which the engine binds (negotiated).
    r.set_floor(true, &[D1], &[]);
    let changes = r.take_changes();
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, SlotChange::Added { peer, .. } if *peer == ROOM))
    );
    r.slot_bound(ROOM, Slot::Track(TrackId(500)));
    // The next two take it over in turn: no new stream.
    for (holder, track) in [(D2, 501), (D3, 502), (D1, 500)] {
        r.set_floor(true, &[holder], &[]);
        let changes = r.take_changes();
        assert!(
            changes
                .iter()
                .any(|c| matches!(c, SlotChange::Reused { peer, slot, .. }
                if *peer == ROOM && *slot == Slot::Track(TrackId(track)))),
            "{changes:?}"
        );
        assert!(
            !changes
                .iter()
                .any(|c| matches!(c, SlotChange::Added { .. }))
        );
    }
    assert_eq!(r.retired(ROOM), 0);
}

#[test]
fn open_microphones_only_gives_slots_to_open_gates_and_the_next_speaker_reuses_the_stream() {
    let mut r = meeting();
    r.take_changes();
    r.set_open_mics_only(ROOM, true).unwrap();
    // The delegates' closed microphones leave the room's slots; the chair's would stay.
    let slots = |r: &Router| {
        r.slots(ROOM)
            .into_iter()
            .map(|(s, _, _)| s)
            .collect::<Vec<_>>()
    };
    assert!(!slots(&r).contains(&Slot::Track(D1_MIC)));
    assert!(!slots(&r).contains(&Slot::Track(D2_MIC)));
    // D2 still has every microphone (the default).
    assert!(
        r.slots(D2)
            .iter()
            .any(|(s, _, _)| *s == Slot::Track(D1_MIC))
    );
    r.take_changes();
    // D1 takes the floor: a slot appears at the room (a new stream: the first speaker).
    r.set_floor(true, &[D1], &[]);
    assert!(slots(&r).contains(&Slot::Track(D1_MIC)));
    let a = to(
        &route(&mut r, 0, pkt(D1_MIC, 0, 100, 0, false)),
        ROOM,
        Slot::Track(D1_MIC),
    )
    .unwrap();
    // D1 yields to D2: D2's microphone takes over a retired audio stream (the first retired:
    // here the one it had before the preference), nothing renegotiated.
    r.take_changes();
    r.set_floor(true, &[D2], &[]);
    let changes = r.take_changes();
    assert!(
        changes.iter().any(
            |c| matches!(c, SlotChange::Reused { peer, slot, kind: Kind::Audio, .. }
            if *peer == ROOM && *slot == Slot::Track(D2_MIC))
        ),
        "{changes:?}"
    );
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, SlotChange::Added { peer, .. } if *peer == ROOM))
    );
    assert!(route(&mut r, 20, pkt(D1_MIC, 0, 101, 960, false)).is_empty());
    let b = to(
        &route(&mut r, 40, pkt(D2_MIC, 0, 7, 5000, false)),
        ROOM,
        Slot::Track(D2_MIC),
    )
    .unwrap();
    assert_eq!(
        r.slots(ROOM)
            .iter()
            .filter(|(_, k, _)| *k == Kind::Audio)
            .count(),
        1
    );
    // D1 again: it takes over D2's stream (the one it left is still retired), numbered on
    // from D2's last packet.
    r.set_floor(true, &[D1], &[]);
    let c = to(
        &route(&mut r, 60, pkt(D1_MIC, 0, 102, 1920, false)),
        ROOM,
        Slot::Track(D1_MIC),
    )
    .unwrap();
    assert!(c.ssrc == a.ssrc || c.ssrc == b.ssrc);
    if c.ssrc == b.ssrc {
        assert_eq!(c.seq.wrapping_sub(b.seq), 1);
    } else {
        assert_eq!(c.seq.wrapping_sub(a.seq), 1);
    }
    // Open mode opens every gate: every microphone gets its slot back.
    r.set_floor(false, &[], &[]);
    assert!(slots(&r).contains(&Slot::Track(D1_MIC)) && slots(&r).contains(&Slot::Track(D2_MIC)));
}

#[test]
fn the_speaker_slot_follows_the_floor_and_switches_at_a_keyframe_without_a_gap() {
    let mut r = meeting();
    r.set_floor(true, &[D1], &[]);
    let changes = r.take_changes();
    assert!(
        changes.contains(&SlotChange::Added {
            peer: ROOM,
            slot: Slot::Speaker,
            kind: Kind::Video,
            ssrc: r
                .slots(ROOM)
                .iter()
                .find(|s| s.0 == Slot::Speaker)
                .unwrap()
                .2,
        })
    );
    // Nothing until D1's high-layer keyframe; a keyframe is requested.
    assert!(r.keyframe_pending(D1_CAM, 1));
    assert!(
        to(
            &route(&mut r, 0, pkt(D1_CAM, 1, 500, 9000, false)),
            ROOM,
            Slot::Speaker
        )
        .is_none()
    );
    let f1 = to(
        &route(&mut r, 10, pkt(D1_CAM, 1, 501, 9000, true)),
        ROOM,
        Slot::Speaker,
    )
    .unwrap();
    assert!(!r.keyframe_pending(D1_CAM, 1));
    let f2 = to(
        &route(&mut r, 40, pkt(D1_CAM, 1, 502, 12000, false)),
        ROOM,
        Slot::Speaker,
    )
    .unwrap();
    assert_eq!(f2.seq, f1.seq.wrapping_add(1));
    // The floor passes to D2: no renegotiation, D1 keeps flowing until D2's keyframe.
    r.set_floor(true, &[D2], &[]);
    assert!(r.take_changes().iter().all(|c| !matches!(
        c,
        SlotChange::Added {
            slot: Slot::Speaker,
            ..
        } | SlotChange::Removed {
            slot: Slot::Speaker,
            ..
        }
    )));
    let f3 = to(
        &route(&mut r, 70, pkt(D1_CAM, 1, 503, 15000, false)),
        ROOM,
        Slot::Speaker,
    )
    .unwrap();
    assert!(
        to(
            &route(&mut r, 80, pkt(D2_CAM, 1, 7000, 555, false)),
            ROOM,
            Slot::Speaker
        )
        .is_none()
    );
    let f4 = to(
        &route(&mut r, 100, pkt(D2_CAM, 1, 7001, 3555, true)),
        ROOM,
        Slot::Speaker,
    )
    .unwrap();
    assert_eq!(f4.ssrc, f1.ssrc, "one continuous stream");
    assert_eq!(f4.seq, f3.seq.wrapping_add(1), "no gap at the switch");
    assert_eq!(
        f4.timestamp,
        f3.timestamp.wrapping_add(30 * 90),
        "timestamp advances with time"
    );
    // After the switch D1's packets no longer reach the slot.
    assert!(
        to(
            &route(&mut r, 110, pkt(D1_CAM, 1, 504, 18000, false)),
            ROOM,
            Slot::Speaker
        )
        .is_none()
    );
    let f5 = to(
        &route(&mut r, 130, pkt(D2_CAM, 1, 7002, 6555, false)),
        ROOM,
        Slot::Speaker,
    )
    .unwrap();
    assert_eq!(f5.seq, f4.seq.wrapping_add(1));
}

#[test]
fn thumbnails_use_the_low_layer_and_switch_to_high_when_the_delegate_takes_the_floor() {
    let mut r = meeting();
    r.add_peer(D3, MediaRole::Delegate);
    r.set_thumbnails(D3, true).unwrap();
    let low = to(
        &route(&mut r, 0, pkt(D1_CAM, 0, 1, 0, true)),
        D3,
        Slot::Track(D1_CAM),
    )
    .unwrap();
    assert!(
        to(
            &route(&mut r, 0, pkt(D1_CAM, 1, 1, 0, true)),
            D3,
            Slot::Track(D1_CAM)
        )
        .is_none()
    );
    // Thumbnails off: the slot goes away.
    r.take_changes();
    r.set_thumbnails(D3, false).unwrap();
    assert!(r.take_changes().contains(&SlotChange::Removed {
        peer: D3,
        slot: Slot::Track(D1_CAM)
    }));
    assert!(
        to(
            &route(&mut r, 10, pkt(D1_CAM, 0, 2, 900, false)),
            D3,
            Slot::Track(D1_CAM)
        )
        .is_none()
    );
    let _ = low;
}

#[test]
fn a_render_size_switches_the_layer_at_a_keyframe_without_a_gap() {
    let mut r = meeting();
    r.add_peer(D3, MediaRole::Delegate);
    r.subscriber_up(D3);
    r.set_thumbnails(D3, true).unwrap();
    let slot = Slot::Track(D1_CAM);
    let a = to(&route(&mut r, 0, pkt(D1_CAM, 0, 10, 900, true)), D3, slot).unwrap();
    let b = to(
        &route(&mut r, 33, pkt(D1_CAM, 0, 11, 3900, false)),
        D3,
        slot,
    )
    .unwrap();
    // The subscriber renders it large now: the high layer, from its next keyframe.
    r.set_render_height(D3, slot, Some(720)).unwrap();
    assert!(r.keyframe_pending(D1_CAM, 1));
    let c = to(
        &route(&mut r, 66, pkt(D1_CAM, 0, 12, 6900, false)),
        D3,
        slot,
    )
    .unwrap();
    assert!(
        to(
            &route(&mut r, 70, pkt(D1_CAM, 1, 900, 6900, false)),
            D3,
            slot
        )
        .is_none()
    );
    let d = to(
        &route(&mut r, 100, pkt(D1_CAM, 1, 901, 9900, true)),
        D3,
        slot,
    )
    .unwrap();
    assert!(
        to(
            &route(&mut r, 101, pkt(D1_CAM, 0, 13, 9900, false)),
            D3,
            slot
        )
        .is_none()
    );
    for (x, y) in [(a, b), (b, c), (c, d)] {
        assert_eq!(y.seq, x.seq.wrapping_add(1));
        assert_eq!(y.ssrc, x.ssrc);
    }
    // Back to the default.
    r.set_render_height(D3, slot, None).unwrap();
    assert!(r.keyframe_pending(D1_CAM, 0));
}

#[test]
fn sequence_and_timestamp_wrap_around() {
    let mut r = meeting();
    let a = to(
        &route(&mut r, 0, pkt(PROG_A, 0, u16::MAX, u32::MAX - 100, false)),
        D1,
        Slot::Track(PROG_A),
    )
    .unwrap();
    let b = to(
        &route(&mut r, 20, pkt(PROG_A, 0, 0, 860, false)),
        D1,
        Slot::Track(PROG_A),
    )
    .unwrap();
    assert_eq!(b.seq, a.seq.wrapping_add(1));
    assert_eq!(b.timestamp, a.timestamp.wrapping_add(961));
}

#[test]
fn keyframe_requests_are_merged_and_throttled_and_repeat_until_a_keyframe() {
    let mut r = meeting();
    // Ten delegates join at once: all want the program's high layer.
    for i in 0..10 {
        r.add_peer(PeerId(100 + i), MediaRole::Delegate);
        r.subscriber_up(PeerId(100 + i));
    }
    let mut out = Vec::new();
    r.poll_keyframe_requests(0, &mut out);
    let prog: Vec<_> = out.iter().filter(|k| k.0 == PROG_V).collect();
    assert_eq!(prog, vec![&(PROG_V, 2)], "one request for all ten");
    out.clear();
    r.poll_keyframe_requests(500, &mut out);
    assert!(out.is_empty(), "throttled");
    r.poll_keyframe_requests(1000, &mut out);
    assert!(
        out.contains(&(PROG_V, 2)),
        "repeated until a keyframe arrives"
    );
    route(&mut r, 1100, pkt(PROG_V, 2, 1, 0, true));
    out.clear();
    r.poll_keyframe_requests(5000, &mut out);
    assert!(!out.contains(&(PROG_V, 2)));
    // A subscriber's PLI asks again, merged.
    r.subscriber_wants_keyframe(PeerId(100), Slot::Track(PROG_V));
    r.subscriber_wants_keyframe(PeerId(101), Slot::Track(PROG_V));
    out.clear();
    r.poll_keyframe_requests(6000, &mut out);
    assert_eq!(out.iter().filter(|k| **k == (PROG_V, 2)).count(), 1);
    // The keyframe comes at once, and another subscriber asks right after: the throttle
    // outlives the request, so it waits for the second to pass.
    route(&mut r, 6010, pkt(PROG_V, 2, 2, 90, true));
    r.subscriber_wants_keyframe(PeerId(102), Slot::Track(PROG_V));
    out.clear();
    r.poll_keyframe_requests(6500, &mut out);
    assert!(out.is_empty(), "throttled across requests");
    r.poll_keyframe_requests(7000, &mut out);
    assert_eq!(out, vec![(PROG_V, 2)]);
}

#[test]
fn the_screen_slot_follows_the_presenter() {
    let mut r = meeting();
    r.publish(D2, D2_SCREEN, Kind::Video, Source::Screen, 1)
        .unwrap();
    r.set_floor(true, &[], &[D2]);
    let out = route(&mut r, 0, pkt(D2_SCREEN, 0, 1, 0, true));
    assert!(to(&out, ROOM, Slot::Screen).is_some());
    assert!(to(&out, D1, Slot::Screen).is_some());
    assert!(
        to(&out, D2, Slot::Screen).is_none(),
        "not back to the presenter"
    );
}

#[test]
fn publishing_rules_are_enforced() {
    let mut r = meeting();
    r.add_peer(D3, MediaRole::Listener);
    assert_eq!(
        r.publish(D3, TrackId(900), Kind::Audio, Source::Microphone, 1),
        Err(RouterError::NotAllowed("a listener may not publish"))
    );
    assert!(matches!(
        r.publish(D1, TrackId(901), Kind::Video, Source::Program, 1),
        Err(RouterError::NotAllowed(_))
    ));
    assert_eq!(
        r.publish(D1, D1_MIC, Kind::Audio, Source::Microphone, 1),
        Err(RouterError::DuplicateTrack(D1_MIC))
    );
    assert_eq!(
        r.publish(D1, TrackId(902), Kind::Audio, Source::Microphone, 2),
        Err(RouterError::BadLayers(2))
    );
    assert_eq!(
        r.publish(PeerId(99), TrackId(903), Kind::Audio, Source::Microphone, 1),
        Err(RouterError::UnknownPeer(PeerId(99)))
    );
}

#[test]
fn leaving_removes_tracks_and_slots() {
    let mut r = meeting();
    r.take_changes();
    r.remove_peer(D1);
    let changes = r.take_changes();
    assert!(changes.contains(&SlotChange::Removed {
        peer: ROOM,
        slot: Slot::Track(D1_MIC)
    }));
    assert!(changes.contains(&SlotChange::Removed {
        peer: D1,
        slot: Slot::Track(PROG_V)
    }));
    assert!(route(&mut r, 0, pkt(D1_MIC, 0, 1, 0, false)).is_empty());
    assert!(r.slots(D1).is_empty());
}

#[test]
fn the_route_path_does_not_grow_its_output_beyond_the_subscribers() {
    let mut r = meeting();
    let mut out = Vec::with_capacity(16);
    for i in 0..1000u16 {
        out.clear();
        r.route(
            i64::from(i) * 20,
            &pkt(PROG_A, 0, i, u32::from(i) * 960, false),
            &mut out,
        );
        assert_eq!(out.len(), 3);
    }
    assert_eq!(out.capacity(), 16, "no reallocation per packet");
    assert_eq!(r.forwarded(), 3000);
}

#[test]
fn a_newcomer_reuses_the_stream_of_someone_who_left_with_numbering_continuing() {
    let mut r = meeting();
    r.set_floor(false, &[], &[]);
    // The room hears D1's microphone on its own slot.
    let before = route(&mut r, 0, pkt(D1_MIC, 0, 500, 96_000, false));
    let first = to(&before, ROOM, Slot::Track(D1_MIC)).expect("room hears D1");
    r.take_changes();
    r.remove_peer(D1);
    assert!(r.take_changes().contains(&SlotChange::Removed {
        peer: ROOM,
        slot: Slot::Track(D1_MIC)
    }));
    // D3 arrives and publishes a microphone: the room's retired audio stream is reused.
    r.add_peer(D3, MediaRole::Delegate);
    let d3_mic = TrackId(130);
    r.publish(D3, d3_mic, Kind::Audio, Source::Microphone, 1)
        .unwrap();
    let changes = r.take_changes();
    assert!(
        changes.contains(&SlotChange::Reused {
            peer: ROOM,
            from: Slot::Track(D1_MIC),
            slot: Slot::Track(d3_mic),
            kind: Kind::Audio,
            ssrc: first.ssrc,
        }),
        "{changes:?}"
    );
    assert!(
        !changes.iter().any(|c| matches!(
            c,
            SlotChange::Added { peer, kind: Kind::Audio, .. } if *peer == ROOM
        )),
        "no new audio sender at the room: {changes:?}"
    );
    // D3's packets continue the stream: same SSRC, next sequence number, later timestamp.
    let out = route(&mut r, 1_000, pkt(d3_mic, 0, 7, 123, false));
    let f = to(&out, ROOM, Slot::Track(d3_mic)).expect("room hears D3");
    assert_eq!(f.ssrc, first.ssrc);
    assert_eq!(f.seq, first.seq.wrapping_add(1));
    assert!(f.timestamp.wrapping_sub(first.timestamp) >= 48 * 1_000);
}

#[test]
fn retired_streams_stay_bounded_however_many_come_and_go() {
    let mut r = meeting();
    r.take_changes();
    let mut added = 0;
    for i in 0..300u32 {
        let peer = PeerId(1_000 + i);
        r.add_peer(peer, MediaRole::Delegate);
        r.publish(
            peer,
            TrackId(10_000 + 2 * i),
            Kind::Audio,
            Source::Microphone,
            1,
        )
        .unwrap();
        r.publish(
            peer,
            TrackId(10_001 + 2 * i),
            Kind::Video,
            Source::Camera,
            2,
        )
        .unwrap();
        bind_all(&mut r);
        r.remove_peer(peer);
        added += r
            .take_changes()
            .iter()
            .filter(|c| matches!(c, SlotChange::Added { peer, .. } if *peer == ROOM))
            .count();
    }
    // The room gained one audio stream (the first visitor's) and reused it ever after.
    assert_eq!(added, 1, "streams added at the room");
    assert!(
        r.retired(ROOM) <= 2,
        "retired at the room: {}",
        r.retired(ROOM)
    );
}

#[test]
fn a_paused_layer_falls_back_to_the_best_flowing_one_and_returns_at_its_keyframe() {
    let mut r = meeting();
    // The program's three layers flow; D1 takes the high one.
    for l in 0..3 {
        route(&mut r, 0, pkt(PROG_V, l, 1, 0, true));
    }
    let out = route(&mut r, 10, pkt(PROG_V, 2, 2, 900, true));
    let first = to(&out, D1, Slot::Track(PROG_V)).expect("high layer to D1");
    // The sender pauses the high layer (bandwidth): after LAYER_IDLE_MS only `h` and `q` flow.
    let mut t = 20;
    let mut seq = 2u16;
    while t <= 20 + LAYER_IDLE_MS {
        seq += 1;
        for l in 0..2 {
            route(&mut r, t, pkt(PROG_V, l, seq, t as u32 * 90, false));
        }
        t += 100;
    }
    let mut asked = Vec::new();
    r.poll_keyframe_requests(t, &mut asked);
    assert!(
        asked.contains(&(PROG_V, 1)),
        "a keyframe of the middle layer is asked for: {asked:?}"
    );
    assert!(
        !asked.contains(&(PROG_V, 2)),
        "nothing asked of the paused layer: {asked:?}"
    );
    // Until the middle layer's keyframe, nothing reaches D1 on the slot; then it flows, with
    // one SSRC and the next sequence number.
    assert!(
        to(
            &route(&mut r, t, pkt(PROG_V, 1, 50, 0, false)),
            D1,
            Slot::Track(PROG_V)
        )
        .is_none()
    );
    let out = route(&mut r, t + 10, pkt(PROG_V, 1, 51, 0, true));
    let f = to(&out, D1, Slot::Track(PROG_V)).expect("middle layer to D1 at its keyframe");
    assert_eq!(f.ssrc, first.ssrc);
    assert_eq!(f.seq, first.seq.wrapping_add(1));
    // The high layer comes back: D1 returns to it at its keyframe.
    route(&mut r, t + 20, pkt(PROG_V, 2, 60, 0, false));
    let out = route(&mut r, t + 30, pkt(PROG_V, 2, 61, 0, true));
    let back = to(&out, D1, Slot::Track(PROG_V)).expect("back to the high layer");
    assert_eq!(back.seq, f.seq.wrapping_add(1));
}

#[test]
fn keyframe_requests_for_a_layer_nobody_wants_are_withdrawn() {
    let mut r = meeting();
    // D1 renders the program small, so its slot targets the low layer; then large again.
    let mid = Slot::Track(PROG_V);
    r.set_render_height(D1, mid, Some(720)).unwrap();
    assert!(r.keyframe_pending(PROG_V, 2));
    // Everyone leaves the program but the chair... simplest: every subscriber asks for small.
    for p in [D1, D2, CHAIR] {
        r.set_render_height(p, mid, Some(100)).unwrap();
    }
    assert!(
        !r.keyframe_pending(PROG_V, 2),
        "nobody targets the high layer any more"
    );
    assert!(r.keyframe_pending(PROG_V, 0));
}

#[test]
fn a_subscriber_that_comes_up_waits_for_a_keyframe_instead_of_taking_delta_frames() {
    let mut r = meeting();
    // The program's keyframe arrives while D1's connection is still coming up: the slot
    // switches to it (the engine delivers nothing yet).
    let kf = route(&mut r, 0, pkt(PROG_V, 2, 1, 0, true));
    assert!(to(&kf, D1, Slot::Track(PROG_V)).is_some());
    let mut asked = Vec::new();
    r.poll_keyframe_requests(0, &mut asked);
    // D1 connects: no delta frame until the next keyframe, and one is asked for.
    r.subscriber_connected(D1);
    assert!(r.keyframe_pending(PROG_V, 2));
    let delta = route(&mut r, 10, pkt(PROG_V, 2, 2, 900, false));
    assert!(
        to(&delta, D1, Slot::Track(PROG_V)).is_none(),
        "no delta frame"
    );
    assert!(
        to(&delta, D2, Slot::Track(PROG_V)).is_some(),
        "others unaffected"
    );
    let next = route(&mut r, 20, pkt(PROG_V, 2, 3, 1800, true));
    let f = to(&next, D1, Slot::Track(PROG_V)).expect("from the keyframe on");
    let first = to(&kf, D1, Slot::Track(PROG_V)).unwrap();
    assert_eq!(f.ssrc, first.ssrc);
    assert_eq!(
        f.seq,
        first.seq.wrapping_add(1),
        "no gap in what it receives"
    );
}

#[test]
fn a_subscriber_asks_for_no_keyframe_until_its_connection_is_up() {
    let mut r = meeting();
    let mut out = Vec::new();
    r.poll_keyframe_requests(0, &mut out);
    route(&mut r, 10, pkt(PROG_V, 2, 1, 0, true));
    out.clear();
    r.poll_keyframe_requests(5000, &mut out);
    assert!(out.is_empty());
    // A newcomer renders the program small: its slot wants the low layer, but its
    // connection is still coming up, so nothing is asked (a keyframe now would be lost and
    // would hold back the one it needs).
    let late = PeerId(50);
    r.add_peer(late, MediaRole::Delegate);
    r.set_render_height(late, Slot::Track(PROG_V), Some(100))
        .unwrap();
    r.poll_keyframe_requests(5100, &mut out);
    assert!(!r.keyframe_pending(PROG_V, 0));
    assert!(out.is_empty(), "nothing for a connection not up: {out:?}");
    // It comes up: one request, at once.
    r.subscriber_connected(late);
    r.poll_keyframe_requests(5200, &mut out);
    assert_eq!(out, vec![(PROG_V, 0)]);
    // `subscriber_up` on a peer already up changes nothing (no slot waits again).
    route(&mut r, 5250, pkt(PROG_V, 0, 1, 0, true));
    r.subscriber_up(late);
    assert!(!r.keyframe_pending(PROG_V, 0));
    let delta = route(&mut r, 5260, pkt(PROG_V, 0, 2, 900, false));
    assert!(to(&delta, late, Slot::Track(PROG_V)).is_some());
}

#[test]
fn keyframe_requests_to_one_track_are_spaced_so_none_falls_in_the_senders_throttle() {
    let mut r = meeting();
    let mut out = Vec::new();
    r.poll_keyframe_requests(0, &mut out);
    route(&mut r, 10, pkt(PROG_V, 2, 1, 0, true));
    // Two newcomers at once, one small, one middle: two layers of one track are wanted.
    for (p, h) in [(PeerId(60), 100), (PeerId(61), 300)] {
        r.add_peer(p, MediaRole::Delegate);
        r.set_render_height(p, Slot::Track(PROG_V), Some(h))
            .unwrap();
        r.subscriber_connected(p);
    }
    out.clear();
    r.poll_keyframe_requests(2000, &mut out);
    assert_eq!(
        out,
        vec![(PROG_V, 1)],
        "one request to the track, highest first"
    );
    out.clear();
    r.poll_keyframe_requests(2000 + KEYFRAME_SPACING_MS - 1, &mut out);
    assert!(out.is_empty(), "spaced");
    r.poll_keyframe_requests(2000 + KEYFRAME_SPACING_MS, &mut out);
    assert_eq!(out, vec![(PROG_V, 0)]);
    // Usually the first request's keyframe (on every layer) serves both: then the second is
    // never sent.
    r.add_peer(PeerId(62), MediaRole::Delegate);
    r.set_render_height(PeerId(62), Slot::Track(PROG_V), Some(100))
        .unwrap();
    r.subscriber_connected(PeerId(62));
    r.subscriber_wants_keyframe(PeerId(61), Slot::Track(PROG_V));
    out.clear();
    r.poll_keyframe_requests(4000, &mut out);
    assert_eq!(out.len(), 1);
    route(&mut r, 4050, pkt(PROG_V, 1, 2, 900, true));
    route(&mut r, 4050, pkt(PROG_V, 0, 2, 900, true));
    out.clear();
    r.poll_keyframe_requests(4400, &mut out);
    assert!(out.is_empty(), "{out:?}");
    // Another track is not held back by this one.
    r.subscriber_wants_keyframe(PeerId(61), Slot::Track(PROG_V));
    r.set_thumbnails(D2, true).unwrap();
    out.clear();
    r.poll_keyframe_requests(5100, &mut out);
    out.sort();
    assert_eq!(out, vec![(PROG_V, 1), (D1_CAM, 0)]);
}

#[test]
fn receivers_see_contiguous_numbering_across_padding_and_a_closed_gate() {
    let mut r = meeting();
    // The program's video, with a padding-only packet (not forwarded) in the middle.
    let a = to(
        &route(&mut r, 0, pkt(PROG_V, 2, 100, 0, true)),
        D1,
        Slot::Track(PROG_V),
    )
    .unwrap();
    r.skip(PROG_V, 2);
    let b = to(
        &route(&mut r, 33, pkt(PROG_V, 2, 102, 3000, false)),
        D1,
        Slot::Track(PROG_V),
    )
    .unwrap();
    assert_eq!(b.seq, a.seq.wrapping_add(1), "no gap where the padding was");
    // D1's microphone while the gate is closed, then open: the room's stream goes on at the
    // next number, the timestamp moved on by the time held back.
    let mut s = 500u16;
    let mut first = None;
    r.set_floor(true, &[D1], &[]);
    for t in 0..5 {
        let out = route(
            &mut r,
            1_000 + t * 20,
            pkt(D1_MIC, 0, s, (t as u32) * 960, false),
        );
        first = first.or(to(&out, ROOM, Slot::Track(D1_MIC)));
        s += 1;
    }
    let open = first.expect("the room hears D1 while D1 holds the floor");
    r.set_floor(true, &[], &[]);
    for t in 5..55 {
        let out = route(
            &mut r,
            1_000 + t * 20,
            pkt(D1_MIC, 0, s, (t as u32) * 960, false),
        );
        assert!(to(&out, ROOM, Slot::Track(D1_MIC)).is_none(), "held back");
        s += 1;
    }
    r.set_floor(true, &[D1], &[]);
    let again = to(
        &route(&mut r, 2_100, pkt(D1_MIC, 0, s, 55 * 960, false)),
        ROOM,
        Slot::Track(D1_MIC),
    )
    .expect("heard again");
    assert_eq!(
        again.seq,
        open.seq.wrapping_add(5),
        "the next number after the last sent"
    );
    assert!(
        again.timestamp.wrapping_sub(open.timestamp) >= 50 * 960,
        "time moved on"
    );
}
