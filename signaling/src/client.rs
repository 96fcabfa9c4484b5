//! Messages from a client to the server.

use serde::{Deserialize, Serialize};

use crate::common::{
    ListKind, Millis, PeerConnectionKind, Policy, PublishTrack, RenderSize, WhenFull,
};
use crate::health::{CandidateType, ClientDown, ClientUp, ForceLayer};

/// A client command with its id. On the wire the command's fields sit beside `id` and `type`:
/// `{"id": "7", "type": "raise_hand", "list": "main"}`.
///
/// Read client frames with [`parse_client_message`], not with serde directly: it checks the id,
/// tells the error cases apart, and also refuses unknown fields on commands without fields
/// (serde lets those through for unit variants of an internally tagged enum).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientMessage {
    /// Chosen by the client (at most 64 characters); echoed in the `ack` or `error`.
    pub id: String,
    /// The command.
    #[serde(flatten)]
    pub command: Command,
}

/// Optional floor settings; absent fields keep their value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloorSettings {
    /// Moderated or open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// 1..=10 open microphones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_speakers: Option<u32>,
    /// Wait or override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_full: Option<WhenFull>,
    /// Per-intervention limit in seconds (0 = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaking_limit_secs: Option<u32>,
    /// Warning before the limit, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_secs: Option<u32>,
    /// Revoke automatically at the limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_revoke: Option<bool>,
    /// Requests wait as pending until the chair accepts them (moderated only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_requests: Option<bool>,
}

/// Every command a client can send. Which roles may send which is in docs/SECURITY.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// First message on a connection: the protocol version spoken. Answered by `welcome`.
    Hello {
        /// Must equal [`crate::PROTOCOL_VERSION`].
        protocol: u32,
        /// Resume: the last event sequence number this client applied on its previous
        /// connection. When the server can resume, it answers `resumed` and sends the events
        /// after it; otherwise a full `welcome`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_seq: Option<u64>,
    },
    /// Clock sync: answered by `pong` with the server's time.
    Ping {
        /// The client's clock when sending.
        client_time: Millis,
    },
    /// Ask for the floor for yourself (a re-raise while queued is a no-op).
    RaiseHand {
        /// Speakers list or reply list.
        #[serde(default)]
        list: ListKind,
    },
    /// Withdraw your own request, or give back the floor you hold.
    LowerHand,
    /// Queue someone sitting in the room who has no device (assistant, moderator).
    RequestFor {
        /// Name as typed.
        name: String,
        /// Delegation as typed.
        #[serde(default)]
        delegation: String,
        /// Speakers list or reply list.
        #[serde(default)]
        list: ListKind,
    },
    /// Cancel a queued request, or release a held floor, made on someone's behalf.
    Cancel {
        /// Request id.
        request: u64,
    },
    /// Chair: accept a pending request into the queue.
    Accept {
        /// Request id.
        request: u64,
    },
    /// Chair: give the floor to a request.
    Grant {
        /// Request id.
        request: u64,
    },
    /// Chair: give the floor to a connected participant directly (their live request, if
    /// any, is granted; otherwise one is made for them).
    GiveFloor {
        /// Participant id.
        participant: String,
    },
    /// Chair: refuse a request.
    Deny {
        /// Request id.
        request: u64,
    },
    /// Chair: take the floor away.
    Revoke {
        /// Request id.
        request: u64,
    },
    /// Chair: grant the first waiting request (reply list first unless `list` says otherwise).
    Next {
        /// Which list to serve; absent: reply list first, then the speakers list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        list: Option<ListKind>,
    },
    /// Chair: move a queued request to position `position` (1-based) of its list.
    Move {
        /// Request id.
        request: u64,
        /// New position, clamped to the list's length.
        position: u32,
    },
    /// Chair: cancel every waiting request in both lists.
    LowerAllHands,
    /// Chair: revoke every open microphone but the chair's.
    ChairPriority,
    /// Chair: change floor settings.
    SetFloor {
        /// The settings to change.
        settings: FloorSettings,
    },
    /// Chair: start an item (absent: the next planned item).
    AgendaStart {
        /// Item id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item: Option<String>,
    },
    /// Chair: pause the running item.
    AgendaPause,
    /// Chair: resume the paused item.
    AgendaResume,
    /// Chair: add minutes to the current item.
    AgendaExtend {
        /// 1..=120 minutes.
        minutes: u32,
    },
    /// Chair: end the current item.
    AgendaEnd,
    /// Chair: skip a planned item.
    AgendaSkip {
        /// Item id.
        item: String,
    },
    /// Chair: move an item to position `position` (1-based) in the agenda.
    AgendaMove {
        /// Item id.
        item: String,
        /// New position.
        position: u32,
    },
    /// Chair: end the current item (if any) and start this one.
    AgendaJump {
        /// Item id.
        item: String,
    },
    /// Chair: show a message on the speaker's timer screen (empty clears it).
    TimerMessage {
        /// At most 280 characters.
        text: String,
    },
    /// The SDP offer of the client's publish connection (first or renegotiated), naming what
    /// each sending m-line carries. Answered by `publish_answer`.
    Publish {
        /// Which sending connection: `publish` (the default: microphone, camera, program) or
        /// `screen` (a screen share on a connection of its own).
        #[serde(default, skip_serializing_if = "PeerConnectionKind::is_publish")]
        pc: PeerConnectionKind,
        /// SDP offer (at most 64 KiB with the frame limit).
        sdp: String,
        /// The tracks, by `mid`.
        tracks: Vec<PublishTrack>,
    },
    /// Chair: removes a participant from the meeting: their connections are closed (`goodbye`
    /// `removed`), their open requests cancelled or revoked.
    Remove {
        /// The participant id.
        participant: String,
        /// Also revoke the invites they joined with: those links stop working (401
        /// `token_revoked`), here and after a restart.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        revoke_invite: bool,
    },
    /// Leave the meeting on purpose: the floor and the requests of the participant go at
    /// once (a lost connection keeps them for the resume grace period).
    Leave,
    /// Chair: asks a participant's client to reconnect (`goodbye` `reconnect`): it comes back
    /// at once with fresh media; its queue place and floor are kept.
    AskReconnect {
        /// The participant id.
        participant: String,
    },
    /// Closes one of the client's sending connections (`publish` or `screen`): its tracks
    /// leave every subscriber. Stopping a screen share, or going listen-only.
    Unpublish {
        /// Which one.
        pc: PeerConnectionKind,
    },
    /// Restart ICE on the subscribe connection (its network changed or failed): the server
    /// answers with a `subscribe_offer` carrying new ICE credentials, to be answered as any
    /// other. A sending connection restarts by the client: a new `publish` offer with new
    /// credentials (`RTCPeerConnection.restartIce()`).
    IceRestart {
        /// Which connection: only `subscribe`.
        pc: PeerConnectionKind,
    },
    /// The client's SDP answer to the server's `subscribe_offer`.
    SubscribeAnswer {
        /// SDP answer.
        sdp: String,
    },
    /// A trickled ICE candidate of one of the client's connections (empty `candidate`: end of
    /// candidates).
    IceCandidate {
        /// Which connection.
        pc: PeerConnectionKind,
        /// `candidate:...` line, as the browser gives it.
        candidate: String,
        /// The m-line's `mid`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// The m-line's index.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_m_line_index: Option<u16>,
    },
    /// What the client wants to receive beyond the defaults. The first one opens the
    /// subscribe connection.
    MediaPreferences {
        /// Other delegates' cameras as thumbnails (low layer).
        thumbnails: bool,
        /// Which other microphones get an m-line (absent: as before; at first `all`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        microphones: Option<Microphones>,
        /// The height each video m-line is rendered at: the server picks the simulcast layer
        /// that covers it (absent: the slot's default layer).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        render: Vec<RenderSize>,
    },
    /// The client's summary of its own streams (getStats), every 2 s; at most one a second is
    /// taken. Not acked on success beyond the usual `ack`.
    ClientStats {
        /// Its sending side.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        up: Option<ClientUp>,
        /// Its receiving side.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        down: Option<ClientDown>,
        /// The local candidate type of its selected ICE pair.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        candidate: Option<CandidateType>,
    },
    /// Technician or chair: acknowledge an alert.
    AckAlert {
        /// Alert id.
        alert: u64,
    },
    /// Technician: ask a participant's camera (and screen) for a keyframe now.
    RequestKeyframe {
        /// Participant id.
        participant: String,
    },
    /// Technician: force what a participant receives (lowest layer, audio only, or back to
    /// automatic).
    ForceLayer {
        /// Participant id.
        participant: String,
        /// The override.
        layer: ForceLayer,
    },
}

impl Command {
    /// Every command's wire `type`, for validation and documentation.
    pub const TYPES: &'static [&'static str] = &[
        "hello",
        "ping",
        "raise_hand",
        "lower_hand",
        "request_for",
        "cancel",
        "accept",
        "grant",
        "give_floor",
        "deny",
        "revoke",
        "next",
        "move",
        "lower_all_hands",
        "chair_priority",
        "set_floor",
        "agenda_start",
        "agenda_pause",
        "agenda_resume",
        "agenda_extend",
        "agenda_end",
        "agenda_skip",
        "agenda_move",
        "agenda_jump",
        "timer_message",
        "remove",
        "leave",
        "ask_reconnect",
        "publish",
        "unpublish",
        "subscribe_answer",
        "ice_restart",
        "ice_candidate",
        "media_preferences",
        "client_stats",
        "ack_alert",
        "request_keyframe",
        "force_layer",
    ];

    /// This command's wire `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Command::Hello { .. } => "hello",
            Command::Ping { .. } => "ping",
            Command::RaiseHand { .. } => "raise_hand",
            Command::LowerHand => "lower_hand",
            Command::RequestFor { .. } => "request_for",
            Command::Cancel { .. } => "cancel",
            Command::Accept { .. } => "accept",
            Command::Grant { .. } => "grant",
            Command::GiveFloor { .. } => "give_floor",
            Command::Deny { .. } => "deny",
            Command::Revoke { .. } => "revoke",
            Command::Next { .. } => "next",
            Command::Move { .. } => "move",
            Command::LowerAllHands => "lower_all_hands",
            Command::ChairPriority => "chair_priority",
            Command::SetFloor { .. } => "set_floor",
            Command::AgendaStart { .. } => "agenda_start",
            Command::AgendaPause => "agenda_pause",
            Command::AgendaResume => "agenda_resume",
            Command::AgendaExtend { .. } => "agenda_extend",
            Command::AgendaEnd => "agenda_end",
            Command::AgendaSkip { .. } => "agenda_skip",
            Command::AgendaMove { .. } => "agenda_move",
            Command::AgendaJump { .. } => "agenda_jump",
            Command::TimerMessage { .. } => "timer_message",
            Command::Remove { .. } => "remove",
            Command::Leave => "leave",
            Command::AskReconnect { .. } => "ask_reconnect",
            Command::Publish { .. } => "publish",
            Command::Unpublish { .. } => "unpublish",
            Command::IceRestart { .. } => "ice_restart",
            Command::SubscribeAnswer { .. } => "subscribe_answer",
            Command::IceCandidate { .. } => "ice_candidate",
            Command::MediaPreferences { .. } => "media_preferences",
            Command::ClientStats { .. } => "client_stats",
            Command::AckAlert { .. } => "ack_alert",
            Command::RequestKeyframe { .. } => "request_keyframe",
            Command::ForceLayer { .. } => "force_layer",
        }
    }

    /// Whether the variant has fields (false for the unit variants).
    fn has_fields(&self) -> bool {
        match self {
            Command::LowerHand
            | Command::LowerAllHands
            | Command::ChairPriority
            | Command::AgendaPause
            | Command::AgendaResume
            | Command::AgendaEnd
            | Command::Leave => false,
            Command::Hello { .. }
            | Command::Ping { .. }
            | Command::RaiseHand { .. }
            | Command::RequestFor { .. }
            | Command::Cancel { .. }
            | Command::Accept { .. }
            | Command::Grant { .. }
            | Command::GiveFloor { .. }
            | Command::Deny { .. }
            | Command::Revoke { .. }
            | Command::Next { .. }
            | Command::Move { .. }
            | Command::SetFloor { .. }
            | Command::AgendaStart { .. }
            | Command::AgendaExtend { .. }
            | Command::AgendaSkip { .. }
            | Command::AgendaMove { .. }
            | Command::AgendaJump { .. }
            | Command::TimerMessage { .. }
            | Command::Remove { .. }
            | Command::AskReconnect { .. }
            | Command::Publish { .. }
            | Command::Unpublish { .. }
            | Command::IceRestart { .. }
            | Command::SubscribeAnswer { .. }
            | Command::IceCandidate { .. }
            | Command::MediaPreferences { .. }
            | Command::ClientStats { .. }
            | Command::AckAlert { .. }
            | Command::RequestKeyframe { .. }
            | Command::ForceLayer { .. } => true,
        }
    }
}

/// Why a client frame could not be read as a command. Each maps to an error `code`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON.
    Malformed(String),
    /// JSON, but not an object.
    NotAnObject,
    /// No string `id`, an empty one, or one longer than 64 characters.
    BadId,
    /// No string `type`.
    MissingType,
    /// A `type` this protocol does not have.
    UnknownType(String),
    /// A known type whose fields are missing or wrong.
    InvalidFields {
        /// The command type.
        kind: String,
        /// serde's description (names the field).
        detail: String,
    },
}

impl ParseError {
    /// The stable error code sent to the client.
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            ParseError::Malformed(_) | ParseError::NotAnObject => ErrorCode::MalformedJson,
            ParseError::BadId => ErrorCode::BadId,
            ParseError::MissingType | ParseError::UnknownType(_) => ErrorCode::UnknownType,
            ParseError::InvalidFields { .. } => ErrorCode::InvalidFields,
        }
    }

    /// The human-readable explanation sent to the client in the error's `message`.
    pub fn message(&self) -> String {
        match self {
            ParseError::Malformed(e) => format!("message is not valid JSON: {e}"),
            ParseError::NotAnObject => "message must be a JSON object".into(),
            ParseError::BadId => "message needs a string \"id\" of 1 to 64 characters".into(),
            ParseError::MissingType => "message needs a string \"type\"".into(),
            ParseError::UnknownType(t) => format!("unknown message type {t:?}"),
            ParseError::InvalidFields { kind, detail } => {
                format!("invalid fields for {kind:?}: {detail}")
            }
        }
    }
}

/// Longest accepted command id, in characters.
pub const MAX_ID_LEN: usize = 64;

/// Reads one client frame. On error, also returns the message id when it could be read, so
/// the error reply can carry it.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, (Option<String>, ParseError)> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| (None, ParseError::Malformed(e.to_string())))?;
    let obj = value.as_object().ok_or((None, ParseError::NotAnObject))?;
    let id = match obj.get("id").and_then(|v| v.as_str()) {
        Some(id) if !id.is_empty() && id.chars().count() <= MAX_ID_LEN => id.to_owned(),
        _ => return Err((None, ParseError::BadId)),
    };
    let kind = match obj.get("type").and_then(|v| v.as_str()) {
        Some(k) => k,
        None => return Err((Some(id), ParseError::MissingType)),
    };
    if !Command::TYPES.contains(&kind) {
        return Err((
            Some(id),
            ParseError::UnknownType(kind.chars().take(64).collect()),
        ));
    }
    let kind = kind.to_owned();
    let mut fields = value;
    if let Some(obj) = fields.as_object_mut() {
        obj.remove("id");
    }
    // serde ignores `deny_unknown_fields` for unit variants of an internally tagged enum, so a
    // field sent to a command that has none (`agenda_end` with an `item`) is caught here.
    let extra = fields
        .as_object()
        .and_then(|obj| obj.keys().find(|k| *k != "type").cloned());
    match serde_json::from_value::<Command>(fields) {
        Ok(command) => match extra {
            Some(field) if !command.has_fields() => Err((
                Some(id),
                ParseError::InvalidFields {
                    kind,
                    detail: format!("unknown field `{field}`, there are no fields"),
                },
            )),
            _ => Ok(ClientMessage { id, command }),
        },
        Err(e) => Err((
            Some(id),
            ParseError::InvalidFields {
                kind,
                detail: e.to_string(),
            },
        )),
    }
}

/// Which other participants' microphones a subscriber receives (`media_preferences`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Microphones {
    /// Every other microphone has an m-line from the start; the floor gate drops the closed
    /// ones at the server, so a grant is heard at once. The default.
    #[default]
    All,
    /// Only the microphones whose floor gate is open (the chair, the room, the floor holders):
    /// their m-lines come and go with the floor, and after the first grant a new speaker takes
    /// over the previous one's quiet m-line (`subscribe_slots`, no renegotiation). For large
    /// meetings: a forum of 300 would otherwise give every subscriber 300 audio m-lines.
    Open,
}
