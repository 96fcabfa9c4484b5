//! One server hosts several meetings at once; the token names the meeting and events stay in
//! their own meeting.

mod common;

use common::*;
use roundtable::auth::{self, Role};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_sessions_are_isolated() {
    let server = TestServer::start_with("meetings", |c| {
        let mut second = c.meetings[0].clone();
        second.id = "side-session".into();
        second.title = "Parallel session: critical minerals data".into();
        c.meetings.push(second);
    })
    .await;
    let now = server.clock.now() / 1000;
    let side = |role, id: &str| {
        auth::sign(
            &server.secret,
            &auth::new_invite("side-session", role, Some(id), id, "X", 3600, now),
        )
    };
    let mut main_chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    let mut side_chair = Client::join(server.addr, &side(Role::Moderator, "chair2")).await;
    assert_eq!(
        side_chair.welcome["snapshot"]["meeting"]["id"],
        "side-session"
    );
    let mut side_delegate = Client::join(server.addr, &side(Role::Delegate, "sd1")).await;

    side_delegate.ok(json!({"type": "raise_hand"})).await;
    let ev = side_chair.wait_event("floor_requested", |_| true).await;
    assert_eq!(ev["floor"]["queue"][0]["beneficiary"]["participant"], "sd1");
    // The main meeting saw nothing of it: its next event is its own.
    main_chair
        .ok(json!({"type": "timer_message", "text": "main only"}))
        .await;
    let own = main_chair.wait_event("timer_message", |_| true).await;
    assert!(
        main_chair
            .events
            .iter()
            .all(|e| e["event"]["type"] != "floor_requested")
    );
    assert_eq!(own["event"]["text"], "main only");
    // Sequence numbers are per meeting.
    let (main_seq, side_seq) = (own["seq"].as_u64(), ev["seq"].as_u64());
    assert!(main_seq.is_some() && side_seq.is_some());
    let (s, _) = http_get(server.addr, "/healthz").await;
    assert_eq!(s, 200);
    server.shutdown().await;
}
