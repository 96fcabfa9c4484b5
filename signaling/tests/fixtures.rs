//! The example messages under `fixtures/` (one file per message variant, from the reference
//! event) round-trip exactly through the protocol types, and cover every variant; plus the
//! error cases of `parse_client_message`.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use roundtable_signaling::{
    ClientMessage, Command, ErrorCode, Event, MAX_ID_LEN, ParseError, ServerMessage,
    parse_client_message,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// One fixture file.
struct Fixture {
    /// `client/grant.json`, for messages.
    path: String,
    /// The file name without `.json`: the message's `type` (or the event's, under `event/`).
    name: String,
    /// The file's text.
    text: String,
    /// The file parsed as plain JSON.
    value: Value,
}

/// Every fixture in `fixtures/<dir>`, sorted by name.
fn fixtures(dir: &str) -> Vec<Fixture> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut out = Vec::new();
    for entry in fs::read_dir(root.join(dir)).unwrap_or_else(|e| panic!("fixtures/{dir}: {e}")) {
        let file = entry.unwrap().path();
        let path = file.strip_prefix(&root).unwrap().display().to_string();
        assert_eq!(
            file.extension().and_then(|e| e.to_str()),
            Some("json"),
            "{path}: fixtures are .json files"
        );
        let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let name = file.file_stem().unwrap().to_str().unwrap().to_owned();
        out.push(Fixture {
            path,
            name,
            text,
            value,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "fixtures/{dir} is empty");
    out
}

/// Parses the fixture as `T`, serializes it back and checks nothing was lost or added.
fn round_trip<T: DeserializeOwned + Serialize>(f: &Fixture) -> T {
    let parsed: T =
        serde_json::from_str(&f.text).unwrap_or_else(|e| panic!("{}: does not parse: {e}", f.path));
    let back = serde_json::to_value(&parsed).unwrap();
    assert_eq!(back, f.value, "{}: does not round-trip", f.path);
    parsed
}

/// The `type` field of a JSON object.
fn type_field(value: &Value) -> &str {
    value["type"].as_str().expect("a string \"type\"")
}

/// The names of the fixtures in `dir`.
fn names(dir: &str) -> BTreeSet<String> {
    fixtures(dir).into_iter().map(|f| f.name).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// Every `ServerMessage` variant's `type`. `server_type` below fails to compile when a variant
/// is added, as a reminder to list it here and add its fixture.
const SERVER_TYPES: &[&str] = &[
    "welcome",
    "resumed",
    "ack",
    "error",
    "pong",
    "event",
    "publish_answer",
    "subscribe_offer",
    "subscribe_slots",
    "speaking",
    "ice_candidate",
    "goodbye",
    "health",
    "alert",
];

fn server_type(message: &ServerMessage) -> &'static str {
    match message {
        ServerMessage::Welcome { .. } => "welcome",
        ServerMessage::Resumed { .. } => "resumed",
        ServerMessage::Ack { .. } => "ack",
        ServerMessage::Error { .. } => "error",
        ServerMessage::Pong { .. } => "pong",
        ServerMessage::Event { .. } => "event",
        ServerMessage::PublishAnswer { .. } => "publish_answer",
        ServerMessage::SubscribeOffer { .. } => "subscribe_offer",
        ServerMessage::SubscribeSlots { .. } => "subscribe_slots",
        ServerMessage::Speaking { .. } => "speaking",
        ServerMessage::IceCandidate { .. } => "ice_candidate",
        ServerMessage::Goodbye { .. } => "goodbye",
        ServerMessage::Health { .. } => "health",
        ServerMessage::Alert { .. } => "alert",
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips.

#[test]
fn client_fixtures_round_trip_and_parse() {
    for f in fixtures("client") {
        let message: ClientMessage = round_trip(&f);
        let parsed = parse_client_message(&f.text)
            .unwrap_or_else(|(id, e)| panic!("{}: parse_client_message: {id:?} {e:?}", f.path));
        assert_eq!(parsed, message, "{}", f.path);
    }
}

#[test]
fn server_fixtures_round_trip() {
    for f in fixtures("server") {
        round_trip::<ServerMessage>(&f);
    }
}

#[test]
fn event_fixtures_round_trip() {
    for f in fixtures("event") {
        round_trip::<ServerMessage>(&f);
    }
}

/// Fixtures read like what the server sends, pretty-printed: fields in declaration order,
/// 2-space indentation, a final newline.
#[test]
fn fixtures_are_pretty_printed_in_field_order() {
    fn check<T: DeserializeOwned + Serialize>(f: &Fixture) {
        let parsed: T = serde_json::from_str(&f.text).unwrap();
        let expected = serde_json::to_string_pretty(&parsed).unwrap() + "\n";
        assert!(f.text == expected, "{}: expected\n{expected}", f.path);
    }
    for f in fixtures("client") {
        check::<ClientMessage>(&f);
    }
    for f in fixtures("server").iter().chain(&fixtures("event")) {
        check::<ServerMessage>(f);
    }
}

// ---------------------------------------------------------------------------------------------
// Completeness and names.

#[test]
fn every_command_has_a_fixture() {
    let types: BTreeSet<String> = set(Command::TYPES);
    assert_eq!(
        types.len(),
        Command::TYPES.len(),
        "duplicate in Command::TYPES"
    );
    assert_eq!(names("client"), types);
}

#[test]
fn every_event_has_a_fixture() {
    let kinds = set(Event::KINDS);
    assert_eq!(kinds.len(), Event::KINDS.len(), "duplicate in Event::KINDS");
    assert_eq!(names("event"), kinds);
}

#[test]
fn every_server_message_has_a_fixture() {
    assert_eq!(names("server"), set(SERVER_TYPES));
}

#[test]
fn names_agree_with_the_type_field() {
    for f in fixtures("client") {
        let message: ClientMessage = serde_json::from_str(&f.text).unwrap();
        assert_eq!(type_field(&f.value), f.name, "{}", f.path);
        assert_eq!(message.command.type_name(), f.name, "{}", f.path);
    }
    for f in fixtures("server") {
        let message: ServerMessage = serde_json::from_str(&f.text).unwrap();
        assert_eq!(type_field(&f.value), f.name, "{}", f.path);
        assert_eq!(server_type(&message), f.name, "{}", f.path);
    }
    for f in fixtures("event") {
        let message: ServerMessage = serde_json::from_str(&f.text).unwrap();
        assert_eq!(type_field(&f.value), "event", "{}", f.path);
        let ServerMessage::Event { event, .. } = message else {
            panic!("{}: not an event message", f.path)
        };
        assert_eq!(type_field(&f.value["event"]), f.name, "{}", f.path);
        assert_eq!(event.kind(), f.name, "{}", f.path);
    }
}

/// Event fixtures that are not the last message of their batch to touch the floor or the
/// agenda, so the server sends them without views. `chair_priority` is shown where the server
/// sends it whenever someone is speaking: first of its batch, followed by `floor_revoked` (reason
/// `chair_priority`), which carries the floor view (that message is `event/floor_revoked.json`).
const MID_BATCH: &[&str] = &["chair_priority"];

/// The views follow the server's rule (`Meeting::commit`): the events of one command or one
/// timer tick form a batch; the floor view rides only on the last event of the batch that
/// touches the floor, the agenda view only on the last one that touches the agenda, and both
/// show the state after the whole batch. Every event fixture except those in `MID_BATCH` is the
/// last message of its batch: for most the batch has that one event, and a batch of one carries
/// exactly the views its event touches; `floor_revoked` ends a `chair_priority` batch and
/// `item_ended` ends the agenda's revocations, so they carry the views too.
#[test]
fn event_fixtures_carry_the_views_they_touch() {
    for f in fixtures("event") {
        let ServerMessage::Event {
            event,
            floor,
            agenda,
            ..
        } = serde_json::from_str(&f.text).unwrap()
        else {
            panic!("{}: not an event message", f.path)
        };
        let last = !MID_BATCH.contains(&f.name.as_str());
        assert_eq!(
            floor.is_some(),
            last && event.touches_floor(),
            "{}: floor",
            f.path
        );
        assert_eq!(
            agenda.is_some(),
            last && event.touches_agenda(),
            "{}: agenda",
            f.path
        );
    }
}

/// Fixtures show what the server does, not only what the types allow.
#[test]
fn event_fixtures_follow_the_server() {
    let event = |name: &str| -> ServerMessage {
        let f = fixtures("event")
            .into_iter()
            .find(|f| f.name == name)
            .unwrap();
        serde_json::from_str(&f.text).unwrap()
    };
    // The request inside `floor_requested` has no position (`wire::event_out`): positions are
    // in the floor view.
    let mut requested = vec![event("floor_requested")];
    requested.extend(
        fixtures("server")
            .iter()
            .filter(|f| f.name == "event")
            .map(|f| serde_json::from_str(&f.text).unwrap()),
    );
    for m in requested {
        let ServerMessage::Event {
            event: Event::FloorRequested { request },
            ..
        } = m
        else {
            panic!("not floor_requested: {m:?}")
        };
        assert_eq!(request.position, None, "request {}", request.id);
    }
    // `item_ended` comes after the revocation of every holder but the chair.
    let ServerMessage::Event {
        floor: Some(floor), ..
    } = event("item_ended")
    else {
        panic!("item_ended without a floor view")
    };
    assert!(floor.holders.iter().all(|r| r.chair), "{:?}", floor.holders);
    // A pause stops only the clocks of the paused item's slot grants: other speakers keep
    // their deadline.
    let ServerMessage::Event {
        event: Event::ItemPaused { item, .. },
        floor: Some(floor),
        ..
    } = event("item_paused")
    else {
        panic!("item_paused without a floor view")
    };
    assert!(!floor.holders.is_empty(), "show a speaker during the pause");
    for r in &floor.holders {
        let stopped = r.slot.as_ref() == Some(&item);
        assert_eq!(
            r.deadline.is_none(),
            stopped || r.limit_ms.is_none(),
            "{r:?}"
        );
    }
}

/// The welcome snapshot is a full picture of the meeting in the dialogue.
#[test]
fn welcome_snapshot_is_complete() {
    let f = fixtures("server")
        .into_iter()
        .find(|f| f.name == "welcome")
        .unwrap();
    let ServerMessage::Welcome { snapshot, .. } = serde_json::from_str(&f.text).unwrap() else {
        panic!("not a welcome")
    };
    assert_eq!(snapshot.meeting.id, "baku-minerals");
    assert_eq!(snapshot.agenda.items.len(), 8);
    assert_eq!(snapshot.agenda.current.as_deref(), Some("dialogue"));
    assert_eq!(snapshot.floor.holders.len(), 1);
    let positions: Vec<_> = snapshot.floor.queue.iter().map(|r| r.position).collect();
    assert_eq!(positions, [Some(1), Some(2)]);
    assert_eq!(snapshot.floor.replies.len(), 1);
    assert!(!snapshot.participants.is_empty());
}

// ---------------------------------------------------------------------------------------------
// parse_client_message errors.

fn parse_err(text: &str) -> (Option<String>, ParseError) {
    match parse_client_message(text) {
        Ok(m) => panic!("{text}: parsed as {m:?}"),
        Err(e) => e,
    }
}

/// Parses a frame that must fail with `InvalidFields` for `kind`, returning serde's detail.
fn invalid_fields(text: &str, kind: &str) -> String {
    match parse_err(text) {
        (Some(id), ParseError::InvalidFields { kind: k, detail }) => {
            assert_eq!(id, "9", "{text}");
            assert_eq!(k, kind, "{text}");
            detail
        }
        other => panic!("{text}: {other:?}"),
    }
}

#[test]
fn not_json_is_malformed() {
    let (id, e) = parse_err(r#"{"id": "9", "type": "grant", "request": 15"#);
    assert_eq!(id, None);
    assert!(matches!(e, ParseError::Malformed(_)), "{e:?}");
    assert_eq!(e.code(), ErrorCode::MalformedJson);
    assert!(e.message().contains("not valid JSON"), "{}", e.message());
}

#[test]
fn an_array_is_not_an_object() {
    let (id, e) = parse_err(r#"[{"id": "9", "type": "grant", "request": 15}]"#);
    assert_eq!(id, None);
    assert_eq!(e, ParseError::NotAnObject);
    assert_eq!(e.code(), ErrorCode::MalformedJson);
}

#[test]
fn bad_ids() {
    let too_long = "a".repeat(MAX_ID_LEN + 1);
    for text in [
        r#"{"type": "lower_hand"}"#.to_owned(),
        r#"{"id": "", "type": "lower_hand"}"#.to_owned(),
        r#"{"id": 9, "type": "lower_hand"}"#.to_owned(),
        format!(r#"{{"id": "{too_long}", "type": "lower_hand"}}"#),
    ] {
        let (id, e) = parse_err(&text);
        assert_eq!(id, None, "{text}");
        assert_eq!(e, ParseError::BadId, "{text}");
        assert_eq!(e.code(), ErrorCode::BadId);
    }
}

/// The id limit counts characters, not bytes.
#[test]
fn an_id_of_64_characters_is_accepted() {
    for id in ["a".repeat(MAX_ID_LEN), "ə".repeat(MAX_ID_LEN)] {
        let text = format!(r#"{{"id": "{id}", "type": "lower_hand"}}"#);
        let message = parse_client_message(&text).unwrap();
        assert_eq!(message.id, id);
    }
}

#[test]
fn missing_type_returns_the_id() {
    for text in [
        r#"{"id": "9", "request": 15}"#,
        r#"{"id": "9", "type": 4, "request": 15}"#,
    ] {
        let (id, e) = parse_err(text);
        assert_eq!(id.as_deref(), Some("9"), "{text}");
        assert_eq!(e, ParseError::MissingType, "{text}");
        assert_eq!(e.code(), ErrorCode::UnknownType);
    }
}

#[test]
fn unknown_type_returns_the_id() {
    let (id, e) = parse_err(r#"{"id": "9", "type": "raise_hands"}"#);
    assert_eq!(id.as_deref(), Some("9"));
    assert_eq!(e, ParseError::UnknownType("raise_hands".into()));
    assert_eq!(e.code(), ErrorCode::UnknownType);
    assert!(e.message().contains("raise_hands"), "{}", e.message());
}

#[test]
fn missing_field_is_named() {
    let detail = invalid_fields(r#"{"id": "9", "type": "grant"}"#, "grant");
    assert!(detail.contains("missing field `request`"), "{detail}");
}

#[test]
fn wrong_field_type() {
    let detail = invalid_fields(r#"{"id": "9", "type": "grant", "request": "x"}"#, "grant");
    assert!(detail.contains("invalid type"), "{detail}");
}

#[test]
fn an_unknown_microphones_choice_is_refused() {
    let detail = invalid_fields(
        r#"{"id": "9", "type": "media_preferences", "thumbnails": false, "microphones": "loud"}"#,
        "media_preferences",
    );
    assert!(detail.contains("loud"), "{detail}");
}

#[test]
fn unknown_fields_are_refused() {
    let detail = invalid_fields(
        r#"{"id": "9", "type": "grant", "request": 15, "minutes": 3}"#,
        "grant",
    );
    assert!(detail.contains("unknown field `minutes`"), "{detail}");
    // Also in nested settings...
    let detail = invalid_fields(
        r#"{"id": "9", "type": "set_floor", "settings": {"speaking_limit_ms": 180000}}"#,
        "set_floor",
    );
    assert!(
        detail.contains("unknown field `speaking_limit_ms`"),
        "{detail}"
    );
    // ...and on commands that have no fields at all, which serde alone would accept.
    let detail = invalid_fields(
        r#"{"id": "9", "type": "agenda_end", "item": "dialogue"}"#,
        "agenda_end",
    );
    assert!(detail.contains("unknown field `item`"), "{detail}");
}

#[test]
fn invalid_fields_code_and_message() {
    let (_, e) = parse_err(r#"{"id": "9", "type": "grant"}"#);
    assert_eq!(e.code(), ErrorCode::InvalidFields);
    let message = e.message();
    assert!(
        message.contains("grant") && message.contains("request"),
        "{message}"
    );
}

/// Found by the `protocol_parser` fuzz target: a float the default parser read one ulp off,
/// so the command did not survive a serialise-parse round trip (fixed with serde_json's
/// `float_roundtrip`).
#[test]
fn floats_survive_a_round_trip() {
    let text = r#"{"id":"41","type":"client_stats","up":{"fps":2.4333333333333333e+51},"down":{"jitter_buffer_ms":0.1}}"#;
    let once = parse_client_message(text).expect("parses");
    let again = serde_json::to_string(&once).expect("serialises");
    assert_eq!(parse_client_message(&again).expect("parses again"), once);
}
