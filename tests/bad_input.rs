//! Every bad input from docs/SECURITY.md: each gets a clear error, the connection and the
//! meeting go on (except a bad token, refused before the upgrade, and a sustained flood),
//! nothing journaled is lost, nothing panics.

mod common;

use common::*;
use roundtable::auth::{self, Role};
use roundtable_signaling::{Command, Role as SigRole};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn next_error(c: &mut Client) -> Value {
    loop {
        let m = c.recv().await.expect("an answer");
        if m["type"] == "error" {
            return m;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_get_errors_and_the_connection_goes_on() {
    let server = TestServer::start("bad").await;
    let mut d = server
        .join(Role::Delegate, "d1", "Amina Karimova", "Kyrgyz Republic")
        .await;
    let cases: &[(&str, &str)] = &[
        ("{not json", "malformed_json"),
        ("[1,2,3]", "malformed_json"),
        (r#"{"type":"raise_hand"}"#, "bad_id"),
        (r#"{"id":"","type":"raise_hand"}"#, "bad_id"),
        (r#"{"id":"x"}"#, "unknown_type"),
        (r#"{"id":"x","type":"fly_to_the_moon"}"#, "unknown_type"),
        (r#"{"id":"x","type":"grant"}"#, "invalid_fields"),
        (
            r#"{"id":"x","type":"grant","request":"seven"}"#,
            "invalid_fields",
        ),
        (
            r#"{"id":"x","type":"lower_hand","extra":1}"#,
            "invalid_fields",
        ),
    ];
    for (frame, code) in cases {
        d.send_raw(frame).await;
        let e = next_error(&mut d).await;
        assert_eq!(e["code"], *code, "{frame} → {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let e = d.cmd(json!({"type": "grant", "request": 1})).await;
    assert_eq!(e["code"], "forbidden");
    // Binary frames are refused with an error, the connection stays.
    d.send_msg(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(next_error(&mut d).await["code"], "binary_frame");
    // Over the 64 KiB soft limit: an error, the connection stays.
    let big = format!(
        r#"{{"id":"big","type":"ping","client_time":0,"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    d.send_raw(&big).await;
    assert_eq!(next_error(&mut d).await["code"], "too_large");
    // Wrong protocol version; a second hello.
    d.err(
        json!({"type": "hello", "protocol": 99}),
        "unsupported_protocol",
    )
    .await;
    d.err(json!({"type": "hello", "protocol": 1}), "invalid_state")
        .await;
    // Still alive and useful.
    let a = d.ok(json!({"type": "raise_hand"})).await;
    assert!(a["request"].is_u64());

    // Things that do not exist.
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    chair
        .err(json!({"type": "grant", "request": 999}), "not_found")
        .await;
    chair
        .err(
            json!({"type": "give_floor", "participant": "nobody"}),
            "not_found",
        )
        .await;
    chair
        .err(
            json!({"type": "agenda_start", "item": "no-such-item"}),
            "not_found",
        )
        .await;
    chair
        .err(
            json!({"type": "agenda_extend", "minutes": 0}),
            "invalid_value",
        )
        .await;
    chair
        .err(
            json!({"type": "set_floor", "settings": {"max_speakers": 0}}),
            "invalid_value",
        )
        .await;
    chair
        .err(json!({"type": "agenda_pause"}), "invalid_state")
        .await;
    // give_floor to a connected participant works.
    chair
        .ok(json!({"type": "give_floor", "participant": "d1"}))
        .await;

    // Media: unusable SDP, a source the role may not publish, a candidate or an answer for a
    // connection that does not exist. Each gets its code; the connection goes on.
    d.err(
        json!({"type": "publish", "sdp": "v=0\r\nnonsense", "tracks": []}),
        "bad_sdp",
    )
    .await;
    d.err(
        json!({"type": "publish", "sdp": "v=0", "tracks": [{"mid": "0", "source": "program"}]}),
        "forbidden",
    )
    .await;
    d.err(
        json!({"type": "ice_candidate", "pc": "subscribe", "candidate": ""}),
        "invalid_state",
    )
    .await;
    d.err(
        json!({"type": "subscribe_answer", "sdp": "v=0"}),
        "invalid_state",
    )
    .await;
    // A screen share must go on its own connection, and only it; the server offers the
    // subscribe connection; nothing to unpublish yet.
    d.err(
        json!({"type": "publish", "sdp": "v=0", "tracks": [{"mid": "0", "source": "screen"}]}),
        "invalid_fields",
    )
    .await;
    d.err(
        json!({"type": "publish", "pc": "screen", "sdp": "v=0", "tracks": [{"mid": "0", "source": "camera"}]}),
        "invalid_fields",
    )
    .await;
    d.err(
        json!({"type": "publish", "pc": "subscribe", "sdp": "v=0", "tracks": []}),
        "invalid_fields",
    )
    .await;
    d.err(
        json!({"type": "unpublish", "pc": "screen"}),
        "invalid_state",
    )
    .await;
    d.err(
        json!({"type": "unpublish", "pc": "subscribe"}),
        "invalid_fields",
    )
    .await;
    let mut watcher = server.join(Role::Observer, "watcher", "Observer", "").await;
    watcher
        .err(
            json!({"type": "publish", "sdp": "v=0", "tracks": []}),
            "forbidden",
        )
        .await;
    let pong = d.cmd(json!({"type": "ping", "client_time": 0})).await;
    assert_eq!(pong["type"], "pong");

    // Commands before hello.
    let token = server.token(Role::Delegate, "d2", "Rustam Nazarov", "Tajikistan");
    let mut early = Client::connect(server.addr, &token).await;
    early.send_raw(r#"{"id":"1","type":"raise_hand"}"#).await;
    assert_eq!(next_error(&mut early).await["code"], "hello_required");
    early
        .send_raw(r#"{"id":"2","type":"ping","client_time":1}"#)
        .await;
    assert_eq!(early.recv().await.expect("pong")["type"], "pong");

    // Over the hard limit (1 MiB): the connection is closed; the meeting goes on.
    let mut huge = server.join(Role::Observer, "obs", "Observer", "").await;
    huge.send_raw(&"x".repeat(1_100_000)).await;
    assert!(huge.recv().await.is_none(), "connection should close");
    chair
        .ok(json!({"type": "timer_message", "text": "2 minutes"}))
        .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_from_every_role_is_checked() {
    let server = TestServer::start("roles").await;
    // The role matrix of docs/SECURITY.md: command → the roles with a ✓.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/SECURITY.md"))
        .expect("docs/SECURITY.md");
    let mut header: Vec<String> = Vec::new();
    let mut matrix: std::collections::HashMap<String, Vec<String>> = Default::default();
    for line in doc.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.first() == Some(&"command") && cells.get(1) == Some(&"moderator") {
            header = cells[1..].iter().map(|c| (*c).to_owned()).collect();
            continue;
        }
        if header.is_empty() || !line.starts_with("| `") {
            if !header.is_empty() && !matrix.is_empty() && !line.starts_with('|') {
                break;
            }
            continue;
        }
        let name = cells[0].trim_matches('`');
        if name.contains(' ') {
            continue; // an HTTP route (`GET /api/minutes`)
        }
        let roles = header
            .iter()
            .zip(&cells[1..])
            .filter(|(_, c)| c.starts_with('✓'))
            .map(|(r, _)| r.clone())
            .collect();
        matrix.insert(name.to_owned(), roles);
    }
    let mut documented: Vec<&str> = matrix.keys().map(String::as_str).collect();
    documented.sort_unstable();
    let mut all: Vec<&str> = Command::TYPES.to_vec();
    all.sort_unstable();
    assert_eq!(
        documented, all,
        "SECURITY.md's matrix lists exactly the protocol's commands"
    );
    let samples: Vec<Value> = Command::TYPES
        .iter()
        .filter(|t| !matches!(**t, "hello" | "ping"))
        .map(|t| {
            let mut v = json!({"type": t});
            match *t {
                "request_for" => v["name"] = json!("Someone"),
                "cancel" | "accept" | "grant" | "deny" | "revoke" => v["request"] = json!(424242),
                "give_floor" => v["participant"] = json!("nobody"),
                "move" => {
                    v["request"] = json!(424242);
                    v["position"] = json!(1);
                }
                "set_floor" => v["settings"] = json!({}),
                "agenda_extend" => v["minutes"] = json!(1),
                "agenda_skip" | "agenda_jump" => v["item"] = json!("no-such-item"),
                "agenda_move" => {
                    v["item"] = json!("no-such-item");
                    v["position"] = json!(1);
                }
                "timer_message" => v["text"] = json!(""),
                "publish" => {
                    v["sdp"] = json!("v=0");
                    v["tracks"] = json!([]);
                }
                "unpublish" => v["pc"] = json!("screen"),
                "remove" | "ask_reconnect" => v["participant"] = json!("nobody"),
                "subscribe_answer" => v["sdp"] = json!("v=0"),
                "ice_restart" => v["pc"] = json!("subscribe"),
                "ice_candidate" => {
                    v["pc"] = json!("publish");
                    v["candidate"] = json!("");
                }
                "media_preferences" => v["thumbnails"] = json!(true),
                "ack_alert" => v["alert"] = json!(424242),
                "request_keyframe" => v["participant"] = json!("nobody"),
                "force_layer" => {
                    v["participant"] = json!("nobody");
                    v["layer"] = json!("low");
                }
                _ => {}
            }
            v
        })
        .collect();
    for role in SigRole::ALL {
        let mut c = server
            .join(role, &format!("p-{}", role.as_str()), "P", "X")
            .await;
        // `leave` ends the connection: it goes last.
        let (leave, rest): (Vec<&Value>, Vec<&Value>) =
            samples.iter().partition(|c| c["type"] == "leave");
        for cmd in rest.into_iter().chain(leave) {
            let parsed: Command = serde_json::from_value(cmd.clone()).expect("sample parses");
            let answer = c.cmd(cmd.clone()).await;
            let allowed = roundtable::meeting::allowed(role, &parsed);
            // The documented matrix says the same.
            let t = cmd["type"].as_str().unwrap_or("");
            let documented = matrix
                .get(t)
                .unwrap_or_else(|| panic!("docs/SECURITY.md has no row for {t}"))
                .contains(&role.as_str().to_owned());
            assert_eq!(
                allowed, documented,
                "{role:?} {t}: roles.rs and SECURITY.md differ"
            );
            if allowed {
                assert_ne!(answer["code"], "forbidden", "{role:?} {cmd} → {answer}");
            } else {
                assert_eq!(answer["code"], "forbidden", "{role:?} {cmd} → {answer}");
            }
        }
        // The matrix is the documented one: only the moderator chairs.
        let grant: Command =
            serde_json::from_value(json!({"type": "grant", "request": 1})).expect("grant");
        assert_eq!(
            roundtable::meeting::allowed(role, &grant),
            role == SigRole::Moderator
        );
        c.close().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_the_upgrade() {
    let server = TestServer::start("tokens").await;
    let good = server.token(Role::Delegate, "d1", "A", "B");
    let (payload, mac) = good.split_once('.').expect("two parts");
    let mut forged_mac = mac.to_owned();
    let last = if forged_mac.ends_with('A') { "Q" } else { "A" };
    forged_mac.replace_range(forged_mac.len() - 1.., last);
    let other =
        roundtable::auth::Secret::from_config("another-secret-of-enough-length").expect("secret");
    let wrong_key = token_for(
        &other,
        Role::Moderator,
        "m",
        "M",
        "",
        server.clock.now() / 1000,
    );
    let expired = {
        let claims = auth::new_invite(
            MEETING,
            Role::Delegate,
            Some("d9"),
            "Late",
            "",
            60,
            server.clock.now() / 1000 - 7200,
        );
        auth::sign(&server.secret, &claims)
    };
    let unknown_meeting = {
        let claims = auth::new_invite(
            "no-such-meeting",
            Role::Delegate,
            Some("d9"),
            "X",
            "",
            3600,
            server.clock.now() / 1000,
        );
        auth::sign(&server.secret, &claims)
    };
    let cases = [
        ("/ws".to_owned(), 401, "token_missing"),
        ("/ws?token=garbage".to_owned(), 401, "token_malformed"),
        (format!("/ws?token={payload}.{forged_mac}"), 401, ""),
        (format!("/ws?token={wrong_key}"), 401, "token_forged"),
        (format!("/ws?token={expired}"), 401, "token_expired"),
        (
            format!("/ws?token={}", "a".repeat(5000)),
            401,
            "token_too_long",
        ),
        (
            format!("/ws?token={unknown_meeting}"),
            404,
            "unknown_meeting",
        ),
    ];
    for (path, status, code) in cases {
        let (s, body) = http_get(server.addr, &path).await;
        assert_eq!(s, status, "{path}: {body}");
        if !code.is_empty() {
            let v: Value = serde_json::from_str(&body).expect("JSON error");
            assert_eq!(v["code"], code, "{path}");
        }
        // And a real websocket handshake is refused too.
        let url = format!("ws://{}{}", server.addr, path);
        assert!(tokio_tungstenite::connect_async(url).await.is_err());
    }
    // A page on another site holding a good token cannot open the websocket: a browser sends
    // its Origin, and only the server's own (or an allowed one) passes. No Origin (not a
    // browser) and the server's own origin do.
    {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!("ws://{}/ws?token={good}", server.addr);
        for (origin, ok) in [
            (Some("https://evil.example".to_owned()), false),
            (Some(format!("http://{}.evil.example", server.addr)), false),
            (Some(format!("http://{}", server.addr)), true),
            (None, true),
        ] {
            let mut req = url.as_str().into_client_request().expect("request");
            if let Some(o) = &origin {
                req.headers_mut()
                    .insert("origin", o.parse().expect("header"));
            }
            match tokio_tungstenite::connect_async(req).await {
                Ok((mut ws, _)) => {
                    assert!(ok, "{origin:?} was let in");
                    let _ = ws.close(None).await;
                }
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    assert!(!ok, "{origin:?} refused: {resp:?}");
                    assert_eq!(resp.status(), 403);
                    let v: Value = serde_json::from_slice(resp.body().as_deref().unwrap_or(b"{}"))
                        .expect("JSON");
                    assert_eq!(v["code"], "origin_forbidden");
                }
                Err(e) => panic!("{origin:?}: {e}"),
            }
        }
    }
    // The good token still works; its invitation page names the guest.
    let _ = Client::join(server.addr, &good).await;
    let (s, page) = http_get(server.addr, &format!("/join?token={good}")).await;
    assert_eq!(s, 200);
    assert!(page.contains("delegate"), "{page}");
    let (s, _) = http_get(server.addr, "/join?token=garbage").await;
    assert_eq!(s, 401);
    let (s, body) = http_get(server.addr, "/healthz").await;
    assert_eq!(s, 200);
    assert!(body.contains("\"status\":\"ok\""));
    // The browser clients: files under web/ only, pages only with a valid token.
    let (s, _) = http_get(server.addr, "/web/README.md").await;
    assert_eq!(s, 200);
    for bad in [
        "/web/..%2FCargo.toml",
        "/web/%2E%2E/Cargo.toml",
        "/web/.hidden",
        "/web/nope.js",
    ] {
        let (s, _) = http_get(server.addr, bad).await;
        assert_eq!(s, 404, "{bad}");
    }
    let (s, _) = http_get(server.addr, "/timer").await;
    assert_eq!(s, 401);
    let (s, _) = http_get(server.addr, "/timer?token=garbage").await;
    assert_eq!(s, 401);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_rate_limited_then_closed_and_others_are_unaffected() {
    let server = TestServer::start("flood").await;
    let mut chair = server.join(Role::Moderator, "chair", "Chair", "ECO").await;
    let mut d = server.join(Role::Delegate, "d1", "Amina", "KG").await;
    // Within the burst: fine. Beyond it: rate_limited errors.
    let mut limited = 0;
    for i in 0..100 {
        d.send_raw(&format!(r#"{{"id":"f{i}","type":"ping","client_time":0}}"#))
            .await;
    }
    for _ in 0..100 {
        let m = d.recv().await.expect("answer");
        if m["code"] == "rate_limited" {
            limited += 1;
        }
    }
    assert!(limited >= 40, "only {limited} limited");
    // Others are served meanwhile.
    chair
        .ok(json!({"type": "timer_message", "text": "still here"}))
        .await;
    // A sustained flood closes the connection with a goodbye.
    for i in 0..400 {
        d.send_raw(&format!(r#"{{"id":"g{i}","type":"ping","client_time":0}}"#))
            .await;
    }
    let mut saw_goodbye = false;
    while let Some(m) = d.recv().await {
        if m["type"] == "goodbye" {
            assert_eq!(m["reason"], "flood");
            saw_goodbye = true;
        }
    }
    assert!(saw_goodbye);
    chair
        .ok(json!({"type": "timer_message", "text": "and still here"}))
        .await;
    server.shutdown().await;
}
