//! The headless client against the real roundtable server (in process, port 0): the room's
//! program reaches delegates, and the floor gate opens and closes with the floor.

use std::time::Duration;

use roundtable::auth::Role;
use roundtable_headless::{Client, ClientOptions, PublishSpec, StreamKind, TrackStats, stream_tag};

mod coturn;
use roundtable_signaling::{MediaSource, SlotInfo};

mod real;
use real::{Server, raise_and_grant, start, start_with};

/// Joins and publishes; returns once the publish connection is up.
async fn publishing(server: &Server, role: Role, id: &str, spec: PublishSpec) -> Client {
    let c = server.join(role, id).await;
    c.publish(spec).await.expect("publish");
    c.wait_published().await.expect("publish connection up");
    c
}

/// A microphone and no camera.
fn audio_only() -> PublishSpec {
    PublishSpec {
        audio: true,
        video_layers: 0,
        ..Default::default()
    }
}

/// The room publishing its program: audio and one video stream.
async fn room_program(server: &Server) -> Client {
    publishing(
        server,
        Role::Room,
        "room",
        PublishSpec {
            audio: true,
            video_layers: 1,
            source_program: true,
            ..Default::default()
        },
    )
    .await
}

fn program(t: &TrackStats) -> bool {
    matches!(
        &t.slot,
        Some(SlotInfo::Track { participant, source: MediaSource::Program, .. }) if participant == "room"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_the_real_server_and_speaks_its_protocol() {
    let server = start().await;
    let chair = server.join(Role::Moderator, "chair").await;
    assert_eq!(chair.participant(), "chair");
    assert_eq!(chair.floor()["policy"], "moderated");
    let pong = chair
        .cmd(serde_json::json!({"type": "ping", "client_time": 1}))
        .await
        .expect("pong");
    assert_eq!(pong["type"], "pong");
    chair
        .cmd(serde_json::json!({"type": "agenda_start"}))
        .await
        .expect("ack");
    chair.wait_event("item_started").await.expect("event");
    let e = chair
        .cmd(serde_json::json!({"type": "grant", "request": 999}))
        .await
        .expect_err("no such request");
    assert_eq!(e.code(), Some("not_found"));
    // A refused upgrade keeps the server's code.
    let e = Client::join(&server.base, "nonsense").await.unwrap_err();
    assert_eq!(e.code(), Some("token_malformed"), "{e}");
    chair.close().await;
    let _ = server.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn room_program_reaches_two_delegates_in_order() {
    let server = start().await;
    let room = publishing(
        &server,
        Role::Room,
        "room",
        PublishSpec {
            audio: true,
            video_layers: 3,
            source_program: true,
            ..Default::default()
        },
    )
    .await;

    let delegates = [
        server.join(Role::Delegate, "elif-yilmaz").await,
        server.join(Role::Delegate, "dilnoza-yusupova").await,
    ];
    let audio_tag = stream_tag("room", StreamKind::Audio);
    for d in &delegates {
        d.subscribe(false).await.expect("media_preferences");
        d.wait_subscribed(1).await.expect("subscribe offer");
        let stats = d
            .wait_stats(Duration::from_secs(15), |s| {
                s.iter().filter(|t| program(t) && t.packets >= 200).count() == 2
            })
            .await
            .expect("program audio and video arrive");
        for t in stats.iter().filter(|t| program(t)) {
            assert_eq!(t.ssrcs.len(), 1, "{t:?}");
            // In order, nothing missing (a packet repaired by NACK may arrive late).
            assert_eq!(t.rtp.missing, 0, "{t:?}");
            assert_eq!(t.rtp.duplicates, 0, "{t:?}");
            assert_eq!(t.unmarked, 0, "{t:?}");
            assert!(
                t.streams.keys().all(|tag| tag >> 8 == audio_tag >> 8),
                "{t:?}"
            );
            // Sanity only (latency is measured by the benchmark, not asserted in tests): no
            // packet held back for a second, even on a loaded machine.
            assert!(t.latency.max_us < 1_000_000, "{:?}", t.latency);
            if t.kind == "video" {
                assert!(t.keyframes >= 1, "{t:?}");
            }
        }
        assert!(d.errors().is_empty(), "{:?}", d.errors());
    }
    assert!(room.errors().is_empty(), "{:?}", room.errors());
    for d in &delegates {
        d.close().await;
    }
    room.close().await;
    let _ = server.stop.send(());
}

fn mic_of(t: &TrackStats, who: &str) -> bool {
    matches!(
        &t.slot,
        Some(SlotInfo::Track { participant, source: MediaSource::Microphone, .. }) if participant == who
    )
}

/// Waits (10 s at most) until `client` has received `at_least` packets of `who`'s microphone.
async fn voice_grows(
    client: &Client,
    who: &str,
    at_least: u64,
) -> roundtable_headless::Result<Vec<TrackStats>> {
    client
        .wait_stats(Duration::from_secs(10), |s| {
            s.iter()
                .filter(|t| mic_of(t, who))
                .map(|t| t.packets)
                .sum::<u64>()
                >= at_least
        })
        .await
}

fn packets_from(client: &Client, who: &str) -> u64 {
    client
        .stats()
        .iter()
        .filter(|t| mic_of(t, who))
        .map(|t| t.packets)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_gate_opens_on_grant_and_closes_on_revoke() {
    let server = start().await;
    let chair = server.join(Role::Moderator, "chair").await;
    let room = server.join(Role::Room, "room").await;
    room.subscribe(false).await.expect("room subscribes");
    room.wait_subscribed(1).await.expect("room offer");
    let d1 = publishing(&server, Role::Delegate, "d1", audio_only()).await;
    // The room's subscribe connection gets d1's microphone (a re-offer).
    room.wait_subscribed(2)
        .await
        .expect("re-offer with d1's mic");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(packets_from(&room, "d1"), 0, "gate closed before the grant");
    let dropped_before = server_gate(&server, "d1").await;

    // d1 raises a hand; the chair grants: audio reaches the room.
    let request = raise_and_grant(&chair, &d1).await;
    room.wait_stats(Duration::from_secs(10), |s| {
        s.iter().any(|t| mic_of(t, "d1") && t.packets >= 50)
    })
    .await
    .expect("d1's audio reaches the room after the grant");
    let granted_packets = room
        .stats()
        .into_iter()
        .find(|t| mic_of(t, "d1"))
        .expect("mic stats");
    assert_eq!(granted_packets.rtp.gaps, 0, "{granted_packets:?}");

    // Revoke: the audio stops at once.
    chair
        .cmd(serde_json::json!({"type": "revoke", "request": request}))
        .await
        .expect("revoke");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_revoke = packets_from(&room, "d1");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        packets_from(&room, "d1"),
        after_revoke,
        "audio after the revoke"
    );
    assert!(dropped_before > 0, "drops before the grant are counted");
    assert!(server_gate(&server, "d1").await > dropped_before);
    for c in [&chair, &room, &d1] {
        assert!(c.errors().is_empty(), "{:?}", c.errors());
    }
    d1.close().await;
    room.close().await;
    chair.close().await;
    let _ = server.stop.send(());
}

/// Packets received from `who`'s microphone on any m-line (by the stream tag each payload
/// carries, so a reused m-line counts each speaker apart), and the mids that carried them.
fn voice_of(client: &Client, who: &str) -> (u64, Vec<String>) {
    let tag = stream_tag(who, StreamKind::Audio);
    let mut mids = Vec::new();
    let mut n = 0;
    for t in client.stats() {
        if let Some(s) = t.streams.get(&tag) {
            n += s.packets;
            mids.push(t.mid.clone());
        }
    }
    (n, mids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_open_microphones_only_the_next_speaker_takes_over_the_last_ones_m_line() {
    let server = start().await;
    let chair = server.join(Role::Moderator, "chair").await;
    let d1 = publishing(&server, Role::Delegate, "d1", audio_only()).await;
    let d2 = publishing(&server, Role::Delegate, "d2", audio_only()).await;
    let room = server.join(Role::Room, "room").await;
    room.cmd(serde_json::json!({"type": "media_preferences", "thumbnails": false, "microphones": "open"}))
        .await
        .expect("media_preferences");
    room.wait_subscribed(1).await.expect("room offer");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mics = |c: &Client| {
        c.slots()
            .iter()
            .filter(|s| matches!(s, SlotInfo::Track { kind, .. } if kind == "audio"))
            .count()
    };
    assert_eq!(
        mics(&room),
        0,
        "no m-line for a closed microphone: {:?}",
        room.slots()
    );

    // The first speaker: a new m-line (an offer).
    let r1 = raise_and_grant(&chair, &d1).await;
    room.wait_subscribed(2).await.expect("offer with d1's mic");
    room.wait_stats(Duration::from_secs(10), |_| voice_of(&room, "d1").0 >= 50)
        .await
        .expect("d1 heard");
    let offers = room.subscribe_offers();
    chair
        .cmd(serde_json::json!({"type": "revoke", "request": r1}))
        .await
        .expect("revoke");
    // The next speaker takes over that m-line: relabeled, not renegotiated.
    raise_and_grant(&chair, &d2).await;
    room.wait_stats(Duration::from_secs(10), |_| voice_of(&room, "d2").0 >= 50)
        .await
        .expect("d2 heard");
    let (_, d1_mids) = voice_of(&room, "d1");
    let (_, d2_mids) = voice_of(&room, "d2");
    assert_eq!(d1_mids, d2_mids, "one m-line carried both speakers");
    assert_eq!(
        room.subscribe_offers(),
        offers,
        "no renegotiation for the second speaker"
    );
    assert!(
        room.relabels() >= 1,
        "subscribe_slots named the new speaker"
    );
    assert_eq!(mics(&room), 1, "{:?}", room.slots());
    assert!(
        room.slots().iter().any(|s| matches!(s, SlotInfo::Track { participant, source: MediaSource::Microphone, .. } if participant == "d2")),
        "{:?}",
        room.slots()
    );
    let t = room.track_stats(&d2_mids[0]).expect("the m-line's stats");
    assert_eq!(
        t.rtp.gaps, 0,
        "numbering continued across the speakers: {t:?}"
    );
    for c in [&chair, &room, &d1, &d2] {
        assert!(c.errors().is_empty(), "{:?}", c.errors());
    }
    for c in [d1, d2, room, chair] {
        c.close().await;
    }
    let _ = server.stop.send(());
}

/// The floor gate's drop counter for a participant, asked of the meeting task.
async fn server_gate(server: &Server, participant: &str) -> u64 {
    server.meeting.gate_dropped(participant).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_client_reaches_the_sfu_through_coturn_with_minted_credentials() {
    const TURN_SECRET: &str = "coturn-shared-secret-0123456789";
    let Some(turn) = coturn::Coturn::start(coturn::Auth::Secret(TURN_SECRET)) else {
        return;
    };
    let port = turn.port;
    let server = start_with(|c| {
        c.media.turn_urls = vec![format!("turn:127.0.0.1:{port}?transport=udp")];
        c.media.turn_secret = TURN_SECRET.into();
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let room = room_program(&server).await;
    // The delegate may only use relay candidates, with the credentials in its welcome.
    let opts = ClientOptions {
        relay_only: true,
        use_ice_servers: true,
        ..Default::default()
    };
    let d = Client::join_with(
        &server.base,
        &server.token(Role::Delegate, "far-away"),
        opts,
    )
    .await
    .expect("join");
    let servers = d.ice_servers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    let username = servers[0].username.clone().unwrap_or_default();
    assert!(username.ends_with(":far-away"), "{username}");
    d.subscribe(false).await.expect("subscribe");
    d.wait_subscribed(1).await.expect("offer");
    d.wait_stats(Duration::from_secs(20), |s| {
        s.iter().filter(|t| program(t) && t.packets >= 100).count() == 2
    })
    .await
    .expect("the program arrives through the relay");
    assert!(d.errors().is_empty(), "{:?}", d.errors());
    d.close().await;
    room.close().await;
    drop(turn);
    let _ = server.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_subscribers_joining_at_once_cause_at_most_two_keyframe_requests() {
    let server = start().await;
    let room = publishing(
        &server,
        Role::Room,
        "room",
        PublishSpec {
            audio: false,
            video_layers: 1,
            source_program: true,
            ..Default::default()
        },
    )
    .await;
    // Let the first keyframe requests (none should come: nobody watches yet) settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests_before: u64 = room.sent_stats().iter().map(|s| s.keyframe_requests).sum();

    let mut viewers = Vec::new();
    for i in 0..10 {
        viewers.push(server.join(Role::Delegate, &format!("viewer-{i}")).await);
    }
    // All ten ask at once (no waiting for each ack).
    for (i, v) in viewers.iter().enumerate() {
        v.send_raw(&format!(
            r#"{{"id":"sub-{i}","type":"media_preferences","thumbnails":false}}"#
        ))
        .expect("send");
    }
    for v in &viewers {
        v.wait_subscribed(1).await.expect("offer");
        v.wait_stats(Duration::from_secs(20), |s| {
            s.iter()
                .any(|t| program(t) && t.kind == "video" && t.keyframes >= 1)
        })
        .await
        .expect("every viewer starts on a keyframe");
    }
    let requests: u64 = room.sent_stats().iter().map(|s| s.keyframe_requests).sum();
    let merged = requests - requests_before;
    assert!(
        (1..=2).contains(&merged),
        "10 viewers caused {merged} keyframe requests to the publisher"
    );
    for v in &viewers {
        v.close().await;
    }
    room.close().await;
    let _ = server.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulcast_switches_from_low_to_high_at_a_keyframe_with_no_gap() {
    let server = start().await;
    let d1 = publishing(
        &server,
        Role::Delegate,
        "d1",
        PublishSpec {
            audio: false,
            video_layers: 3,
            ..Default::default()
        },
    )
    .await;
    let viewer = server.join(Role::Delegate, "viewer").await;
    viewer.subscribe(true).await.expect("thumbnails");
    let cam = |t: &TrackStats| matches!(&t.slot, Some(SlotInfo::Track { participant, source: MediaSource::Camera, .. }) if participant == "d1");
    let low = stream_tag("d1", StreamKind::Video(0));
    let high = stream_tag("d1", StreamKind::Video(2));
    let stats = viewer
        .wait_stats(Duration::from_secs(15), |s| {
            s.iter().any(|t| cam(t) && t.packets >= 60)
        })
        .await
        .expect("the thumbnail arrives");
    let thumb = stats.into_iter().find(|t| cam(t)).expect("camera slot");
    assert!(
        thumb.streams.keys().all(|tag| *tag == low),
        "low layer only: {thumb:?}"
    );

    // The viewer now renders it at 720 px: the high layer, from its next keyframe.
    viewer
        .cmd(serde_json::json!({
            "type": "media_preferences",
            "thumbnails": true,
            "render": [{"mid": thumb.mid, "height": 720}],
        }))
        .await
        .expect("render size");
    let stats = viewer
        .wait_stats(Duration::from_secs(15), |s| {
            s.iter()
                .any(|t| cam(t) && t.streams.get(&high).is_some_and(|r| r.packets >= 60))
        })
        .await
        .expect("the high layer arrives");
    let t = stats.into_iter().find(|t| cam(t)).expect("camera slot");
    assert_eq!(t.ssrcs.len(), 1, "one continuous stream: {t:?}");
    assert_eq!(t.rtp.gaps, 0, "no gap at the switch: {t:?}");
    assert_eq!(t.rtp.duplicates, 0, "{t:?}");
    assert_eq!(t.tag_switches, 1, "exactly one switch, low to high: {t:?}");
    assert!(t.keyframes >= 2, "the switch happened at a keyframe: {t:?}");
    viewer.close().await;
    d1.close().await;
    let _ = server.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_repair_keeps_video_delivery_above_99_5_percent_under_5_percent_loss() {
    let server = start().await;
    let room = publishing(
        &server,
        Role::Room,
        "room",
        PublishSpec {
            audio: false,
            video_layers: 1,
            source_program: true,
            ..Default::default()
        },
    )
    .await;
    let lossy = server.join(Role::Delegate, "lossy").await;
    lossy.subscribe(false).await.expect("subscribe");
    lossy.wait_subscribed(1).await.expect("offer");
    lossy
        .wait_stats(Duration::from_secs(15), |s| {
            s.iter()
                .any(|t| program(t) && t.kind == "video" && t.packets >= 30)
        })
        .await
        .expect("video flows");
    assert!(
        server.meeting.inject_loss("lossy", 50).await,
        "loss injected"
    );
    let before = server.engine.stats().await.expect("stats");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = server.engine.stats().await.expect("stats");
    let dropped = after.rtp_dropped_by_loss - before.rtp_dropped_by_loss;
    // Stop the loss, let the last repairs land, then count.
    server.meeting.inject_loss("lossy", 0).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let t = lossy
        .stats()
        .into_iter()
        .find(|t| program(t) && t.kind == "video")
        .expect("video");
    let delivered = t.rtp.received as f64 / t.rtp.expected.max(1) as f64;
    eprintln!(
        "loss 5 %: {dropped} packets dropped on the wire, delivered {}/{} = {:.4}",
        t.rtp.received, t.rtp.expected, delivered
    );
    assert!(dropped >= 30, "the loss really happened: {dropped}");
    assert!(delivered > 0.995, "delivered {delivered:.4}: {t:?}");
    lossy.close().await;
    room.close().await;
    let _ = server.stop.send(());
}

/// Someone leaves, someone else arrives: the newcomer's microphone reaches the room on the
/// m-line the leaver's used (a `subscribe_slots` relabel, no new offer), with the same SSRC and
/// no gap in the room's sequence numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_takes_over_the_m_line_of_someone_who_left_without_renegotiation() {
    let server =
        start_with(|c| c.meetings[0].floor.policy = roundtable::config::PolicyKind::Open).await;
    let room = server.join(Role::Room, "room").await;
    room.subscribe(false).await.expect("room subscribes");
    room.wait_subscribed(1).await.expect("room offer");
    let audio = audio_only();
    let d1 = publishing(&server, Role::Delegate, "d1", audio.clone()).await;
    room.wait_subscribed(2)
        .await
        .expect("re-offer with d1's mic");
    room.wait_stats(Duration::from_secs(10), |s| {
        s.iter().any(|t| mic_of(t, "d1") && t.packets >= 25)
    })
    .await
    .expect("d1 heard (open floor)");
    let before = room
        .stats()
        .into_iter()
        .find(|t| mic_of(t, "d1"))
        .expect("d1's m-line");
    d1.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _d2 = publishing(&server, Role::Delegate, "d2", audio).await;
    room.wait_stats(Duration::from_secs(10), |s| {
        s.iter()
            .any(|t| mic_of(t, "d2") && t.packets >= before.packets + 25)
    })
    .await
    .expect("d2 heard on the reused m-line");
    let after = room
        .stats()
        .into_iter()
        .find(|t| mic_of(t, "d2"))
        .expect("d2's m-line");
    assert_eq!(after.mid, before.mid, "same m-line");
    assert_eq!(after.ssrcs, before.ssrcs, "same SSRC");
    assert_eq!(after.rtp.gaps, 0, "no gap across the handover: {after:?}");
    assert_eq!(room.relabels(), 1, "told by subscribe_slots");
    assert_eq!(room.subscribe_offers(), 2, "no third offer");
    assert!(room.errors().is_empty(), "{:?}", room.errors());
    room.close().await;
    let _ = server.stop.send(());
}

/// RFC 6464 audio levels become `speaking` messages, measured before the floor gate: a
/// delegate talking without the floor is shown to the chair (not heard, not told to others);
/// with the floor, everyone is told; silence ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_levels_become_speaking_messages_before_the_gate() {
    let server = start().await;
    let chair = server.join(Role::Moderator, "chair").await;
    let d2 = server.join(Role::Delegate, "d2").await;
    let d1 = publishing(
        &server,
        Role::Delegate,
        "d1",
        PublishSpec {
            audio_level: Some(20),
            ..audio_only()
        },
    )
    .await;
    let muted = chair
        .wait_event_where("speaking", |m| {
            m["participant"] == "d1" && m["speaking"] == true
        })
        .await
        .expect("the chair sees d1 speaking");
    assert_eq!(muted["event"]["heard"], false, "{muted}");
    d1.wait_event_where("speaking", |m| m["participant"] == "d1")
        .await
        .expect("d1 is told it speaks while muted");
    // Silence ends it.
    d1.set_audio_level(Some(127));
    chair
        .wait_event_where("speaking", |m| {
            m["participant"] == "d1" && m["speaking"] == false
        })
        .await
        .expect("speech ends on silence");
    // With the floor, everyone is told.
    raise_and_grant(&chair, &d1).await;
    d1.set_audio_level(Some(25));
    let heard = d2
        .wait_event_where("speaking", |m| {
            m["participant"] == "d1" && m["speaking"] == true
        })
        .await
        .expect("d2 is told once d1 has the floor");
    assert_eq!(heard["event"]["heard"], true);
    // (The first such message d2 got is the heard one: it was never told of the muted speech.)
    for c in [&chair, &d1, &d2] {
        assert!(c.errors().is_empty(), "{:?}", c.errors());
    }
    d1.close().await;
    d2.close().await;
    chair.close().await;
    let _ = server.stop.send(());
}

/// A presenter shares a screen on a second sending connection while the camera (two simulcast
/// layers) keeps flowing: the screen reaches the others through their `screen` slot, the
/// camera's connection is never renegotiated, and `unpublish` stops the share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_share_on_its_own_connection_fills_the_screen_slot_and_stops() {
    let server = start().await;
    let chair = server.join(Role::Moderator, "chair").await;
    let viewer = server.join(Role::Delegate, "viewer").await;
    viewer.subscribe(false).await.expect("subscribe");
    viewer.wait_subscribed(1).await.expect("offer");
    let presenter = publishing(
        &server,
        Role::Delegate,
        "presenter",
        PublishSpec {
            audio: true,
            video_layers: 2,
            ..Default::default()
        },
    )
    .await;
    presenter
        .publish_screen(PublishSpec::default())
        .await
        .expect("screen published");
    // The chair gives the presenter the floor: a floor holder's screen fills the screen slot
    // when no presentation slot is running.
    raise_and_grant(&chair, &presenter).await;
    let screen = |t: &TrackStats| matches!(t.slot, Some(SlotInfo::Screen { .. }));
    viewer
        .wait_stats(Duration::from_secs(15), |s| {
            s.iter().any(|t| screen(t) && t.packets >= 30)
        })
        .await
        .expect("the screen reaches the viewer's screen slot");
    presenter.unpublish_screen().await.expect("unpublish");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stopped = viewer
        .stats()
        .into_iter()
        .find(|t| screen(t))
        .map_or(0, |t| t.packets);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = viewer
        .stats()
        .into_iter()
        .find(|t| screen(t))
        .map_or(0, |t| t.packets);
    assert_eq!(later, stopped, "the screen stopped with unpublish");
    for c in [&chair, &viewer, &presenter] {
        assert!(c.errors().is_empty(), "{:?}", c.errors());
    }
    presenter.close().await;
    viewer.close().await;
    chair.close().await;
    let _ = server.stop.send(());
}

/// ICE-TCP: a delegate whose network allows no UDP (TCP-only candidates) reaches the SFU over
/// the media port's TCP side and receives the room program; the room on UDP is undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_only_client_receives_the_program_over_ice_tcp() {
    let server = start_with(|c| c.media.ice_tcp = true).await;
    let room = room_program(&server).await;
    let opts = ClientOptions {
        tcp_only: true,
        ..Default::default()
    };
    let d = Client::join_with(
        &server.base,
        &server.token(Role::Delegate, "behind-a-firewall"),
        opts,
    )
    .await
    .expect("join");
    d.subscribe(false).await.expect("subscribe");
    d.wait_subscribed(1).await.expect("offer");
    let stats = d
        .wait_stats(Duration::from_secs(20), |s| {
            s.iter().filter(|t| program(t) && t.packets >= 100).count() == 2
        })
        .await
        .expect("the program arrives over TCP");
    for t in stats.iter().filter(|t| program(t)) {
        assert_eq!(t.rtp.missing, 0, "TCP delivers everything: {t:?}");
    }
    assert!(d.errors().is_empty(), "{:?}", d.errors());
    assert!(room.errors().is_empty(), "{:?}", room.errors());
    d.close().await;
    room.close().await;
    let _ = server.stop.send(());
}

/// A subscriber that stops reading (its subscribe connection gone without a word to the
/// server) harms no one: the other delegate keeps receiving the program with nothing missing,
/// and the server keeps its meeting and its other connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_harms_no_one() {
    let server = start().await;
    let room = room_program(&server).await;
    let gone = server.join(Role::Delegate, "gone").await;
    let stays = server.join(Role::Delegate, "stays").await;
    for d in [&gone, &stays] {
        d.subscribe(false).await.expect("subscribe");
        d.wait_subscribed(1).await.expect("offer");
    }
    let flowing = |c: &Client, n: u64| {
        let c = c.clone();
        async move {
            c.wait_stats(Duration::from_secs(15), |s| {
                s.iter().filter(|t| program(t) && t.packets >= n).count() == 2
            })
            .await
        }
    };
    flowing(&gone, 50).await.expect("both receive");
    flowing(&stays, 50).await.expect("both receive");
    gone.vanish_subscriber().await;
    let before: u64 = stays
        .stats()
        .iter()
        .filter(|t| program(t))
        .map(|t| t.packets)
        .sum();
    let after = flowing(&stays, before / 2 + 200)
        .await
        .expect("the other goes on");
    for t in after.iter().filter(|t| program(t)) {
        assert_eq!(t.rtp.missing, 0, "{t:?}");
    }
    let pong = gone
        .cmd(serde_json::json!({"type": "ping", "client_time": 0}))
        .await
        .expect("the vanished client's websocket still works");
    assert_eq!(pong["type"], "pong");
    for c in [&room, &stays] {
        assert!(c.errors().is_empty(), "{:?}", c.errors());
    }
    gone.close().await;
    stays.close().await;
    room.close().await;
    let _ = server.stop.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_of_the_subscribe_connection_keeps_the_program_flowing() {
    let server = start().await;
    let room = room_program(&server).await;
    let d = server.join(Role::Delegate, "elif-yilmaz").await;
    d.subscribe(false).await.expect("media_preferences");
    d.wait_subscribed(1).await.expect("subscribe offer");
    let audio = |s: &[TrackStats]| {
        s.iter()
            .filter(|t| program(t) && t.kind == "audio")
            .map(|t| t.packets)
            .sum::<u64>()
    };
    let before = d
        .wait_stats(Duration::from_secs(15), |s| audio(s) >= 100)
        .await
        .expect("program audio arrives");
    let before = audio(&before);
    let restarts = server.engine.stats().await.expect("stats").ice_restarts;

    // The restart: a new offer with new ICE credentials, answered like any other.
    d.cmd(serde_json::json!({"type": "ice_restart", "pc": "subscribe"}))
        .await
        .expect("ice_restart acked");
    d.wait_subscribed(2)
        .await
        .expect("the restart offer answered");
    assert_eq!(
        server.engine.stats().await.expect("stats").ice_restarts,
        restarts + 1
    );
    // Media carries on over the new credentials: 3 s more of audio, same stream.
    let after = d
        .wait_stats(Duration::from_secs(15), |s| audio(s) >= before + 150)
        .await
        .expect("program audio after the restart");
    for t in after.iter().filter(|t| program(t)) {
        assert_eq!(t.ssrcs.len(), 1, "one stream through the restart: {t:?}");
    }

    // Only the subscribe connection is the server's to restart; a sending one restarts with
    // a new publish offer. Someone without a subscribe connection has nothing to restart.
    let e = d
        .cmd(serde_json::json!({"type": "ice_restart", "pc": "publish"}))
        .await
        .expect_err("publish is the client's to restart");
    assert!(e.to_string().contains("invalid_fields"), "{e}");
    let e = room
        .cmd(serde_json::json!({"type": "ice_restart", "pc": "subscribe"}))
        .await
        .expect_err("the room has no subscribe connection");
    assert!(e.to_string().contains("not_found"), "{e}");
    assert!(d.errors().is_empty(), "{:?}", d.errors());
    d.close().await;
    room.close().await;
    let _ = server.stop.send(());
}

/// A floor holder whose network drops (no close frame) and who resumes within the grace
/// period: the server held its peer connections, so it keeps the floor and its voice keeps
/// reaching the room through the drop; its event stream resumes with no gap, and its subscribe
/// connection is re-offered with an ICE restart, the program flowing on over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floor_holder_who_drops_and_resumes_keeps_the_floor_and_the_media() {
    let server = start().await;
    let chair = server.join(Role::Moderator, "chair").await;
    let room = room_program(&server).await;
    room.subscribe(false).await.expect("room subscribes");
    let d1 = publishing(&server, Role::Delegate, "d1", audio_only()).await;
    d1.subscribe(false).await.expect("d1 subscribes");
    d1.wait_subscribed(1).await.expect("d1's offer");
    raise_and_grant(&chair, &d1).await;
    room.wait_stats(Duration::from_secs(10), |s| {
        s.iter().any(|t| mic_of(t, "d1") && t.packets >= 50)
    })
    .await
    .expect("d1's voice reaches the room");
    let audio = |s: &[TrackStats]| {
        s.iter()
            .filter(|t| program(t) && t.kind == "audio")
            .map(|t| t.packets)
            .sum::<u64>()
    };
    d1.wait_stats(Duration::from_secs(10), |s| audio(s) >= 50)
        .await
        .expect("the program reaches d1");
    let offers = d1.subscribe_offers();
    let restarts = server.engine.stats().await.expect("stats").ice_restarts;
    let connections = server.engine.stats().await.expect("stats").connections;

    // The network goes.
    d1.drop_connection();
    chair
        .wait_event_where("participant_left", |e| {
            e["participant"] == "d1" && e["presence"] == "connection_lost"
        })
        .await
        .expect("the chair sees d1's connection lost");
    assert!(
        d1.cmd(serde_json::json!({"type": "ping", "client_time": 0}))
            .await
            .is_err(),
        "no websocket while away"
    );
    // Events d1 misses while away; its voice still reaches the room (the floor is held).
    let voice_away = packets_from(&room, "d1");
    chair
        .cmd(serde_json::json!({"type": "request_for", "name": "Leyla Aliyeva", "delegation": "Azerbaijan"}))
        .await
        .expect("a hand for someone in the room");
    voice_grows(&room, "d1", voice_away + 25)
        .await
        .expect("d1's voice goes on through the drop");

    // Back within the grace period.
    let missed_from = d1.last_seq();
    let back = d1.resume().await.expect("resume");
    assert!(back.resumed && back.media_held, "{back:?}");
    assert_eq!(back.seq, missed_from);
    d1.wait_event("floor_requested")
        .await
        .expect("the event missed while away");
    d1.wait_subscribed(offers + 1)
        .await
        .expect("the ICE-restart offer of the held subscribe connection");
    assert_eq!(
        server.engine.stats().await.expect("stats").ice_restarts,
        restarts + 1
    );
    assert_eq!(
        server.engine.stats().await.expect("stats").connections,
        connections,
        "the same peer connections, none new, none lost"
    );
    let before = audio(&d1.stats());
    let after = d1
        .wait_stats(Duration::from_secs(15), |s| audio(s) >= before + 100)
        .await
        .expect("the program after the restart");
    for t in after.iter().filter(|t| program(t)) {
        assert_eq!(t.ssrcs.len(), 1, "one stream through the drop: {t:?}");
    }
    // Still the floor holder, still heard.
    let floor = chair.floor();
    let holders: Vec<&str> = floor["holders"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["beneficiary"]["participant"].as_str())
        .collect();
    assert_eq!(holders, ["d1"], "d1 still holds the floor: {floor}");
    let voice = packets_from(&room, "d1");
    voice_grows(&room, "d1", voice + 25)
        .await
        .expect("d1's voice after the resume");
    assert_eq!(d1.event_gaps(), (0, 0), "no gap, no repeat");
    let pong = d1
        .cmd(serde_json::json!({"type": "ping", "client_time": 0}))
        .await
        .expect("the new websocket works");
    assert_eq!(pong["type"], "pong");
    for c in [&chair, &room, &d1] {
        assert!(c.errors().is_empty(), "{:?}", c.errors());
    }
    d1.close().await;
    room.close().await;
    chair.close().await;
    let _ = server.stop.send(());
}
