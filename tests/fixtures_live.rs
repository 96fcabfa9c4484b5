//! The fixtures in `signaling/fixtures/` show what the server really sends. A real server runs a
//! short meeting in virtual time (opening remarks with their timers, then the dialogue), and
//! every message it sends has the same JSON keys, recursively, as the fixture of its kind:
//! each event as `event/<type>.json`, the welcome, an ack, an error, a pong and a goodbye as
//! theirs under `server/`. Values may differ; keys may differ only for optional fields the server
//! leaves out when empty (`OPTIONAL`), and inside arrays that are empty on one side.
//!
//! The views are checked by the server's own rule instead: the events of one command or tick
//! form a batch, and only the last event of a batch touching the floor (the agenda) carries the
//! floor (agenda) view. A fixture is the last message of its batch (see
//! `signaling/tests/fixtures.rs`), so its views are compared whenever the live message has them
//! too.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use roundtable::auth::Role;
use roundtable::clock::ManualClock;
use serde_json::{Value, json};

const SEC: i64 = 1000;
const MIN: i64 = 60_000;

/// Event kinds the scenario must produce.
const REQUIRED: &[&str] = &[
    "participant_joined",
    "participant_left",
    "floor_requested",
    "floor_accepted",
    "floor_granted",
    "floor_denied",
    "floor_cancelled",
    "floor_released",
    "floor_revoked",
    "floor_moved",
    "hands_lowered",
    "chair_priority",
    "speaking_warning",
    "speaking_overrun",
    "floor_settings_changed",
    "item_started",
    "item_paused",
    "item_resumed",
    "item_extended",
    "item_ended",
    "item_skipped",
    "item_moved",
    "item_warning",
    "item_overrun",
    "timer_message",
];

/// Optional fields (`skip_serializing_if`) that a live message and its fixture may legitimately
/// disagree on, as key-path suffixes (`[]` is an array element). Anything else must match.
const OPTIONAL: &[&str] = &[
    // A holder's limit, deadline and warning (absent for the chair, with no limit, or for a
    // slot grant while its item is paused) and its agenda slot (presenters only).
    "holders[].deadline",
    "holders[].limit_ms",
    "holders[].warning_ms",
    "holders[].slot",
    // Agenda items carry the times of their state.
    "items[].intervention_ms",
    "items[].started_at",
    "items[].deadline",
    "items[].remaining_ms",
    "items[].ended_at",
    "items[].overrun_ms",
    "presenters[].participant",
    "agenda.current",
    // `floor_granted` and `floor_revoked`: `by` is absent when the server acted; a grant's limit
    // and slot as for holders.
    "event.by",
    "event.limit_ms",
    "event.warning_ms",
    "event.slot",
    // The welcome's last timer message.
    "snapshot.timer_message",
];

fn fixture(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("signaling/fixtures")
        .join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every key path in `v` (`floor.holders[].id`), and the paths of empty arrays.
fn key_paths(v: &Value, at: &str, keys: &mut BTreeSet<String>, empty: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                keys.insert(p.clone());
                key_paths(child, &p, keys, empty);
            }
        }
        Value::Array(items) if items.is_empty() => {
            empty.insert(format!("{at}[]"));
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{at}[]"), keys, empty);
            }
        }
        _ => {}
    }
}

/// The key paths found on one side only, other than optional fields and the elements of
/// arrays that are empty on the other side.
fn differences(live: &Value, fixture: &Value) -> Vec<String> {
    let (mut live_keys, mut live_empty) = (BTreeSet::new(), BTreeSet::new());
    let (mut fixture_keys, mut fixture_empty) = (BTreeSet::new(), BTreeSet::new());
    key_paths(live, "", &mut live_keys, &mut live_empty);
    key_paths(fixture, "", &mut fixture_keys, &mut fixture_empty);
    let optional = |p: &str| {
        OPTIONAL
            .iter()
            .any(|o| p == *o || p.ends_with(&format!(".{o}")))
    };
    let unseen = |p: &str, empty: &BTreeSet<String>| empty.iter().any(|e| p.starts_with(e));
    let only_live = live_keys
        .difference(&fixture_keys)
        .filter(|p| !optional(p) && !unseen(p, &fixture_empty))
        .map(|p| format!("only live: {p}"));
    let only_fixture = fixture_keys
        .difference(&live_keys)
        .filter(|p| !optional(p) && !unseen(p, &live_empty))
        .map(|p| format!("only in the fixture: {p}"));
    only_live.chain(only_fixture).collect()
}

fn assert_same_keys(live: &Value, rel: &str) {
    let diff = differences(live, &fixture(rel));
    assert!(diff.is_empty(), "{rel}: {diff:#?}\nlive: {live:#}");
}

/// The chair's connection, reading every event of the meeting in order, and the clock.
struct Observer {
    chair: Client,
    clock: Arc<ManualClock>,
    /// Every event message, in order.
    log: Vec<Value>,
    /// Where the current step's events start in `log`.
    mark: usize,
    /// The `seq` of every ack: each ends a batch.
    acks: Vec<u64>,
}

impl Observer {
    /// Starts a step of the scenario: the events `until` looks for come after this.
    fn step(&mut self) {
        self.log.append(&mut self.chair.events);
        self.mark = self.log.len();
    }

    /// Reads the chair's connection until an event of `kind` in this step (after the one
    /// returned last).
    async fn until(&mut self, kind: &str) -> Value {
        loop {
            // Events that arrived while the chair waited for an ack come first.
            self.log.append(&mut self.chair.events);
            if let Some(i) = self.log[self.mark..]
                .iter()
                .position(|m| m["event"]["type"] == kind)
            {
                self.mark += i + 1;
                return self.log[self.mark - 1].clone();
            }
            match self.chair.recv().await {
                Some(m) if m["type"] == "event" => self.log.push(m),
                Some(_) => {}
                None => panic!("no {kind} event; have {:#?}", &self.log[self.mark..]),
            }
        }
    }

    /// Reads the chair's connection until event `seq`.
    async fn through(&mut self, seq: u64) {
        loop {
            self.log.append(&mut self.chair.events);
            if self.log.last().and_then(|m| m["seq"].as_u64()) >= Some(seq) {
                return;
            }
            match self.chair.recv().await {
                Some(m) if m["type"] == "event" => self.log.push(m),
                Some(_) => {}
                None => panic!("event {seq} never came"),
            }
        }
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Moves the clock to `t` (the meeting's timers fire as one batch).
    fn advance_to(&mut self, t: i64) {
        self.step();
        assert!(t > self.now(), "{t} is in the past");
        self.clock.advance(t - self.now());
    }

    /// A command from `client` one second later (so every batch has its own `at`), acked;
    /// returns the ack once the chair has seen the events.
    async fn send(&mut self, client: Option<&mut Client>, command: Value) -> Value {
        self.step();
        self.clock.advance(SEC);
        let ack = client.unwrap_or(&mut self.chair).ok(command).await;
        if let Some(seq) = ack["seq"].as_u64() {
            self.acks.push(seq);
            self.through(seq).await;
        }
        ack
    }

    async fn chair(&mut self, command: Value) -> Value {
        self.send(None, command).await
    }

    async fn by(&mut self, client: &mut Client, command: Value) -> Value {
        self.send(Some(client), command).await
    }

    /// Someone joins one second later.
    async fn join(&mut self, server: &TestServer, role: Role, id: &str, name: &str) -> Client {
        self.step();
        self.clock.advance(SEC);
        let client = server.join(role, id, name, "Delegation").await;
        let joined = self.until("participant_joined").await;
        assert_eq!(joined["event"]["participant"]["id"], id);
        client
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_show_what_the_server_sends() {
    let server = TestServer::start_with("fixtures-live", |c| {
        c.server.commands_per_second = 1000;
        c.server.command_burst = 1000;
    })
    .await;
    let chair = server
        .join(
            Role::Moderator,
            "leyla-mammadova",
            "Leyla Mammadova",
            "ECO Secretariat",
        )
        .await;
    let mut m = Observer {
        chair,
        clock: server.clock.clone(),
        log: Vec::new(),
        mark: 0,
        acks: Vec::new(),
    };
    let mut amina = m
        .join(&server, Role::Delegate, "amina", "Amina Karimova")
        .await;
    let mut dilnoza = m
        .join(&server, Role::Delegate, "dilnoza", "Dilnoza Yusupova")
        .await;
    let mut emre = m.join(&server, Role::Delegate, "emre", "Emre Yıldız").await;
    let mut nigar = m
        .join(&server, Role::Assistant, "nigar", "Nigar Aliyeva")
        .await;

    // Opening remarks: a slot grant, its timers and the item's, then the end of the item.
    m.advance_to(EVENT_START);
    m.chair(json!({"type": "agenda_start"})).await;
    let started = m.until("item_started").await;
    let deadline = started["agenda"]["items"][0]["deadline"]
        .as_i64()
        .expect("the opening's deadline");
    m.until("floor_granted").await;
    m.advance_to(deadline - MIN);
    m.until("item_warning").await;
    m.advance_to(deadline);
    m.until("item_overrun").await;
    m.chair(json!({"type": "agenda_end"})).await;
    let ended = m.until("item_ended").await;
    let holders = ended["floor"]["holders"].as_array().expect("floor view");
    assert!(
        holders.iter().all(|h| h["chair"] == true),
        "item_ended comes after the revocations: {holders:?}"
    );
    m.chair(json!({"type": "agenda_skip", "item": "welcome"}))
        .await;
    m.chair(json!({"type": "agenda_move", "item": "regional-cooperation", "position": 6}))
        .await;

    // The dialogue.
    m.chair(json!({"type": "agenda_start", "item": "dialogue"}))
        .await;
    m.chair(json!({"type": "timer_message", "text": "Interventions: 3 minutes, please"}))
        .await;
    let raised = m.by(&mut amina, json!({"type": "raise_hand"})).await;
    assert_same_keys(&raised, "server/ack.json");
    let amina_request = raised["request"].clone();
    let dilnoza_request =
        m.by(&mut dilnoza, json!({"type": "raise_hand"})).await["request"].clone();
    let emre_request = m
        .by(&mut emre, json!({"type": "raise_hand", "list": "reply"}))
        .await["request"]
        .clone();
    let room_request = m
        .by(
            &mut nigar,
            json!({"type": "request_for", "name": "Aigerim Sadykova", "delegation": "Kazakhstan"}),
        )
        .await["request"]
        .clone();
    m.chair(json!({"type": "move", "request": room_request, "position": 1}))
        .await;
    m.chair(json!({"type": "grant", "request": amina_request}))
        .await;
    let granted = m.until("floor_granted").await;
    let amina_deadline = granted["floor"]["holders"][0]["deadline"]
        .as_i64()
        .expect("a dialogue speaker's deadline");

    // A latecomer's welcome: someone speaking, both lists, a timer message, every item state.
    let mut firuza = m
        .join(&server, Role::Delegate, "firuza", "Firuza Rahimova")
        .await;
    assert_same_keys(&firuza.welcome, "server/welcome.json");

    // The floor is full: the same error, word for word.
    m.clock.advance(SEC);
    let full = m
        .chair
        .err(
            json!({"type": "grant", "request": dilnoza_request}),
            "max_speakers",
        )
        .await;
    assert_same_keys(&full, "server/error.json");
    assert_eq!(full["message"], fixture("server/error.json")["message"]);
    let pong = m
        .chair
        .cmd(json!({"type": "ping", "client_time": m.now()}))
        .await;
    assert_same_keys(&pong, "server/pong.json");

    // Amina's clock: warning, overrun; a pause does not stop it.
    m.advance_to(amina_deadline - 30 * SEC);
    m.until("speaking_warning").await;
    m.advance_to(amina_deadline);
    m.until("speaking_overrun").await;
    m.chair(json!({"type": "agenda_pause"})).await;
    let paused = m.until("item_paused").await;
    assert_eq!(
        paused["floor"]["holders"][0]["deadline"],
        json!(amina_deadline),
        "a dialogue speaker keeps her deadline during a pause"
    );
    m.chair(json!({"type": "agenda_resume"})).await;
    m.chair(json!({"type": "agenda_extend", "minutes": 5}))
        .await;
    m.by(&mut amina, json!({"type": "lower_hand"})).await;
    m.chair(json!({"type": "grant", "request": room_request}))
        .await;
    m.chair(json!({"type": "revoke", "request": room_request}))
        .await;
    m.chair(json!({"type": "grant", "request": emre_request}))
        .await;
    m.chair(json!({"type": "chair_priority"})).await;

    // Screening: accept, deny, cancel, lower every hand.
    m.chair(json!({"type": "set_floor", "settings": {"screen_requests": true}}))
        .await;
    let firuza_request = m.by(&mut firuza, json!({"type": "raise_hand"})).await["request"].clone();
    m.chair(json!({"type": "accept", "request": firuza_request}))
        .await;
    let amina_again = m.by(&mut amina, json!({"type": "raise_hand"})).await["request"].clone();
    m.chair(json!({"type": "deny", "request": amina_again}))
        .await;
    m.by(&mut dilnoza, json!({"type": "lower_hand"})).await;
    m.chair(json!({"type": "lower_all_hands"})).await;
    m.chair(json!({"type": "agenda_end"})).await;

    // Firuza joins again elsewhere: the old connection is told why it closes.
    m.clock.advance(SEC);
    let _firuza_again = server
        .join(Role::Delegate, "firuza", "Firuza Rahimova", "Delegation")
        .await;
    let goodbye = loop {
        let message = firuza.recv().await.expect("goodbye before the close");
        if message["type"] == "goodbye" {
            break message;
        }
    };
    assert_same_keys(&goodbye, "server/goodbye.json");
    assert_eq!(goodbye, fixture("server/goodbye.json"));
    m.step();
    m.clock.advance(SEC);
    emre.close().await;
    m.until("participant_left").await;

    check_log(&m);
    server.shutdown().await;
}

/// The whole event log: gap-free, typed, views by the batch rule, keys as in the fixtures.
fn check_log(m: &Observer) {
    let seqs: Vec<u64> = m.log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "gap-free"
    );

    // Batches: every step of the scenario has its own clock time, so a batch is a run of
    // events with the same `at`; a command's batch ends at its ack's `seq`.
    let mut batches: Vec<Vec<&Value>> = Vec::new();
    for e in &m.log {
        typed(e);
        match batches.last_mut() {
            Some(b) if b[0]["at"] == e["at"] => b.push(e),
            _ => batches.push(vec![e]),
        }
    }
    let ends: BTreeSet<u64> = batches
        .iter()
        .map(|b| b.last().unwrap()["seq"].as_u64().unwrap())
        .collect();
    for seq in &m.acks {
        assert!(ends.contains(seq), "the batch acked at {seq} is not whole");
    }
    for batch in &batches {
        let events: Vec<_> = batch.iter().map(|e| event_of(e)).collect();
        let last_floor = events.iter().rposition(|e| e.touches_floor());
        let last_agenda = events.iter().rposition(|e| e.touches_agenda());
        for (i, e) in batch.iter().enumerate() {
            let seq = &e["seq"];
            assert_eq!(
                e.get("floor").is_some(),
                Some(i) == last_floor,
                "floor view on {seq}: {batch:#?}"
            );
            assert_eq!(
                e.get("agenda").is_some(),
                Some(i) == last_agenda,
                "agenda view on {seq}: {batch:#?}"
            );
        }
    }

    let mut seen = BTreeSet::new();
    for e in &m.log {
        let kind = e["event"]["type"].as_str().unwrap();
        seen.insert(kind);
        let mut rels = vec![format!("event/{kind}.json")];
        if kind == "floor_requested" {
            rels.push("server/event.json".into());
        }
        for rel in rels {
            let mut expected = fixture(&rel);
            let mut live = e.clone();
            // Views are compared where both have them; their presence follows the batch rule.
            for view in ["floor", "agenda"] {
                if live.get(view).is_none() || expected.get(view).is_none() {
                    live.as_object_mut().unwrap().remove(view);
                    expected.as_object_mut().unwrap().remove(view);
                }
            }
            let diff = differences(&live, &expected);
            assert!(diff.is_empty(), "{rel}: {diff:#?}\nlive: {e:#}");
        }
    }
    let missing: Vec<_> = REQUIRED.iter().filter(|k| !seen.contains(*k)).collect();
    assert!(missing.is_empty(), "not observed: {missing:?}");
}
