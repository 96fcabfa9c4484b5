//! Server-side teardown: participants who join, publish, subscribe and leave again and again
//! leave nothing behind in the server: no media connection, no task, no socket, no memory
//! growth. Alone in its test binary because it counts the whole process's tasks and sockets.
//! Cycles: `ROUNDTABLE_TEARDOWN_CYCLES` (default 200).
//!
//! The room stays throughout, and every arrival gives it a new microphone slot: the server
//! hands each newcomer the m-line of someone who left (`subscribe_slots`, no renegotiation), so
//! the room's subscribe connection stays at a handful of m-lines however many come and go.

use std::time::Duration;

use roundtable::auth::Role;
use roundtable_headless::PublishSpec;

mod real;

fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn cycle(server: &real::Server, i: usize) {
    let d = server
        .join(Role::Delegate, &format!("cycler-{}", i % 7))
        .await;
    d.publish(PublishSpec {
        audio: true,
        video_layers: 0,
        ..Default::default()
    })
    .await
    .expect("publish");
    d.wait_published().await.expect("connected");
    d.subscribe(false).await.expect("subscribe");
    d.wait_subscribed(1).await.expect("offer");
    d.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_cycles_leave_nothing_behind() {
    let cycles: usize = std::env::var("ROUNDTABLE_TEARDOWN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let server = real::start().await;
    // The room stays: every delegate's arrival and departure changes its slots.
    let room = server.join(Role::Room, "room").await;
    room.subscribe(false).await.expect("room subscribes");
    room.wait_subscribed(1).await.expect("room offer");
    let metrics = tokio::runtime::Handle::current().metrics();
    for i in 0..5 {
        cycle(&server, i).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (tasks, sockets, rss) = (metrics.num_alive_tasks(), open_sockets(), rss_kib());
    let conns = server.engine.stats().await.expect("stats").connections;
    assert_eq!(conns, 1, "only the room's subscribe connection");
    let started = std::time::Instant::now();
    for i in 0..cycles {
        cycle(&server, i).await;
    }
    let per_cycle = started.elapsed() / cycles.max(1) as u32;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = server.engine.stats().await.expect("stats");
    assert_eq!(stats.connections, conns, "media connections: {stats:?}");
    let (tasks2, sockets2, rss2) = (metrics.num_alive_tasks(), open_sockets(), rss_kib());
    eprintln!(
        "{cycles} cycles ({per_cycle:?} each): tasks {tasks} → {tasks2}, sockets {sockets} → {sockets2}, RSS {rss} → {rss2} KiB"
    );
    assert_eq!(tasks2, tasks, "tasks");
    assert_eq!(sockets2, sockets, "sockets");
    assert!(
        rss2 < rss + 16 * 1024,
        "RSS grew by {} KiB over {cycles} cycles",
        rss2.saturating_sub(rss)
    );
    assert!(room.errors().is_empty(), "{:?}", room.errors());
    // m-lines are reused, not added: the room saw at most a few offers and many relabels.
    let slots = room.slots();
    assert!(
        slots.len() <= 6,
        "the room's subscribe connection grew to {} m-lines: {slots:?}",
        slots.len()
    );
    assert!(
        room.relabels() as usize >= cycles / 2,
        "relabels {} over {cycles} cycles",
        room.relabels()
    );
    room.close().await;
    let _ = server.stop.send(());
}
