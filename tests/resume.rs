//! Resume and the grace period, over real websockets against the in-process server:
//! - a client that drops and comes back with `resume_seq` gets `resumed` and exactly the
//!   events it missed (no gap, no duplicate), its floor and queue place kept;
//! - one that cannot resume (ahead of the journal, too far behind) gets a full `welcome`;
//! - while away, the floor and the place in line are held; past the grace period (virtual
//!   time) the floor is revoked (`left`) and the hand lowered;
//! - `leave` releases them at once;
//! - a dropped client's peer connections wait for it through the grace period: a resume
//!   gets `media_held` and an ICE-restart offer; a goodbye or the period's end releases them;
//! - one-time invites and revoked invites (401 `token_used`, `token_revoked`).

mod common;

use common::*;
use roundtable::auth::{self, Role};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::Message;

/// Connects and says hello with `resume_seq`; returns the client and the first answer.
async fn hello(addr: std::net::SocketAddr, token: &str, resume: Option<u64>) -> (Client, Value) {
    let mut c = Client::connect(addr, token).await;
    let mut hello = json!({"id": "h", "type": "hello", "protocol": 1});
    if let Some(seq) = resume {
        hello["resume_seq"] = json!(seq);
    }
    c.send_raw(&hello.to_string()).await;
    let first = c.recv().await.expect("an answer to hello");
    (c, first)
}

/// Reads messages until an ack of `id`-less pong: here, until `n` events have arrived.
async fn events(c: &mut Client, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    while out.len() < n {
        match c.recv().await {
            Some(m) if m["type"] == "event" => out.push(m),
            Some(_) => {}
            None => panic!("only {} of {n} events: {out:?}", out.len()),
        }
    }
    out
}

/// The highest `seq` a client has seen: its welcome, events and acks.
fn last_seq(c: &Client, acks: &[&Value]) -> u64 {
    let mut seq = c.welcome["seq"].as_u64().unwrap_or(0);
    for m in c.events.iter().chain(acks.iter().copied()) {
        seq = seq.max(m["seq"].as_u64().unwrap_or(0));
    }
    seq
}

fn holders(floor: &Value) -> Vec<String> {
    ids(&floor["holders"])
}

fn queue(floor: &Value) -> Vec<String> {
    ids(&floor["queue"])
}

/// The floor as a newcomer sees it now.
async fn floor_now(server: &TestServer, observer: &str) -> Value {
    let c = server.join(Role::Observer, observer, "Observer", "").await;
    let floor = c.welcome["snapshot"]["floor"].clone();
    c.close().await;
    floor
}

/// The status and error code of a refused websocket handshake (None: it was accepted).
async fn refusal(addr: std::net::SocketAddr, token: &str) -> Option<(u16, String)> {
    let url = format!("ws://{addr}/ws?token={token}");
    match tokio_tungstenite::connect_async(url).await {
        Ok((mut ws, _)) => {
            let _ = ws.close(None).await;
            None
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let v: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}"))
                .unwrap_or(Value::Null);
            Some((
                resp.status().as_u16(),
                v["code"].as_str().unwrap_or("").to_owned(),
            ))
        }
        Err(e) => panic!("handshake failed otherwise: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_resumes_with_exactly_the_events_it_missed() {
    let server = TestServer::start("resume").await;
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    chair
        .ok(json!({"type": "agenda_jump", "item": "dialogue"}))
        .await;
    let token = server.token(Role::Delegate, "d1", "Amina Karimova", "KG");
    let mut d1 = Client::join(server.addr, &token).await;
    let raised = d1.ok(json!({"type": "raise_hand"})).await;
    let granted = chair
        .ok(json!({"type": "grant", "request": raised["request"]}))
        .await;
    d1.wait_event("floor_granted", |_| true).await;
    let mut d2 = server.join(Role::Delegate, "d2", "Bakhyt", "KZ").await;
    d2.ok(json!({"type": "raise_hand"})).await;
    let seen = d1
        .wait_event("floor_requested", |e| {
            e["request"]["beneficiary"]["participant"] == "d2"
        })
        .await;
    let mine = last_seq(&d1, &[&raised, &granted, &seen]);
    assert!(mine > 0);

    // The network goes: no close frame, the socket just ends.
    drop(d1);
    chair
        .wait_event("participant_left", |e| {
            e["participant"] == "d1" && e["presence"] == "connection_lost"
        })
        .await;
    // The meeting goes on without them.
    chair
        .ok(json!({"type": "timer_message", "text": "Two minutes"}))
        .await;
    d2.ok(json!({"type": "lower_hand"})).await;
    let d2_again = d2.ok(json!({"type": "raise_hand"})).await;
    let now = d2_again["seq"].as_u64().expect("seq");

    // Back, with the last seq it applied.
    let (mut d1, first) = hello(server.addr, &token, Some(mine)).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(first["seq"], mine);
    assert_eq!(first["you"]["id"], "d1");
    let _ = typed(&first);
    // Its own return is the last event: seq `now + 1`.
    let missed = events(&mut d1, (now + 1 - mine) as usize).await;
    let seqs: Vec<u64> = missed.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(
        seqs,
        (mine + 1..=now + 1).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    let kinds: Vec<&str> = missed
        .iter()
        .filter_map(|m| m["event"]["type"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"participant_left"), "{kinds:?}");
    assert!(kinds.contains(&"timer_message"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"participant_joined"), "{kinds:?}");
    for m in &missed {
        let _ = typed(m);
    }
    // The views ride on the last events that touch them and show the state now: the floor
    // was held for them, d2 is back in line.
    let floor = missed
        .iter()
        .rev()
        .find(|m| !m["floor"].is_null())
        .map(|m| m["floor"].clone())
        .expect("a floor view");
    assert_eq!(holders(&floor), vec!["d1"]);
    assert_eq!(queue(&floor), vec!["d2"]);
    // The live stream follows without a gap.
    let next = d1.ok(json!({"type": "lower_hand"})).await;
    assert_eq!(next["seq"].as_u64(), Some(now + 2));
    let released = d1.wait_event("floor_released", |_| true).await;
    assert_eq!(released["seq"].as_u64(), Some(now + 2));

    // A resume it cannot have: ahead of the journal (another server's numbers), or too far
    // behind: a full welcome, from which the client rebuilds.
    drop(d1);
    chair
        .wait_event("participant_left", |e| e["participant"] == "d1")
        .await;
    let (_d1, first) = hello(server.addr, &token, Some(now + 1000)).await;
    assert_eq!(first["type"], "welcome", "{first}");
    assert!(first["snapshot"].is_object());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_too_far_behind_gets_a_welcome() {
    let server = TestServer::start_with("resume-far", |c| {
        c.server.commands_per_second = 100_000;
        c.server.command_burst = 100_000;
    })
    .await;
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    let token = server.token(Role::Delegate, "d1", "Amina", "KG");
    let d1 = Client::join(server.addr, &token).await;
    let mine = d1.welcome["seq"].as_u64().expect("seq");
    drop(d1);
    // More events than a resume replays.
    let n = roundtable::meeting::RESUME_MAX_EVENTS + 5;
    for i in 0..n {
        chair
            .ok(json!({"type": "timer_message", "text": format!("m{}", i % 2)}))
            .await;
    }
    let (_d1, first) = hello(server.addr, &token, Some(mine)).await;
    assert_eq!(first["type"], "welcome", "{first}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_and_the_queue_are_held_for_the_grace_period_then_released() {
    let server = TestServer::start_with("grace", |c| c.server.resume_grace_secs = 60).await;
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    chair
        .ok(json!({"type": "agenda_jump", "item": "dialogue"}))
        .await;
    let mut d1 = server.join(Role::Delegate, "d1", "Amina", "KG").await;
    let mut d2 = server.join(Role::Delegate, "d2", "Bakhyt", "KZ").await;
    let mut d3 = server.join(Role::Delegate, "d3", "Chen", "CN").await;
    let r1 = d1.ok(json!({"type": "raise_hand"})).await;
    chair
        .ok(json!({"type": "grant", "request": r1["request"]}))
        .await;
    let r2 = d2.ok(json!({"type": "raise_hand"})).await;
    d3.ok(json!({"type": "raise_hand"})).await;
    // d1 (holding the floor) and d2 (first in line) lose their connections.
    drop(d1);
    drop(d2);
    for p in ["d1", "d2"] {
        chair
            .wait_event("participant_left", |e| {
                e["participant"] == p && e["presence"] == "connection_lost"
            })
            .await;
    }
    // 59 s later: still held (a command forces the meeting to look at its clock).
    server.clock.advance(59_000);
    chair
        .ok(json!({"type": "timer_message", "text": "held"}))
        .await;
    let floor = floor_now(&server, "obs1").await;
    assert_eq!(holders(&floor), vec!["d1"], "{floor}");
    assert_eq!(queue(&floor), vec!["d2", "d3"], "{floor}");
    assert!(
        !chair
            .events
            .iter()
            .any(|m| m["event"]["type"] == "floor_revoked"),
        "nothing revoked within the grace period: {:?}",
        chair.events
    );
    // d2 comes back in time: its place is kept.
    let mut d2 = server.join(Role::Delegate, "d2", "Bakhyt", "KZ").await;
    assert_eq!(queue(&d2.welcome["snapshot"]["floor"]), vec!["d2", "d3"]);
    // Past 60 s: d1's floor is revoked by the server, reason `left`.
    server.clock.advance(2_000);
    let revoked = chair
        .wait_event("floor_revoked", |e| e["request"] == r1["request"])
        .await;
    assert_eq!(revoked["event"]["reason"], "left");
    assert!(revoked["event"]["by"].is_null(), "{revoked}");
    let floor = revoked["floor"].clone();
    assert!(holders(&floor).is_empty(), "{floor}");
    assert_eq!(queue(&floor), vec!["d2", "d3"], "d2 came back: {floor}");
    let _ = d2
        .wait_event("floor_revoked", |e| e["request"] == r1["request"])
        .await;
    let _ = r2;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_left_in_the_queue_is_lowered_after_the_grace_period() {
    let server = TestServer::start_with("grace-q", |c| c.server.resume_grace_secs = 5).await;
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    chair
        .ok(json!({"type": "agenda_jump", "item": "dialogue"}))
        .await;
    let mut d1 = server.join(Role::Delegate, "d1", "Amina", "KG").await;
    let r = d1.ok(json!({"type": "raise_hand"})).await;
    // Someone in the room, queued by the chair, is never "away".
    let room = chair
        .ok(json!({"type": "request_for", "name": "Ilham", "delegation": "AZ"}))
        .await;
    d1.close().await;
    chair
        .wait_event("participant_left", |e| e["participant"] == "d1")
        .await;
    server.clock.advance(6_000);
    let cancelled = chair
        .wait_event("floor_cancelled", |e| e["request"] == r["request"])
        .await;
    assert_eq!(cancelled["event"]["by"], "d1");
    let floor = cancelled["floor"].clone();
    assert_eq!(queue(&floor).len(), 1, "{floor}");
    assert_eq!(
        floor["queue"][0]["id"], room["request"],
        "the room's request stays: {floor}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leave_releases_the_floor_at_once() {
    let server = TestServer::start("leave").await;
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    chair
        .ok(json!({"type": "agenda_jump", "item": "dialogue"}))
        .await;
    let mut d1 = server.join(Role::Delegate, "d1", "Amina", "KG").await;
    let r = d1.ok(json!({"type": "raise_hand"})).await;
    chair
        .ok(json!({"type": "grant", "request": r["request"]}))
        .await;
    let ack = d1.ok(json!({"type": "leave"})).await;
    assert!(ack["seq"].is_u64(), "{ack}");
    // Told, then closed.
    let mut bye = None;
    while let Some(m) = d1.recv().await {
        if m["type"] == "goodbye" {
            bye = Some(m);
        }
    }
    assert_eq!(bye.expect("a goodbye")["reason"], "left");
    let revoked = chair
        .wait_event("floor_revoked", |e| e["request"] == r["request"])
        .await;
    assert_eq!(revoked["event"]["reason"], "left");
    let left = chair
        .wait_event("participant_left", |e| e["participant"] == "d1")
        .await;
    assert_eq!(left["event"]["presence"], "left");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_time_invite_opens_once_and_its_session_token_reconnects() {
    let server = TestServer::start("once").await;
    let mut claims = auth::new_invite(
        MEETING,
        Role::Delegate,
        Some("d1"),
        "Amina",
        "KG",
        3600,
        server.clock.now() / 1000,
    );
    claims.once = true;
    let once = auth::sign(&server.secret, &claims);
    let (s, body) = http_get(server.addr, &format!("/api/token?token={once}")).await;
    assert_eq!(s, 200, "{body}");
    let d1 = Client::join(server.addr, &once).await;
    let session = d1.welcome["session_token"]
        .as_str()
        .expect("a session token")
        .to_owned();
    assert_ne!(session, once);
    // The forwarded link: refused, at the websocket and at /api/token.
    assert_eq!(
        refusal(server.addr, &once).await,
        Some((401, "token_used".into()))
    );
    let (s, body) = http_get(server.addr, &format!("/api/token?token={once}")).await;
    assert_eq!(s, 401);
    assert!(body.contains("token_used"), "{body}");
    // Its page still opens (the holder's reload finds its session token there).
    let (s, _) = http_get(server.addr, &format!("/join?token={once}")).await;
    assert_eq!(s, 200);
    // The holder reconnects with the session token, as often as needed.
    drop(d1);
    for _ in 0..2 {
        let c = Client::join(server.addr, &session).await;
        assert_eq!(c.welcome["you"]["id"], "d1");
        c.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chair_revokes_an_invite_and_removes_its_holder() {
    let server = TestServer::start("revoke").await;
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    let leaked = server.token(Role::Delegate, "d1", "Amina", "KG");
    let mut d1 = Client::join(server.addr, &leaked).await;
    chair
        .ok(json!({"type": "remove", "participant": "d1", "revoke_invite": true}))
        .await;
    let left = chair
        .wait_event("participant_left", |e| e["participant"] == "d1")
        .await;
    assert_eq!(left["event"]["presence"], "removed");
    assert_eq!(left["event"]["by"], "chair", "who did it is journaled");
    while d1.recv().await.is_some() {}
    assert_eq!(
        refusal(server.addr, &leaked).await,
        Some((401, "token_revoked".into()))
    );
    for path in ["/api/token", "/join"] {
        let (s, body) = http_get(server.addr, &format!("{path}?token={leaked}")).await;
        assert_eq!(s, 401, "{path}: {body}");
        assert!(body.contains("token_revoked"), "{path}: {body}");
        if path == "/join" {
            // A page for the person holding the link, not JSON: it says what this means.
            assert!(
                body.contains(r#"<meta name="rt-refusal" content="token_revoked""#)
                    && body.contains("/web/refused.js"),
                "{body}"
            );
        }
    }
    // A new invite for the same person works: revocation is per invite.
    let fresh = server.token(Role::Delegate, "d1", "Amina", "KG");
    let c = Client::join(server.addr, &fresh).await;
    assert_eq!(c.welcome["you"]["id"], "d1");
    // Removing without revoke_invite leaves the link working.
    let other = server.token(Role::Delegate, "d2", "Bakhyt", "KZ");
    let _d2 = Client::join(server.addr, &other).await;
    chair
        .ok(json!({"type": "remove", "participant": "d2"}))
        .await;
    chair
        .wait_event("participant_left", |e| e["participant"] == "d2")
        .await;
    assert_eq!(refusal(server.addr, &other).await, None);
    let _ = Message::Close(None);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_has_as_many_seats_as_configured() {
    let server = TestServer::start_with("seats", |c| c.server.max_per_role.observer = 2).await;
    let _o1 = server.join(Role::Observer, "o1", "One", "").await;
    let o2 = server.token(Role::Observer, "o2", "Two", "");
    let _o2 = Client::join(server.addr, &o2).await;
    let (mut third, first) = hello(
        server.addr,
        &server.token(Role::Observer, "o3", "Three", ""),
        None,
    )
    .await;
    assert_eq!(first["type"], "error", "{first}");
    assert_eq!(first["code"], "meeting_full", "{first}");
    assert!(third.recv().await.is_none(), "then closed");
    // Other roles are not affected; the same observer coming back replaces itself.
    let _d = server.join(Role::Delegate, "d1", "Amina", "KG").await;
    let again = Client::join(server.addr, &o2).await;
    assert_eq!(again.welcome["you"]["id"], "o2");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_count_against_the_per_address_limit() {
    let server = TestServer::start_with("per-addr", |c| {
        c.server.max_connections_per_ip = 3;
        c.server.connections_per_ip_per_sec = 0;
    })
    .await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(server.join(Role::Observer, &format!("o{i}"), "O", "").await);
    }
    // A fourth connection from the same address: a bare 429, before any upgrade.
    let t = server.token(Role::Observer, "o3", "O", "");
    assert_eq!(
        refusal(server.addr, &t).await.map(|(s, _)| s),
        Some(429),
        "three open websockets hold their places"
    );
    // One leaves: its place is free again.
    held.pop().expect("one").close().await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let c = Client::join(server.addr, &t).await;
    assert_eq!(c.welcome["you"]["id"], "o3");
    server.shutdown().await;
}

/// Reads messages until one of `kind` (events are kept on the client).
async fn until(c: &mut Client, kind: &str) -> Value {
    loop {
        match c.recv().await {
            Some(m) if m["type"] == kind => return m,
            Some(m) if m["type"] == "event" => c.events.push(m),
            Some(_) => {}
            None => panic!("no {kind} arrived"),
        }
    }
}

/// The `a=ice-ufrag` of an SDP.
fn ufrag(sdp: &Value) -> String {
    sdp.as_str()
        .unwrap_or("")
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .unwrap_or_else(|| panic!("no ice-ufrag in {sdp}"))
        .trim()
        .to_owned()
}

/// A delegate with a subscribe connection open; returns it, its token and the offer's ufrag.
async fn with_media(server: &TestServer, id: &str) -> (Client, String, String) {
    let token = server.token(Role::Delegate, id, "Amina", "KG");
    let mut c = Client::join(server.addr, &token).await;
    c.send_raw(&json!({"id": "m", "type": "media_preferences", "thumbnails": true}).to_string())
        .await;
    let offer = until(&mut c, "subscribe_offer").await;
    (c, token, ufrag(&offer["sdp"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_keeps_the_media_and_restarts_its_ice() {
    let server = TestServer::start("resume-media").await;
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    let (d1, token, first_ufrag) = with_media(&server, "d1").await;
    let mine = last_seq(&d1, &[]);
    drop(d1);
    chair
        .wait_event("participant_left", |e| {
            e["participant"] == "d1" && e["presence"] == "connection_lost"
        })
        .await;
    let (mut d1, first) = hello(server.addr, &token, Some(mine)).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(first["media_held"], true, "{first}");
    let _ = typed(&first);
    // The server re-offers the held subscribe connection with new ICE credentials.
    let offer = until(&mut d1, "subscribe_offer").await;
    assert_ne!(ufrag(&offer["sdp"]), first_ufrag, "an ICE restart");
    // A goodbye (the page closed) ends the media at once: a resume finds none.
    let mine = first["seq"].as_u64().expect("seq");
    d1.close().await;
    chair
        .wait_event("participant_left", |e| {
            e["participant"] == "d1" && e["presence"] != "connection_lost"
        })
        .await;
    let (mut d1, first) = hello(server.addr, &token, Some(mine)).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert!(first.get("media_held").is_none(), "{first}");
    d1.err(
        json!({"type": "ice_restart", "pc": "subscribe"}),
        "not_found",
    )
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_media_is_released_after_the_grace_period() {
    let server = TestServer::start_with("held-media", |c| c.server.resume_grace_secs = 5).await;
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    chair
        .ok(json!({"type": "agenda_jump", "item": "dialogue"}))
        .await;
    let (mut d1, token, _) = with_media(&server, "d1").await;
    let r = d1.ok(json!({"type": "raise_hand"})).await;
    let mine = last_seq(&d1, &[&r]);
    drop(d1);
    chair
        .wait_event("participant_left", |e| {
            e["participant"] == "d1" && e["presence"] == "connection_lost"
        })
        .await;
    server.clock.advance(6_000);
    // The grace period's tick has run: the hand is lowered, and the media went with it.
    chair
        .wait_event("floor_cancelled", |e| e["request"] == r["request"])
        .await;
    let (mut d1, first) = hello(server.addr, &token, Some(mine)).await;
    assert_eq!(first["type"], "resumed", "{first}");
    assert!(first.get("media_held").is_none(), "{first}");
    d1.err(
        json!({"type": "ice_restart", "pc": "subscribe"}),
        "not_found",
    )
    .await;
    server.shutdown().await;
}
