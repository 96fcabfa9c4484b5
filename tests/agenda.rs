//! The whole default agenda over real websockets, in virtual time: opening remarks, the
//! welcome, four presentations (one overrunning, one extended), the dialogue with five remote
//! delegates and two people in the room, reorder, revoke at the limit; then the minutes.

mod common;

use common::*;
use roundtable::auth::Role;
use serde_json::{Value, json};

const MIN: i64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_default_agenda_in_virtual_time() {
    let server = TestServer::start("agenda").await;
    let clock = server.clock.clone();
    let mut chair = server
        .join(
            Role::Moderator,
            "chair",
            "Leyla Mammadova",
            "ECO Secretariat",
        )
        .await;
    let snap = &chair.welcome["snapshot"];
    assert_eq!(snap["agenda"]["items"].as_array().map(Vec::len), Some(8));
    assert_eq!(snap["agenda"]["planned_start"], json!(EVENT_START));
    let planned_end = snap["agenda"]["planned_end"].as_i64().expect("planned end");
    assert_eq!(planned_end, EVENT_START + 126 * MIN);

    // Clock sync: pong carries the server's (virtual) time.
    let pong = chair.cmd(json!({"type": "ping", "client_time": 5})).await;
    assert_eq!(pong["type"], "pong");
    assert_eq!(pong["client_time"], 5);
    assert_eq!(pong["server_time"], json!(clock.now()));

    let mut delegates = Vec::new();
    for (i, (name, del)) in [
        ("Amina Karimova", "Kyrgyz Republic"),
        ("Rustam Nazarov", "Tajikistan"),
        ("Elif Yilmaz", "Türkiye"),
        ("Jasur Tashkentov", "Uzbekistan"),
        ("Aysel Huseynova", "Azerbaijan"),
    ]
    .iter()
    .enumerate()
    {
        delegates.push(
            server
                .join(Role::Delegate, &format!("d{}", i + 1), name, del)
                .await,
        );
    }
    let mut assistant = server
        .join(
            Role::Assistant,
            "assistant",
            "Floor assistant",
            "ECO Secretariat",
        )
        .await;
    chair
        .wait_event("participant_joined", |e| {
            e["participant"]["id"] == "assistant"
        })
        .await;

    // Start the event ten minutes late... no: on time.
    clock.advance(10 * MIN);

    // 1. Opening remarks: the slot grants the Minister the floor.
    let a = chair.ok(json!({"type": "agenda_start"})).await;
    assert!(a["seq"].as_u64().is_some());
    let g = chair
        .wait_event("floor_granted", |e| e["slot"] == "opening")
        .await;
    let holders = &g["floor"]["holders"];
    assert_eq!(ids(holders), vec!["mukhtar-babayev"]);
    assert_eq!(holders[0]["deadline"], json!(EVENT_START + 6 * MIN));
    clock.advance(5 * MIN + 10_000);
    chair
        .wait_event("item_warning", |e| e["item"] == "opening")
        .await;
    clock.advance(60_000);
    chair
        .wait_event("item_overrun", |e| e["item"] == "opening")
        .await;
    chair.ok(json!({"type": "agenda_end"})).await;
    let t_opening_end = clock.now();

    // 2. Welcome, on time.
    chair
        .ok(json!({"type": "agenda_start", "item": "welcome"}))
        .await;
    clock.advance(4 * MIN + 30_000);
    chair.ok(json!({"type": "agenda_end"})).await;

    // 3. Circular economy: extended by 2 minutes, used 16.
    chair.ok(json!({"type": "agenda_start"})).await;
    clock.advance(10 * MIN);
    let ext = chair
        .ok(json!({"type": "agenda_extend", "minutes": 2}))
        .await;
    assert!(ext["seq"].is_u64());
    let ev = chair.wait_event("item_extended", |_| true).await;
    let item = &ev["agenda"]["items"][2];
    assert_eq!(item["extended_ms"], json!(2 * MIN));
    clock.advance(6 * MIN);
    chair.ok(json!({"type": "agenda_end"})).await;

    // 4. Just transition: overruns by 3 minutes, with a pause in the middle.
    chair.ok(json!({"type": "agenda_start"})).await;
    let g = chair
        .wait_event("floor_granted", |e| e["slot"] == "just-transition")
        .await;
    assert_eq!(ids(&g["floor"]["holders"]), vec!["hari-tulsidas"]);
    clock.advance(5 * MIN);
    chair.ok(json!({"type": "agenda_pause"})).await;
    let p = chair.wait_event("item_paused", |_| true).await;
    assert_eq!(p["agenda"]["items"][3]["remaining_ms"], json!(10 * MIN));
    // The projected end moves while paused.
    let projected_paused = p["agenda"]["projected_end"].as_i64().expect("projected");
    clock.advance(2 * MIN);
    chair.ok(json!({"type": "agenda_resume"})).await;
    let r = chair.wait_event("item_resumed", |_| true).await;
    assert_eq!(
        r["agenda"]["projected_end"].as_i64(),
        Some(projected_paused + 2 * MIN)
    );
    assert_eq!(
        r["agenda"]["items"][3]["deadline"],
        json!(clock.now() + 10 * MIN)
    );
    clock.advance(13 * MIN);
    chair
        .wait_event("item_overrun", |e| e["item"] == "just-transition")
        .await;
    chair.ok(json!({"type": "agenda_end"})).await;
    let ended = chair.wait_event("item_ended", |_| true).await;
    assert_eq!(ended["agenda"]["items"][3]["overrun_ms"], json!(3 * MIN));

    // 5 and 6: on time; the chair jumps from 5 to 6.
    chair.ok(json!({"type": "agenda_start"})).await;
    clock.advance(15 * MIN);
    chair
        .ok(json!({"type": "agenda_jump", "item": "metal-resourcing"}))
        .await;
    clock.advance(14 * MIN);
    chair.ok(json!({"type": "agenda_end"})).await;

    // 7. Dialogue: auto-revoke at the 3-minute limit.
    chair
        .ok(json!({"type": "set_floor", "settings": {"auto_revoke": true}}))
        .await;
    chair
        .ok(json!({"type": "agenda_start", "item": "dialogue"}))
        .await;
    for (i, d) in delegates.iter_mut().enumerate() {
        let a = d.ok(json!({"type": "raise_hand"})).await;
        assert!(a["request"].is_u64(), "delegate {i}: {a}");
    }
    // A re-raise is a no-op: same request, no event.
    let again = delegates[0].ok(json!({"type": "raise_hand"})).await;
    assert!(again["seq"].is_null());
    let r1 = assistant
        .ok(json!({"type": "request_for", "name": "Dr. Leila Aliyeva", "delegation": "Azerbaijan"}))
        .await;
    let r2 = assistant
        .ok(json!({"type": "request_for", "name": "Mr. Bakyt Osmonov", "delegation": "Kyrgyz Republic"}))
        .await;
    let dup = assistant
        .ok(json!({"type": "request_for", "name": "dr. leila aliyeva", "delegation": "azerbaijan"}))
        .await;
    assert_eq!(dup["request"], r1["request"]);
    // The delegate sees their position.
    let q = delegates[2]
        .wait_event("floor_requested", |e| {
            e["request"]["beneficiary"]["name"] == "Mr. Bakyt Osmonov"
        })
        .await;
    let queue = &q["floor"]["queue"];
    assert_eq!(
        ids(queue),
        vec!["d1", "d2", "d3", "d4", "d5", "room-1", "room-2"]
    );
    assert_eq!(queue[2]["position"], 3);

    // Reorder: the in-room speaker Bakyt Osmonov to the front, d5 to second.
    chair
        .ok(json!({"type": "move", "request": r2["request"], "position": 1}))
        .await;
    let d5 = queue[4]["id"].clone();
    chair
        .ok(json!({"type": "move", "request": d5, "position": 2}))
        .await;
    let mv = chair
        .wait_event("floor_moved", |e| e["request"] == d5)
        .await;
    assert_eq!(
        ids(&mv["floor"]["queue"]),
        vec!["room-2", "d5", "d1", "d2", "d3", "d4", "room-1"]
    );

    // Next: Bakyt Osmonov (in the room) speaks 2 minutes and is revoked by the chair.
    chair.ok(json!({"type": "next"})).await;
    let g = chair.wait_event("floor_granted", |_| true).await;
    assert_eq!(ids(&g["floor"]["holders"]), vec!["room-2"]);
    let holder = &g["floor"]["holders"][0];
    assert_eq!(holder["limit_ms"], json!(180_000));
    assert_eq!(holder["deadline"], json!(clock.now() + 180_000));
    clock.advance(2 * MIN);
    chair
        .ok(json!({"type": "revoke", "request": r2["request"]}))
        .await;

    // d5 is granted with "next" and speaks until the limit: revoked automatically.
    chair.ok(json!({"type": "next"})).await;
    let g5 = delegates[4]
        .wait_event("floor_granted", |e| e["request"] == d5)
        .await;
    assert_eq!(ids(&g5["floor"]["holders"]), vec!["d5"]);
    // Granting another while the microphone is taken: wait mode refuses.
    let d1 = g5["floor"]["queue"][0]["id"].clone();
    chair
        .err(json!({"type": "grant", "request": d1}), "max_speakers")
        .await;
    clock.advance(150_000);
    delegates[4]
        .wait_event("speaking_warning", |e| e["request"] == d5)
        .await;
    clock.advance(30_000);
    delegates[4]
        .wait_event("speaking_overrun", |e| e["request"] == d5)
        .await;
    let rv = delegates[4]
        .wait_event("floor_revoked", |e| e["request"] == d5)
        .await;
    assert_eq!(rv["event"]["reason"], "limit_reached");

    // d1 speaks and releases by lowering their hand.
    chair.ok(json!({"type": "grant", "request": d1})).await;
    clock.advance(90_000);
    delegates[0].ok(json!({"type": "lower_hand"})).await;
    let rel = chair
        .wait_event("floor_released", |e| e["request"] == d1)
        .await;
    assert_eq!(rel["floor"]["holders"], json!([]));

    // The remaining hands are lowered; the dialogue ends.
    chair.ok(json!({"type": "lower_all_hands"})).await;
    let lowered = chair.wait_event("hands_lowered", |_| true).await;
    assert_eq!(
        lowered["event"]["requests"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(lowered["floor"]["queue"], json!([]));
    clock.advance(20 * MIN);
    chair.ok(json!({"type": "agenda_end"})).await;

    // 8. Outcome.
    chair.ok(json!({"type": "agenda_start"})).await;
    clock.advance(10 * MIN);
    chair.ok(json!({"type": "agenda_end"})).await;
    chair
        .err(json!({"type": "agenda_start"}), "invalid_state")
        .await;

    // Every event a delegate saw parses as the typed protocol, in gap-free order.
    let mut observer = server.join(Role::Observer, "obs", "Observer", "").await;
    let seq = observer.welcome["seq"].as_u64().expect("seq");
    assert!(seq > 60, "seq {seq}");
    let _ = typed(&observer.welcome);
    let _ = observer
        .cmd(json!({"type": "ping", "client_time": 0}))
        .await;

    // Minutes, as JSON.
    let token = server.token(
        Role::Moderator,
        "chair",
        "Leyla Mammadova",
        "ECO Secretariat",
    );
    let (status, body) = http_get(
        server.addr,
        &format!("/api/minutes?format=json&token={token}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let m: Value = serde_json::from_str(&body).expect("minutes JSON");
    let items = m["items"].as_array().expect("items");
    assert_eq!(items.len(), 8);
    let opening = &items[0];
    assert_eq!(opening["state"], "ended");
    assert_eq!(opening["actual_ms"], json!(6 * MIN + 10_000));
    assert_eq!(opening["overrun_ms"], json!(10_000));
    assert_eq!(opening["ended_at"], json!(t_opening_end));
    let iv = &opening["interventions"][0];
    assert_eq!(iv["speaker"], "Mr. Mukhtar Babayev");
    assert_eq!(iv["duration_ms"], json!(6 * MIN + 10_000));
    assert_eq!(iv["overrun_ms"], json!(10_000));
    assert_eq!(iv["slot"], true);
    assert_eq!(items[2]["allotted_ms"], json!(17 * MIN));
    assert_eq!(items[2]["overrun_ms"], json!(0));
    assert_eq!(items[3]["overrun_ms"], json!(3 * MIN));
    assert_eq!(items[3]["interventions"][0]["speaker"], "Mr. Hari Tulsidas");
    let dialogue = &items[6];
    let ivs = dialogue["interventions"].as_array().expect("interventions");
    assert_eq!(ivs.len(), 3, "{ivs:?}");
    assert_eq!(ivs[0]["speaker"], "Mr. Bakyt Osmonov");
    assert_eq!(ivs[0]["in_room"], true);
    assert_eq!(ivs[0]["requested_by"], "assistant");
    assert_eq!(ivs[0]["duration_ms"], json!(2 * MIN));
    assert_eq!(ivs[0]["ended"], "revoked_chair");
    assert_eq!(ivs[1]["speaker"], "Aysel Huseynova");
    assert_eq!(ivs[1]["delegation"], "Azerbaijan");
    assert_eq!(ivs[1]["in_room"], false);
    assert_eq!(ivs[1]["duration_ms"], json!(180_000));
    assert_eq!(ivs[1]["ended"], "revoked_limit_reached");
    assert_eq!(ivs[2]["ended"], "released");
    assert_eq!(ivs[2]["duration_ms"], json!(90_000));
    let actions: Vec<&str> = dialogue["chair_actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    for wanted in [
        "item_started",
        "floor_moved",
        "floor_granted",
        "floor_revoked",
        "hands_lowered",
        "item_ended",
    ] {
        assert!(
            actions.contains(&wanted),
            "{wanted} missing from {actions:?}"
        );
    }
    assert_eq!(items[7]["state"], "ended");

    // Markdown and CSV carry the same content.
    let (status, md) = http_get(
        server.addr,
        &format!("/api/minutes?format=md&token={token}"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        md.contains("## 7. Interactive dialogue") || md.contains("## 7."),
        "{md}"
    );
    assert!(
        md.contains("Mr. Bakyt Osmonov | Kyrgyz Republic | in the room"),
        "{md}"
    );
    let (status, csv) = http_get(
        server.addr,
        &format!("/api/minutes?format=csv&token={token}"),
    )
    .await;
    assert_eq!(status, 200);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 1 + 6 + 3, "{csv}");
    assert!(
        rows.iter()
            .any(|r| r.contains("Aysel Huseynova") && r.contains(",180,180,0,")),
        "{csv}"
    );

    // A delegate may not read the minutes.
    let dtoken = server.token(Role::Delegate, "d1", "Amina Karimova", "Kyrgyz Republic");
    let (status, _) = http_get(
        server.addr,
        &format!("/api/minutes?format=md&token={dtoken}"),
    )
    .await;
    assert_eq!(status, 403);

    server.shutdown().await;
}
