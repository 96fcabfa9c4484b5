//! Which role may send which command. Checked on the server for every command; the table is
//! also in docs/SECURITY.md and a test walks every (role, command) pair.

use roundtable_signaling::{Command, Role};

/// Whether `role` may send `command`.
pub fn allowed(role: Role, command: &Command) -> bool {
    use Command as C;
    match command {
        C::Hello { .. }
        | C::Ping { .. }
        | C::Leave
        | C::SubscribeAnswer { .. }
        | C::IceRestart { .. }
        | C::IceCandidate { .. }
        | C::MediaPreferences { .. }
        | C::ClientStats { .. } => true,
        C::AckAlert { .. } => matches!(role, Role::Technician | Role::Moderator),
        C::RequestKeyframe { .. } | C::ForceLayer { .. } => role == Role::Technician,
        C::AskReconnect { .. } => matches!(role, Role::Moderator | Role::Technician),
        C::Publish { .. } | C::Unpublish { .. } => {
            matches!(role, Role::Moderator | Role::Delegate | Role::Room)
        }
        C::RaiseHand { .. } | C::LowerHand => {
            matches!(role, Role::Moderator | Role::Delegate | Role::Assistant)
        }
        C::RequestFor { .. } => matches!(role, Role::Moderator | Role::Assistant),
        C::Cancel { .. } => matches!(role, Role::Moderator | Role::Assistant | Role::Delegate),
        C::Accept { .. }
        | C::Grant { .. }
        | C::GiveFloor { .. }
        | C::Deny { .. }
        | C::Revoke { .. }
        | C::Next { .. }
        | C::Move { .. }
        | C::LowerAllHands
        | C::ChairPriority
        | C::SetFloor { .. }
        | C::AgendaStart { .. }
        | C::AgendaPause
        | C::AgendaResume
        | C::AgendaExtend { .. }
        | C::AgendaEnd
        | C::AgendaSkip { .. }
        | C::AgendaMove { .. }
        | C::AgendaJump { .. }
        | C::TimerMessage { .. }
        | C::Remove { .. } => role == Role::Moderator,
    }
}
