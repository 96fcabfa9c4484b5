//! Teardown: after `close`, the client leaves no task and no socket behind. Alone in its test
//! binary because it counts the process's sockets.

use std::time::Duration;

use roundtable_headless::{Client, PublishSpec};

mod support;
use support::start_fake;

fn open_sockets() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

async fn cycle(base: &str) {
    let c = Client::join(base, "cycle").await.unwrap();
    c.publish(PublishSpec {
        video_layers: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    c.wait_stats(Duration::from_secs(10), |s| {
        s.len() == 2 && s.iter().all(|t| t.packets >= 5)
    })
    .await
    .unwrap();
    c.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_leaves_no_tasks_or_sockets() {
    let (base, _fake) = start_fake().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    cycle(&base).await; // warm-up
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (tasks, sockets) = (metrics.num_alive_tasks(), open_sockets());
    for _ in 0..5 {
        cycle(&base).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metrics.num_alive_tasks(), tasks, "tasks");
    assert_eq!(open_sockets(), sockets, "sockets");
}
