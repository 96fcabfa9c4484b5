//! Invites revoked by the chair or redeemed by their one connection (schema v3). The server
//! keeps the whole table in memory ([`crate::invites`]) and checks it before every websocket
//! upgrade; this module only stores it, so a restart forgets nothing.

use std::path::Path;

use rusqlite::{Connection, params};

use super::StoreError;

/// The v2 → v3 migration.
pub const MIGRATION_V3: &str = "CREATE TABLE invites(
    meeting TEXT NOT NULL,
    invite TEXT NOT NULL,
    state TEXT NOT NULL,
    participant TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    by TEXT,
    PRIMARY KEY(meeting, invite, state)
) WITHOUT ROWID;";

/// What happened to an invite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InviteState {
    /// A one-time invite was used by its first connection.
    Redeemed,
    /// The chair revoked it: it opens nothing any more.
    Revoked,
}

impl InviteState {
    fn as_str(self) -> &'static str {
        match self {
            InviteState::Redeemed => "redeemed",
            InviteState::Revoked => "revoked",
        }
    }

    fn parse(s: &str) -> Option<InviteState> {
        match s {
            "redeemed" => Some(InviteState::Redeemed),
            "revoked" => Some(InviteState::Revoked),
            _ => None,
        }
    }
}

/// One row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteMark {
    /// Meeting id.
    pub meeting: String,
    /// The invite id (the token's `i`).
    pub invite: String,
    /// Redeemed or revoked.
    pub state: InviteState,
    /// Whose invite it is.
    pub participant: String,
    /// When.
    pub at_ms: i64,
    /// Who revoked it.
    pub by: Option<String>,
}

/// Stores a mark (a repeat of the same mark changes nothing).
pub(super) fn write(conn: &Connection, path: &Path, m: &InviteMark) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO invites(meeting, invite, state, participant, at_ms, by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut st| {
        st.execute(params![
            m.meeting,
            m.invite,
            m.state.as_str(),
            m.participant,
            m.at_ms,
            m.by
        ])
    })
    .map(|_| ())
    .map_err(|e| StoreError::sqlite(path, e))
}

/// Every mark, oldest first. A row with an unknown state (a newer build's) is skipped.
pub(super) fn load(conn: &Connection, path: &Path) -> Result<Vec<InviteMark>, StoreError> {
    let err = |e| StoreError::sqlite(path, e);
    let mut stmt = conn
        .prepare_cached(
            "SELECT meeting, invite, state, participant, at_ms, by FROM invites ORDER BY at_ms",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Option<String>>(5)?,
            ))
        })
        .map_err(err)?;
    let mut out = Vec::new();
    for row in rows {
        let (meeting, invite, state, participant, at_ms, by) = row.map_err(err)?;
        if let Some(state) = InviteState::parse(&state) {
            out.push(InviteMark {
                meeting,
                invite,
                state,
                participant,
                at_ms,
                by,
            });
        }
    }
    Ok(out)
}
