//! Tests for the floor and agenda engine: one unit test per behaviour, a journal replay test
//! and a property test over random command sequences.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeSet, HashSet};

const T0: Millis = 1_700_000_000_000;
const SEC: i64 = 1_000;
const MIN: i64 = 60_000;
const ITEM_WARNING: i64 = MIN;

// ----- fixtures ------------------------------------------------------------------------------

fn actor(id: &str) -> Actor {
    Actor {
        id: id.to_owned(),
        name: format!("Name {id}"),
        delegation: format!("Delegation {id}"),
        chair: id == "mod",
    }
}

fn item_plan(
    id: &str,
    kind: ItemKind,
    planned_ms: i64,
    presenters: &[Option<&str>],
    intervention_ms: Option<i64>,
) -> ItemPlan {
    ItemPlan {
        id: id.to_owned(),
        kind,
        title: format!("Title {id}"),
        presenters: presenters
            .iter()
            .enumerate()
            .map(|(n, p)| Presenter {
                name: format!("Presenter {n}"),
                role: "Speaker".to_owned(),
                organisation: "Org".to_owned(),
                participant: p.map(str::to_owned),
            })
            .collect(),
        planned_ms,
        intervention_ms,
    }
}

/// talk (presentation by d5, 20 min), debate (dialogue, 30 min, 90 s interventions),
/// break (10 min): 60 minutes in all.
fn plan() -> Vec<ItemPlan> {
    vec![
        item_plan(
            "talk",
            ItemKind::Presentation,
            20 * MIN,
            &[Some("d5")],
            None,
        ),
        item_plan("debate", ItemKind::Dialogue, 30 * MIN, &[], Some(90 * SEC)),
        item_plan("break", ItemKind::Break, 10 * MIN, &[], None),
    ]
}

fn settings() -> Settings {
    Settings::default()
}

fn ids<'a>(it: impl Iterator<Item = &'a Request>) -> Vec<RequestId> {
    it.map(|r| r.id).collect()
}

fn is_final(s: State) -> bool {
    matches!(
        s,
        State::Released | State::Denied | State::Cancelled | State::Revoked
    )
}

/// An engine plus the journal of every event it emitted, with the time of each.
struct Sim {
    e: Engine,
    start: Engine,
    log: Vec<(Event, Millis)>,
    now: Millis,
}

impl Sim {
    fn new(settings: Settings) -> Sim {
        Sim::with(settings, plan(), None)
    }

    fn with(settings: Settings, plan: Vec<ItemPlan>, planned_start: Option<Millis>) -> Sim {
        let e = Engine::new(settings, plan, planned_start, ITEM_WARNING);
        Sim {
            start: e.clone(),
            e,
            log: Vec::new(),
            now: T0,
        }
    }

    fn advance(&mut self, ms: i64) -> &mut Sim {
        self.now += ms;
        self
    }

    fn record(&mut self, before: Engine, events: &[Event]) {
        let mut replay = before;
        for ev in events {
            replay.apply(ev, self.now);
            self.log.push((ev.clone(), self.now));
        }
        assert_eq!(replay, self.e, "events do not replay to the live engine");
    }

    fn try_run(&mut self, who: &str, command: Command) -> Result<Outcome, FloorError> {
        let before = self.e.clone();
        let result = self.e.handle(&actor(who), command, self.now);
        match &result {
            Ok(out) => self.record(before, &out.events),
            Err(_) => assert_eq!(self.e, before, "a refused command changed the engine"),
        }
        self.e.check_invariants().unwrap();
        result
    }

    fn run(&mut self, who: &str, command: Command) -> Outcome {
        let c = command.clone();
        self.try_run(who, command)
            .unwrap_or_else(|e| panic!("{c:?} by {who} failed: {e}"))
    }

    fn raise(&mut self, who: &str) -> RequestId {
        self.run(who, Command::RaiseHand { list: List::Main })
            .request
            .unwrap()
    }

    fn reply(&mut self, who: &str) -> RequestId {
        self.run(who, Command::RaiseHand { list: List::Reply })
            .request
            .unwrap()
    }

    fn tick(&mut self) -> Vec<Event> {
        let before = self.e.clone();
        let events = self.e.tick(self.now);
        self.record(before, &events);
        self.e.check_invariants().unwrap();
        events
    }

    fn replayed(&self) -> Engine {
        let mut e = self.start.clone();
        for (ev, at) in &self.log {
            e.apply(ev, *at);
        }
        e
    }

    fn holders(&self) -> Vec<RequestId> {
        ids(self.e.holders())
    }

    fn list(&self, list: List) -> Vec<RequestId> {
        ids(self.e.list(list))
    }

    fn item(&self, id: &str) -> &Item {
        self.e.items().iter().find(|i| i.plan.id == id).unwrap()
    }

    fn req(&self, id: RequestId) -> &Request {
        self.e.request(id).unwrap()
    }
}

fn with(f: impl FnOnce(&mut Settings)) -> Settings {
    let mut s = settings();
    f(&mut s);
    s
}

fn revoked(events: &[Event]) -> Vec<(RequestId, RevokeReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Revoked {
                request, reason, ..
            } => Some((*request, *reason)),
            _ => None,
        })
        .collect()
}

fn granted(events: &[Event]) -> Vec<RequestId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Granted { request, .. } => Some(*request),
            _ => None,
        })
        .collect()
}

// ----- requests and queues -----------------------------------------------------------------

#[test]
fn raise_hand_is_accepted_at_position_1() {
    let mut s = Sim::new(settings());
    let out = s.run("d1", Command::RaiseHand { list: List::Main });
    let id = out.request.unwrap();
    assert_eq!(out.events.len(), 1);
    assert!(matches!(&out.events[0], Event::Requested(r) if r.id == id));
    assert_eq!(s.req(id).state, State::Accepted);
    assert_eq!(s.e.position(id), Some(1));
    assert_eq!(s.req(id).beneficiary.participant, "d1");
    assert!(!s.req(id).beneficiary.in_room);
}

#[test]
fn second_raise_is_a_noop_returning_the_same_request() {
    let mut s = Sim::new(settings());
    let id = s.raise("d1");
    let before = s.e.clone();
    let out = s.run("d1", Command::RaiseHand { list: List::Reply });
    assert_eq!(out.request, Some(id));
    assert!(out.events.is_empty());
    assert_eq!(s.e, before);
}

#[test]
fn positions_stay_contiguous_after_a_cancel_in_the_middle() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    let b = s.raise("d2");
    let c = s.raise("d3");
    let d = s.raise("d4");
    s.run("d2", Command::Cancel(b));
    assert_eq!(s.e.position(b), None);
    assert_eq!(s.list(List::Main), vec![a, c, d]);
    assert_eq!(
        [a, c, d].map(|id| s.e.position(id)),
        [Some(1), Some(2), Some(3)]
    );
}

#[test]
fn screened_request_is_pending_and_accept_queues_it_at_the_end() {
    let mut s = Sim::new(with(|s| s.screen_requests = true));
    let a = s.raise("d1");
    let b = s.raise("d2");
    assert_eq!(s.req(a).state, State::Pending);
    assert_eq!(s.e.position(a), None);
    assert_eq!(ids(s.e.pending()), vec![a, b]);
    s.run("mod", Command::Accept(b));
    s.run("mod", Command::Accept(a));
    assert_eq!(s.req(a).state, State::Accepted);
    assert_eq!(s.list(List::Main), vec![b, a]);
    assert_eq!(s.e.position(a), Some(2));
    assert!(matches!(
        s.try_run("mod", Command::Accept(a)),
        Err(FloorError::InvalidState(_))
    ));
}

#[test]
fn grant_when_full_in_wait_mode_fails_and_changes_nothing() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    let b = s.raise("d2");
    s.run("mod", Command::Grant(a));
    let before = s.e.clone();
    assert_eq!(
        s.try_run("mod", Command::Grant(b)),
        Err(FloorError::MaxSpeakers(1))
    );
    assert_eq!(s.e, before);
}

#[test]
fn grant_when_full_in_override_mode_cuts_the_longest_speaker() {
    let mut s = Sim::new(with(|s| {
        s.max_speakers = 2;
        s.when_full = WhenFull::Override;
    }));
    let a = s.raise("d1");
    let b = s.raise("d2");
    let c = s.raise("d3");
    s.run("mod", Command::Grant(b));
    s.advance(SEC);
    s.run("mod", Command::Grant(a));
    s.advance(SEC);
    let out = s.run("mod", Command::Grant(c));
    assert_eq!(revoked(&out.events), vec![(b, RevokeReason::Override)]);
    assert!(matches!(
        &out.events[0],
        Event::Revoked { by: Some(by), .. } if by == "mod"
    ));
    assert_eq!(granted(&out.events), vec![c]);
    assert_eq!(s.holders(), vec![a, c]);
}

#[test]
fn next_serves_the_reply_list_first() {
    let mut s = Sim::new(settings());
    let main = s.raise("d1");
    let reply = s.reply("d2");
    let out = s.run("mod", Command::Next(None));
    assert_eq!(granted(&out.events), vec![reply]);
    assert_eq!(s.holders(), vec![reply]);
    assert_eq!(s.list(List::Main), vec![main]);
}

#[test]
fn next_main_serves_the_main_list() {
    let mut s = Sim::new(with(|s| s.max_speakers = 3));
    let main = s.raise("d1");
    let reply = s.reply("d2");
    let out = s.run("mod", Command::Next(Some(List::Main)));
    assert_eq!(granted(&out.events), vec![main]);
    assert_eq!(s.list(List::Reply), vec![reply]);
    assert!(matches!(
        s.try_run("mod", Command::Next(Some(List::Main))),
        Err(FloorError::InvalidState(_))
    ));
}

#[test]
fn next_always_makes_room_even_in_wait_mode() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    let b = s.raise("d2");
    s.run("mod", Command::Grant(a));
    let out = s.run("mod", Command::Next(None));
    assert_eq!(revoked(&out.events), vec![(a, RevokeReason::Chair)]);
    assert_eq!(granted(&out.events), vec![b]);
    assert_eq!(s.holders(), vec![b]);
}

#[test]
fn move_clamps_and_reorders() {
    let mut s = Sim::new(settings());
    let [a, b, c, d] = ["d1", "d2", "d3", "d4"].map(|w| s.raise(w));
    s.run("mod", Command::Move(d, 1));
    assert_eq!(s.list(List::Main), vec![d, a, b, c]);
    let out = s.run("mod", Command::Move(a, 99));
    assert!(matches!(
        out.events.as_slice(),
        [Event::Moved { position: 4, .. }]
    ));
    assert_eq!(s.list(List::Main), vec![d, b, c, a]);
    assert_eq!(s.e.position(a), Some(4));
    assert!(s.run("mod", Command::Move(b, 2)).events.is_empty());
    assert!(matches!(
        s.try_run("mod", Command::Move(b, 0)),
        Err(FloorError::InvalidValue(_))
    ));
    assert!(matches!(
        s.try_run("mod", Command::Move(42, 1)),
        Err(FloorError::NotFound(_))
    ));
}

#[test]
fn lower_all_hands_cancels_waiting_but_not_holders() {
    let mut s = Sim::new(with(|s| s.screen_requests = true));
    let pending = s.raise("d1");
    let holder = s.raise("d2");
    s.run("mod", Command::Grant(holder));
    let queued = s.raise("d3");
    s.run("mod", Command::Accept(queued));
    let reply = s.run("d4", Command::RaiseHand { list: List::Reply });
    let reply = reply.request.unwrap();
    s.run("mod", Command::Accept(reply));
    let out = s.run("mod", Command::LowerAllHands);
    let Event::HandsLowered { requests, .. } = &out.events[0] else {
        panic!("{out:?}");
    };
    let lowered: BTreeSet<_> = requests.iter().copied().collect();
    assert_eq!(lowered, BTreeSet::from([pending, queued, reply]));
    assert_eq!(s.holders(), vec![holder]);
    assert_eq!(s.e.requests().count(), 1);
    assert!(s.run("mod", Command::LowerAllHands).events.is_empty());
}

#[test]
fn chair_priority_revokes_everyone_but_the_chair() {
    let mut s = Sim::new(with(|s| s.max_speakers = 3));
    let a = s.raise("d1");
    let b = s.raise("d2");
    s.run("mod", Command::Grant(a));
    s.run("mod", Command::Grant(b));
    let chair = s.raise("mod");
    let out = s.run("mod", Command::ChairPriority);
    assert!(matches!(out.events[0], Event::ChairPriority { .. }));
    assert_eq!(
        revoked(&out.events),
        vec![
            (a, RevokeReason::ChairPriority),
            (b, RevokeReason::ChairPriority)
        ]
    );
    assert_eq!(s.holders(), vec![chair]);
}

#[test]
fn chair_raise_is_granted_at_once_and_does_not_count() {
    let mut s = Sim::new(with(|s| s.screen_requests = true));
    let chair = s.raise("mod");
    assert_eq!(s.req(chair).state, State::Granted);
    assert!(s.req(chair).chair);
    assert!(!s.req(chair).counts());
    assert_eq!(
        s.req(chair).deadline,
        None,
        "the chair has no speaking limit"
    );
    assert!(s.e.holds_floor("mod"));
    let a = s.raise("d1");
    s.run("mod", Command::Grant(a));
    assert_eq!(s.holders(), vec![chair, a]);
}

#[test]
fn open_policy_grants_when_a_microphone_is_free() {
    let mut s = Sim::new(with(|s| {
        s.policy = Policy::Open;
        s.screen_requests = true;
    }));
    let out = s.run("d1", Command::RaiseHand { list: List::Main });
    let a = out.request.unwrap();
    assert!(matches!(
        out.events.as_slice(),
        [Event::Requested(_), Event::Granted { by: None, .. }]
    ));
    assert_eq!(s.holders(), vec![a]);
    let b = s.raise("d2");
    assert_eq!(s.req(b).state, State::Accepted);
    assert_eq!(s.e.position(b), Some(1));
}

#[test]
fn open_policy_grants_the_next_on_release() {
    let mut s = Sim::new(with(|s| s.policy = Policy::Open));
    let a = s.raise("d1");
    let b = s.raise("d2");
    let c = s.reply("d3");
    let out = s.run("d1", Command::LowerHand);
    assert!(matches!(out.events[0], Event::Released { request, .. } if request == a));
    assert_eq!(granted(&out.events), vec![c], "reply list first");
    let out = s.run("d3", Command::LowerHand);
    assert_eq!(granted(&out.events), vec![b]);
}

#[test]
fn a_participant_gone_loses_the_floor_and_their_hand_but_not_the_rooms_requests() {
    let mut s = Sim::new(with(|s| s.max_speakers = 2));
    let a = s.raise("d1");
    s.run("mod", Command::Grant(a));
    let b = s.raise("d2");
    let room = s
        .run(
            "d1",
            Command::RequestFor {
                name: "Ana".into(),
                delegation: "FR".into(),
                list: List::Main,
            },
        )
        .request
        .unwrap();
    let before = s.e.clone();
    let events = s.e.participant_gone("d1", s.now);
    s.record(before, &events);
    assert_eq!(
        events,
        vec![Event::Revoked {
            request: a,
            by: None,
            reason: RevokeReason::Left
        }]
    );
    assert!(s.e.request(room).is_some(), "the room's request stays");
    let before = s.e.clone();
    let events = s.e.participant_gone("d2", s.now);
    s.record(before, &events);
    assert_eq!(
        events,
        vec![Event::Cancelled {
            request: b,
            by: "d2".into()
        }]
    );
    // Gone twice, or somebody with nothing: no events.
    assert!(s.e.participant_gone("d2", s.now).is_empty());
    assert!(s.e.participant_gone("nobody", s.now).is_empty());
}

#[test]
fn under_the_open_policy_a_gone_holders_microphone_goes_to_the_next() {
    let mut s = Sim::new(with(|s| s.policy = Policy::Open));
    let a = s.raise("d1");
    let b = s.raise("d2");
    let before = s.e.clone();
    let events = s.e.participant_gone("d1", s.now);
    s.record(before, &events);
    assert!(
        matches!(events[0], Event::Revoked { request, reason: RevokeReason::Left, .. } if request == a)
    );
    assert_eq!(granted(&events), vec![b]);
}

#[test]
fn open_policy_serves_the_queue_after_an_agenda_change_but_not_after_chair_priority() {
    let mut s = Sim::new(with(|s| s.policy = Policy::Open));
    let a = s.raise("d1");
    let b = s.raise("d2");
    assert_eq!(s.holders(), vec![a]);
    // Starting the dialogue closes d1's microphone; the open policy gives it to d2.
    let out = s.run("mod", Command::AgendaJump("debate".into()));
    assert_eq!(revoked(&out.events), vec![(a, RevokeReason::AgendaChanged)]);
    assert_eq!(granted(&out.events), vec![b]);
    let c = s.raise("d3");
    // Chair priority silences the floor on purpose: d3 waits.
    let out = s.run("mod", Command::ChairPriority);
    assert_eq!(revoked(&out.events), vec![(b, RevokeReason::ChairPriority)]);
    assert!(granted(&out.events).is_empty());
    assert_eq!(s.list(List::Main), vec![c]);
}

#[test]
fn request_for_gives_room_ids() {
    let mut s = Sim::new(settings());
    let for_ = |name: &str| Command::RequestFor {
        name: name.to_owned(),
        delegation: "FR".to_owned(),
        list: List::Main,
    };
    let a = s.run("asst", for_("Ana")).request.unwrap();
    let b = s.run("asst", for_("Ben")).request.unwrap();
    let ra = s.req(a);
    assert_eq!(ra.beneficiary.participant, "room-1");
    assert!(ra.beneficiary.in_room);
    assert_eq!(ra.requested_by, "asst");
    assert_eq!(s.req(b).beneficiary.participant, "room-2");
    assert_eq!(s.list(List::Main), vec![a, b]);
    // Room ids are never reused, also after replay.
    s.run("asst", Command::Cancel(a));
    let c = s.run("asst", for_("Ana")).request.unwrap();
    assert_eq!(s.req(c).beneficiary.participant, "room-3");
    assert_eq!(s.replayed(), s.e);
}

#[test]
fn request_for_duplicate_name_and_delegation_is_a_noop() {
    let mut s = Sim::new(settings());
    let a = s
        .run(
            "asst",
            Command::RequestFor {
                name: "Ana Lima".into(),
                delegation: "FR".into(),
                list: List::Main,
            },
        )
        .request
        .unwrap();
    let before = s.e.clone();
    let out = s.run(
        "mod",
        Command::RequestFor {
            name: "  ANA lima ".into(),
            delegation: "fr".into(),
            list: List::Reply,
        },
    );
    assert_eq!(out.request, Some(a));
    assert!(out.events.is_empty());
    assert_eq!(s.e, before);
    let other = s.run(
        "asst",
        Command::RequestFor {
            name: "Ana Lima".into(),
            delegation: "DE".into(),
            list: List::Main,
        },
    );
    assert_ne!(other.request, Some(a));
}

#[test]
fn request_for_rejects_empty_or_too_long_names() {
    let mut s = Sim::new(settings());
    let long = "x".repeat(MAX_NAME_LEN + 1);
    for (name, delegation) in [
        ("", "FR"),
        ("   ", "FR"),
        (long.as_str(), "FR"),
        ("Ana", long.as_str()),
    ] {
        let r = s.try_run(
            "asst",
            Command::RequestFor {
                name: name.into(),
                delegation: delegation.into(),
                list: List::Main,
            },
        );
        assert!(matches!(r, Err(FloorError::InvalidValue(_))), "{r:?}");
    }
    let max = "é".repeat(MAX_NAME_LEN);
    s.run(
        "asst",
        Command::RequestFor {
            name: max,
            delegation: String::new(),
            list: List::Main,
        },
    );
}

#[test]
fn delegate_cannot_cancel_another_request() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    assert!(matches!(
        s.try_run("d2", Command::Cancel(a)),
        Err(FloorError::Forbidden(_))
    ));
    assert!(matches!(
        s.try_run("d2", Command::Cancel(99)),
        Err(FloorError::NotFound(_))
    ));
    assert!(matches!(
        s.try_run("d2", Command::LowerHand),
        Err(FloorError::NotFound(_))
    ));
}

#[test]
fn assistant_can_cancel_what_they_queued() {
    let mut s = Sim::new(settings());
    let a = s
        .run(
            "asst",
            Command::RequestFor {
                name: "Ana".into(),
                delegation: "FR".into(),
                list: List::Main,
            },
        )
        .request
        .unwrap();
    let d = s.raise("d1");
    assert!(matches!(
        s.try_run("asst", Command::Cancel(d)),
        Err(FloorError::Forbidden(_))
    ));
    let out = s.run("asst", Command::Cancel(a));
    assert_eq!(
        out.events,
        vec![Event::Cancelled {
            request: a,
            by: "asst".into()
        }]
    );
    // Once granted, the same command releases the floor.
    let b = s
        .run(
            "asst",
            Command::RequestFor {
                name: "Ben".into(),
                delegation: "FR".into(),
                list: List::Main,
            },
        )
        .request
        .unwrap();
    s.run("mod", Command::Grant(b));
    let out = s.run("asst", Command::Cancel(b));
    assert!(matches!(out.events[0], Event::Released { request, .. } if request == b));
}

#[test]
fn chair_can_cancel_any_request() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    let b = s.raise("d2");
    s.run("mod", Command::Grant(b));
    let out = s.run("mod", Command::Cancel(a));
    assert!(matches!(out.events[0], Event::Cancelled { request, .. } if request == a));
    let out = s.run("mod", Command::Cancel(b));
    assert!(matches!(out.events[0], Event::Released { request, .. } if request == b));
    assert_eq!(s.e.requests().count(), 0);
}

#[test]
fn deny_granted_is_invalid_state() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    let b = s.raise("d2");
    s.run("mod", Command::Grant(a));
    assert!(matches!(
        s.try_run("mod", Command::Deny(a)),
        Err(FloorError::InvalidState(_))
    ));
    assert!(matches!(
        s.try_run("mod", Command::Revoke(b)),
        Err(FloorError::InvalidState(_))
    ));
    assert!(matches!(
        s.try_run("mod", Command::Grant(a)),
        Err(FloorError::InvalidState(_))
    ));
    s.run("mod", Command::Deny(b));
    assert!(s.e.request(b).is_none());
}

// ----- speaking limit ----------------------------------------------------------------------

#[test]
fn speaking_deadline_is_grant_plus_limit() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    s.advance(7 * SEC);
    let out = s.run("mod", Command::Grant(a));
    assert_eq!(
        out.events,
        vec![Event::Granted {
            request: a,
            by: Some("mod".into()),
            limit_ms: Some(180 * SEC),
            warning_ms: Some(30 * SEC),
            slot: None,
        }]
    );
    let r = s.req(a);
    assert_eq!(r.granted_at, Some(T0 + 7 * SEC));
    assert_eq!(r.deadline, Some(T0 + 187 * SEC));
    assert_eq!(s.e.next_deadline(), Some(T0 + 157 * SEC));
}

#[test]
fn no_speaking_limit_means_no_deadline() {
    let mut s = Sim::new(with(|s| s.speaking_limit_ms = 0));
    let a = s.raise("d1");
    s.run("mod", Command::Grant(a));
    assert_eq!(s.req(a).deadline, None);
    assert_eq!(s.req(a).limit_ms, None);
    assert_eq!(s.e.next_deadline(), None);
}

#[test]
fn dialogue_intervention_limit_overrides_settings() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(Some("debate".into())));
    let a = s.raise("d1");
    s.run("mod", Command::Grant(a));
    assert_eq!(s.req(a).limit_ms, Some(90 * SEC));
    assert_eq!(s.req(a).deadline, Some(T0 + 90 * SEC));
}

#[test]
fn tick_warns_once_at_deadline_minus_warning() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    s.run("mod", Command::Grant(a));
    s.advance(150 * SEC - 1);
    assert!(s.tick().is_empty());
    s.advance(1);
    assert_eq!(s.tick(), vec![Event::SpeakingWarning { request: a }]);
    assert!(s.tick().is_empty());
    s.advance(SEC);
    assert!(s.tick().is_empty());
    assert_eq!(s.e.next_deadline(), Some(T0 + 180 * SEC));
}

#[test]
fn tick_announces_overrun_once_at_deadline() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    s.run("mod", Command::Grant(a));
    s.advance(150 * SEC);
    s.tick();
    s.advance(30 * SEC - 1);
    assert!(s.tick().is_empty());
    s.advance(1);
    assert_eq!(s.tick(), vec![Event::SpeakingOverrun { request: a }]);
    s.advance(MIN);
    assert!(s.tick().is_empty());
    assert!(
        s.e.holds_floor("d1"),
        "no auto-revoke: the speaker keeps talking"
    );
    assert_eq!(s.e.next_deadline(), None);
}

#[test]
fn late_tick_announces_warning_and_overrun_together() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    s.run("mod", Command::Grant(a));
    s.advance(10 * MIN);
    assert_eq!(
        s.tick(),
        vec![
            Event::SpeakingWarning { request: a },
            Event::SpeakingOverrun { request: a }
        ]
    );
}

#[test]
fn auto_revoke_revokes_at_the_limit() {
    let mut s = Sim::new(with(|s| s.auto_revoke = true));
    let a = s.raise("d1");
    s.run("mod", Command::Grant(a));
    s.advance(150 * SEC);
    assert_eq!(s.tick(), vec![Event::SpeakingWarning { request: a }]);
    s.advance(30 * SEC);
    assert_eq!(
        s.tick(),
        vec![
            Event::SpeakingOverrun { request: a },
            Event::Revoked {
                request: a,
                by: None,
                reason: RevokeReason::LimitReached
            }
        ]
    );
    assert!(s.e.request(a).is_none());
}

#[test]
fn auto_revoke_in_open_policy_grants_the_next() {
    let mut s = Sim::new(with(|s| {
        s.auto_revoke = true;
        s.policy = Policy::Open;
    }));
    let a = s.raise("d1");
    let b = s.raise("d2");
    s.advance(180 * SEC);
    let events = s.tick();
    assert_eq!(revoked(&events), vec![(a, RevokeReason::LimitReached)]);
    assert_eq!(granted(&events), vec![b]);
    assert_eq!(s.req(b).deadline, Some(s.now + 180 * SEC));
}

#[test]
fn auto_revoke_spares_slot_grants() {
    let mut s = Sim::new(with(|s| s.auto_revoke = true));
    s.run("mod", Command::AgendaStart(Some("talk".into())));
    let presenter = s.e.live_request_of("d5").unwrap().id;
    s.advance(20 * MIN);
    let events = s.tick();
    assert!(events.contains(&Event::SpeakingOverrun { request: presenter }));
    assert!(revoked(&events).is_empty());
    assert!(s.e.holds_floor("d5"));
}

// ----- agenda --------------------------------------------------------------------------------

#[test]
fn agenda_start_starts_the_next_planned_item() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(None));
    assert_eq!(s.e.current_item().unwrap().plan.id, "talk");
    assert_eq!(s.item("talk").state, ItemState::Running);
    assert_eq!(s.item("talk").started_at, Some(T0));
    assert_eq!(s.item("talk").deadline, Some(T0 + 20 * MIN));
    s.advance(MIN);
    s.run("mod", Command::AgendaEnd);
    s.run("mod", Command::AgendaStart(None));
    assert_eq!(s.e.current_item().unwrap().plan.id, "debate");
    assert!(matches!(
        s.try_run("mod", Command::AgendaStart(Some("nope".into()))),
        Err(FloorError::InvalidState(_) | FloorError::NotFound(_))
    ));
}

#[test]
fn agenda_start_while_an_item_is_open_is_invalid_state() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(None));
    for c in [
        Command::AgendaStart(None),
        Command::AgendaStart(Some("break".into())),
    ] {
        assert!(matches!(
            s.try_run("mod", c),
            Err(FloorError::InvalidState(_))
        ));
    }
    s.run("mod", Command::AgendaPause);
    assert!(matches!(
        s.try_run("mod", Command::AgendaStart(None)),
        Err(FloorError::InvalidState(_))
    ));
}

#[test]
fn agenda_start_of_an_ended_item_is_invalid_state() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(None));
    s.run("mod", Command::AgendaEnd);
    assert!(matches!(
        s.try_run("mod", Command::AgendaStart(Some("talk".into()))),
        Err(FloorError::InvalidState(_))
    ));
    assert!(matches!(
        s.try_run("mod", Command::AgendaStart(Some("nope".into()))),
        Err(FloorError::NotFound(_))
    ));
}

#[test]
fn presentation_start_grants_the_presenter_a_slot() {
    let mut s = Sim::new(settings());
    let a = s.raise("d1");
    s.run("mod", Command::Grant(a));
    let out = s.run("mod", Command::AgendaStart(Some("talk".into())));
    assert_eq!(revoked(&out.events), vec![(a, RevokeReason::AgendaChanged)]);
    let p = s.e.live_request_of("d5").unwrap().clone();
    assert_eq!(p.state, State::Granted);
    assert_eq!(p.slot.as_deref(), Some("talk"));
    assert_eq!(p.limit_ms, Some(20 * MIN));
    assert_eq!(p.warning_ms, Some(ITEM_WARNING));
    assert_eq!(p.deadline, Some(T0 + 20 * MIN));
    assert!(!p.counts());
    // The presenter does not take a microphone.
    let b = s.raise("d2");
    s.run("mod", Command::Grant(b));
    assert_eq!(s.holders(), vec![p.id, b]);
}

#[test]
fn presenter_already_queued_keeps_their_request() {
    let mut s = Sim::new(settings());
    let mine = s.reply("d5");
    s.run("mod", Command::AgendaStart(Some("talk".into())));
    assert_eq!(s.req(mine).state, State::Granted);
    assert_eq!(s.req(mine).slot.as_deref(), Some("talk"));
    assert!(s.list(List::Reply).is_empty());
}

#[test]
fn pause_and_resume_move_item_and_slot_deadlines() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(Some("talk".into())));
    let p = s.e.live_request_of("d5").unwrap().id;
    let a = s.raise("d1");
    s.run("mod", Command::Grant(a));
    let speaker_deadline = s.req(a).deadline;
    s.advance(5 * MIN);
    s.run("mod", Command::AgendaPause);
    assert_eq!(s.item("talk").state, ItemState::Paused);
    assert_eq!(s.item("talk").deadline, None);
    assert_eq!(s.item("talk").remaining_ms, Some(15 * MIN));
    assert_eq!(s.req(p).deadline, None);
    assert_eq!(s.req(p).paused_remaining, Some(15 * MIN));
    assert_eq!(
        s.req(a).deadline,
        speaker_deadline,
        "floor speakers keep running"
    );
    // Nothing is announced for the paused item, even long past its old deadline.
    s.advance(30 * MIN);
    let events = s.tick();
    assert!(
        events.iter().all(|e| !matches!(
            e,
            Event::ItemWarning { .. } | Event::ItemOverrun { .. }
        ) && !matches!(e, Event::SpeakingWarning { request } | Event::SpeakingOverrun { request } if *request == p)),
        "{events:?}"
    );
    assert!(matches!(
        s.try_run("mod", Command::AgendaPause),
        Err(FloorError::InvalidState(_))
    ));
    s.run("mod", Command::AgendaResume);
    let resumed = s.now;
    assert_eq!(s.item("talk").state, ItemState::Running);
    assert_eq!(s.item("talk").deadline, Some(resumed + 15 * MIN));
    assert_eq!(s.item("talk").remaining_ms, None);
    assert_eq!(s.req(p).deadline, Some(resumed + 15 * MIN));
    assert_eq!(s.req(p).paused_remaining, None);
    assert!(matches!(
        s.try_run("mod", Command::AgendaResume),
        Err(FloorError::InvalidState(_))
    ));
}

#[test]
fn extend_adds_to_item_and_slot() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(Some("talk".into())));
    let p = s.e.live_request_of("d5").unwrap().id;
    s.advance(MIN);
    s.run("mod", Command::AgendaExtend(5));
    assert_eq!(s.item("talk").extended_ms, 5 * MIN);
    assert_eq!(s.item("talk").deadline, Some(T0 + 25 * MIN));
    assert_eq!(s.req(p).limit_ms, Some(25 * MIN));
    assert_eq!(s.req(p).deadline, Some(T0 + 25 * MIN));
    // While paused, the extension goes to the remaining time.
    s.advance(MIN);
    s.run("mod", Command::AgendaPause);
    s.run("mod", Command::AgendaExtend(1));
    assert_eq!(s.item("talk").remaining_ms, Some(24 * MIN));
    assert_eq!(s.req(p).paused_remaining, Some(24 * MIN));
    for bad in [0, MAX_EXTEND_MINUTES + 1] {
        assert!(matches!(
            s.try_run("mod", Command::AgendaExtend(bad)),
            Err(FloorError::InvalidValue(_))
        ));
    }
}

#[test]
fn extend_without_an_open_item_is_invalid_state() {
    let mut s = Sim::new(settings());
    assert!(matches!(
        s.try_run("mod", Command::AgendaExtend(5)),
        Err(FloorError::InvalidState(_))
    ));
}

#[test]
fn end_records_overrun() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(Some("talk".into())));
    let p = s.e.live_request_of("d5").unwrap().id;
    s.advance(23 * MIN);
    let out = s.run("mod", Command::AgendaEnd);
    assert_eq!(revoked(&out.events), vec![(p, RevokeReason::AgendaChanged)]);
    let talk = s.item("talk");
    assert_eq!(talk.state, ItemState::Ended);
    assert_eq!(talk.ended_at, Some(T0 + 23 * MIN));
    assert_eq!(talk.overrun_ms, Some(3 * MIN));
    assert!(s.e.current_item().is_none());
    // Ending early records no overrun.
    s.run("mod", Command::AgendaStart(None));
    s.advance(MIN);
    s.run("mod", Command::AgendaEnd);
    assert_eq!(s.item("debate").overrun_ms, Some(0));
    // Ending while paused in overrun counts the overrun up to the pause.
    s.run("mod", Command::AgendaStart(None));
    s.advance(12 * MIN);
    s.run("mod", Command::AgendaPause);
    s.advance(10 * MIN);
    s.run("mod", Command::AgendaEnd);
    assert_eq!(s.item("break").overrun_ms, Some(2 * MIN));
    assert!(matches!(
        s.try_run("mod", Command::AgendaEnd),
        Err(FloorError::InvalidState(_))
    ));
}

#[test]
fn skip_marks_a_planned_item_and_start_passes_it() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaSkip("talk".into()));
    assert_eq!(s.item("talk").state, ItemState::Skipped);
    s.run("mod", Command::AgendaStart(None));
    assert_eq!(s.e.current_item().unwrap().plan.id, "debate");
    assert!(matches!(
        s.try_run("mod", Command::AgendaSkip("debate".into())),
        Err(FloorError::InvalidState(_))
    ));
    assert!(matches!(
        s.try_run("mod", Command::AgendaSkip("talk".into())),
        Err(FloorError::InvalidState(_))
    ));
    assert!(matches!(
        s.try_run("mod", Command::AgendaSkip("nope".into())),
        Err(FloorError::NotFound(_))
    ));
}

#[test]
fn agenda_move_clamps_and_reorders() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(Some("debate".into())));
    s.run("mod", Command::AgendaMove("break".into(), 1));
    let order: Vec<_> = s.e.items().iter().map(|i| i.plan.id.as_str()).collect();
    assert_eq!(order, ["break", "talk", "debate"]);
    assert_eq!(s.e.current_item().unwrap().plan.id, "debate");
    let out = s.run("mod", Command::AgendaMove("break".into(), 9));
    assert!(matches!(
        out.events.as_slice(),
        [Event::ItemMoved { position: 3, .. }]
    ));
    let order: Vec<_> = s.e.items().iter().map(|i| i.plan.id.as_str()).collect();
    assert_eq!(order, ["talk", "debate", "break"]);
    assert_eq!(s.e.current_item().unwrap().plan.id, "debate");
    assert!(
        s.run("mod", Command::AgendaMove("talk".into(), 1))
            .events
            .is_empty()
    );
    assert!(matches!(
        s.try_run("mod", Command::AgendaMove("talk".into(), 0)),
        Err(FloorError::InvalidValue(_))
    ));
}

#[test]
fn jump_ends_the_current_item_and_starts_the_target() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(Some("talk".into())));
    let p = s.e.live_request_of("d5").unwrap().id;
    s.advance(4 * MIN);
    let out = s.run("mod", Command::AgendaJump("break".into()));
    assert_eq!(revoked(&out.events), vec![(p, RevokeReason::AgendaChanged)]);
    let ended = out
        .events
        .iter()
        .position(|e| matches!(e, Event::ItemEnded { item, .. } if item == "talk"))
        .unwrap();
    let started = out
        .events
        .iter()
        .position(|e| matches!(e, Event::ItemStarted { item, .. } if item == "break"))
        .unwrap();
    assert!(ended < started);
    assert_eq!(s.item("talk").state, ItemState::Ended);
    assert_eq!(s.item("talk").ended_at, Some(T0 + 4 * MIN));
    assert_eq!(s.e.current_item().unwrap().plan.id, "break");
    assert!(matches!(
        s.try_run("mod", Command::AgendaJump("break".into())),
        Err(FloorError::InvalidState(_))
    ));
    assert!(matches!(
        s.try_run("mod", Command::AgendaJump("talk".into())),
        Err(FloorError::InvalidState(_))
    ));
    // Jumping with nothing open just starts the target.
    s.run("mod", Command::AgendaEnd);
    s.run("mod", Command::AgendaJump("debate".into()));
    assert_eq!(s.e.current_item().unwrap().plan.id, "debate");
}

#[test]
fn projected_end_before_the_start() {
    let start = T0 + 60 * MIN;
    let s = Sim::with(settings(), plan(), Some(start));
    assert_eq!(s.e.planned_end(), Some(start + 60 * MIN));
    assert_eq!(s.e.projected_end(T0), start + 60 * MIN);
    // Late: the plan is pushed by the delay.
    assert_eq!(s.e.projected_end(start + 5 * MIN), start + 65 * MIN);
    let unscheduled = Sim::new(settings());
    assert_eq!(unscheduled.e.planned_end(), None);
    assert_eq!(unscheduled.e.projected_end(T0), T0 + 60 * MIN);
}

#[test]
fn projected_end_during_an_item() {
    let start = T0 + 60 * MIN;
    let mut s = Sim::with(settings(), plan(), Some(start));
    s.advance(65 * MIN);
    s.run("mod", Command::AgendaStart(None));
    s.advance(5 * MIN);
    // talk ends at start+25, then 30 + 10 minutes.
    assert_eq!(s.e.projected_end(s.now), start + 65 * MIN);
    assert_eq!(s.e.planned_end(), Some(start + 60 * MIN));
    s.run("mod", Command::AgendaExtend(2));
    assert_eq!(s.e.projected_end(s.now), start + 67 * MIN);
    s.run("mod", Command::AgendaSkip("break".into()));
    assert_eq!(s.e.projected_end(s.now), start + 57 * MIN);
}

#[test]
fn projected_end_while_paused() {
    let start = T0 + 60 * MIN;
    let mut s = Sim::with(settings(), plan(), Some(start));
    s.advance(60 * MIN);
    s.run("mod", Command::AgendaStart(None));
    s.advance(5 * MIN);
    s.run("mod", Command::AgendaPause);
    // 15 minutes left of talk, then 40 minutes: the end drifts while paused.
    assert_eq!(s.e.projected_end(s.now), start + 60 * MIN);
    assert_eq!(s.e.projected_end(s.now + 7 * MIN), start + 67 * MIN);
}

#[test]
fn projected_end_in_overrun() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(None));
    assert_eq!(s.e.planned_end(), Some(T0 + 60 * MIN));
    s.advance(26 * MIN);
    // talk is 6 minutes over: the rest starts now.
    assert_eq!(s.e.projected_end(s.now), T0 + 66 * MIN);
    s.run("mod", Command::AgendaPause);
    s.advance(MIN);
    assert_eq!(s.e.projected_end(s.now), T0 + 67 * MIN);
    s.run("mod", Command::AgendaEnd);
    assert_eq!(s.e.projected_end(s.now), T0 + 67 * MIN);
}

#[test]
fn item_warning_and_overrun_tick_once_each() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(Some("break".into())));
    assert_eq!(s.e.next_deadline(), Some(T0 + 9 * MIN));
    s.advance(9 * MIN - 1);
    assert!(s.tick().is_empty());
    s.advance(1);
    assert_eq!(
        s.tick(),
        vec![Event::ItemWarning {
            item: "break".into()
        }]
    );
    assert!(s.tick().is_empty());
    s.advance(MIN);
    assert_eq!(
        s.tick(),
        vec![Event::ItemOverrun {
            item: "break".into()
        }]
    );
    s.advance(MIN);
    assert!(s.tick().is_empty());
    assert_eq!(s.e.next_deadline(), None);
}

#[test]
fn timer_message_is_set_and_cleared() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::TimerMessage("Please conclude".into()));
    assert_eq!(s.e.timer_message(), Some("Please conclude"));
    s.run("mod", Command::TimerMessage(String::new()));
    assert_eq!(s.e.timer_message(), None);
    assert!(matches!(
        s.try_run(
            "mod",
            Command::TimerMessage("x".repeat(MAX_TIMER_MESSAGE + 1))
        ),
        Err(FloorError::InvalidValue(_))
    ));
}

// ----- settings ------------------------------------------------------------------------------

#[test]
fn set_floor_lowering_max_speakers_cuts_the_extra() {
    let mut s = Sim::new(with(|s| s.max_speakers = 3));
    let [a, b, c] = ["d1", "d2", "d3"].map(|w| s.raise(w));
    for id in [a, b, c] {
        s.run("mod", Command::Grant(id));
        s.advance(SEC);
    }
    let chair = s.raise("mod");
    let out = s.run(
        "mod",
        Command::SetFloor(SettingsChange {
            max_speakers: Some(1),
            ..Default::default()
        }),
    );
    assert!(matches!(out.events[0], Event::SettingsChanged { .. }));
    assert_eq!(
        revoked(&out.events),
        vec![(a, RevokeReason::Override), (b, RevokeReason::Override)]
    );
    assert_eq!(s.holders(), vec![c, chair]);
    assert_eq!(s.e.settings().max_speakers, 1);
}

#[test]
fn set_floor_applies_a_valid_change() {
    let mut s = Sim::new(settings());
    s.run(
        "mod",
        Command::SetFloor(SettingsChange {
            policy: Some(Policy::Open),
            speaking_limit_secs: Some(0),
            warning_secs: Some(600),
            auto_revoke: Some(true),
            ..Default::default()
        }),
    );
    let st = s.e.settings();
    assert_eq!(st.policy, Policy::Open);
    assert_eq!(st.speaking_limit_ms, 0);
    assert_eq!(st.warning_ms, 600 * SEC);
    assert!(st.auto_revoke);
    assert_eq!(st.max_speakers, 1);
}

#[test]
fn invalid_settings_are_rejected() {
    let mut s = Sim::new(settings());
    let bad = [
        SettingsChange {
            max_speakers: Some(0),
            ..Default::default()
        },
        SettingsChange {
            max_speakers: Some(11),
            ..Default::default()
        },
        SettingsChange {
            speaking_limit_secs: Some(3601),
            ..Default::default()
        },
        SettingsChange {
            speaking_limit_secs: Some(60),
            warning_secs: Some(60),
            ..Default::default()
        },
        // The default limit is 180 s.
        SettingsChange {
            warning_secs: Some(200),
            ..Default::default()
        },
    ];
    for change in bad {
        let before = s.e.clone();
        let r = s.try_run("mod", Command::SetFloor(change.clone()));
        assert!(matches!(r, Err(FloorError::InvalidValue(_))), "{change:?}");
        assert_eq!(s.e, before);
    }
}

// ----- regressions ---------------------------------------------------------------------------

/// Remarks by the chair: the chair's own microphone becomes the slot grant, once.
fn chair_remarks_plan() -> Vec<ItemPlan> {
    vec![
        item_plan(
            "opening",
            ItemKind::Remarks,
            5 * MIN,
            &[Some("mod"), None],
            None,
        ),
        item_plan("closing", ItemKind::Remarks, 5 * MIN, &[Some("mod")], None),
    ]
}

#[test]
fn chair_holding_the_floor_presents_without_a_second_grant() {
    let mut s = Sim::with(settings(), chair_remarks_plan(), None);
    let chair = s.raise("mod");
    s.advance(SEC);
    s.run("mod", Command::AgendaStart(Some("opening".into())));
    let holders = s.holders();
    assert_eq!(holders.len(), 2, "{holders:?}");
    assert!(holders.contains(&chair));
    assert_eq!(s.req(chair).slot.as_deref(), Some("opening"));
    assert_eq!(s.req(chair).deadline, Some(s.now + 5 * MIN));
    assert_eq!(s.replayed(), s.e);
}

#[test]
fn chair_slot_grant_ends_with_its_item() {
    let mut s = Sim::with(settings(), chair_remarks_plan(), None);
    let chair = s.raise("mod");
    s.run("mod", Command::AgendaStart(Some("opening".into())));
    assert_eq!(s.req(chair).slot.as_deref(), Some("opening"));
    s.advance(5 * MIN);
    s.run("mod", Command::AgendaEnd);
    assert!(
        s.e.holders().all(|r| r.slot.is_none()),
        "a slot outlived its item: {:?}",
        ids(s.e.holders())
    );
    s.run("mod", Command::AgendaStart(Some("closing".into())));
    let holders = s.holders();
    let unique: HashSet<_> = holders.iter().collect();
    assert_eq!(unique.len(), holders.len(), "{holders:?}");
    assert_eq!(s.replayed(), s.e);
}

#[test]
fn extension_does_not_swallow_a_due_warning() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(Some("break".into())));
    // Ten and a half minutes in, before any tick: the item has overrun, unannounced.
    s.advance(10 * MIN + 30 * SEC);
    s.run("mod", Command::AgendaExtend(1));
    // Deadline now at 11 min: the warning (at 10 min) is due and must still be announced.
    assert_eq!(
        s.tick(),
        vec![Event::ItemWarning {
            item: "break".into()
        }]
    );
}

#[test]
fn extension_rearms_the_announcements_it_moves_out() {
    let mut s = Sim::new(settings());
    s.run("mod", Command::AgendaStart(Some("talk".into())));
    let p = s.e.live_request_of("d5").unwrap().id;
    s.advance(20 * MIN);
    let events = s.tick();
    assert!(events.contains(&Event::ItemOverrun {
        item: "talk".into()
    }));
    assert!(events.contains(&Event::SpeakingOverrun { request: p }));
    s.run("mod", Command::AgendaExtend(5));
    assert!(s.tick().is_empty());
    assert_eq!(s.e.next_deadline(), Some(T0 + 24 * MIN));
    s.advance(5 * MIN);
    let events = s.tick();
    assert_eq!(events.len(), 4, "{events:?}");
    // Extending by less than the overrun keeps what was announced announced.
    s.advance(3 * MIN);
    s.run("mod", Command::AgendaExtend(1));
    assert!(s.tick().is_empty());
}

// ----- replay --------------------------------------------------------------------------------

#[test]
fn replaying_the_events_rebuilds_the_engine() {
    let mut s = Sim::with(
        with(|s| {
            s.max_speakers = 2;
            s.screen_requests = true;
            s.auto_revoke = true;
        }),
        plan(),
        Some(T0 + MIN),
    );
    let a = s.raise("d1");
    let b = s.reply("d2");
    let c = s
        .run(
            "asst",
            Command::RequestFor {
                name: "Ana".into(),
                delegation: "FR".into(),
                list: List::Main,
            },
        )
        .request
        .unwrap();
    s.advance(SEC);
    s.run("mod", Command::Accept(a));
    s.run("mod", Command::Accept(c));
    s.run("mod", Command::Move(c, 1));
    s.run("mod", Command::Grant(b));
    s.advance(10 * SEC);
    s.run("mod", Command::Next(None));
    s.raise("mod");
    s.run("mod", Command::TimerMessage("Wrap up".into()));
    s.advance(3 * MIN);
    s.tick();
    s.run("mod", Command::AgendaStart(None));
    s.advance(2 * MIN);
    s.run("mod", Command::AgendaPause);
    s.advance(MIN);
    s.run("mod", Command::AgendaExtend(3));
    s.run("mod", Command::AgendaResume);
    s.advance(20 * MIN);
    s.tick();
    s.run("mod", Command::AgendaMove("break".into(), 2));
    s.run("mod", Command::AgendaJump("debate".into()));
    let d = s.raise("d3");
    s.raise("d4");
    s.run("mod", Command::Accept(d));
    s.run("mod", Command::Grant(d));
    s.run(
        "mod",
        Command::SetFloor(SettingsChange {
            policy: Some(Policy::Open),
            when_full: Some(WhenFull::Override),
            ..Default::default()
        }),
    );
    s.raise("d1");
    s.raise("d2");
    s.advance(2 * MIN);
    s.tick();
    s.run("mod", Command::ChairPriority);
    s.run("mod", Command::LowerAllHands);
    s.run("mod", Command::AgendaSkip("break".into()));
    s.advance(MIN);
    s.run("mod", Command::AgendaEnd);
    s.tick();
    assert!(s.log.len() > 30, "the scenario should cover many events");
    let replayed = s.replayed();
    assert_eq!(replayed, s.e);
    replayed.check_invariants().unwrap();
}

// ----- property test -------------------------------------------------------------------------

const ACTORS: [&str; 7] = ["mod", "d1", "d2", "d3", "d4", "d5", "asst"];
const ITEM_IDS: [&str; 5] = ["opening", "talk", "debate", "break", "nope"];

fn prop_plan() -> Vec<ItemPlan> {
    vec![
        item_plan(
            "opening",
            ItemKind::Remarks,
            5 * MIN,
            &[Some("mod"), None],
            None,
        ),
        item_plan(
            "talk",
            ItemKind::Presentation,
            20 * MIN,
            &[Some("d5")],
            None,
        ),
        item_plan("debate", ItemKind::Dialogue, 30 * MIN, &[], Some(90 * SEC)),
        item_plan("break", ItemKind::Break, 10 * MIN, &[], None),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Command(usize, Command),
    Tick,
    /// The actor's connection is gone for good (left, or the grace period ran out).
    Gone(usize),
}

fn list_strategy() -> impl Strategy<Value = List> {
    prop_oneof![Just(List::Main), Just(List::Reply)]
}

fn item_strategy() -> impl Strategy<Value = String> {
    prop::sample::select(ITEM_IDS.to_vec()).prop_map(str::to_owned)
}

fn settings_change_strategy() -> impl Strategy<Value = SettingsChange> {
    (
        prop::option::of(prop_oneof![Just(Policy::Moderated), Just(Policy::Open)]),
        prop::option::of(0u32..=4),
        prop::option::of(prop_oneof![Just(WhenFull::Wait), Just(WhenFull::Override)]),
        prop::option::of(prop::sample::select(vec![0u32, 20, 60, 180, 3601])),
        prop::option::of(prop::sample::select(vec![0u32, 10, 30, 90])),
        prop::option::of(any::<bool>()),
        prop::option::of(any::<bool>()),
    )
        .prop_map(
            |(policy, max_speakers, when_full, limit, warning, auto_revoke, screen)| {
                SettingsChange {
                    policy,
                    max_speakers,
                    when_full,
                    speaking_limit_secs: limit,
                    warning_secs: warning,
                    auto_revoke,
                    screen_requests: screen,
                }
            },
        )
}

fn command_strategy() -> impl Strategy<Value = Command> {
    let id = || 1u64..=12;
    prop_oneof![
        6 => list_strategy().prop_map(|list| Command::RaiseHand { list }),
        3 => Just(Command::LowerHand),
        3 => (
            prop::sample::select(vec!["Ana", "ana ", "Ben", "", "Carla"]),
            prop::sample::select(vec!["FR", "fr", "DE"]),
            list_strategy()
        )
            .prop_map(|(n, d, list)| Command::RequestFor {
                name: n.to_owned(),
                delegation: d.to_owned(),
                list,
            }),
        2 => id().prop_map(Command::Cancel),
        2 => id().prop_map(Command::Accept),
        3 => id().prop_map(Command::Grant),
        1 => id().prop_map(Command::Deny),
        2 => id().prop_map(Command::Revoke),
        3 => prop::option::of(list_strategy()).prop_map(Command::Next),
        1 => (id(), 0u32..=6).prop_map(|(i, p)| Command::Move(i, p)),
        1 => Just(Command::LowerAllHands),
        1 => Just(Command::ChairPriority),
        2 => settings_change_strategy().prop_map(Command::SetFloor),
        2 => prop::option::of(item_strategy()).prop_map(Command::AgendaStart),
        1 => Just(Command::AgendaPause),
        1 => Just(Command::AgendaResume),
        1 => (0u32..=130).prop_map(Command::AgendaExtend),
        1 => Just(Command::AgendaEnd),
        1 => item_strategy().prop_map(Command::AgendaSkip),
        1 => (item_strategy(), 0u32..=6).prop_map(|(i, p)| Command::AgendaMove(i, p)),
        1 => item_strategy().prop_map(Command::AgendaJump),
        1 => prop::sample::select(vec![0usize, 5, MAX_TIMER_MESSAGE + 1])
            .prop_map(|n| Command::TimerMessage("m".repeat(n))),
    ]
}

fn step_strategy() -> impl Strategy<Value = (Step, i64)> {
    (
        prop_oneof![
            5 => (0..ACTORS.len(), command_strategy()).prop_map(|(a, c)| Step::Command(a, c)),
            1 => Just(Step::Tick),
            1 => (0..ACTORS.len()).prop_map(Step::Gone),
        ],
        0i64..=200_000,
    )
}

fn initial_settings_strategy() -> impl Strategy<Value = Settings> {
    (
        prop_oneof![Just(Policy::Moderated), Just(Policy::Open)],
        1u32..=3,
        prop_oneof![Just(WhenFull::Wait), Just(WhenFull::Override)],
        prop::sample::select(vec![0i64, 60 * SEC, 180 * SEC]),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(policy, max_speakers, when_full, speaking_limit_ms, auto_revoke, screen)| Settings {
                policy,
                max_speakers,
                when_full,
                speaking_limit_ms,
                warning_ms: 30 * SEC,
                auto_revoke,
                screen_requests: screen,
            },
        )
}

/// Announcement flags (warned, overran) only turn on with their announcement: no warning or
/// overrun is ever marked as announced without having been announced.
fn check_announcements(
    before: &Engine,
    after: &Engine,
    events: &[Event],
) -> Result<(), TestCaseError> {
    let speaking = |id: RequestId| {
        events.iter().any(|e| {
            matches!(e, Event::SpeakingWarning { request } | Event::SpeakingOverrun { request } if *request == id)
        })
    };
    let overrun = |id: RequestId| {
        events
            .iter()
            .any(|e| matches!(e, Event::SpeakingOverrun { request } if *request == id))
    };
    for r in after.requests() {
        let (warned, overran) = before
            .request(r.id)
            .map_or((false, false), |b| (b.warned, b.overran));
        if r.warned && !warned {
            prop_assert!(speaking(r.id), "request {} marked warned silently", r.id);
        }
        if r.overran && !overran {
            prop_assert!(overrun(r.id), "request {} marked overrun silently", r.id);
        }
    }
    for i in after.items() {
        let b = before
            .items()
            .iter()
            .find(|b| b.plan.id == i.plan.id)
            .unwrap();
        let id = &i.plan.id;
        if i.warned && !b.warned {
            prop_assert!(
                events.iter().any(|e| matches!(e, Event::ItemWarning { item } | Event::ItemOverrun { item } if item == id)),
                "item {} marked warned silently", id
            );
        }
        if i.overran && !b.overran {
            prop_assert!(
                events
                    .iter()
                    .any(|e| matches!(e, Event::ItemOverrun { item } if item == id)),
                "item {} marked overrun silently",
                id
            );
        }
    }
    Ok(())
}

/// After a tick at `now`, nothing that was already running is still due.
fn check_nothing_due(e: &Engine, now: Millis) -> Result<(), TestCaseError> {
    for r in e
        .holders()
        .filter(|r| r.granted_at.is_some_and(|g| g < now))
    {
        if let Some(d) = r.deadline {
            prop_assert!(now < d || r.overran, "overrun of {} not announced", r.id);
            if let Some(w) = r.warning_ms {
                prop_assert!(now < d - w || r.warned, "warning of {} not announced", r.id);
            }
        }
    }
    if let Some(i) = e.current_item() {
        if let (ItemState::Running, Some(d)) = (i.state, i.deadline) {
            prop_assert!(
                now < d || i.overran,
                "overrun of item {} not announced",
                i.plan.id
            );
            prop_assert!(
                now < d - ITEM_WARNING || i.warned,
                "warning of item {} not announced",
                i.plan.id
            );
        }
    }
    Ok(())
}

/// Everything the property test checks after each step, beyond `check_invariants`.
fn check_state(e: &Engine) -> Result<(), TestCaseError> {
    e.check_invariants().map_err(TestCaseError::fail)?;
    // Positions are contiguous 1..n per list and only queued requests have one.
    for list in [List::Main, List::Reply] {
        let queued: Vec<_> = e.list(list).collect();
        for (n, r) in queued.iter().enumerate() {
            prop_assert_eq!(r.state, State::Accepted);
            prop_assert_eq!(r.list, list);
            prop_assert_eq!(e.position(r.id), Some(n as u32 + 1));
        }
    }
    let mut participants = HashSet::new();
    for r in e.requests() {
        prop_assert!(!is_final(r.state), "final request {} is live", r.id);
        prop_assert!(
            participants.insert(r.beneficiary.participant.clone()),
            "two live requests for {}",
            r.beneficiary.participant
        );
        if r.state != State::Accepted {
            prop_assert_eq!(e.position(r.id), None);
        }
        if let Some(g) = r.granted_at {
            prop_assert!(g >= r.requested_at, "request {} granted before asked", r.id);
        }
        prop_assert_eq!(r.state == State::Granted, r.granted_at.is_some());
    }
    let holders = ids(e.holders());
    let unique: HashSet<_> = holders.iter().collect();
    prop_assert_eq!(unique.len(), holders.len(), "holders twice: {:?}", holders);
    let counting = e.holders().filter(|r| r.counts()).count();
    prop_assert!(counting <= e.settings().max_speakers as usize);
    // A slot grant belongs to the open item.
    let current = e.current_item().map(|i| i.plan.id.clone());
    for r in e.holders() {
        if let Some(slot) = &r.slot {
            prop_assert_eq!(Some(slot), current.as_ref(), "stale slot on {}", r.id);
        }
    }
    for i in e.items() {
        if let (Some(s), Some(end)) = (i.started_at, i.ended_at) {
            prop_assert!(end >= s, "item {} ends before it starts", i.plan.id);
        }
        prop_assert!(i.overrun_ms.is_none_or(|o| o >= 0));
        prop_assert_eq!(i.state == ItemState::Ended, i.ended_at.is_some());
        prop_assert_eq!(i.state == ItemState::Ended, i.overrun_ms.is_some());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_sequences_keep_the_invariants(
        settings in initial_settings_strategy(),
        scheduled in any::<bool>(),
        steps in prop::collection::vec(step_strategy(), 0..=60),
    ) {
        let planned_start = scheduled.then_some(T0 + 10 * MIN);
        let fresh = Engine::new(settings, prop_plan(), planned_start, ITEM_WARNING);
        let mut e = fresh.clone();
        let mut log: Vec<(Event, Millis)> = Vec::new();
        let mut now = T0;
        let mut ever_live: HashSet<RequestId> = HashSet::new();
        let mut finalised: HashSet<RequestId> = HashSet::new();
        check_state(&e)?;
        for (step, dt) in steps {
            now += dt;
            let before = e.clone();
            let events = match &step {
                Step::Tick => {
                    let quiet = e.next_deadline().is_none_or(|d| d > now);
                    let events = e.tick(now);
                    prop_assert!(!quiet || events.is_empty(), "tick before next_deadline: {:?}", events);
                    events
                }
                Step::Gone(a) => e.participant_gone(ACTORS[*a], now),
                Step::Command(a, command) => {
                    let who = actor(ACTORS[*a]);
                    match e.handle(&who, command.clone(), now) {
                        Ok(out) => {
                            if let Some(id) = out.request {
                                prop_assert!(e.request(id).is_some(), "{:?} returned dead {}", command, id);
                            }
                            out.events
                        }
                        Err(err) => {
                            prop_assert_eq!(&e, &before, "{:?} failed with {} but changed the engine", command, err);
                            if matches!(err, FloorError::MaxSpeakers(_)) {
                                prop_assert_eq!(e.settings().when_full, WhenFull::Wait);
                            }
                            Vec::new()
                        }
                    }
                }
            };
            check_announcements(&before, &e, &events)?;
            if matches!(step, Step::Tick) {
                check_nothing_due(&e, now)?;
            }
            let mut replay = before;
            for ev in &events {
                replay.apply(ev, now);
                log.push((ev.clone(), now));
            }
            prop_assert_eq!(&replay, &e, "events {:?} do not replay", events);
            check_state(&e)?;
            // Final states are final: a request id, once gone, never comes back.
            let live: HashSet<RequestId> = e.requests().map(|r| r.id).collect();
            for ev in &events {
                if let Event::Denied { request, .. }
                | Event::Cancelled { request, .. }
                | Event::Released { request, .. }
                | Event::Revoked { request, .. } = ev
                {
                    prop_assert!(!live.contains(request), "{} final but live", request);
                }
            }
            finalised.extend(ever_live.difference(&live).copied());
            prop_assert!(
                live.is_disjoint(&finalised),
                "finalised request live again: {:?}",
                live.intersection(&finalised).collect::<Vec<_>>()
            );
            ever_live.extend(live);
        }
        let mut replay = fresh;
        for (ev, at) in &log {
            replay.apply(ev, *at);
        }
        prop_assert_eq!(replay, e);
    }
}
