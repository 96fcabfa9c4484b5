//! The floor engine's vocabulary: commands in, events out, state in between.

use std::fmt;

/// Milliseconds since the Unix epoch on the server's clock.
pub type Millis = i64;
/// A floor request id, unique within a meeting.
pub type RequestId = u64;

/// Who issues a command. The meeting layer has already checked the role may send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Participant id.
    pub id: String,
    /// Display name (used when the actor asks for the floor).
    pub name: String,
    /// Delegation (used when the actor asks for the floor).
    pub delegation: String,
    /// The chair: may act on any request; never counts towards the open microphones.
    pub chair: bool,
}

/// Which list a request waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum List {
    /// The speakers list.
    Main,
    /// The reply / point-of-order list.
    Reply,
}

/// BFCP request states (RFC 8855).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Waiting for the chair to accept it.
    Pending,
    /// Queued.
    Accepted,
    /// Holding the floor.
    Granted,
    /// Final: given back.
    Released,
    /// Final: refused.
    Denied,
    /// Final: withdrawn.
    Cancelled,
    /// Final: taken away.
    Revoked,
}

/// Moderated or open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The chair grants.
    Moderated,
    /// First in, first out, granted when a microphone is free.
    Open,
}

/// When every microphone is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// New speakers wait.
    Wait,
    /// The longest speaker is cut.
    Override,
}

/// Why a floor was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// By the chair.
    Chair,
    /// Speaking limit reached with auto-revoke on.
    LimitReached,
    /// Cut by an override grant.
    Override,
    /// Chair priority.
    ChairPriority,
    /// The agenda moved on.
    AgendaChanged,
    /// The holder left.
    Left,
}

/// Kind of agenda item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// Remarks.
    Remarks,
    /// Presentation slot.
    Presentation,
    /// Moderated dialogue.
    Dialogue,
    /// Break.
    Break,
}

/// Agenda item state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    /// Not started.
    Planned,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Over.
    Ended,
    /// Skipped.
    Skipped,
}

/// Who a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beneficiary {
    /// Participant id (`room-<n>` for someone in the room without a device).
    pub participant: String,
    /// Name.
    pub name: String,
    /// Delegation.
    pub delegation: String,
    /// Sitting in the room, queued on their behalf.
    pub in_room: bool,
}

/// A live floor request (final requests leave the engine; the journal keeps them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Id.
    pub id: RequestId,
    /// Who speaks.
    pub beneficiary: Beneficiary,
    /// Who asked.
    pub requested_by: String,
    /// Which list.
    pub list: List,
    /// State (never final while in the engine).
    pub state: State,
    /// When requested.
    pub requested_at: Millis,
    /// When granted.
    pub granted_at: Option<Millis>,
    /// When the speaking time runs out (None: no limit, or the slot is paused).
    pub deadline: Option<Millis>,
    /// Time left while the slot is paused.
    pub paused_remaining: Option<Millis>,
    /// Speaking limit.
    pub limit_ms: Option<i64>,
    /// Warning threshold.
    pub warning_ms: Option<i64>,
    /// Agenda slot of a presenter's grant.
    pub slot: Option<String>,
    /// Requested by the chair for the chair.
    pub chair: bool,
    /// Warning already announced.
    pub warned: bool,
    /// Overrun already announced.
    pub overran: bool,
}

impl Request {
    /// Whether this holder counts towards the open microphones (the chair and a slot's
    /// presenter do not).
    pub fn counts(&self) -> bool {
        !self.chair && self.slot.is_none()
    }
}

/// Floor settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Policy.
    pub policy: Policy,
    /// Open microphones, 1..=10.
    pub max_speakers: u32,
    /// When full.
    pub when_full: WhenFull,
    /// Per-intervention limit (0 = none).
    pub speaking_limit_ms: i64,
    /// Warning before the limit.
    pub warning_ms: i64,
    /// Revoke at the limit.
    pub auto_revoke: bool,
    /// Requests wait as pending until accepted (moderated only).
    pub screen_requests: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: Policy::Moderated,
            max_speakers: 1,
            when_full: WhenFull::Wait,
            speaking_limit_ms: 180_000,
            warning_ms: 30_000,
            auto_revoke: false,
            screen_requests: false,
        }
    }
}

/// A settings change; absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsChange {
    /// Policy.
    pub policy: Option<Policy>,
    /// Open microphones.
    pub max_speakers: Option<u32>,
    /// When full.
    pub when_full: Option<WhenFull>,
    /// Limit in seconds.
    pub speaking_limit_secs: Option<u32>,
    /// Warning in seconds.
    pub warning_secs: Option<u32>,
    /// Auto-revoke.
    pub auto_revoke: Option<bool>,
    /// Screen requests.
    pub screen_requests: Option<bool>,
}

/// A presenter of an agenda item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presenter {
    /// Name.
    pub name: String,
    /// Title or function.
    pub role: String,
    /// Organisation.
    pub organisation: String,
    /// Participant id when remote.
    pub participant: Option<String>,
}

/// An agenda item as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemPlan {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: ItemKind,
    /// Title.
    pub title: String,
    /// Presenters.
    pub presenters: Vec<Presenter>,
    /// Planned duration.
    pub planned_ms: i64,
    /// Per-intervention limit in a dialogue.
    pub intervention_ms: Option<i64>,
}

/// An agenda item with its progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The plan.
    pub plan: ItemPlan,
    /// State.
    pub state: ItemState,
    /// Minutes added, in ms.
    pub extended_ms: i64,
    /// Start.
    pub started_at: Option<Millis>,
    /// Deadline while running.
    pub deadline: Option<Millis>,
    /// Time left while paused (negative in overrun).
    pub remaining_ms: Option<i64>,
    /// End.
    pub ended_at: Option<Millis>,
    /// Overrun beyond the allotted time, once ended.
    pub overrun_ms: Option<i64>,
    /// Warning already announced.
    pub warned: bool,
    /// Overrun already announced.
    pub overran: bool,
}

/// Commands the engine understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Ask for the floor for yourself.
    RaiseHand {
        /// List.
        list: List,
    },
    /// Withdraw your request or give back your floor.
    LowerHand,
    /// Queue someone in the room.
    RequestFor {
        /// Name.
        name: String,
        /// Delegation.
        delegation: String,
        /// List.
        list: List,
    },
    /// Cancel or release a request you made (the chair: any).
    Cancel(RequestId),
    /// Accept a pending request.
    Accept(RequestId),
    /// Grant.
    Grant(RequestId),
    /// Give the floor to a participant directly (their live request, or a new one).
    GiveFloor(Beneficiary),
    /// Deny.
    Deny(RequestId),
    /// Revoke.
    Revoke(RequestId),
    /// Grant the first waiting (reply list first unless named).
    Next(Option<List>),
    /// Move a queued request to a 1-based position.
    Move(RequestId, u32),
    /// Cancel every waiting request.
    LowerAllHands,
    /// Revoke every microphone but the chair's.
    ChairPriority,
    /// Change settings.
    SetFloor(SettingsChange),
    /// Start an item (None: the next planned).
    AgendaStart(Option<String>),
    /// Pause.
    AgendaPause,
    /// Resume.
    AgendaResume,
    /// Extend by minutes.
    AgendaExtend(u32),
    /// End the current item.
    AgendaEnd,
    /// Skip a planned item.
    AgendaSkip(String),
    /// Move an item to a 1-based position.
    AgendaMove(String, u32),
    /// End the current item and start this one.
    AgendaJump(String),
    /// Text for the speaker's timer screen.
    TimerMessage(String),
}

/// What happened. Applying the same events in order to a fresh engine rebuilds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request was made (pending or accepted).
    Requested(Box<Request>),
    /// Pending → accepted.
    Accepted {
        /// Request.
        request: RequestId,
        /// Chair.
        by: String,
    },
    /// Granted.
    Granted {
        /// Request.
        request: RequestId,
        /// Chair, or None for the policy.
        by: Option<String>,
        /// Limit.
        limit_ms: Option<i64>,
        /// Warning.
        warning_ms: Option<i64>,
        /// Slot.
        slot: Option<String>,
    },
    /// Denied.
    Denied {
        /// Request.
        request: RequestId,
        /// Chair.
        by: String,
    },
    /// Cancelled.
    Cancelled {
        /// Request.
        request: RequestId,
        /// Who.
        by: String,
    },
    /// Released.
    Released {
        /// Request.
        request: RequestId,
        /// Who.
        by: String,
    },
    /// Revoked.
    Revoked {
        /// Request.
        request: RequestId,
        /// Chair, or None for the server.
        by: Option<String>,
        /// Why.
        reason: RevokeReason,
    },
    /// Moved in its list.
    Moved {
        /// Request.
        request: RequestId,
        /// New position.
        position: u32,
        /// Chair.
        by: String,
    },
    /// Every waiting request cancelled.
    HandsLowered {
        /// Requests.
        requests: Vec<RequestId>,
        /// Chair.
        by: String,
    },
    /// Chair priority (revocations follow).
    ChairPriority {
        /// Chair.
        by: String,
    },
    /// Warning threshold reached.
    SpeakingWarning {
        /// Request.
        request: RequestId,
    },
    /// Limit reached.
    SpeakingOverrun {
        /// Request.
        request: RequestId,
    },
    /// Settings now in force.
    SettingsChanged {
        /// Settings.
        settings: Settings,
        /// Chair.
        by: String,
    },
    /// Item started.
    ItemStarted {
        /// Item.
        item: String,
        /// Chair.
        by: String,
    },
    /// Item paused.
    ItemPaused {
        /// Item.
        item: String,
        /// Chair.
        by: String,
    },
    /// Item resumed.
    ItemResumed {
        /// Item.
        item: String,
        /// Chair.
        by: String,
    },
    /// Item extended.
    ItemExtended {
        /// Item.
        item: String,
        /// Minutes.
        minutes: u32,
        /// Chair.
        by: String,
    },
    /// Item ended.
    ItemEnded {
        /// Item.
        item: String,
        /// Chair.
        by: String,
    },
    /// Item skipped.
    ItemSkipped {
        /// Item.
        item: String,
        /// Chair.
        by: String,
    },
    /// Item moved.
    ItemMoved {
        /// Item.
        item: String,
        /// Position.
        position: u32,
        /// Chair.
        by: String,
    },
    /// Item wrap-up warning.
    ItemWarning {
        /// Item.
        item: String,
    },
    /// Item overrun.
    ItemOverrun {
        /// Item.
        item: String,
    },
    /// Timer screen message.
    TimerMessage {
        /// Text.
        text: String,
        /// Chair.
        by: String,
    },
}

/// Why a command was refused. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FloorError {
    /// No such request or item.
    NotFound(String),
    /// Does not fit the current state.
    InvalidState(String),
    /// Every microphone is taken (wait mode).
    MaxSpeakers(u32),
    /// A value out of range.
    InvalidValue(String),
    /// Not yours to act on.
    Forbidden(String),
}

impl fmt::Display for FloorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FloorError::NotFound(s)
            | FloorError::InvalidState(s)
            | FloorError::InvalidValue(s)
            | FloorError::Forbidden(s) => f.write_str(s),
            FloorError::MaxSpeakers(n) => write!(
                f,
                "all {n} microphone(s) are taken; revoke a speaker first or switch to override"
            ),
        }
    }
}

impl std::error::Error for FloorError {}

/// The result of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Events, already applied to the engine, in order.
    pub events: Vec<Event>,
    /// The request the command created or found (raise hand, request for).
    pub request: Option<RequestId>,
}
