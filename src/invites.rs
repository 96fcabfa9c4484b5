//! # Invites: revocation and one-time use
//!
//! An invite token is an HMAC-signed claim set ([`crate::auth`]); the server keeps no list of
//! the invites it signed. What it does keep is what happened to some of them: invites the
//! chair **revoked** (`remove` with `revoke_invite`) and one-time invites already
//! **redeemed** by their first connection. Both are stored in the journal's database
//! ([`crate::store::invites`]) and held here in memory, checked before every websocket
//! upgrade. A revoked invite opens nothing (401 `token_revoked`); a redeemed one-time invite
//! opens nothing either (401 `token_used`): its first connection received a session token in
//! `welcome` (the same claims, not one-time) for its reconnects.
//!
//! The lock is a `std` mutex held for a lookup or an insert only, never across an `.await`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::auth::Claims;
use crate::store::invites::{InviteMark, InviteState};
use crate::store::{Journal, StoreError};

/// Why an invite cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InviteError {
    /// The chair revoked it.
    #[error("this invitation was revoked by the chair")]
    Revoked,
    /// A one-time invite that has been used.
    #[error("this invitation link has already been used; ask the organiser for a new one")]
    Used,
    /// The redemption could not be stored.
    #[error("the journal could not record the invitation: {0}")]
    Unavailable(String),
}

impl InviteError {
    /// The error code sent to the client.
    pub fn code(&self) -> &'static str {
        match self {
            InviteError::Revoked => "token_revoked",
            InviteError::Used => "token_used",
            InviteError::Unavailable(_) => "journal_unavailable",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Marks {
    revoked: bool,
    redeemed: bool,
}

/// The invites with a history, by meeting and invite id.
#[derive(Debug)]
pub struct Invites {
    journal: Journal,
    marks: Mutex<HashMap<(String, String), Marks>>,
}

impl Invites {
    /// Loads every mark from the journal.
    pub async fn load(journal: Journal) -> Result<Invites, StoreError> {
        let mut marks: HashMap<(String, String), Marks> = HashMap::new();
        for m in journal.invites().await? {
            let e = marks.entry((m.meeting, m.invite)).or_default();
            match m.state {
                InviteState::Revoked => e.revoked = true,
                InviteState::Redeemed => e.redeemed = true,
            }
        }
        Ok(Invites {
            journal,
            marks: Mutex::new(marks),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<(String, String), Marks>) -> T) -> T {
        let mut guard = match self.marks.lock() {
            Ok(g) => g,
            // A panic elsewhere while holding the lock leaves plain data behind: keep going.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Whether the chair revoked this invite.
    pub fn is_revoked(&self, meeting: &str, invite: &str) -> bool {
        self.with(|m| {
            m.get(&(meeting.to_owned(), invite.to_owned()))
                .is_some_and(|x| x.revoked)
        })
    }

    /// Whether this one-time invite has been used.
    pub fn is_redeemed(&self, meeting: &str, invite: &str) -> bool {
        self.with(|m| {
            m.get(&(meeting.to_owned(), invite.to_owned()))
                .is_some_and(|x| x.redeemed)
        })
    }

    /// Checks that `claims` may open a connection now, and redeems a one-time invite
    /// (durably, before the connection is accepted). Of two connections racing with one
    /// one-time invite, exactly one wins.
    pub async fn admit(&self, claims: &Claims, now_ms: i64) -> Result<(), InviteError> {
        let key = (claims.meeting.clone(), claims.invite.clone());
        let first_use = self.with(|m| {
            // Only invites with a history have an entry: an ordinary one adds nothing.
            if !claims.once {
                return match m.get(&key) {
                    Some(x) if x.revoked => Err(InviteError::Revoked),
                    _ => Ok(false),
                };
            }
            let e = m.entry(key.clone()).or_default();
            if e.revoked {
                return Err(InviteError::Revoked);
            }
            if e.redeemed {
                return Err(InviteError::Used);
            }
            e.redeemed = true;
            Ok(true)
        })?;
        if first_use {
            let mark = InviteMark {
                meeting: claims.meeting.clone(),
                invite: claims.invite.clone(),
                state: InviteState::Redeemed,
                participant: claims.participant.clone(),
                at_ms: now_ms,
                by: None,
            };
            if let Err(e) = self.journal.mark_invite(mark).await {
                // Not recorded: not redeemed either (the link may be tried again).
                self.with(|m| {
                    if let Some(x) = m.get_mut(&key) {
                        x.redeemed = false;
                    }
                });
                return Err(InviteError::Unavailable(e.to_string()));
            }
        }
        Ok(())
    }

    /// Revokes an invite (durably). Revoking twice is harmless.
    pub async fn revoke(
        &self,
        meeting: &str,
        invite: &str,
        participant: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.journal
            .mark_invite(InviteMark {
                meeting: meeting.to_owned(),
                invite: invite.to_owned(),
                state: InviteState::Revoked,
                participant: participant.to_owned(),
                at_ms: now_ms,
                by: Some(by.to_owned()),
            })
            .await?;
        self.with(|m| {
            m.entry((meeting.to_owned(), invite.to_owned()))
                .or_default()
                .revoked = true
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Role, new_invite};

    fn temp_db(tag: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "roundtable-invites-{tag}-{}-{nanos}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("journal.db")
    }

    #[tokio::test]
    async fn revoked_and_redeemed_invites_survive_reopening_the_journal() {
        let path = temp_db("reopen");
        let mut once = new_invite("m", Role::Delegate, Some("d1"), "A", "", 60, 0);
        once.once = true;
        let plain = new_invite("m", Role::Delegate, Some("d2"), "B", "", 60, 0);
        {
            let journal = Journal::open(&path).expect("open");
            let invites = Invites::load(journal.clone()).await.expect("load");
            assert_eq!(invites.admit(&once, 1).await, Ok(()));
            assert_eq!(invites.admit(&once, 2).await, Err(InviteError::Used));
            assert_eq!(invites.admit(&plain, 3).await, Ok(()));
            assert_eq!(invites.admit(&plain, 4).await, Ok(()), "not one-time");
            invites
                .revoke("m", &plain.invite, "d2", "chair", 5)
                .await
                .expect("revoke");
            assert_eq!(invites.admit(&plain, 6).await, Err(InviteError::Revoked));
            drop(invites);
            journal.close().await.expect("close");
        }
        let journal = Journal::open(&path).expect("reopen");
        let invites = Invites::load(journal).await.expect("load");
        assert!(invites.is_revoked("m", &plain.invite));
        assert!(invites.is_redeemed("m", &once.invite));
        assert_eq!(invites.admit(&once, 7).await, Err(InviteError::Used));
        assert_eq!(invites.admit(&plain, 8).await, Err(InviteError::Revoked));
        // Another meeting's invite with the same id is another invite.
        let mut elsewhere = plain.clone();
        elsewhere.meeting = "other".into();
        assert_eq!(invites.admit(&elsewhere, 9).await, Ok(()));
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_many_connections_racing_with_one_one_time_invite_exactly_one_wins() {
        let path = temp_db("race");
        let journal = Journal::open(&path).expect("open");
        let invites = std::sync::Arc::new(Invites::load(journal).await.expect("load"));
        let mut once = new_invite("m", Role::Delegate, Some("d1"), "A", "", 60, 0);
        once.once = true;
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let (invites, once) = (invites.clone(), once.clone());
                tokio::spawn(async move { invites.admit(&once, i).await })
            })
            .collect();
        let mut won = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(()) => won += 1,
                Err(e) => assert_eq!(e, InviteError::Used),
            }
        }
        assert_eq!(won, 1);
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }
}
