//! The chair's per-participant actions over a real websocket: `ask_reconnect` (the client is
//! told to come back; its queue place stays) and `remove` (its requests go, it is told not to
//! come back, the journal says removed), and their refusals.

mod common;

use common::*;
use roundtable::auth::Role;
use serde_json::{Value, json};

/// Reads until the goodbye; returns its reason (None if the socket closed without one).
async fn goodbye(c: &mut Client) -> Option<String> {
    while let Some(m) = c.recv().await {
        if m["type"] == "goodbye" {
            return m["reason"].as_str().map(str::to_owned);
        }
    }
    None
}

fn queued(floor: &Value, participant: &str) -> bool {
    floor["queue"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r["beneficiary"]["participant"] == participant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chair_asks_a_delegate_to_reconnect_and_then_removes_them() {
    let server = TestServer::start("chair-actions").await;
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    let mut d = server
        .join(Role::Delegate, "d1", "Amina Karimova", "KG")
        .await;
    let raised = d.ok(json!({"type": "raise_hand"})).await;
    let request = raised["request"].clone();

    // Ask to reconnect: a goodbye that says so; back in, the request is still queued.
    chair
        .ok(json!({"type": "ask_reconnect", "participant": "d1"}))
        .await;
    assert_eq!(goodbye(&mut d).await.as_deref(), Some("reconnect"));
    let mut d = server
        .join(Role::Delegate, "d1", "Amina Karimova", "KG")
        .await;
    let floor = d.welcome["snapshot"]["floor"].clone();
    assert!(queued(&floor, "d1"), "queue place kept: {floor}");

    // Remove: the request is cancelled, the goodbye says removed, the journal says so.
    chair
        .ok(json!({"type": "remove", "participant": "d1"}))
        .await;
    assert_eq!(goodbye(&mut d).await.as_deref(), Some("removed"));
    let cancelled = chair
        .wait_event("floor_cancelled", |e| e["request"] == request)
        .await;
    assert!(!queued(&cancelled["floor"], "d1"), "{cancelled}");
    chair
        .wait_event("participant_left", |e| {
            e["participant"] == "d1" && e["presence"] == "removed"
        })
        .await;

    // Refusals: nobody by that name, the chair themselves, someone not connected.
    chair
        .err(
            json!({"type": "remove", "participant": "nobody"}),
            "not_found",
        )
        .await;
    chair
        .err(
            json!({"type": "remove", "participant": "chair"}),
            "invalid_value",
        )
        .await;
    chair
        .err(
            json!({"type": "ask_reconnect", "participant": "d1"}),
            "not_found",
        )
        .await;
    let mut d2 = server.join(Role::Delegate, "d2", "Rustam", "TJ").await;
    d2.err(
        json!({"type": "remove", "participant": "chair"}),
        "forbidden",
    )
    .await;
    server.shutdown().await;
}
