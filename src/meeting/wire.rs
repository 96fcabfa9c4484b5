//! Conversions between the floor engine's types and the wire protocol's. The engine stays
//! `std`-only; this is the one place that knows both vocabularies.

use roundtable_signaling as sig;

use crate::floor::{self, Engine};

/// Wire list kind from engine list.
pub fn list_out(l: floor::List) -> sig::ListKind {
    match l {
        floor::List::Main => sig::ListKind::Main,
        floor::List::Reply => sig::ListKind::Reply,
    }
}

/// Engine list from wire list kind.
pub fn list_in(l: sig::ListKind) -> floor::List {
    match l {
        sig::ListKind::Main => floor::List::Main,
        sig::ListKind::Reply => floor::List::Reply,
    }
}

fn state_out(s: floor::State) -> sig::RequestState {
    match s {
        floor::State::Pending => sig::RequestState::Pending,
        floor::State::Accepted => sig::RequestState::Accepted,
        floor::State::Granted => sig::RequestState::Granted,
        floor::State::Released => sig::RequestState::Released,
        floor::State::Denied => sig::RequestState::Denied,
        floor::State::Cancelled => sig::RequestState::Cancelled,
        floor::State::Revoked => sig::RequestState::Revoked,
    }
}

fn state_in(s: sig::RequestState) -> floor::State {
    match s {
        sig::RequestState::Pending => floor::State::Pending,
        sig::RequestState::Accepted => floor::State::Accepted,
        sig::RequestState::Granted => floor::State::Granted,
        sig::RequestState::Released => floor::State::Released,
        sig::RequestState::Denied => floor::State::Denied,
        sig::RequestState::Cancelled => floor::State::Cancelled,
        sig::RequestState::Revoked => floor::State::Revoked,
    }
}

/// Wire policy.
pub fn policy_out(p: floor::Policy) -> sig::Policy {
    match p {
        floor::Policy::Moderated => sig::Policy::Moderated,
        floor::Policy::Open => sig::Policy::Open,
    }
}

/// Engine policy.
pub fn policy_in(p: sig::Policy) -> floor::Policy {
    match p {
        sig::Policy::Moderated => floor::Policy::Moderated,
        sig::Policy::Open => floor::Policy::Open,
    }
}

/// Wire when-full.
pub fn when_full_out(w: floor::WhenFull) -> sig::WhenFull {
    match w {
        floor::WhenFull::Wait => sig::WhenFull::Wait,
        floor::WhenFull::Override => sig::WhenFull::Override,
    }
}

/// Engine when-full.
pub fn when_full_in(w: sig::WhenFull) -> floor::WhenFull {
    match w {
        sig::WhenFull::Wait => floor::WhenFull::Wait,
        sig::WhenFull::Override => floor::WhenFull::Override,
    }
}

fn reason_out(r: floor::RevokeReason) -> sig::RevokeReason {
    match r {
        floor::RevokeReason::Chair => sig::RevokeReason::Chair,
        floor::RevokeReason::LimitReached => sig::RevokeReason::LimitReached,
        floor::RevokeReason::Override => sig::RevokeReason::Override,
        floor::RevokeReason::ChairPriority => sig::RevokeReason::ChairPriority,
        floor::RevokeReason::AgendaChanged => sig::RevokeReason::AgendaChanged,
        floor::RevokeReason::Left => sig::RevokeReason::Left,
    }
}

fn reason_in(r: sig::RevokeReason) -> floor::RevokeReason {
    match r {
        sig::RevokeReason::Chair => floor::RevokeReason::Chair,
        sig::RevokeReason::LimitReached => floor::RevokeReason::LimitReached,
        sig::RevokeReason::Override => floor::RevokeReason::Override,
        sig::RevokeReason::ChairPriority => floor::RevokeReason::ChairPriority,
        sig::RevokeReason::AgendaChanged => floor::RevokeReason::AgendaChanged,
        sig::RevokeReason::Left => floor::RevokeReason::Left,
    }
}

/// Wire item kind.
pub fn kind_out(k: floor::ItemKind) -> sig::ItemKind {
    match k {
        floor::ItemKind::Remarks => sig::ItemKind::Remarks,
        floor::ItemKind::Presentation => sig::ItemKind::Presentation,
        floor::ItemKind::Dialogue => sig::ItemKind::Dialogue,
        floor::ItemKind::Break => sig::ItemKind::Break,
    }
}

fn item_state_out(s: floor::ItemState) -> sig::ItemState {
    match s {
        floor::ItemState::Planned => sig::ItemState::Planned,
        floor::ItemState::Running => sig::ItemState::Running,
        floor::ItemState::Paused => sig::ItemState::Paused,
        floor::ItemState::Ended => sig::ItemState::Ended,
        floor::ItemState::Skipped => sig::ItemState::Skipped,
    }
}

/// Wire request (with its current position).
pub fn request_out(r: &floor::Request, position: Option<u32>) -> sig::RequestInfo {
    sig::RequestInfo {
        id: r.id,
        beneficiary: sig::Beneficiary {
            participant: r.beneficiary.participant.clone(),
            name: r.beneficiary.name.clone(),
            delegation: r.beneficiary.delegation.clone(),
            in_room: r.beneficiary.in_room,
        },
        requested_by: r.requested_by.clone(),
        list: list_out(r.list),
        state: state_out(r.state),
        position,
        requested_at: r.requested_at,
        granted_at: r.granted_at,
        deadline: r.deadline,
        limit_ms: r.limit_ms,
        warning_ms: r.warning_ms,
        slot: r.slot.clone(),
        chair: r.chair,
    }
}

fn request_in(r: &sig::RequestInfo) -> floor::Request {
    floor::Request {
        id: r.id,
        beneficiary: floor::Beneficiary {
            participant: r.beneficiary.participant.clone(),
            name: r.beneficiary.name.clone(),
            delegation: r.beneficiary.delegation.clone(),
            in_room: r.beneficiary.in_room,
        },
        requested_by: r.requested_by.clone(),
        list: list_in(r.list),
        state: state_in(r.state),
        requested_at: r.requested_at,
        granted_at: None,
        deadline: None,
        paused_remaining: None,
        limit_ms: None,
        warning_ms: None,
        slot: None,
        chair: r.chair,
        warned: false,
        overran: false,
    }
}

fn settings_out(s: &floor::Settings) -> sig::FloorSettingsInfo {
    sig::FloorSettingsInfo {
        policy: policy_out(s.policy),
        max_speakers: s.max_speakers,
        when_full: when_full_out(s.when_full),
        speaking_limit_ms: s.speaking_limit_ms,
        warning_ms: s.warning_ms,
        auto_revoke: s.auto_revoke,
        screen_requests: s.screen_requests,
    }
}

fn settings_in(s: &sig::FloorSettingsInfo) -> floor::Settings {
    floor::Settings {
        policy: policy_in(s.policy),
        max_speakers: s.max_speakers,
        when_full: when_full_in(s.when_full),
        speaking_limit_ms: s.speaking_limit_ms,
        warning_ms: s.warning_ms,
        auto_revoke: s.auto_revoke,
        screen_requests: s.screen_requests,
    }
}

/// Engine settings change from the wire's.
pub fn settings_change_in(s: sig::FloorSettings) -> floor::SettingsChange {
    floor::SettingsChange {
        policy: s.policy.map(policy_in),
        max_speakers: s.max_speakers,
        when_full: s.when_full.map(when_full_in),
        speaking_limit_secs: s.speaking_limit_secs,
        warning_secs: s.warning_secs,
        auto_revoke: s.auto_revoke,
        screen_requests: s.screen_requests,
    }
}

/// Wire event from an engine event.
pub fn event_out(e: &floor::Event) -> sig::Event {
    use floor::Event as F;
    use sig::Event as S;
    match e.clone() {
        F::Requested(r) => S::FloorRequested {
            request: request_out(&r, None),
        },
        F::Accepted { request, by } => S::FloorAccepted { request, by },
        F::Granted {
            request,
            by,
            limit_ms,
            warning_ms,
            slot,
        } => S::FloorGranted {
            request,
            by,
            limit_ms,
            warning_ms,
            slot,
        },
        F::Denied { request, by } => S::FloorDenied { request, by },
        F::Cancelled { request, by } => S::FloorCancelled { request, by },
        F::Released { request, by } => S::FloorReleased { request, by },
        F::Revoked {
            request,
            by,
            reason,
        } => S::FloorRevoked {
            request,
            by,
            reason: reason_out(reason),
        },
        F::Moved {
            request,
            position,
            by,
        } => S::FloorMoved {
            request,
            position,
            by,
        },
        F::HandsLowered { requests, by } => S::HandsLowered { requests, by },
        F::ChairPriority { by } => S::ChairPriority { by },
        F::SpeakingWarning { request } => S::SpeakingWarning { request },
        F::SpeakingOverrun { request } => S::SpeakingOverrun { request },
        F::SettingsChanged { settings, by } => S::FloorSettingsChanged {
            settings: settings_out(&settings),
            by,
        },
        F::ItemStarted { item, by } => S::ItemStarted { item, by },
        F::ItemPaused { item, by } => S::ItemPaused { item, by },
        F::ItemResumed { item, by } => S::ItemResumed { item, by },
        F::ItemExtended { item, minutes, by } => S::ItemExtended { item, minutes, by },
        F::ItemEnded { item, by } => S::ItemEnded { item, by },
        F::ItemSkipped { item, by } => S::ItemSkipped { item, by },
        F::ItemMoved { item, position, by } => S::ItemMoved { item, position, by },
        F::ItemWarning { item } => S::ItemWarning { item },
        F::ItemOverrun { item } => S::ItemOverrun { item },
        F::TimerMessage { text, by } => S::TimerMessage { text, by },
    }
}

/// Engine event from a wire event; `None` for events the engine does not own (presence).
pub fn event_in(e: &sig::Event) -> Option<floor::Event> {
    use floor::Event as F;
    use sig::Event as S;
    Some(match e.clone() {
        S::ParticipantJoined { .. } | S::ParticipantLeft { .. } | S::ServerRestarted => {
            return None;
        }
        S::FloorRequested { request } => F::Requested(Box::new(request_in(&request))),
        S::FloorAccepted { request, by } => F::Accepted { request, by },
        S::FloorGranted {
            request,
            by,
            limit_ms,
            warning_ms,
            slot,
        } => F::Granted {
            request,
            by,
            limit_ms,
            warning_ms,
            slot,
        },
        S::FloorDenied { request, by } => F::Denied { request, by },
        S::FloorCancelled { request, by } => F::Cancelled { request, by },
        S::FloorReleased { request, by } => F::Released { request, by },
        S::FloorRevoked {
            request,
            by,
            reason,
        } => F::Revoked {
            request,
            by,
            reason: reason_in(reason),
        },
        S::FloorMoved {
            request,
            position,
            by,
        } => F::Moved {
            request,
            position,
            by,
        },
        S::HandsLowered { requests, by } => F::HandsLowered { requests, by },
        S::ChairPriority { by } => F::ChairPriority { by },
        S::SpeakingWarning { request } => F::SpeakingWarning { request },
        S::SpeakingOverrun { request } => F::SpeakingOverrun { request },
        S::FloorSettingsChanged { settings, by } => F::SettingsChanged {
            settings: settings_in(&settings),
            by,
        },
        S::ItemStarted { item, by } => F::ItemStarted { item, by },
        S::ItemPaused { item, by } => F::ItemPaused { item, by },
        S::ItemResumed { item, by } => F::ItemResumed { item, by },
        S::ItemExtended { item, minutes, by } => F::ItemExtended { item, minutes, by },
        S::ItemEnded { item, by } => F::ItemEnded { item, by },
        S::ItemSkipped { item, by } => F::ItemSkipped { item, by },
        S::ItemMoved { item, position, by } => F::ItemMoved { item, position, by },
        S::ItemWarning { item } => F::ItemWarning { item },
        S::ItemOverrun { item } => F::ItemOverrun { item },
        S::TimerMessage { text, by } => F::TimerMessage { text, by },
    })
}

/// The floor as clients see it.
pub fn floor_view(engine: &Engine) -> sig::FloorView {
    let s = engine.settings();
    let with_pos = |r: &floor::Request| request_out(r, engine.position(r.id));
    sig::FloorView {
        policy: policy_out(s.policy),
        max_speakers: s.max_speakers,
        when_full: when_full_out(s.when_full),
        speaking_limit_ms: s.speaking_limit_ms,
        warning_ms: s.warning_ms,
        auto_revoke: s.auto_revoke,
        screen_requests: s.screen_requests,
        holders: engine.holders().map(with_pos).collect(),
        pending: engine.pending().map(with_pos).collect(),
        queue: engine.list(floor::List::Main).map(with_pos).collect(),
        replies: engine.list(floor::List::Reply).map(with_pos).collect(),
    }
}

/// The agenda as clients see it at `now`.
pub fn agenda_view(engine: &Engine, now: i64) -> sig::AgendaView {
    sig::AgendaView {
        items: engine
            .items()
            .iter()
            .map(|i| sig::ItemInfo {
                id: i.plan.id.clone(),
                kind: kind_out(i.plan.kind),
                title: i.plan.title.clone(),
                presenters: i
                    .plan
                    .presenters
                    .iter()
                    .map(|p| sig::PresenterInfo {
                        name: p.name.clone(),
                        role: p.role.clone(),
                        organisation: p.organisation.clone(),
                        participant: p.participant.clone(),
                    })
                    .collect(),
                planned_ms: i.plan.planned_ms,
                extended_ms: i.extended_ms,
                intervention_ms: i.plan.intervention_ms,
                warning_ms: engine.item_warning_ms(),
                state: item_state_out(i.state),
                started_at: i.started_at,
                deadline: i.deadline,
                remaining_ms: i.remaining_ms,
                ended_at: i.ended_at,
                overrun_ms: i.overrun_ms,
            })
            .collect(),
        current: engine.current_item().map(|i| i.plan.id.clone()),
        planned_start: engine.planned_start(),
        planned_end: engine.planned_end(),
        projected_end: engine.projected_end(now),
    }
}
