//! # Meetings: one task per meeting owns its state
//!
//! A [`MeetingHandle`] is the only way in: connections send it messages ([`Msg`]) and get
//! their replies and the event stream on their own bounded channel, so acks and events reach
//! each client in one total order. The task owns the floor [`Engine`], the participant list
//! and the sequence counter; no lock is shared.
//!
//! For every change the task: clones the engine (for rollback), lets the engine decide,
//! appends the resulting events to the journal and waits for the sync, and only then sends
//! them out with their sequence numbers. If the journal fails, the engine is restored and the
//! client gets `journal_unavailable`: nothing is announced that is not on disk.
//!
//! On start the task replays the meeting's journal, so a restart loses nothing.

mod media;
mod roles;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::ws::Utf8Bytes;
use roundtable_signaling::{
    self as sig, ClientMessage, Command, ErrorCode, ParticipantInfo, Presence, Role, ServerMessage,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::clock::{Clock, Millis};
use crate::config::{self, MeetingConfig};
use crate::floor::{self, Engine};
use crate::store::{Journal, JournalRecord, StoreError};

pub use media::MediaHub;
pub use roles::allowed;

/// How many outbound messages may wait for a slow client before it is disconnected.
pub const CONNECTION_QUEUE: usize = 1024;

/// The most events a resuming client is sent to catch up; further behind, it gets a full
/// `welcome` (a snapshot is then smaller than the events, and they must fit its queue).
pub const RESUME_MAX_EVENTS: u64 = 512;

/// Websocket close code: normal closure, the participant left (RFC 6455).
pub const CLOSE_NORMAL: u16 = 1000;
/// Websocket close code: the server is going away (RFC 6455).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Websocket close code: a policy violation, such as a sustained flood (RFC 6455).
pub const CLOSE_POLICY: u16 = 1008;
/// Websocket close code: the server could not serve the connection (RFC 6455).
pub const CLOSE_INTERNAL: u16 = 1011;
/// Websocket close code (application range): the same participant joined on another
/// connection.
pub const CLOSE_REPLACED: u16 = 4000;
/// Websocket close code: the chair removed the participant.
pub const CLOSE_REMOVED: u16 = 4003;
/// Websocket close code: the chair asked the client to reconnect.
pub const CLOSE_RECONNECT: u16 = 4004;

/// A connection's id, unique within the server.
pub type ConnId = u64;

/// What a connection receives from its meeting.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A JSON text frame, serialised once and shared by every receiver.
    Text(Utf8Bytes),
    /// Send this last frame (a `goodbye` or an error), then close with this websocket code.
    Close(Utf8Bytes, u16),
}

/// Messages to a meeting task.
#[derive(Debug)]
pub enum Msg {
    /// A connection said `hello`: register it and answer with `welcome`.
    Join {
        /// Connection id.
        conn: ConnId,
        /// Who (from the verified token).
        who: Who,
        /// The connection's outbound channel.
        out: mpsc::Sender<Outbound>,
        /// `hello`'s `resume_seq`: the last event the client applied before.
        resume: Option<u64>,
    },
    /// A command from a joined connection.
    Command {
        /// Connection id.
        conn: ConnId,
        /// The command.
        msg: ClientMessage,
    },
    /// A connection ended.
    Leave {
        /// Connection id.
        conn: ConnId,
        /// `left` or `connection_lost`.
        presence: Presence,
    },
    /// An engine event about one of this meeting's media connections.
    Media(crate::media::engine::MediaEvent),
    /// Audio packets of a participant dropped by the floor gate.
    GateDropped {
        /// Participant id.
        participant: String,
        /// Answer.
        reply: oneshot::Sender<u64>,
    },
    /// Fault injection (tests, soak runs): drop this share (per mille) of the RTP sent to a
    /// participant's subscribe connection.
    InjectLoss {
        /// Participant id.
        participant: String,
        /// Per mille.
        permille: u16,
        /// Whether the participant has a subscribe connection.
        reply: oneshot::Sender<bool>,
    },
    /// The current snapshot and sequence number.
    Snapshot {
        /// Answer.
        reply: oneshot::Sender<(u64, Box<sig::Snapshot>)>,
    },
    /// What `/metrics` shows of this meeting.
    Metrics {
        /// Answer.
        reply: oneshot::Sender<crate::metrics::MeetingMetrics>,
    },
}

/// A participant as named by their invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    /// Participant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Delegation.
    pub delegation: String,
    /// Role.
    pub role: Role,
    /// The invite id the connection came with (revoked by `remove` with `revoke_invite`).
    pub invite: String,
    /// For a one-time invite: the token for this participant's later connections.
    pub session_token: Option<String>,
}

/// Errors starting a meeting.
#[derive(Debug, thiserror::Error)]
pub enum MeetingError {
    /// The journal could not be read or written.
    #[error("journal: {0}")]
    Store(#[from] StoreError),
}

/// The way into a meeting task.
#[derive(Debug, Clone)]
pub struct MeetingHandle {
    /// Meeting id.
    pub id: Arc<str>,
    tx: mpsc::Sender<Msg>,
}

impl MeetingHandle {
    /// Sends a message; false if the meeting task has stopped.
    pub async fn send(&self, msg: Msg) -> bool {
        self.tx.send(msg).await.is_ok()
    }

    /// Audio packets of the participant dropped by the floor gate.
    pub async fn gate_dropped(&self, participant: &str) -> u64 {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::GateDropped {
            participant: participant.to_owned(),
            reply,
        })
        .await;
        rx.await.unwrap_or(0)
    }

    /// Fault injection: drop `permille` of the RTP sent to `participant` (false: no such
    /// subscribe connection).
    pub async fn inject_loss(&self, participant: &str, permille: u16) -> bool {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::InjectLoss {
            participant: participant.to_owned(),
            permille,
            reply,
        })
        .await;
        rx.await.unwrap_or(false)
    }

    /// The current snapshot and its sequence number.
    pub async fn snapshot(&self) -> Option<(u64, Box<sig::Snapshot>)> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Snapshot { reply }).await;
        rx.await.ok()
    }

    /// What `/metrics` shows of this meeting.
    pub async fn metrics(&self) -> Option<crate::metrics::MeetingMetrics> {
        let (reply, rx) = oneshot::channel();
        self.send(Msg::Metrics { reply }).await;
        rx.await.ok()
    }
}

/// Counters shared with `/metrics` and `/healthz`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events journaled and broadcast.
    pub events: AtomicU64,
    /// Commands refused.
    pub errors: AtomicU64,
    /// Connections dropped for being too slow.
    pub lagging: AtomicU64,
    /// Connections that resumed from a sequence number (no snapshot sent).
    pub resumes: AtomicU64,
    /// Time to queue a batch of events to every connection.
    pub fanout: crate::metrics::Histogram,
    /// Time to write a batch of events to the journal.
    pub journal_write: crate::metrics::Histogram,
}

/// The engine built from a meeting's config.
pub fn engine_from_config(m: &MeetingConfig) -> Engine {
    let f = &m.floor;
    let settings = floor::Settings {
        policy: match f.policy {
            config::PolicyKind::Moderated => floor::Policy::Moderated,
            config::PolicyKind::Open => floor::Policy::Open,
        },
        max_speakers: f.max_speakers,
        when_full: match f.when_full {
            config::WhenFull::Wait => floor::WhenFull::Wait,
            config::WhenFull::Override => floor::WhenFull::Override,
        },
        speaking_limit_ms: i64::from(f.speaking_limit_secs) * 1000,
        warning_ms: i64::from(f.warning_secs) * 1000,
        auto_revoke: f.auto_revoke,
        screen_requests: f.screen_requests,
    };
    let plan = m
        .agenda
        .iter()
        .map(|i| floor::ItemPlan {
            id: i.id.clone(),
            kind: match i.kind {
                config::ItemKind::Remarks => floor::ItemKind::Remarks,
                config::ItemKind::Presentation => floor::ItemKind::Presentation,
                config::ItemKind::Dialogue => floor::ItemKind::Dialogue,
                config::ItemKind::Break => floor::ItemKind::Break,
            },
            title: i.title.clone(),
            presenters: i
                .presenters
                .iter()
                .map(|p| floor::Presenter {
                    name: p.name.clone(),
                    role: p.role.clone().unwrap_or_default(),
                    organisation: p.organisation.clone().unwrap_or_default(),
                    participant: p.participant.clone(),
                })
                .collect(),
            planned_ms: i64::from(i.minutes) * 60_000,
            // Some(0) means "no limit" for this dialogue, overriding the floor's default.
            intervention_ms: i.intervention_secs.map(|s| i64::from(s) * 1000),
        })
        .collect();
    floor::Engine::new(
        settings,
        plan,
        m.starts_at_ms,
        i64::from(f.item_warning_secs) * 1000,
    )
}

/// The meeting's identity from its config.
pub fn meeting_info(config: &MeetingConfig) -> sig::MeetingInfo {
    sig::MeetingInfo {
        id: config.id.clone(),
        title: config.title.clone(),
        organiser: config.organiser.clone().unwrap_or_default(),
        venue: config.venue.clone().unwrap_or_default(),
    }
}

/// Rebuilds a meeting's engine from its journal (for the `minutes` command).
pub fn replay_engine(config: &MeetingConfig, records: &[JournalRecord]) -> Engine {
    let mut engine = engine_from_config(config);
    for rec in records {
        if let Some(e) = serde_json::from_str::<sig::Event>(&rec.body)
            .ok()
            .and_then(|e| wire::event_in(&e))
        {
            engine.apply(&e, rec.at_ms);
        }
    }
    engine
}

/// Server-wide settings a meeting task needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a participant whose connection dropped keeps their requests and floor (ms).
    pub grace_ms: Millis,
    /// Invites revoked or redeemed (`remove` with `revoke_invite` revokes).
    pub invites: Arc<crate::invites::Invites>,
    /// Connected participants per role.
    pub max_per_role: config::RoleLimits,
}

/// Starts a meeting task: replays the journal, then serves messages until `shutdown` turns
/// true. Returns once the state is rebuilt.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    config: &MeetingConfig,
    settings: Settings,
    media: Arc<config::MediaConfig>,
    hub: Option<(MediaHub, u32)>,
    journal: Journal,
    clock: Clock,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
) -> Result<(MeetingHandle, tokio::task::JoinHandle<()>), MeetingError> {
    let first_alert = clock.now();
    let mut meeting = Meeting {
        info: meeting_info(config),
        engine: engine_from_config(config),
        seq: 0,
        participants: Vec::new(),
        away: HashMap::new(),
        held: HashMap::new(),
        invites_seen: HashMap::new(),
        settings,
        conns: HashMap::new(),
        dropped: HashMap::new(),
        journal,
        clock,
        counters,
        media,
        av: None,
        health: crate::health::Monitor::first_alert_id(u64::try_from(first_alert).unwrap_or(1)),
        health_ticks: 0,
        cpu: crate::health::cpu::CpuMeter::new(),
        alerts_changed: Vec::new(),
    };
    meeting.replay().await?;
    let (tx, rx) = mpsc::channel(4096);
    meeting.av = hub.map(|(hub, room)| media::MeetingMedia::new(hub, room, tx.downgrade()));
    let span = info_span!("meeting", meeting = %config.id);
    let task = tokio::spawn(meeting.run(rx, shutdown).instrument(span));
    Ok((
        MeetingHandle {
            id: config.id.as_str().into(),
            tx,
        },
        task,
    ))
}

struct Conn {
    who: Who,
    out: mpsc::Sender<Outbound>,
    /// Its `client_stats` allowance.
    stats: StatsAllowance,
}

/// `client_stats` at most one a second on average, and two back to back: a report held up
/// on the way (a Wi-Fi retransmit, a busy page) arrives just before the next one, and neither
/// is refused. Credit in milliseconds: one second per report, earned back with time, at most
/// two seconds' worth.
#[derive(Debug, Clone, Copy)]
struct StatsAllowance {
    credit_ms: i64,
    at: Millis,
}

impl StatsAllowance {
    const PER_REPORT_MS: i64 = 1000;
    const MAX_CREDIT_MS: i64 = 2000;

    fn new(now: Millis) -> StatsAllowance {
        StatsAllowance {
            credit_ms: Self::MAX_CREDIT_MS,
            at: now,
        }
    }

    /// Takes one report's worth if there is enough credit.
    fn take(&mut self, now: Millis) -> bool {
        let earned = (now - self.at).max(0);
        self.credit_ms = (self.credit_ms + earned).min(Self::MAX_CREDIT_MS);
        self.at = now;
        if self.credit_ms < Self::PER_REPORT_MS {
            return false;
        }
        self.credit_ms -= Self::PER_REPORT_MS;
        true
    }
}

struct Meeting {
    info: sig::MeetingInfo,
    engine: Engine,
    /// Last sequence number journaled.
    seq: u64,
    /// Everyone who has joined, in order of first arrival.
    participants: Vec<ParticipantInfo>,
    /// Participants whose last connection ended (or who were connected when the server
    /// stopped), since when: their requests and floor are kept for the grace period.
    away: HashMap<String, Millis>,
    /// Participants whose websocket dropped, since when: their peer connections are kept for
    /// the grace period, for a resume to restart ICE on them (released at its end, or when
    /// they come back without resuming).
    held: HashMap<String, Millis>,
    /// The invite ids each participant has joined with in this run (for `revoke_invite`).
    invites_seen: HashMap<String, Vec<String>>,
    settings: Settings,
    conns: HashMap<ConnId, Conn>,
    /// Connections dropped for being too slow, by participant: their `Leave` still counts.
    dropped: HashMap<ConnId, String>,
    journal: Journal,
    clock: Clock,
    counters: Arc<Counters>,
    /// Media settings (ICE servers for the welcome).
    media: Arc<config::MediaConfig>,
    /// The media side, when the server runs its media engine.
    av: Option<media::MeetingMedia>,
    /// Stream health (scores, alerts), fed by the engine's samples and the clients' reports.
    health: crate::health::Monitor,
    health_ticks: u64,
    cpu: crate::health::cpu::CpuMeter,
    /// Alerts changed since the last history write.
    alerts_changed: Vec<sig::AlertInfo>,
}

/// A send into a connection's queue failed because the queue is full: the client reads too
/// slowly. (A closed queue is a connection ending: its reader says how.)
fn is_full(r: Result<(), mpsc::error::TrySendError<Outbound>>) -> bool {
    matches!(r, Err(mpsc::error::TrySendError::Full(_)))
}

/// Serialises a server message. Serialising our own types cannot fail (no maps with
/// non-string keys, no custom serializers); fall back to an error frame if it ever did.
pub fn encode(msg: &ServerMessage) -> Utf8Bytes {
    match serde_json::to_string(msg) {
        Ok(s) => s.into(),
        Err(e) => {
            warn!(error = %e, "could not serialise a server message");
            r#"{"type":"error","code":"invalid_state","message":"internal encoding error"}"#.into()
        }
    }
}

/// An error message for a command id.
pub fn error_frame(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Utf8Bytes {
    encode(&ServerMessage::Error {
        id,
        code,
        message: message.into(),
    })
}

fn floor_error(e: &floor::FloorError) -> ErrorCode {
    match e {
        floor::FloorError::NotFound(_) => ErrorCode::NotFound,
        floor::FloorError::InvalidState(_) => ErrorCode::InvalidState,
        floor::FloorError::MaxSpeakers(_) => ErrorCode::MaxSpeakers,
        floor::FloorError::InvalidValue(_) => ErrorCode::InvalidValue,
        floor::FloorError::Forbidden(_) => ErrorCode::Forbidden,
    }
}

impl Meeting {
    async fn replay(&mut self) -> Result<(), MeetingError> {
        let records = self.journal.load(&self.info.id).await?;
        let count = records.len();
        for rec in records {
            self.seq = rec.seq;
            match serde_json::from_str::<sig::Event>(&rec.body) {
                Ok(event) => self.apply(&event, rec.at_ms),
                Err(e) => warn!(seq = rec.seq, error = %e, "skipping unreadable journal record"),
            }
        }
        if count > 0 {
            info!(
                events = count,
                seq = self.seq,
                "meeting rebuilt from the journal"
            );
            let now = self.clock.now();
            self.commit(vec![sig::Event::ServerRestarted], now).await?;
        }
        Ok(())
    }

    /// Applies a journaled event to the state (engine or presence).
    fn apply(&mut self, event: &sig::Event, at: Millis) {
        match event {
            sig::Event::ParticipantJoined { participant } => {
                self.away.remove(&participant.id);
                match self
                    .participants
                    .iter_mut()
                    .find(|p| p.id == participant.id)
                {
                    Some(p) => *p = participant.clone(),
                    None => self.participants.push(participant.clone()),
                }
            }
            sig::Event::ParticipantLeft {
                participant,
                presence,
                ..
            } => {
                if let Some(p) = self.participants.iter_mut().find(|p| &p.id == participant) {
                    p.presence = *presence;
                }
                match presence {
                    Presence::Left | Presence::ConnectionLost => {
                        self.away.insert(participant.clone(), at);
                    }
                    Presence::Removed | Presence::Joined => {
                        self.away.remove(participant);
                    }
                }
            }
            sig::Event::ServerRestarted => {
                // Whoever was connected when the server stopped is away from now on: the
                // grace period starts with the restart.
                for p in &mut self.participants {
                    if p.presence == Presence::Joined {
                        p.presence = Presence::ConnectionLost;
                        self.away.insert(p.id.clone(), at);
                    }
                }
            }
            other => {
                if let Some(e) = wire::event_in(other) {
                    self.engine.apply(&e, at);
                }
            }
        }
    }

    fn snapshot(&self, now: Millis) -> sig::Snapshot {
        sig::Snapshot {
            meeting: self.info.clone(),
            floor: wire::floor_view(&self.engine),
            agenda: wire::agenda_view(&self.engine, now),
            participants: self.participants.clone(),
            timer_message: self.engine.timer_message().map(str::to_owned),
        }
    }

    /// Journals `events` (synced), applies the presence ones, and broadcasts them all.
    /// Engine events must already be applied to the engine by the caller. Returns the last
    /// sequence number.
    async fn commit(&mut self, events: Vec<sig::Event>, at: Millis) -> Result<u64, StoreError> {
        let records: Vec<JournalRecord> = events
            .iter()
            .enumerate()
            .map(|(i, e)| JournalRecord {
                meeting: self.info.id.clone(),
                seq: self.seq + 1 + i as u64,
                at_ms: at,
                kind: e.kind().to_owned(),
                actor: e.actor().map(str::to_owned),
                body: serde_json::to_string(e).unwrap_or_default(),
            })
            .collect();
        let started = std::time::Instant::now();
        self.journal.append(records).await?;
        self.counters.journal_write.observe(started.elapsed());
        let fanout = std::time::Instant::now();
        let last_floor = events.iter().rposition(|e| e.touches_floor());
        let last_agenda = events.iter().rposition(|e| e.touches_agenda());
        for (i, event) in events.into_iter().enumerate() {
            if wire::event_in(&event).is_none() {
                self.apply(&event, at);
            }
            self.seq += 1;
            let msg = ServerMessage::Event {
                seq: self.seq,
                at,
                floor: (Some(i) == last_floor).then(|| Box::new(wire::floor_view(&self.engine))),
                agenda: (Some(i) == last_agenda)
                    .then(|| Box::new(wire::agenda_view(&self.engine, at))),
                event,
            };
            self.broadcast(encode(&msg));
            self.counters.events.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.fanout.observe(fanout.elapsed());
        if last_floor.is_some() {
            self.sync_floor().await;
        }
        Ok(self.seq)
    }

    /// Tells the media router who may be heard and who presents.
    async fn sync_floor(&mut self) {
        let Some(av) = self.av.as_mut() else {
            return;
        };
        let moderated = self.engine.settings().policy == floor::Policy::Moderated;
        let holders: Vec<String> = self
            .engine
            .holders()
            .map(|r| r.beneficiary.participant.clone())
            .collect();
        let presenters: Vec<String> = self
            .engine
            .holders()
            .filter(|r| r.slot.is_some())
            .map(|r| r.beneficiary.participant.clone())
            .collect();
        let mut out = Vec::new();
        av.set_floor(moderated, &holders, &presenters, &mut out)
            .await;
        self.deliver(out);
    }

    /// Answers a command that is not a floor command: an ack (with the journal's `seq` if it
    /// wrote one) or the error.
    fn reply(
        &mut self,
        conn: ConnId,
        id: String,
        result: Result<Option<u64>, (ErrorCode, String)>,
    ) {
        let frame = match result {
            Ok(seq) => encode(&ServerMessage::Ack {
                id,
                seq,
                request: None,
            }),
            Err((code, message)) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                error_frame(Some(id), code, message)
            }
        };
        self.send_to(conn, frame);
    }

    /// Closes a participant's connections with a `goodbye` and ends their media. Returns
    /// whether they had any.
    async fn disconnect(&mut self, participant: &str, reason: &str, code: u16) -> bool {
        let ids: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.who.id == participant)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(c) = self.conns.remove(id) {
                let bye = encode(&ServerMessage::Goodbye {
                    reason: reason.into(),
                });
                let _ = c.out.try_send(Outbound::Close(bye, code));
            }
        }
        // Their connections are gone from `conns` already, so the reader's `Leave` will find
        // nothing to do: end their media and stream health here.
        self.release_media(participant).await;
        !ids.is_empty()
    }

    /// Ends a participant's media (peer connections, router peer) and forgets their stream
    /// health.
    async fn release_media(&mut self, participant: &str) {
        self.held.remove(participant);
        if let Some(av) = self.av.as_mut() {
            let mut out = Vec::new();
            av.leave(participant, &mut out).await;
            self.deliver(out);
            let mut changes = crate::health::TickOut::default();
            self.health
                .remove(self.clock.now(), participant, &mut changes);
            self.announce_alerts(changes.changes);
        }
    }

    /// `remove`: cancels or revokes the participant's open requests, closes their
    /// connections (`goodbye` `removed`) and journals them as removed, in one batch.
    async fn remove_participant(
        &mut self,
        chair: &Who,
        participant: &str,
        revoke_invite: bool,
    ) -> Result<Option<u64>, (ErrorCode, String)> {
        if participant == chair.id {
            return Err((
                ErrorCode::InvalidValue,
                "the chair cannot remove themselves".into(),
            ));
        }
        if !self.participants.iter().any(|p| p.id == participant) {
            return Err((
                ErrorCode::NotFound,
                format!("no participant {participant:?} in this meeting"),
            ));
        }
        let now = self.clock.now();
        let actor = floor::Actor {
            id: chair.id.clone(),
            name: chair.name.clone(),
            delegation: chair.delegation.clone(),
            chair: true,
        };
        let theirs: Vec<(floor::RequestId, bool)> = self
            .engine
            .requests()
            .filter(|r| r.beneficiary.participant == participant)
            .filter_map(|r| match r.state {
                floor::State::Pending | floor::State::Accepted => Some((r.id, false)),
                floor::State::Granted => Some((r.id, true)),
                _ => None,
            })
            .collect();
        let before = self.engine.clone();
        let mut events: Vec<sig::Event> = Vec::new();
        for (request, granted) in theirs {
            let command = if granted {
                floor::Command::Revoke(request)
            } else {
                floor::Command::Cancel(request)
            };
            match self.engine.handle(&actor, command, now) {
                Ok(outcome) => events.extend(outcome.events.iter().map(wire::event_out)),
                Err(e) => warn!(%participant, error = %e, "removing: a request stayed"),
            }
        }
        events.push(sig::Event::ParticipantLeft {
            participant: participant.to_owned(),
            presence: Presence::Removed,
            by: Some(chair.id.clone()),
        });
        if revoke_invite {
            // Every invite they joined with on a live connection, and the ones remembered
            // from earlier connections of this run.
            let mut invites: Vec<String> = self
                .conns
                .values()
                .filter(|c| c.who.id == participant)
                .map(|c| c.who.invite.clone())
                .chain(
                    self.invites_seen
                        .get(participant)
                        .into_iter()
                        .flatten()
                        .cloned(),
                )
                .collect();
            invites.sort();
            invites.dedup();
            if invites.is_empty() {
                // Not seen since the server started (a restart forgets which invite someone
                // used): say so rather than ack a revocation that did nothing.
                self.engine = before;
                return Err((
                    ErrorCode::NotFound,
                    format!(
                        "no invitation of {participant:?} is known since the server started: \
                         nothing to revoke (they can be removed without revoking)"
                    ),
                ));
            }
            for (n, invite) in invites.into_iter().enumerate() {
                if let Err(e) = self
                    .settings
                    .invites
                    .revoke(&self.info.id, &invite, participant, &chair.id, now)
                    .await
                {
                    self.engine = before;
                    warn!(error = %e, "journal failed recording a revoked invite");
                    let message = if n == 0 {
                        "the journal could not record the revoked invitation; nothing changed"
                            .to_owned()
                    } else {
                        format!(
                            "the journal could not record all their invitations: {n} revoked, \
                             the rest not; they were not removed"
                        )
                    };
                    return Err((ErrorCode::JournalUnavailable, message));
                }
                info!(%participant, %invite, by = %chair.id, "invite revoked");
            }
        }
        self.disconnect(participant, "removed", CLOSE_REMOVED).await;
        match self.commit(events, now).await {
            Ok(seq) => Ok(Some(seq)),
            Err(e) => {
                self.engine = before;
                warn!(error = %e, "journal failed recording a removal");
                Err((
                    ErrorCode::JournalUnavailable,
                    "the journal could not be written; they were disconnected but not recorded"
                        .into(),
                ))
            }
        }
    }

    /// `leave`: the participant goes on purpose. Their floor and requests go at once (no
    /// grace period), the leave is journaled, the ack sent, and the connection closed with
    /// `goodbye` `left` (their other connections too, and their media).
    async fn leave(&mut self, conn: ConnId, who: &Who, id: String) {
        let now = self.clock.now();
        let before = self.engine.clone();
        let mut events: Vec<sig::Event> = self
            .engine
            .participant_gone(&who.id, now)
            .iter()
            .map(wire::event_out)
            .collect();
        events.push(sig::Event::ParticipantLeft {
            participant: who.id.clone(),
            presence: Presence::Left,
            by: None,
        });
        match self.commit(events, now).await {
            Ok(seq) => {
                // Gone for good: no grace period to wait out.
                self.away.remove(&who.id);
                self.reply(conn, id, Ok(Some(seq)));
                self.disconnect(&who.id, "left", CLOSE_NORMAL).await;
                info!(participant = %who.id, "left");
            }
            Err(e) => {
                self.engine = before;
                warn!(error = %e, "journal failed recording a leave");
                self.reply(
                    conn,
                    id,
                    Err((
                        ErrorCode::JournalUnavailable,
                        "the journal could not be written; nothing changed".into(),
                    )),
                );
            }
        }
    }

    /// `ask_reconnect`: closes the participant's connections with `goodbye` `reconnect`; their
    /// client comes back at once. Journaled as a leave (the return is a join).
    async fn ask_reconnect(
        &mut self,
        by: &Who,
        participant: &str,
    ) -> Result<Option<u64>, (ErrorCode, String)> {
        if !self
            .disconnect(participant, "reconnect", CLOSE_RECONNECT)
            .await
        {
            return Err((
                ErrorCode::NotFound,
                format!("{participant:?} is not connected"),
            ));
        }
        let now = self.clock.now();
        let event = sig::Event::ParticipantLeft {
            participant: participant.to_owned(),
            presence: Presence::Left,
            by: Some(by.id.clone()),
        };
        match self.commit(vec![event], now).await {
            Ok(seq) => Ok(Some(seq)),
            Err(e) => {
                warn!(error = %e, "journal failed recording a reconnect request");
                Err((
                    ErrorCode::JournalUnavailable,
                    "the journal could not be written".into(),
                ))
            }
        }
    }

    /// Tells who may know that `speech.participant` started or stopped speaking: everyone
    /// when the floor gate passes their audio, else only them, the moderator and technicians.
    fn announce_speech(&mut self, speech: media::Speech) {
        let role = self
            .conns
            .values()
            .find(|c| c.who.id == speech.participant)
            .map(|c| c.who.role);
        let moderated = self.engine.settings().policy == floor::Policy::Moderated;
        let heard = match role {
            Some(Role::Moderator | Role::Room) => true,
            Some(Role::Delegate) => {
                !moderated
                    || self
                        .engine
                        .holders()
                        .any(|r| r.beneficiary.participant == speech.participant)
            }
            _ => false,
        };
        let mut changes = crate::health::TickOut::default();
        self.health.speech(
            self.clock.now(),
            &speech.participant,
            speech.speaking,
            heard,
            &mut changes,
        );
        self.announce_alerts(changes.changes);
        let frame = encode(&sig::ServerMessage::Speaking {
            participant: speech.participant.clone(),
            speaking: speech.speaking,
            level: speech.level,
            heard,
        });
        let to: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                heard
                    || c.who.id == speech.participant
                    || matches!(c.who.role, Role::Moderator | Role::Technician)
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in to {
            self.send_to(conn, frame.clone());
        }
    }

    /// Scores everyone, evaluates the time-based alerts, and every other second sends the
    /// `health` report to technicians.
    fn health_tick(&mut self) {
        let now = self.clock.now();
        self.health_ticks += 1;
        let report = self.health_ticks % 2 == 0;
        let holders: Vec<String> = self
            .engine
            .holders()
            .filter(|r| !r.beneficiary.in_room)
            .map(|r| r.beneficiary.participant.clone())
            .collect();
        let cpu = self.cpu.sample().unwrap_or(0.0);
        let out = self.health.tick(now, &holders, cpu, report);
        self.announce_alerts(out.changes);
        if report {
            self.record_health(now);
            let frame = encode(&ServerMessage::Health {
                at: now,
                participants: self.health.rows(),
                alerts: self.health.open_alerts(),
                cpu_pct: (cpu * 10.0).round() / 10.0,
            });
            for id in self.conns_with(|r| r == Role::Technician) {
                self.send_to(id, frame.clone());
            }
        }
    }

    /// Queues this report's scores, and the alerts that changed since the last one, for the
    /// history.
    fn record_health(&mut self, now: i64) {
        use crate::store::health::{HealthAlert, HealthBatch, HealthSample};
        let meeting = self.info.id.clone();
        let mut samples = Vec::new();
        for r in self.health.rows() {
            for (dir, h) in [("up", &r.up), ("down", &r.down)] {
                if let Some(h) = h {
                    samples.push(HealthSample {
                        meeting: meeting.clone(),
                        at_ms: now,
                        participant: r.participant.clone(),
                        direction: dir.to_owned(),
                        score: h.score,
                        cause: h
                            .cause
                            .and_then(|c| serde_json::to_value(c).ok())
                            .and_then(|v| v.as_str().map(str::to_owned)),
                        loss_pct: h.loss_pct,
                        jitter_ms: h.jitter_ms,
                        rtt_ms: h.rtt_ms,
                        kbps: h.kbps,
                    });
                }
            }
        }
        let alerts = std::mem::take(&mut self.alerts_changed)
            .into_iter()
            .map(|a| HealthAlert {
                meeting: meeting.clone(),
                id: a.id,
                kind: serde_json::to_value(a.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                participant: a.participant,
                direction: a.direction.map(|d| match d {
                    sig::Direction::Up => "up".to_owned(),
                    sig::Direction::Down => "down".to_owned(),
                }),
                detail: a.detail,
                raised_at: a.raised_at,
                cleared_at: a.cleared_at,
                acked_by: a.acked_by,
            })
            .collect();
        let keep = i64::from(self.media.health_retention_minutes) * 60_000;
        self.journal.record_health(HealthBatch {
            samples,
            alerts,
            keep_after_ms: now - keep,
        });
    }

    /// Alerts raised, cleared or acknowledged: to technicians, floor alerts also to the chair.
    fn announce_alerts(&mut self, changes: Vec<sig::AlertInfo>) {
        self.alerts_changed.extend(changes.iter().cloned());
        for alert in changes {
            info!(
                alert = alert.id,
                kind = ?alert.kind,
                participant = alert.participant.as_deref().unwrap_or("-"),
                cleared = alert.cleared_at.is_some(),
                detail = %alert.detail,
                "stream health alert"
            );
            let floor = alert.floor;
            let frame = encode(&ServerMessage::Alert { alert });
            for id in self.conns_with(|r| r == Role::Technician || (floor && r == Role::Moderator))
            {
                self.send_to(id, frame.clone());
            }
        }
    }

    fn conns_with(&self, f: impl Fn(Role) -> bool) -> Vec<ConnId> {
        self.conns
            .iter()
            .filter(|(_, c)| f(c.who.role))
            .map(|(id, _)| *id)
            .collect()
    }

    /// `client_stats`, `ack_alert`, `request_keyframe`, `force_layer`.
    async fn health_command(
        &mut self,
        conn: ConnId,
        who: &Who,
        command: Command,
    ) -> Result<Option<u64>, (ErrorCode, String)> {
        let now = self.clock.now();
        match command {
            Command::ClientStats {
                up,
                down,
                candidate,
            } => {
                let c = self
                    .conns
                    .get_mut(&conn)
                    .ok_or((ErrorCode::InvalidState, "not joined".to_owned()))?;
                // Validated first: a bad report costs no allowance.
                let report = sig::ClientReport {
                    at: now,
                    up,
                    down,
                    candidate,
                };
                crate::health::validate(&report)
                    .map_err(|e| (ErrorCode::InvalidValue, e.to_string()))?;
                if !c.stats.take(now) {
                    return Err((
                        ErrorCode::RateLimited,
                        "client_stats at most once a second (two back to back)".to_owned(),
                    ));
                }
                self.health.client_report(&who.id, report);
                Ok(None)
            }
            Command::AckAlert { alert } => {
                if who.role == Role::Moderator && self.health.alert(alert).is_some_and(|a| !a.floor)
                {
                    return Err((
                        ErrorCode::Forbidden,
                        "the chair acknowledges floor alerts only".to_owned(),
                    ));
                }
                let a = self.health.ack(alert, &who.id, now).map_err(|e| match e {
                    crate::health::HealthError::UnknownAlert(_) => {
                        (ErrorCode::NotFound, e.to_string())
                    }
                    _ => (ErrorCode::InvalidState, e.to_string()),
                })?;
                self.announce_alerts(vec![a]);
                Ok(None)
            }
            Command::RequestKeyframe { participant } => {
                let av = self.av.as_ref().ok_or((
                    ErrorCode::MediaUnavailable,
                    "this server runs without media".to_owned(),
                ))?;
                av.request_keyframes(&participant).await?;
                info!(by = %who.id, %participant, "keyframe requested by a technician");
                Ok(None)
            }
            Command::ForceLayer { participant, layer } => {
                let av = self.av.as_mut().ok_or((
                    ErrorCode::MediaUnavailable,
                    "this server runs without media".to_owned(),
                ))?;
                let mut out = Vec::new();
                av.force_layer(&participant, layer, &mut out).await?;
                self.deliver(out);
                self.health.set_force(&participant, layer);
                info!(by = %who.id, %participant, ?layer, "layer forced by a technician");
                Ok(None)
            }
            _ => Err((ErrorCode::InvalidState, "not a health command".to_owned())),
        }
    }

    /// Sends media messages to participants' connections.
    fn deliver(&mut self, out: media::Outbox) {
        for (participant, msg) in out {
            let conns: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|(_, c)| c.who.id == participant)
                .map(|(id, _)| *id)
                .collect();
            let frame = encode(&msg);
            for conn in conns {
                self.send_to(conn, frame.clone());
            }
        }
    }

    async fn media_command(
        &mut self,
        who: &Who,
        command: Command,
    ) -> Result<(), (ErrorCode, String)> {
        let Some(av) = self.av.as_mut() else {
            return Err((
                ErrorCode::MediaUnavailable,
                "this server runs without its media engine: floor control only".into(),
            ));
        };
        let mut out = Vec::new();
        let result = match command {
            Command::Publish { pc, sdp, tracks } => {
                av.publish(&who.id, who.role, pc, sdp, tracks, &mut out)
                    .await
            }
            Command::Unpublish { pc } => av.unpublish(&who.id, pc, &mut out).await,
            Command::SubscribeAnswer { sdp } => av.answer(&who.id, sdp, &mut out).await,
            Command::IceRestart { pc } => av.restart_ice(&who.id, pc, &mut out).await,
            Command::IceCandidate { pc, candidate, .. } => {
                av.candidate(&who.id, pc, candidate).await
            }
            Command::MediaPreferences {
                thumbnails,
                microphones,
                render,
            } => {
                av.preferences(&who.id, who.role, thumbnails, microphones, render, &mut out)
                    .await
            }
            _ => Ok(()),
        };
        self.deliver(out);
        if result.is_ok() {
            // A new peer may need the current floor.
            self.sync_floor().await;
        }
        result
    }

    fn broadcast(&mut self, frame: Utf8Bytes) {
        let mut lagging = Vec::new();
        for (id, conn) in &self.conns {
            if is_full(conn.out.try_send(Outbound::Text(frame.clone()))) {
                lagging.push(*id);
            }
        }
        for id in lagging {
            // Dropping the sender closes the connection's writer; its reader then reports
            // the leave, which is journaled like any lost connection.
            self.drop_lagging(id);
        }
    }

    fn send_to(&mut self, conn: ConnId, frame: Utf8Bytes) {
        if let Some(c) = self.conns.get(&conn) {
            if is_full(c.out.try_send(Outbound::Text(frame))) {
                self.drop_lagging(conn);
            }
        }
    }

    /// Drops a connection whose queue is full (one whose writer has ended is not: its reader
    /// is about to report how it ended, a close frame or a lost network). Dropping its sender ends its writer; the
    /// reader then sends `Leave`, which is journaled as a lost connection.
    fn drop_lagging(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            warn!(participant = %c.who.id, "client too slow: disconnecting");
            self.counters.lagging.fetch_add(1, Ordering::Relaxed);
            self.dropped.insert(conn, c.who.id);
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut shutdown: watch::Receiver<bool>) {
        let mut clock_moved = self.clock.subscribe();
        let mut health = tokio::time::interval(std::time::Duration::from_secs(1));
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = self.clock.now();
            let next = match (self.engine.next_deadline(), self.grace_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait = next.map(|d| (d - now).max(0) as u64);
            let manual = clock_moved.is_some();
            let sleep = async move {
                match wait {
                    // A manual clock is woken by `clock_moved`; the system clock by sleeping.
                    Some(ms) if !manual => {
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await
                    }
                    Some(0) => {}
                    _ => std::future::pending().await,
                }
            };
            let moved = async {
                match clock_moved.as_mut() {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg).await,
                    None => break,
                },
                _ = sleep => self.tick().await,
                _ = moved => self.tick().await,
                _ = health.tick(), if self.av.is_some() => self.health_tick(),
                _ = shutdown.changed() => break,
            }
        }
        let bye = encode(&ServerMessage::Goodbye {
            reason: "shutdown".into(),
        });
        for conn in self.conns.values() {
            let _ = conn
                .out
                .try_send(Outbound::Close(bye.clone(), CLOSE_GOING_AWAY));
        }
        debug!("meeting task stopped");
    }

    /// When the first away participant's grace period ends.
    fn grace_deadline(&self) -> Option<Millis> {
        self.away
            .values()
            .chain(self.held.values())
            .min()
            .map(|since| since + self.settings.grace_ms)
    }

    async fn tick(&mut self) {
        let now = self.clock.now();
        // Media held for a resume that did not come.
        let expired: Vec<String> = self
            .held
            .iter()
            .filter(|(_, since)| now >= **since + self.settings.grace_ms)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &expired {
            info!(participant = %p, "away past the grace period: media released");
            self.release_media(p).await;
        }
        let before = self.engine.clone();
        let mut events = self.engine.tick(now);
        // Away past the grace period: their floor is revoked and their hand lowered.
        let lapsed: Vec<String> = self
            .away
            .iter()
            .filter(|(_, since)| now >= **since + self.settings.grace_ms)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &lapsed {
            let gone = self.engine.participant_gone(p, now);
            if !gone.is_empty() {
                info!(participant = %p, "away past the grace period: floor and requests released");
            }
            events.extend(gone);
        }
        if events.is_empty() {
            for p in &lapsed {
                self.away.remove(p);
            }
            return;
        }
        let wire_events = events.iter().map(wire::event_out).collect();
        if let Err(e) = self.commit(wire_events, now).await {
            warn!(error = %e, "journal failed; timer events not announced, will retry");
            self.engine = before;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        } else {
            for p in &lapsed {
                self.away.remove(p);
            }
        }
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Join {
                conn,
                who,
                out,
                resume,
            } => self.join(conn, who, out, resume).await,
            Msg::Command { conn, msg } => self.command(conn, msg).await,
            Msg::Leave { conn, presence } => {
                let (participant, presence) = match self.conns.remove(&conn) {
                    Some(c) => (c.who.id, presence),
                    None => match self.dropped.remove(&conn) {
                        Some(id) => (id, Presence::ConnectionLost),
                        None => return,
                    },
                };
                if self.conns.values().any(|o| o.who.id == participant) {
                    return;
                }
                // A lost connection may come back within the grace period and resume: its
                // peer connections wait for it (ICE restarts on them instead of new ones).
                // A goodbye (`leave`, a closed page) ends them now.
                let hold = presence == Presence::ConnectionLost
                    && self.settings.grace_ms > 0
                    && self.av.as_ref().is_some_and(|av| av.has_peer(&participant));
                if hold {
                    debug!(participant = %participant, "media held for the grace period");
                    self.held.insert(participant.clone(), self.clock.now());
                } else {
                    self.release_media(&participant).await;
                }
                let now = self.clock.now();
                let event = sig::Event::ParticipantLeft {
                    participant,
                    presence,
                    by: None,
                };
                if let Err(e) = self.commit(vec![event], now).await {
                    warn!(error = %e, "journal failed recording a leave");
                }
            }
            Msg::Media(event) => {
                if let Some(av) = self.av.as_mut() {
                    let mut out = Vec::new();
                    let note = av.event(event, &mut out).await;
                    self.deliver(out);
                    match note {
                        Some(media::Note::Speech(speech)) => self.announce_speech(speech),
                        Some(media::Note::Sample {
                            participant,
                            link,
                            sample,
                        }) => {
                            let now = self.clock.now();
                            let mut changes = crate::health::TickOut::default();
                            self.health
                                .sample(now, &participant, link, *sample, &mut changes);
                            self.announce_alerts(changes.changes);
                        }
                        None => {}
                    }
                }
            }
            Msg::InjectLoss {
                participant,
                permille,
                reply,
            } => {
                let ok = match self.av.as_ref() {
                    Some(av) => av.inject_loss(&participant, permille).await,
                    None => false,
                };
                let _ = reply.send(ok);
            }
            Msg::GateDropped { participant, reply } => {
                let n = match self.av.as_ref() {
                    Some(av) => av.gate_dropped(&participant).await,
                    None => 0,
                };
                let _ = reply.send(n);
            }
            Msg::Snapshot { reply } => {
                let now = self.clock.now();
                let _ = reply.send((self.seq, Box::new(self.snapshot(now))));
            }
            Msg::Metrics { reply } => {
                let mut by_role: std::collections::BTreeMap<&'static str, u64> = Default::default();
                let mut seen = std::collections::HashSet::new();
                for c in self.conns.values() {
                    if seen.insert(c.who.id.as_str()) {
                        *by_role.entry(c.who.role.as_str()).or_default() += 1;
                    }
                }
                let mut scores = Vec::new();
                for r in self.health.rows() {
                    if let Some(u) = &r.up {
                        scores.push((r.participant.clone(), "up", u.score));
                    }
                    if let Some(d) = &r.down {
                        scores.push((r.participant.clone(), "down", d.score));
                    }
                }
                let alerts_on = self
                    .health
                    .open_alerts()
                    .iter()
                    .filter(|a| a.cleared_at.is_none())
                    .count() as u64;
                let _ = reply.send(crate::metrics::MeetingMetrics {
                    meeting: self.info.id.clone(),
                    participants: by_role.into_iter().collect(),
                    scores,
                    alerts_on,
                });
            }
        }
    }

    /// The events after `from` as `event` frames, with the current floor and agenda views on
    /// the last ones that touch them, when a client can resume from there: `from` is not
    /// ahead of the journal and at most [`RESUME_MAX_EVENTS`] behind it. `None`: send a full
    /// `welcome` instead.
    async fn resume_frames(&self, from: u64) -> Option<(u64, Vec<Utf8Bytes>)> {
        if from > self.seq || self.seq - from > RESUME_MAX_EVENTS {
            debug!(
                from,
                seq = self.seq,
                "cannot resume: a full welcome instead"
            );
            return None;
        }
        let records = match self.journal.load_after(&self.info.id, from).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "journal unreadable for a resume: a full welcome instead");
                return None;
            }
        };
        let mut events = Vec::with_capacity(records.len());
        for (i, rec) in records.iter().enumerate() {
            // Contiguous and readable, or no resume at all (a gap is worse than a snapshot).
            let event = serde_json::from_str::<sig::Event>(&rec.body).ok()?;
            if rec.seq != from + 1 + i as u64 {
                return None;
            }
            events.push((rec.seq, rec.at_ms, event));
        }
        if events.last().map_or(from, |e| e.0) != self.seq {
            return None;
        }
        let now = self.clock.now();
        let last_floor = events.iter().rposition(|e| e.2.touches_floor());
        let last_agenda = events.iter().rposition(|e| e.2.touches_agenda());
        let frames = events
            .into_iter()
            .enumerate()
            .map(|(i, (seq, at, event))| {
                encode(&ServerMessage::Event {
                    seq,
                    at,
                    floor: (Some(i) == last_floor)
                        .then(|| Box::new(wire::floor_view(&self.engine))),
                    agenda: (Some(i) == last_agenda)
                        .then(|| Box::new(wire::agenda_view(&self.engine, now))),
                    event,
                })
            })
            .collect();
        Some((from, frames))
    }

    async fn join(
        &mut self,
        conn: ConnId,
        who: Who,
        out: mpsc::Sender<Outbound>,
        resume: Option<u64>,
    ) {
        let now = self.clock.now();
        // Room for one more of this role? (Someone replacing their own connection always is.)
        let limit = self.settings.max_per_role.of(who.role) as usize;
        let others: std::collections::HashSet<&str> = self
            .conns
            .values()
            .filter(|c| c.who.role == who.role && c.who.id != who.id)
            .map(|c| c.who.id.as_str())
            .collect();
        if others.len() >= limit {
            warn!(participant = %who.id, role = who.role.as_str(), limit, "meeting full for this role");
            let _ = out.try_send(Outbound::Close(
                error_frame(
                    None,
                    ErrorCode::MeetingFull,
                    format!(
                        "this meeting already has {limit} connected {}s, the most it allows; try again later",
                        who.role.as_str()
                    ),
                ),
                CLOSE_POLICY,
            ));
            return;
        }
        // One live connection per participant: a new one replaces the old.
        let replaced: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.who.id == who.id)
            .map(|(id, _)| *id)
            .collect();
        let replacing = !replaced.is_empty();
        for id in replaced {
            if let Some(old) = self.conns.remove(&id) {
                let bye = encode(&ServerMessage::Goodbye {
                    reason: "replaced".into(),
                });
                let _ = old.out.try_send(Outbound::Close(bye, CLOSE_REPLACED));
            }
        }
        // The participant's media from before (a connection replaced, or held since a drop):
        // kept if this connection resumes (the same client, its peer connections alive),
        // ended otherwise (a reload, another device: it publishes and subscribes afresh).
        let had_media = replacing || self.held.contains_key(&who.id);
        let info = ParticipantInfo {
            id: who.id.clone(),
            name: who.name.clone(),
            delegation: who.delegation.clone(),
            role: who.role,
            presence: Presence::Joined,
        };
        let already = self.participants.contains(&info);
        if !already {
            if let Err(e) = self
                .commit(
                    vec![sig::Event::ParticipantJoined {
                        participant: info.clone(),
                    }],
                    now,
                )
                .await
            {
                let _ = out.try_send(Outbound::Close(
                    error_frame(
                        None,
                        ErrorCode::JournalUnavailable,
                        format!("could not record your arrival: {e}"),
                    ),
                    CLOSE_INTERNAL,
                ));
                return;
            }
        }
        let ice_servers =
            crate::media::turn::ice_servers(&self.media, &who.id, now.div_euclid(1000));
        let resumed = match resume {
            Some(from) => self.resume_frames(from).await,
            None => None,
        };
        let mut media_held = false;
        if had_media {
            if resumed.is_some() && self.av.as_ref().is_some_and(|av| av.has_peer(&who.id)) {
                self.held.remove(&who.id);
                media_held = true;
            } else {
                // A held participant's health goes too; one replacing a live connection kept
                // it until now (the reader's `Leave` finds them still connected).
                self.release_media(&who.id).await;
            }
        }
        let sent = match resumed {
            Some((from, frames)) => {
                let resumed = ServerMessage::Resumed {
                    protocol: sig::PROTOCOL_VERSION,
                    server_time: now,
                    you: info,
                    seq: from,
                    ice_servers,
                    session_token: who.session_token.clone(),
                    media_held,
                };
                debug!(from, events = frames.len(), "resumed");
                self.counters.resumes.fetch_add(1, Ordering::Relaxed);
                std::iter::once(encode(&resumed))
                    .chain(frames)
                    .all(|f| out.try_send(Outbound::Text(f)).is_ok())
            }
            None => {
                let welcome = ServerMessage::Welcome {
                    protocol: sig::PROTOCOL_VERSION,
                    server_time: now,
                    you: info,
                    seq: self.seq,
                    snapshot: Box::new(self.snapshot(now)),
                    ice_servers,
                    session_token: who.session_token.clone(),
                };
                out.try_send(Outbound::Text(encode(&welcome))).is_ok()
            }
        };
        let seen = self.invites_seen.entry(who.id.clone()).or_default();
        if !seen.contains(&who.invite) {
            seen.push(who.invite.clone());
        }
        if sent {
            info!(participant = %who.id, role = who.role.as_str(), "joined");
            // Alerts that need attention now: all of them to a technician, the floor ones to
            // the chair (the `health` reports follow every 2 s).
            let role = who.role;
            if matches!(role, Role::Technician | Role::Moderator) {
                for alert in self.health.open_alerts() {
                    if role == Role::Technician || alert.floor {
                        let _ =
                            out.try_send(Outbound::Text(encode(&ServerMessage::Alert { alert })));
                    }
                }
            }
            let id = who.id.clone();
            self.conns.insert(
                conn,
                Conn {
                    who,
                    out,
                    stats: StatsAllowance::new(self.clock.now()),
                },
            );
            // The network under the held peer connections has likely changed: the subscribe
            // connection gets new ICE credentials at once (also replacing an offer the drop
            // may have swallowed); the client restarts its sending ones.
            if media_held {
                self.restart_held_subscriber(&id).await;
            }
        }
    }

    /// After a resume with media held: re-offers the subscribe connection with an ICE restart.
    async fn restart_held_subscriber(&mut self, participant: &str) {
        let Some(av) = self.av.as_mut() else {
            return;
        };
        let mut out = Vec::new();
        match av
            .restart_ice(participant, sig::PeerConnectionKind::Subscribe, &mut out)
            .await
        {
            Ok(()) => debug!(
                participant,
                "resumed: subscribe connection re-offered with an ICE restart"
            ),
            Err((ErrorCode::NotFound, _)) => {}
            Err((code, message)) => {
                warn!(participant, ?code, %message, "resumed: the ICE restart of the held subscribe connection failed");
            }
        }
        self.deliver(out);
    }

    async fn command(&mut self, conn: ConnId, msg: ClientMessage) {
        let Some(who) = self.conns.get(&conn).map(|c| c.who.clone()) else {
            return;
        };
        let id = msg.id;
        if !allowed(who.role, &msg.command) {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            let frame = error_frame(
                Some(id),
                ErrorCode::Forbidden,
                format!(
                    "a {} may not send {}",
                    who.role.as_str(),
                    msg.command.type_name()
                ),
            );
            self.send_to(conn, frame);
            return;
        }
        if matches!(
            msg.command,
            Command::Publish { .. }
                | Command::Unpublish { .. }
                | Command::SubscribeAnswer { .. }
                | Command::IceRestart { .. }
                | Command::IceCandidate { .. }
                | Command::MediaPreferences { .. }
        ) {
            let closed = match &msg.command {
                Command::Unpublish { pc } => Some(*pc),
                _ => None,
            };
            let result = self.media_command(&who, msg.command).await.map(|()| None);
            if let (Ok(_), Some(pc)) = (&result, closed) {
                let link = match pc {
                    sig::PeerConnectionKind::Screen => crate::health::Link::Screen,
                    _ => crate::health::Link::Publish,
                };
                let mut changes = crate::health::TickOut::default();
                self.health
                    .link_closed(self.clock.now(), &who.id, link, &mut changes);
                self.announce_alerts(changes.changes);
            }
            self.reply(conn, id, result);
            return;
        }
        if matches!(
            msg.command,
            Command::ClientStats { .. }
                | Command::AckAlert { .. }
                | Command::RequestKeyframe { .. }
                | Command::ForceLayer { .. }
        ) {
            let result = self.health_command(conn, &who, msg.command).await;
            self.reply(conn, id, result);
            return;
        }
        match &msg.command {
            Command::Remove {
                participant,
                revoke_invite,
            } => {
                let (participant, revoke) = (participant.clone(), *revoke_invite);
                let result = self.remove_participant(&who, &participant, revoke).await;
                self.reply(conn, id, result);
                return;
            }
            Command::AskReconnect { participant } => {
                let participant = participant.clone();
                let result = self.ask_reconnect(&who, &participant).await;
                self.reply(conn, id, result);
                return;
            }
            Command::Leave => {
                self.leave(conn, &who, id).await;
                return;
            }
            _ => {}
        }
        let now = self.clock.now();
        let command = match self.to_engine(msg.command) {
            Ok(c) => c,
            Err((code, message)) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                self.send_to(conn, error_frame(Some(id), code, message));
                return;
            }
        };
        let actor = floor::Actor {
            id: who.id.clone(),
            name: who.name.clone(),
            delegation: who.delegation.clone(),
            chair: who.role == Role::Moderator,
        };
        let before = self.engine.clone();
        let frame = match self.engine.handle(&actor, command, now) {
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                error_frame(Some(id), floor_error(&e), e.to_string())
            }
            Ok(outcome) if outcome.events.is_empty() => encode(&ServerMessage::Ack {
                id,
                seq: None,
                request: outcome.request,
            }),
            Ok(outcome) => {
                let events = outcome.events.iter().map(wire::event_out).collect();
                match self.commit(events, now).await {
                    Ok(seq) => encode(&ServerMessage::Ack {
                        id,
                        seq: Some(seq),
                        request: outcome.request,
                    }),
                    Err(e) => {
                        self.engine = before;
                        warn!(error = %e, "journal failed; command rolled back");
                        error_frame(
                            Some(id),
                            ErrorCode::JournalUnavailable,
                            "the journal could not be written; nothing changed",
                        )
                    }
                }
            }
        };
        self.send_to(conn, frame);
    }

    fn to_engine(&self, command: Command) -> Result<floor::Command, (ErrorCode, String)> {
        use floor::Command as F;
        Ok(match command {
            Command::Hello { .. } | Command::Ping { .. } => {
                return Err((
                    ErrorCode::InvalidState,
                    "hello and ping are answered by the connection".into(),
                ));
            }
            Command::Publish { .. }
            | Command::Unpublish { .. }
            | Command::SubscribeAnswer { .. }
            | Command::IceRestart { .. }
            | Command::IceCandidate { .. }
            | Command::MediaPreferences { .. }
            | Command::Remove { .. }
            | Command::AskReconnect { .. }
            | Command::Leave
            | Command::ClientStats { .. }
            | Command::AckAlert { .. }
            | Command::RequestKeyframe { .. }
            | Command::ForceLayer { .. } => {
                return Err((
                    ErrorCode::InvalidState,
                    "media and connection commands are not floor commands".into(),
                ));
            }
            Command::RaiseHand { list } => F::RaiseHand {
                list: wire::list_in(list),
            },
            Command::LowerHand => F::LowerHand,
            Command::RequestFor {
                name,
                delegation,
                list,
            } => F::RequestFor {
                name,
                delegation,
                list: wire::list_in(list),
            },
            Command::Cancel { request } => F::Cancel(request),
            Command::Accept { request } => F::Accept(request),
            Command::Grant { request } => F::Grant(request),
            Command::GiveFloor { participant } => {
                let p = self
                    .participants
                    .iter()
                    .find(|p| p.id == participant)
                    .ok_or_else(|| {
                        (
                            ErrorCode::NotFound,
                            format!("no participant {participant:?} in this meeting"),
                        )
                    })?;
                if p.presence != Presence::Joined
                    || !matches!(p.role, Role::Delegate | Role::Moderator | Role::Assistant)
                {
                    return Err((
                        ErrorCode::InvalidState,
                        format!("{} is not a connected speaker", p.name),
                    ));
                }
                F::GiveFloor(floor::Beneficiary {
                    participant: p.id.clone(),
                    name: p.name.clone(),
                    delegation: p.delegation.clone(),
                    in_room: false,
                })
            }
            Command::Deny { request } => F::Deny(request),
            Command::Revoke { request } => F::Revoke(request),
            Command::Next { list } => F::Next(list.map(wire::list_in)),
            Command::Move { request, position } => F::Move(request, position),
            Command::LowerAllHands => F::LowerAllHands,
            Command::ChairPriority => F::ChairPriority,
            Command::SetFloor { settings } => F::SetFloor(wire::settings_change_in(settings)),
            Command::AgendaStart { item } => F::AgendaStart(item),
            Command::AgendaPause => F::AgendaPause,
            Command::AgendaResume => F::AgendaResume,
            Command::AgendaExtend { minutes } => F::AgendaExtend(minutes),
            Command::AgendaEnd => F::AgendaEnd,
            Command::AgendaSkip { item } => F::AgendaSkip(item),
            Command::AgendaMove { item, position } => F::AgendaMove(item, position),
            Command::AgendaJump { item } => F::AgendaJump(item),
            Command::TimerMessage { text } => F::TimerMessage(text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::StatsAllowance;

    #[test]
    fn client_stats_allowance_is_one_a_second_with_two_back_to_back() {
        let mut a = StatsAllowance::new(0);
        assert!(a.take(0));
        assert!(
            a.take(10),
            "a delayed report and the next one, back to back"
        );
        assert!(!a.take(20), "a third at once");
        assert!(!a.take(900));
        assert!(a.take(1_020), "a second's credit earned back");
        assert!(!a.take(1_500));
        // Sustained: one a second passes for ever, never more.
        let mut passed = 0;
        for t in (2_000..62_000).step_by(250) {
            passed += usize::from(a.take(t));
        }
        assert!((60..=62).contains(&passed), "{passed} in 60 s");
        // Credit does not pile up over a quiet minute beyond two reports.
        let mut b = StatsAllowance::new(0);
        assert!(b.take(60_000) && b.take(60_000) && !b.take(60_000));
        // A clock that steps back earns nothing.
        let mut c = StatsAllowance::new(10_000);
        assert!(c.take(5_000) && c.take(5_000) && !c.take(5_500));
    }
}
