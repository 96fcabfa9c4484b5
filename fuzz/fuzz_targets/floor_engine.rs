//! The floor engine fed arbitrary command sequences from arbitrary actors at arbitrary times
//! (plus ticks and departures): it never panics, its invariants hold after every step, a
//! refused command changes nothing, and the events replay to the same engine.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// roundtable's floor engine, the very files (std only).
#[allow(dead_code, unused_imports)]
#[path = "../../src/floor/mod.rs"]
mod floor;

use floor::{
    Actor, Command, Engine, ItemKind, ItemPlan, List, Policy, RequestId, Settings, SettingsChange,
    WhenFull,
};

const ACTORS: [&str; 5] = ["chair", "d1", "d2", "d3", "assistant"];
const ITEMS: [&str; 4] = ["opening", "dialogue", "no-such-item", ""];

/// An agenda like the default event's: remarks, a presentation, the dialogue, a break.
fn plan() -> Vec<ItemPlan> {
    let item = |id: &str, kind, minutes: i64, intervention: Option<i64>| ItemPlan {
        id: id.to_owned(),
        kind,
        title: id.to_owned(),
        presenters: Vec::new(),
        planned_ms: minutes * 60_000,
        intervention_ms: intervention,
    };
    vec![
        item("opening", ItemKind::Remarks, 10, None),
        item("talk", ItemKind::Presentation, 15, None),
        item("dialogue", ItemKind::Dialogue, 45, Some(180_000)),
        item("break", ItemKind::Break, 15, None),
    ]
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u8()?) | (u32::from(self.u8()?) << 8))
    }
    fn list(&mut self) -> Option<List> {
        Some(if self.u8()? % 2 == 0 { List::Main } else { List::Reply })
    }
    fn request(&mut self) -> Option<RequestId> {
        Some(u64::from(self.u8()? % 16))
    }
    fn item(&mut self) -> Option<String> {
        Some(ITEMS[usize::from(self.u8()?) % ITEMS.len()].to_owned())
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        Some(if self.u8()? % 2 == 0 { None } else { Some(f(self)?) })
    }
    fn text(&mut self) -> Option<String> {
        let n = usize::from(self.u8()?);
        let mut s = String::new();
        for _ in 0..n.min(self.0.len()) {
            s.push(char::from(b'a' + self.u8()? % 26));
        }
        // Sometimes over the limits the engine enforces.
        if n > 200 {
            s.push_str(&"x".repeat(n * 4));
        }
        Some(s)
    }
    fn command(&mut self) -> Option<Command> {
        Some(match self.u8()? % 27 {
            0 => Command::RaiseHand { list: self.list()? },
            1 => Command::LowerHand,
            2 => Command::RequestFor {
                name: self.text()?,
                delegation: self.text()?,
                list: self.list()?,
            },
            3 => Command::Cancel(self.request()?),
            4 => Command::Accept(self.request()?),
            5 => Command::Grant(self.request()?),
            6 => Command::Deny(self.request()?),
            7 => Command::Revoke(self.request()?),
            8 => Command::Next(self.opt(|b| b.list())?),
            9 => Command::Move(self.request()?, u32::from(self.u8()? % 8)),
            10 => Command::LowerAllHands,
            11 => Command::ChairPriority,
            12 => Command::SetFloor(SettingsChange {
                policy: self.opt(|b| {
                    Some(if b.u8()? % 2 == 0 { Policy::Moderated } else { Policy::Open })
                })?,
                max_speakers: self.opt(|b| Some(u32::from(b.u8()? % 12)))?,
                when_full: self.opt(|b| {
                    Some(if b.u8()? % 2 == 0 { WhenFull::Wait } else { WhenFull::Override })
                })?,
                speaking_limit_secs: self.opt(|b| b.u32())?,
                warning_secs: self.opt(|b| b.u32())?,
                auto_revoke: self.opt(|b| Some(b.u8()? % 2 == 0))?,
                screen_requests: self.opt(|b| Some(b.u8()? % 2 == 0))?,
            }),
            13 => Command::AgendaStart(self.opt(|b| b.item())?),
            14 => Command::AgendaPause,
            15 => Command::AgendaResume,
            16 => Command::AgendaExtend(u32::from(self.u8()?)),
            17 => Command::AgendaEnd,
            18 => Command::AgendaSkip(self.item()?),
            19 => Command::AgendaMove(self.item()?, u32::from(self.u8()? % 10)),
            20 => Command::AgendaJump(self.item()?),
            21 => Command::TimerMessage(self.text()?),
            _ => Command::RaiseHand { list: List::Main },
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let settings = Settings {
        speaking_limit_ms: 180_000,
        warning_ms: 30_000,
        ..Settings::default()
    };
    let fresh = Engine::new(settings, plan(), Some(1_792_990_600_000), 60_000);
    let mut engine = fresh.clone();
    let mut log = Vec::new();
    let mut now: i64 = 1_792_990_000_000;
    let mut b = Bytes(data);
    while let Some(op) = b.u8() {
        now += i64::from(b.u8().unwrap_or(0)) * 1_000 * i64::from(op % 4);
        let before = engine.clone();
        let events = match op % 8 {
            0 => engine.tick(now),
            1 => {
                let who = ACTORS[usize::from(b.u8().unwrap_or(0)) % ACTORS.len()];
                engine.participant_gone(who, now)
            }
            _ => {
                let who = ACTORS[usize::from(b.u8().unwrap_or(0)) % ACTORS.len()];
                let Some(command) = b.command() else { break };
                let actor = Actor {
                    id: who.to_owned(),
                    name: format!("Name {who}"),
                    delegation: "X".to_owned(),
                    chair: who == "chair",
                };
                match engine.handle(&actor, command, now) {
                    Ok(out) => out.events,
                    Err(_) => {
                        assert!(engine == before, "a refused command changed the engine");
                        Vec::new()
                    }
                }
            }
        };
        if let Err(broken) = engine.check_invariants() {
            panic!("invariant broken: {broken}");
        }
        let mut replay = before;
        for e in &events {
            replay.apply(e, now);
            log.push((e.clone(), now));
        }
        assert!(replay == engine, "the events do not replay");
    }
    let mut replay = fresh;
    for (e, at) in &log {
        replay.apply(e, *at);
    }
    assert!(replay == engine, "the whole log does not replay");
});
