//! Types shared by client commands, server messages and the state snapshot.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, on the server's clock.
pub type Millis = i64;

/// What a participant may do in a meeting. Named in the invite token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The chair: runs the agenda and the floor.
    Moderator,
    /// A remote delegate joining from a browser.
    Delegate,
    /// The room endpoint: big screen, room camera and room audio mix.
    Room,
    /// A room technician watching stream health.
    Technician,
    /// Listens and watches only.
    Observer,
    /// A floor assistant who queues people sitting in the room on their behalf.
    Assistant,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 6] = [
        Role::Moderator,
        Role::Delegate,
        Role::Room,
        Role::Technician,
        Role::Observer,
        Role::Assistant,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Moderator => "moderator",
            Role::Delegate => "delegate",
            Role::Room => "room",
            Role::Technician => "technician",
            Role::Observer => "observer",
            Role::Assistant => "assistant",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseRoleError {
    input: String,
}

impl std::fmt::Display for ParseRoleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let allowed: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        write!(
            f,
            "unknown role {:?}; expected one of: {}",
            self.input,
            allowed.join(", ")
        )
    }
}

impl std::error::Error for ParseRoleError {}

impl std::str::FromStr for Role {
    type Err = ParseRoleError;

    /// Parses a role name, ignoring ASCII case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| ParseRoleError {
                input: wanted.chars().take(64).collect(),
            })
    }
}

/// Which list a floor request waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    /// The speakers list.
    #[default]
    Main,
    /// The reply / point-of-order list, which the chair may serve first.
    Reply,
}

/// BFCP floor request states (RFC 8855), by their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for the chair to accept it into the queue.
    Pending,
    /// In the queue, with a position.
    Accepted,
    /// Holding the floor.
    Granted,
    /// Final: the holder gave the floor back.
    Released,
    /// Final: the chair refused it.
    Denied,
    /// Final: withdrawn before it was granted.
    Cancelled,
    /// Final: the floor was taken away.
    Revoked,
}

impl RequestState {
    /// Whether the request is over (BFCP: to speak again, request again).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RequestState::Released
                | RequestState::Denied
                | RequestState::Cancelled
                | RequestState::Revoked
        )
    }
}

/// How requests are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The chair grants; requests queue.
    Moderated,
    /// First in, first out: a request is granted as soon as a microphone is free.
    Open,
}

/// What happens when every microphone is taken and another speaker is granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// New speakers wait (a chair grant is refused with `max_speakers`).
    Wait,
    /// The longest current speaker is cut off.
    Override,
}

/// Why a granted floor was taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    /// The chair revoked it.
    Chair,
    /// The speaking limit was reached and auto-revoke is on.
    LimitReached,
    /// Another speaker was granted while the floor was full in override mode.
    Override,
    /// The chair used chair priority.
    ChairPriority,
    /// The agenda moved on (item started, ended or jumped).
    AgendaChanged,
    /// The holder left the meeting.
    Left,
}

/// Kind of agenda item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// Opening, welcoming or closing remarks.
    Remarks,
    /// A timed presentation slot: starting it grants the presenter the floor.
    Presentation,
    /// A moderated dialogue with timed interventions.
    Dialogue,
    /// A break.
    Break,
}

/// Where an agenda item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// Not started yet.
    Planned,
    /// Running, with a deadline.
    Running,
    /// Paused, with time remaining.
    Paused,
    /// Over.
    Ended,
    /// Skipped without being started.
    Skipped,
}

/// Whether a participant is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Connected now.
    Joined,
    /// Left on purpose (or never came back after a server restart).
    Left,
    /// The connection dropped without a goodbye.
    ConnectionLost,
    /// The chair removed them (`remove`).
    Removed,
}

/// Who a floor request is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beneficiary {
    /// Participant id; for a person in the room without a device, a generated `room-<n>` id.
    pub participant: String,
    /// Display name.
    pub name: String,
    /// Delegation or organisation.
    pub delegation: String,
    /// True for someone sitting in the room, queued by the moderator or a floor assistant.
    pub in_room: bool,
}

/// One floor request as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// Request id, unique within the meeting.
    pub id: u64,
    /// Who will speak.
    pub beneficiary: Beneficiary,
    /// Who made the request (differs from the beneficiary for in-room speakers).
    pub requested_by: String,
    /// Which list.
    pub list: ListKind,
    /// BFCP state.
    pub state: RequestState,
    /// Queue position from 1 while accepted; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// When the request was made.
    pub requested_at: Millis,
    /// When the floor was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_at: Option<Millis>,
    /// When the speaking time runs out (absent: no limit, or paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Millis>,
    /// The speaking limit of this intervention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_ms: Option<i64>,
    /// Warning threshold before the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_ms: Option<i64>,
    /// The agenda slot this grant belongs to (a presenter's slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// True for the chair, who never counts towards the open microphones.
    #[serde(default)]
    pub chair: bool,
}

/// A presenter of an agenda item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenterInfo {
    /// Display name.
    pub name: String,
    /// Title or function.
    #[serde(default)]
    pub role: String,
    /// Organisation or delegation.
    #[serde(default)]
    pub organisation: String,
    /// Participant id when the presenter joins remotely; absent when at the lectern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
}

/// One agenda item as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemInfo {
    /// Item id.
    pub id: String,
    /// Kind.
    pub kind: ItemKind,
    /// Title.
    pub title: String,
    /// Presenters.
    #[serde(default)]
    pub presenters: Vec<PresenterInfo>,
    /// Planned duration.
    pub planned_ms: i64,
    /// Time added by the chair.
    #[serde(default)]
    pub extended_ms: i64,
    /// Per-intervention limit in a dialogue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervention_ms: Option<i64>,
    /// The wrap-up phase: `item_warning` comes this long before the deadline (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning_ms: Option<i64>,
    /// State.
    pub state: ItemState,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Millis>,
    /// When it must end (while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Millis>,
    /// Time left when paused (negative when paused in overrun).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<i64>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Millis>,
    /// Time spent beyond the allotted time (planned + extensions), once ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrun_ms: Option<i64>,
}

/// The floor: settings, holders and queues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloorView {
    /// How requests are served.
    pub policy: Policy,
    /// Open microphones allowed at once (the chair never counts).
    pub max_speakers: u32,
    /// What happens when full.
    pub when_full: WhenFull,
    /// Default per-intervention limit (0 = none).
    pub speaking_limit_ms: i64,
    /// Warning before the limit.
    pub warning_ms: i64,
    /// Whether the floor is revoked when the limit is reached.
    pub auto_revoke: bool,
    /// Whether requests wait as pending until the chair accepts them.
    pub screen_requests: bool,
    /// Granted requests, in grant order.
    pub holders: Vec<RequestInfo>,
    /// Requests waiting for the chair to accept them.
    pub pending: Vec<RequestInfo>,
    /// The speakers list, in order (positions 1..).
    pub queue: Vec<RequestInfo>,
    /// The reply / point-of-order list, in order (positions 1..).
    pub replies: Vec<RequestInfo>,
}

/// The agenda and the event's timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgendaView {
    /// Items in their current order.
    pub items: Vec<ItemInfo>,
    /// The running or paused item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Planned start of the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_start: Option<Millis>,
    /// Planned end: planned start (or the actual start) plus every item's planned time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_end: Option<Millis>,
    /// Projected end at the time of this view, from deadlines and the items still to come.
    pub projected_end: Millis,
}

/// A participant as other clients see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantInfo {
    /// Participant id (from the invite).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Delegation or organisation.
    pub delegation: String,
    /// Role.
    pub role: Role,
    /// Connection state.
    pub presence: Presence,
}

/// The meeting's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingInfo {
    /// Meeting id (named in the token).
    pub id: String,
    /// Title.
    pub title: String,
    /// Organiser.
    #[serde(default)]
    pub organiser: String,
    /// Venue.
    #[serde(default)]
    pub venue: String,
}

/// The whole state of a meeting at one sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Identity.
    pub meeting: MeetingInfo,
    /// Floor.
    pub floor: FloorView,
    /// Agenda.
    pub agenda: AgendaView,
    /// Everyone who has joined since the meeting began.
    pub participants: Vec<ParticipantInfo>,
    /// The last message the moderator sent to the speaker's timer screen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer_message: Option<String>,
}

/// What a published track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaSource {
    /// A microphone.
    Microphone,
    /// A camera (browser simulcast: up to three `rid` layers).
    Camera,
    /// A shared screen.
    Screen,
    /// The room's program: the room camera (simulcast) and the room audio mix. Room only.
    Program,
}

/// Which of a participant's two peer connections a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PeerConnectionKind {
    /// The connection the client sends on; the client offers.
    #[default]
    Publish,
    /// The connection the client receives on; the server offers.
    Subscribe,
    /// A second sending connection for a screen share, so that starting or stopping a share
    /// never renegotiates the camera's connection (and its simulcast layers).
    Screen,
}

impl PeerConnectionKind {
    /// The default of `publish`'s `pc`.
    pub fn is_publish(&self) -> bool {
        *self == PeerConnectionKind::Publish
    }
}

/// One track the client offers on its publish connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishTrack {
    /// The m-line's `mid` in the offer.
    pub mid: String,
    /// What it carries.
    pub source: MediaSource,
}

/// An ICE server for the browser's `RTCPeerConnection` (TURN credentials are minted per
/// participant and expire).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` or `turn:` URLs.
    pub urls: Vec<String>,
    /// TURN username (`<expiry>:<participant>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// What an m-line of the subscribe connection carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "slot", rename_all = "snake_case")]
pub enum SlotInfo {
    /// One participant's track.
    Track {
        /// The m-line's `mid`.
        mid: String,
        /// Whose.
        participant: String,
        /// What.
        source: MediaSource,
        /// `audio` or `video`.
        kind: String,
    },
    /// Whoever holds the floor (video); switches without renegotiation.
    Speaker {
        /// The m-line's `mid`.
        mid: String,
    },
    /// The presenter's screen; switches without renegotiation.
    Screen {
        /// The m-line's `mid`.
        mid: String,
    },
}

/// The size a client renders one received video m-line at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderSize {
    /// The m-line's `mid` (from `subscribe_offer`).
    pub mid: String,
    /// Rendered height in CSS pixels; 0 means "not shown".
    pub height: u32,
}
