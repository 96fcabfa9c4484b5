//! Messages from the server to a client, and the meeting events (which are also the journal).

use serde::{Deserialize, Serialize};

use crate::common::{
    AgendaView, FloorView, IceServer, ListKind, Millis, ParticipantInfo, PeerConnectionKind,
    Policy, Presence, RequestInfo, RevokeReason, SlotInfo, Snapshot, WhenFull,
};
use crate::health::{AlertInfo, ParticipantHealth};

/// Every message the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Answer to `hello`: who you are and the whole state at `seq`. Events follow from `seq + 1`.
    Welcome {
        /// The server's protocol version.
        protocol: u32,
        /// The server's clock when this was sent.
        server_time: Millis,
        /// The participant this connection speaks for.
        you: ParticipantInfo,
        /// The last event reflected in `snapshot`.
        seq: u64,
        /// The meeting's state.
        snapshot: Box<Snapshot>,
        /// ICE servers for this participant's peer connections (absent: none needed, e.g.
        /// on a LAN, or no media).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
        /// A token for this participant's later connections, when the invite was for one use
        /// only (the invite link itself no longer works).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_token: Option<String>,
    },
    /// The answer to a `hello` with `resume_seq` that the server can resume: the client keeps
    /// its state, and the events after `seq` follow at once (with the current floor and
    /// agenda views on the last ones that touch them), then the live stream.
    Resumed {
        /// The server's protocol version.
        protocol: u32,
        /// The server's clock when this was sent.
        server_time: Millis,
        /// The participant this connection speaks for.
        you: ParticipantInfo,
        /// The client's `resume_seq`: events follow from `seq + 1`.
        seq: u64,
        /// ICE servers (fresh TURN credentials).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<IceServer>,
        /// As in `welcome`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_token: Option<String>,
        /// The server kept this participant's peer connections through the drop (a resume
        /// within the grace period): the client keeps its own, and the server re-offers the
        /// subscribe connection with new ICE credentials right after this message. False: they
        /// are gone, publish and subscribe afresh.
        #[serde(default, skip_serializing_if = "is_false")]
        media_held: bool,
    },
    /// A command succeeded.
    Ack {
        /// The command's id.
        id: String,
        /// The last event this command caused (absent when it changed nothing, e.g. a re-raise).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// The floor request the command created or found (raise_hand, request_for).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request: Option<u64>,
    },
    /// A command, or a frame, was refused. The connection stays open unless said otherwise.
    Error {
        /// The command's id, when it could be read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Stable machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// Answer to `ping`.
    Pong {
        /// The ping's id.
        id: String,
        /// Echo of the client's time.
        client_time: Millis,
        /// The server's clock when answering.
        server_time: Millis,
    },
    /// A meeting event, in sequence.
    Event {
        /// Per-meeting sequence number, gap-free.
        seq: u64,
        /// Server time of the event.
        at: Millis,
        /// What happened.
        event: Event,
        /// The floor after this event (sent with floor events).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        floor: Option<Box<FloorView>>,
        /// The agenda after this event (sent with agenda events).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agenda: Option<Box<AgendaView>>,
    },
    /// The server's SDP answer to the client's `publish` offer.
    PublishAnswer {
        /// Which sending connection this answers (`publish` or `screen`).
        pc: PeerConnectionKind,
        /// SDP answer.
        sdp: String,
    },
    /// The server's SDP offer for the client's subscribe connection: first, and whenever the
    /// set of slots changes (a participant arrives or leaves). A change of speaker or
    /// presenter needs none: the `speaker` and `screen` slots switch in place.
    SubscribeOffer {
        /// SDP offer.
        sdp: String,
        /// What each m-line carries.
        slots: Vec<SlotInfo>,
    },
    /// What the m-lines of the subscribe connection carry now, without a new offer: sent when
    /// the server hands an m-line that went quiet (its participant left) to a newcomer's track
    /// of the same kind, reusing its sender, SSRC and numbering. Lists every live m-line.
    SubscribeSlots {
        /// What each m-line carries.
        slots: Vec<SlotInfo>,
    },
    /// A participant's microphone started or stopped carrying speech (from the RFC 6464 audio
    /// levels their browser puts on every packet, measured at the server before the floor
    /// gate). Not journaled. Sent to everyone when the participant can be heard; when the floor
    /// gate holds their audio back (`heard: false`), only to them and to the moderator and
    /// technicians ("speaking while muted").
    Speaking {
        /// Whose microphone.
        participant: String,
        /// Speaking now.
        speaking: bool,
        /// Mean level over the last half second: 0 (loudest) to 127 (silence), -dBov.
        level: u8,
        /// Whether the floor gate passes their audio now.
        heard: bool,
    },
    /// Stream health of every participant, every 2 s, to technicians. Not journaled.
    Health {
        /// When it was computed.
        at: Millis,
        /// One row per participant with media.
        participants: Vec<ParticipantHealth>,
        /// Alerts still on or not yet acknowledged, oldest first.
        alerts: Vec<AlertInfo>,
        /// The server process's CPU use over the last period, percent of one core.
        cpu_pct: f64,
    },
    /// An alert was raised, cleared or acknowledged: to technicians, and for a floor alert to
    /// the chair. Not journaled (the history keeps it).
    Alert {
        /// The alert as it is now.
        alert: AlertInfo,
    },
    /// A trickled ICE candidate of the server (empty `candidate`: end of candidates).
    IceCandidate {
        /// Which of the client's connections.
        pc: PeerConnectionKind,
        /// `candidate:...` line.
        candidate: String,
        /// The m-line's `mid`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// The m-line's index.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_m_line_index: Option<u16>,
    },
    /// The server is closing this connection.
    Goodbye {
        /// Why: `shutdown`, `flood`, `replaced` (the same participant joined elsewhere),
        /// `removed` (by the chair: do not reconnect), `reconnect` (the chair asks the client
        /// to reconnect now).
        reason: String,
    },
}

/// Stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    MalformedJson,
    /// The message has no usable `id`.
    BadId,
    /// The `type` is missing or unknown.
    UnknownType,
    /// Fields are missing or of the wrong type.
    InvalidFields,
    /// A field has a value out of range.
    InvalidValue,
    /// `hello` named a protocol version this server does not speak.
    UnsupportedProtocol,
    /// A command came before `hello`.
    HelloRequired,
    /// The role may not send this command.
    Forbidden,
    /// The request, item or participant named does not exist.
    NotFound,
    /// The command does not fit the current state (e.g. granting a cancelled request).
    InvalidState,
    /// Every microphone is taken and the floor is in wait mode.
    MaxSpeakers,
    /// The frame exceeds the size limit.
    TooLarge,
    /// Too many commands: slow down.
    RateLimited,
    /// Binary frames are not part of the protocol.
    BinaryFrame,
    /// The journal could not be written; nothing changed.
    JournalUnavailable,
    /// This server runs without media, or the media engine refused the request.
    MediaUnavailable,
    /// An SDP that cannot be used: malformed, too large, or with no codec we support.
    BadSdp,
    /// As many participants of this role as the server allows are connected already.
    MeetingFull,
}

/// Floor settings as recorded in an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloorSettingsInfo {
    /// Moderated or open.
    pub policy: Policy,
    /// Open microphones allowed at once.
    pub max_speakers: u32,
    /// Wait or override.
    pub when_full: WhenFull,
    /// Default per-intervention limit (0 = none).
    pub speaking_limit_ms: i64,
    /// Warning before the limit.
    pub warning_ms: i64,
    /// Revoke at the limit.
    pub auto_revoke: bool,
    /// Requests wait as pending until accepted.
    pub screen_requests: bool,
}

/// Something that happened in a meeting. Events are journaled (synced) before they are sent;
/// replaying them rebuilds the meeting. `by` names the participant who caused it; absent means
/// the server did (policy, timer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A participant connected.
    ParticipantJoined {
        /// Who.
        participant: ParticipantInfo,
    },
    /// A participant disconnected.
    ParticipantLeft {
        /// Participant id.
        participant: String,
        /// `left`, `connection_lost` or `removed`.
        presence: Presence,
        /// Who made them go (the chair's `remove`, a chair's or technician's
        /// `ask_reconnect`); absent when they went themselves.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// A floor request was made (state `pending` or `accepted`).
    FloorRequested {
        /// The new request.
        request: RequestInfo,
    },
    /// The chair accepted a pending request into the queue.
    FloorAccepted {
        /// Request id.
        request: u64,
        /// The chair.
        by: String,
    },
    /// The floor was granted.
    FloorGranted {
        /// Request id.
        request: u64,
        /// The chair, or absent when the policy or the agenda granted it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Speaking limit of this intervention.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit_ms: Option<i64>,
        /// Warning threshold.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        warning_ms: Option<i64>,
        /// The agenda slot this grant belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot: Option<String>,
    },
    /// The chair refused a request.
    FloorDenied {
        /// Request id.
        request: u64,
        /// The chair.
        by: String,
    },
    /// A waiting request was withdrawn.
    FloorCancelled {
        /// Request id.
        request: u64,
        /// Who withdrew it.
        by: String,
    },
    /// The holder gave the floor back.
    FloorReleased {
        /// Request id.
        request: u64,
        /// Who released it (the holder, or whoever queued them).
        by: String,
    },
    /// The floor was taken away.
    FloorRevoked {
        /// Request id.
        request: u64,
        /// The chair, or absent for the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Why.
        reason: RevokeReason,
    },
    /// The chair moved a request in its list.
    FloorMoved {
        /// Request id.
        request: u64,
        /// New position, 1-based.
        position: u32,
        /// The chair.
        by: String,
    },
    /// The chair lowered every hand.
    HandsLowered {
        /// Requests cancelled.
        requests: Vec<u64>,
        /// The chair.
        by: String,
    },
    /// The chair used chair priority; revocations follow.
    ChairPriority {
        /// The chair.
        by: String,
    },
    /// A speaker reached the warning threshold.
    SpeakingWarning {
        /// Request id.
        request: u64,
    },
    /// A speaker reached the limit and is now in overrun.
    SpeakingOverrun {
        /// Request id.
        request: u64,
    },
    /// Floor settings changed.
    FloorSettingsChanged {
        /// The settings now in force.
        settings: FloorSettingsInfo,
        /// The chair.
        by: String,
    },
    /// An agenda item started.
    ItemStarted {
        /// Item id.
        item: String,
        /// The chair.
        by: String,
    },
    /// The running item was paused.
    ItemPaused {
        /// Item id.
        item: String,
        /// The chair.
        by: String,
    },
    /// The paused item resumed.
    ItemResumed {
        /// Item id.
        item: String,
        /// The chair.
        by: String,
    },
    /// Time was added to the current item.
    ItemExtended {
        /// Item id.
        item: String,
        /// Minutes added.
        minutes: u32,
        /// The chair.
        by: String,
    },
    /// The current item ended.
    ItemEnded {
        /// Item id.
        item: String,
        /// The chair.
        by: String,
    },
    /// A planned item was skipped.
    ItemSkipped {
        /// Item id.
        item: String,
        /// The chair.
        by: String,
    },
    /// An item moved in the agenda.
    ItemMoved {
        /// Item id.
        item: String,
        /// New position, 1-based.
        position: u32,
        /// The chair.
        by: String,
    },
    /// The current item reached its wrap-up warning.
    ItemWarning {
        /// Item id.
        item: String,
    },
    /// The current item ran past its deadline.
    ItemOverrun {
        /// Item id.
        item: String,
    },
    /// A message for the speaker's timer screen.
    TimerMessage {
        /// The text (empty clears).
        text: String,
        /// The chair.
        by: String,
    },
    /// The server restarted: everyone is offline until they reconnect.
    ServerRestarted,
}

impl Event {
    /// The wire `type` of this event (also the journal's `kind` column).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::ParticipantJoined { .. } => "participant_joined",
            Event::ParticipantLeft { .. } => "participant_left",
            Event::FloorRequested { .. } => "floor_requested",
            Event::FloorAccepted { .. } => "floor_accepted",
            Event::FloorGranted { .. } => "floor_granted",
            Event::FloorDenied { .. } => "floor_denied",
            Event::FloorCancelled { .. } => "floor_cancelled",
            Event::FloorReleased { .. } => "floor_released",
            Event::FloorRevoked { .. } => "floor_revoked",
            Event::FloorMoved { .. } => "floor_moved",
            Event::HandsLowered { .. } => "hands_lowered",
            Event::ChairPriority { .. } => "chair_priority",
            Event::SpeakingWarning { .. } => "speaking_warning",
            Event::SpeakingOverrun { .. } => "speaking_overrun",
            Event::FloorSettingsChanged { .. } => "floor_settings_changed",
            Event::ItemStarted { .. } => "item_started",
            Event::ItemPaused { .. } => "item_paused",
            Event::ItemResumed { .. } => "item_resumed",
            Event::ItemExtended { .. } => "item_extended",
            Event::ItemEnded { .. } => "item_ended",
            Event::ItemSkipped { .. } => "item_skipped",
            Event::ItemMoved { .. } => "item_moved",
            Event::ItemWarning { .. } => "item_warning",
            Event::ItemOverrun { .. } => "item_overrun",
            Event::TimerMessage { .. } => "timer_message",
            Event::ServerRestarted => "server_restarted",
        }
    }

    /// Every event's wire `type`.
    pub const KINDS: &'static [&'static str] = &[
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
        "server_restarted",
    ];

    /// The participant who caused the event, if any (the journal's `actor` column).
    pub fn actor(&self) -> Option<&str> {
        match self {
            Event::FloorAccepted { by, .. }
            | Event::FloorDenied { by, .. }
            | Event::FloorCancelled { by, .. }
            | Event::FloorReleased { by, .. }
            | Event::FloorMoved { by, .. }
            | Event::HandsLowered { by, .. }
            | Event::ChairPriority { by }
            | Event::FloorSettingsChanged { by, .. }
            | Event::ItemStarted { by, .. }
            | Event::ItemPaused { by, .. }
            | Event::ItemResumed { by, .. }
            | Event::ItemExtended { by, .. }
            | Event::ItemEnded { by, .. }
            | Event::ItemSkipped { by, .. }
            | Event::ItemMoved { by, .. }
            | Event::TimerMessage { by, .. } => Some(by),
            Event::FloorGranted { by, .. } | Event::FloorRevoked { by, .. } => by.as_deref(),
            Event::FloorRequested { request } => Some(&request.requested_by),
            Event::ParticipantJoined { participant } => Some(&participant.id),
            Event::ParticipantLeft {
                participant, by, ..
            } => Some(by.as_ref().unwrap_or(participant)),
            Event::SpeakingWarning { .. }
            | Event::SpeakingOverrun { .. }
            | Event::ItemWarning { .. }
            | Event::ItemOverrun { .. }
            | Event::ServerRestarted => None,
        }
    }

    /// Whether the event changes the floor (so its message carries the floor view).
    pub fn touches_floor(&self) -> bool {
        !matches!(
            self,
            Event::ParticipantJoined { .. }
                | Event::ParticipantLeft { .. }
                | Event::ItemWarning { .. }
                | Event::ItemOverrun { .. }
                | Event::ItemMoved { .. }
                | Event::ItemSkipped { .. }
                | Event::TimerMessage { .. }
        )
    }

    /// Whether the event changes the agenda (so its message carries the agenda view).
    pub fn touches_agenda(&self) -> bool {
        self.kind().starts_with("item_") || matches!(self, Event::ServerRestarted)
    }
}

/// Convenience: a list kind's wire name.
pub fn list_name(list: ListKind) -> &'static str {
    match list {
        ListKind::Main => "main",
        ListKind::Reply => "reply",
    }
}

/// For `skip_serializing_if`: leave a false flag out.
fn is_false(b: &bool) -> bool {
    !*b
}
