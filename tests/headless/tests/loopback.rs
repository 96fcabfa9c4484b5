//! The headless client against a stand-in server on loopback (tests/support): real ICE, DTLS
//! and SRTP, no roundtable server involved, so this checks the client alone until the real
//! engine speaks media (see server.rs beside this file); and through coturn.

use std::time::Duration;

use roundtable_headless::{Client, ClientOptions, PublishSpec, StreamKind, stream_tag};
use roundtable_signaling::SlotInfo;
use serde_json::json;

mod coturn;
mod support;
use coturn::Coturn;
use support::{start_fake, start_fake_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_simulcast_and_receives_through_a_loopback_forwarder() {
    let (base, fake) = start_fake().await;
    let publisher = Client::join(&base, "pub").await.expect("join");
    let viewer = Client::join(&base, "viewer").await.expect("join");
    assert_eq!(publisher.participant(), "p1");
    assert_eq!(publisher.floor()["policy"], "moderated");

    // Commands: ack, error, pong; events.
    let e = publisher
        .cmd(json!({"type": "agenda_start"}))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("forbidden"));
    let pong = publisher
        .cmd(json!({"type": "ping", "client_time": 5}))
        .await
        .unwrap();
    assert_eq!(pong["type"], "pong");
    let ev = viewer.wait_event("participant_joined").await.unwrap();
    assert_eq!(ev["seq"], 1);
    assert_eq!(viewer.floor()["n"], 1);

    let sent = publisher
        .publish(PublishSpec {
            audio: true,
            video_layers: 3,
            keyframe_interval: Duration::ZERO,
            ..Default::default()
        })
        .await
        .expect("publish");
    assert_eq!(sent.len(), 4);
    assert_eq!(
        sent.iter().map(|s| s.rid.clone()).collect::<Vec<_>>(),
        vec![None, Some("q".into()), Some("h".into()), Some("f".into())]
    );
    publisher.wait_published().await.expect("publish connected");
    viewer.wait_subscribed(1).await.unwrap();

    // Audio and the `f` layer reach the viewer, in order, with marks and latency.
    let audio_tag = stream_tag("p1", StreamKind::Audio);
    let f_tag = stream_tag("p1", StreamKind::Video(2));
    let stats = viewer
        .wait_stats(Duration::from_secs(10), |s| {
            s.len() == 2 && s.iter().all(|t| t.packets >= 100)
        })
        .await
        .expect("media arrives");
    let audio = stats.iter().find(|t| t.kind == "audio").unwrap();
    let video = stats.iter().find(|t| t.kind == "video").unwrap();
    assert!(matches!(&audio.slot, Some(SlotInfo::Track { kind, .. }) if kind == "audio"));
    assert_eq!(audio.ssrcs.len(), 1);
    assert_eq!(audio.rtp.gaps, 0, "{audio:?}");
    assert_eq!(audio.rtp.duplicates, 0);
    assert_eq!(audio.unmarked, 0);
    assert_eq!(
        audio.streams.keys().copied().collect::<Vec<_>>(),
        vec![audio_tag]
    );
    assert!(audio.latency.count >= 100);
    assert!(audio.latency.p50_us < 50_000, "{:?}", audio.latency);
    assert_eq!(
        video.streams.keys().copied().collect::<Vec<_>>(),
        vec![f_tag]
    );
    assert!(video.keyframes >= 1, "first frame is a keyframe");
    assert_eq!(video.rtp.gaps, 0, "{video:?}");

    // The forwarder's PLIs reach the `f` layer only, and each makes a keyframe.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let sent = publisher.sent_stats();
    let f = sent.iter().find(|s| s.rid.as_deref() == Some("f")).unwrap();
    let q = sent.iter().find(|s| s.rid.as_deref() == Some("q")).unwrap();
    assert!(f.keyframe_requests >= 1, "{f:?}");
    assert!(f.keyframes >= 2, "{f:?}");
    assert_eq!(q.keyframe_requests, 0);
    assert_eq!(q.keyframes, 1);
    assert!(
        sent.iter().all(|s| s.errors == 0 && s.packets > 0),
        "{sent:?}"
    );
    let v = viewer.stats();
    let video = v.iter().find(|t| t.kind == "video").unwrap();
    assert!(video.keyframes >= 2, "{video:?}");

    // A re-offer adds an m-line; the tracks already playing carry on without a gap.
    let before = viewer.stats();
    fake.reoffer_all().await;
    viewer.wait_subscribed(2).await.unwrap();
    assert_eq!(viewer.slots().len(), 3);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = viewer.stats();
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.mid, b.mid);
        assert!(a.packets > b.packets + 20, "{} kept playing: {a:?}", a.mid);
        assert_eq!(a.rtp.gaps, 0, "{a:?}");
        assert_eq!(a.ssrcs.len(), 1, "{a:?}");
    }
    assert!(viewer.errors().is_empty(), "{:?}", viewer.errors());
    assert!(publisher.errors().is_empty(), "{:?}", publisher.errors());

    publisher.close().await;
    viewer.close().await;
    assert!(
        publisher
            .cmd(json!({"type": "ping", "client_time": 1}))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_trickle_single_layer() {
    let (base, _fake) = start_fake().await;
    let opts = ClientOptions {
        trickle: false,
        ..Default::default()
    };
    let c = Client::join_with(&base, "x", opts).await.unwrap();
    let sent = c
        .publish(PublishSpec {
            video_layers: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].rid, None);
    let s = c
        .wait_stats(Duration::from_secs(10), |s| {
            s.len() == 2 && s.iter().all(|t| t.packets >= 20)
        })
        .await
        .expect("own media comes back");
    let video = s.iter().find(|t| t.kind == "video").unwrap();
    assert_eq!(
        video.streams.keys().copied().collect::<Vec<_>>(),
        vec![stream_tag("p1", StreamKind::Video(2))]
    );
    assert!(c.errors().is_empty(), "{:?}", c.errors());
    c.close().await;
}
/// coturn on loopback with a static long-term credential; killed on drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_goes_through_coturn() {
    let Some(turn) = Coturn::start(coturn::Auth::User("headless", "relay-secret")) else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let servers = json!([{
        "urls": [format!("turn:127.0.0.1:{}?transport=udp", turn.port)],
        "username": "headless",
        "credential": "relay-secret"
    }]);
    let (base, fake) = start_fake_with(servers).await;
    let opts = ClientOptions {
        relay_only: true,
        ..Default::default()
    };
    let c = Client::join_with(&base, "relay", opts).await.unwrap();
    assert_eq!(c.ice_servers().len(), 1);
    c.publish(PublishSpec {
        video_layers: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    c.wait_stats(Duration::from_secs(15), |s| {
        s.len() == 2 && s.iter().all(|t| t.packets >= 20)
    })
    .await
    .expect("media through the relay");
    let candidates = fake.candidates.lock().unwrap().clone();
    let real: Vec<&String> = candidates.iter().filter(|c| !c.is_empty()).collect();
    assert!(!real.is_empty());
    assert!(
        real.iter().all(|c| c.contains("typ relay")),
        "relay only: {candidates:?}"
    );
    assert!(c.errors().is_empty(), "{:?}", c.errors());
    c.close().await;
}

/// Process CPU time (user + system), from /proc (10 ms resolution).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    // After the command name: field 3 (state) is token 0, so utime (14) and stime (15) are
    // tokens 11 and 12.
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = n(11) + n(12);
    Duration::from_millis(ticks * 10)
}

/// How much CPU the async webrtc layer costs per packet on this machine: one publisher
/// (audio + three layers) and `VIEWERS` viewers through the stand-in forwarder, all in this
/// process. Prints; run with
/// `cargo test --release -p roundtable-headless --test loopback cost -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, prints numbers"]
async fn cost_of_the_async_layer_per_packet() {
    const VIEWERS: usize = 10;
    let (base, _fake) = start_fake().await;
    let publisher = Client::join(&base, "pub").await.unwrap();
    let mut viewers = Vec::new();
    for i in 0..VIEWERS {
        viewers.push(Client::join(&base, &format!("v{i}")).await.unwrap());
    }
    publisher
        .publish(PublishSpec {
            video_layers: 3,
            keyframe_interval: Duration::ZERO,
            ..Default::default()
        })
        .await
        .unwrap();
    for v in &viewers {
        v.wait_stats(Duration::from_secs(20), |s| {
            s.len() == 2 && s.iter().all(|t| t.packets > 10)
        })
        .await
        .unwrap();
    }
    let count = |vs: &[Client]| -> (u64, u64) {
        let sent: u64 = publisher.sent_stats().iter().map(|s| s.packets).sum();
        let recv: u64 = vs
            .iter()
            .chain(std::iter::once(&publisher))
            .flat_map(|v| v.stats())
            .map(|t| t.packets)
            .sum();
        (sent, recv)
    };
    let (s0, r0) = count(&viewers);
    let c0 = cpu_time();
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (s1, r1) = count(&viewers);
    let cpu = cpu_time() - c0;
    let wall = t0.elapsed();
    let (sent, recv) = (s1 - s0, r1 - r0);
    // Each received packet was also forwarded once by the stand-in (same crate, same cost).
    let handled = sent + 2 * recv;
    let mut lat: Vec<u32> = viewers
        .iter()
        .flat_map(|v| {
            v.stats()
                .into_iter()
                .flat_map(|t| v.latency_samples(&t.mid))
                .collect::<Vec<_>>()
        })
        .collect();
    lat.sort_unstable();
    let l = roundtable_headless::LatencySummary::of(&lat);
    eprintln!(
        "viewers {VIEWERS}: sent {sent} pkts, received {recv} in {wall:?}, CPU {cpu:?} \
         ({:.1}% of one core); {:.1} us CPU per packet handled ({handled} = sent + 2 x received); \
         latency p50 {} us p99 {} us",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / handled as f64,
        l.p50_us,
        l.p99_us
    );
    for v in &viewers {
        v.close().await;
    }
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screen_share_on_its_own_connection() {
    let (base, _fake) = start_fake().await;
    let c = Client::join(&base, "presenter").await.unwrap();
    assert!(
        c.publish(PublishSpec {
            screen: true,
            ..Default::default()
        })
        .await
        .is_err(),
        "a screen share goes on its own connection"
    );
    let sent = c.publish_screen(PublishSpec::default()).await.unwrap();
    use roundtable_signaling::MediaSource;
    assert_eq!(
        sent.iter()
            .map(|s| (s.source, s.stream))
            .collect::<Vec<_>>(),
        vec![(MediaSource::Screen, StreamKind::Screen)]
    );
    // Delivery through the real server's screen slot:
    // server.rs `a_screen_share_on_its_own_connection_fills_the_screen_slot_and_stops`.
    assert!(
        c.publish_screen(PublishSpec::default()).await.is_err(),
        "once"
    );
    c.close().await;
}
