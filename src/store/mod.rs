//! Durable storage for `roundtable`: the per-meeting event journal.
//!
//! Every floor, agenda and presence event of a meeting is appended to the
//! journal *before* it is broadcast to participants; when the host starts, the
//! state of each meeting is rebuilt by replaying its journal in `seq` order.
//! Event bodies are opaque JSON strings to this layer — the meeting layer owns
//! (and serialises) its own event type.
//!
//! # Durability contract
//!
//! **Acked means fsynced.** [`Journal::append`] resolves with `Ok(())` only
//! after the SQLite transaction holding the records has committed with
//! `PRAGMA synchronous = FULL` in WAL mode, i.e. after the write-ahead log has
//! been fsynced. A record whose append was acknowledged therefore survives a
//! process crash or power loss (modulo hardware that lies about flushes).
//! Conversely, nothing may be broadcast before its append resolved `Ok`.
//!
//! * An append is all-or-nothing: either every record of the call is stored
//!   or none is.
//! * An error means the records of that call were **not** stored (a duplicate
//!   `(meeting, seq)` is reported as [`StoreError::Conflict`] to that caller
//!   only; other callers committed in the same group are unaffected).
//! * Dropping an `append` future after it was first polled does not cancel the
//!   write: the outcome is then unknown and the caller must reload before
//!   reusing those sequence numbers.
//! * When the database file (or any parent directory) is created, the
//!   affected directories are fsynced too, so the file itself cannot vanish
//!   after a crash.
//!
//! # Architecture
//!
//! [`Journal`] is a cheap, clonable handle onto ONE dedicated writer thread
//! that owns the read-write SQLite connection. Requests are queued on a
//! channel; the thread drains everything queued, writes all pending appends in
//! a single transaction (one savepoint per request, so a conflicting request
//! is rolled back alone), commits once — one fsync for the whole group — and
//! then answers every request. This *group commit* keeps the fsync cost per
//! event low under load.
//!
//! [`JournalReader`] is a synchronous, read-only view of the same file for
//! command-line tools (e.g. `roundtable minutes`), usable while a server is
//! writing to it thanks to WAL mode.
//!
//! # Schema
//!
//! Versioned with `PRAGMA user_version` (currently [`SCHEMA_VERSION`]); each
//! entry of the migration list upgrades by one version inside its own
//! transaction.
//!
//! ```sql
//! CREATE TABLE events(
//!     meeting TEXT NOT NULL, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL,
//!     kind TEXT NOT NULL, actor TEXT, body TEXT NOT NULL,
//!     PRIMARY KEY(meeting, seq)
//! ) WITHOUT ROWID;
//! ```

pub mod health;
pub mod invites;
mod journal;
pub mod minutes;

pub use journal::{Journal, JournalReader, JournalStats};

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params};

/// Schema version written by this build (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

/// Migrations, in order: entry `i` upgrades the schema from version `i` to
/// version `i + 1`. Append new entries; never edit shipped ones.
const MIGRATIONS: &[&str] = &[
    // v0 -> v1: the event journal.
    "CREATE TABLE events(
        meeting TEXT NOT NULL,
        seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT,
        body TEXT NOT NULL,
        PRIMARY KEY(meeting, seq)
    ) WITHOUT ROWID;",
    // v1 -> v2: stream-health history.
    health::MIGRATION_V2,
    // v2 -> v3: invites revoked or redeemed.
    invites::MIGRATION_V3,
];

/// How long a connection waits on a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// One journaled event of one meeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRecord {
    /// Meeting identifier.
    pub meeting: String,
    /// Position of the event in the meeting's journal; unique per meeting.
    /// Must not exceed `i64::MAX` (SQLite integers are signed).
    pub seq: u64,
    /// Wall-clock time of the event, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Event kind tag (e.g. `"floor.granted"`), useful for tooling and
    /// filtering without parsing the body.
    pub kind: String,
    /// Participant that caused the event, if any.
    pub actor: Option<String>,
    /// The event itself, serialised by the meeting layer (opaque JSON).
    pub body: String,
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A filesystem operation failed.
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        /// File or directory the operation was about.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An event with this `(meeting, seq)` is already journaled; nothing of
    /// the rejected append was stored.
    #[error("journal conflict: meeting {meeting:?} already has an event with seq {seq}")]
    Conflict {
        /// Meeting of the duplicate record.
        meeting: String,
        /// Sequence number of the duplicate record.
        seq: u64,
    },
    /// A record cannot be stored as given (nothing of that append was stored).
    #[error("invalid journal record: {reason}")]
    Invalid {
        /// What is wrong with the record.
        reason: String,
    },
    /// The writer thread is gone (journal closed, or it failed).
    #[error("journal writer is closed")]
    Closed,
    /// The file is not a usable journal: not an SQLite database, damaged, or
    /// a foreign database.
    #[error("corrupt or foreign journal {}: {reason}", path.display())]
    Corrupt {
        /// Journal file.
        path: PathBuf,
        /// What was found wrong.
        reason: String,
    },
    /// The file was written by a newer `roundtable` with a schema this build
    /// does not know.
    #[error(
        "journal {} has schema version {found}, this build supports up to {supported}",
        path.display()
    )]
    SchemaTooNew {
        /// Journal file.
        path: PathBuf,
        /// Version found in the file.
        found: i64,
        /// Highest version this build understands.
        supported: i64,
    },
}

impl StoreError {
    /// Wraps an SQLite error, recognising "this is not (or no longer) a valid
    /// database" as [`StoreError::Corrupt`].
    fn sqlite(path: &Path, err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: err.to_string(),
            },
            _ => StoreError::Sqlite(err),
        }
    }

    fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Applies the per-connection settings shared by readers and the writer.
fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| StoreError::sqlite(path, e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| StoreError::sqlite(path, e))?;
    Ok(())
}

/// Reads `PRAGMA user_version`. This is also the first statement that reads
/// the file header, so a non-SQLite file is detected here.
fn schema_version(conn: &Connection, path: &Path) -> Result<i64, StoreError> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|e| StoreError::sqlite(path, e))
}

/// Whether the database holds any schema object at all.
fn has_any_table(conn: &Connection, path: &Path) -> Result<bool, StoreError> {
    conn.query_row("SELECT 1 FROM sqlite_master LIMIT 1", [], |_| Ok(()))
        .optional()
        .map(|found| found.is_some())
        .map_err(|e| StoreError::sqlite(path, e))
}

/// Checks that `conn` holds a journal with a schema this build can read.
fn check_schema(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    match schema_version(conn, path)? {
        v if v > SCHEMA_VERSION => Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: v,
            supported: SCHEMA_VERSION,
        }),
        v if v < 1 => Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("not an initialised roundtable journal (schema version {v})"),
        }),
        _ => Ok(()),
    }
}

/// Brings the schema up to [`SCHEMA_VERSION`], one migration per transaction.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found = schema_version(conn, path)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 0 {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("negative schema version {found}"),
        });
    }
    if found == 0 && has_any_table(conn, path)? {
        // Version 0 with tables: some other application's database. Refuse
        // rather than adding our tables to it.
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: "database has tables but no roundtable schema version".to_owned(),
        });
    }
    for (from, sql) in (found..).zip(MIGRATIONS.iter().skip(usize::try_from(found).unwrap_or(0))) {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(path, e))?;
        // Re-check under the write lock: another process may have migrated.
        if schema_version(&tx, path)? != from {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|e| StoreError::sqlite(path, e))?;
        tx.pragma_update(None, "user_version", from + 1)
            .map_err(|e| StoreError::sqlite(path, e))?;
        tx.commit().map_err(|e| StoreError::sqlite(path, e))?;
        tracing::info!(path = %path.display(), version = from + 1, "journal schema migrated");
    }
    Ok(())
}

/// Converts a stored sequence number, rejecting values this layer never writes.
fn seq_from_sql(path: &Path, meeting: &str, seq: i64) -> Result<u64, StoreError> {
    u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("meeting {meeting:?} has negative seq {seq}"),
    })
}

/// All records of `meeting`, ordered by `seq`.
fn query_load(
    conn: &Connection,
    path: &Path,
    meeting: &str,
) -> Result<Vec<JournalRecord>, StoreError> {
    query_load_after(conn, path, meeting, 0)
}

/// The records of `meeting` after `after`, ordered by `seq`.
fn query_load_after(
    conn: &Connection,
    path: &Path,
    meeting: &str,
    after: u64,
) -> Result<Vec<JournalRecord>, StoreError> {
    let err = |e| StoreError::sqlite(path, e);
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT seq, at_ms, kind, actor, body FROM events WHERE meeting = ?1 AND seq > ?2 ORDER BY seq",
        )
        .map_err(err)?;
    let rows = stmt
        .query_map(params![meeting, after], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
                row.get::<_, String>(4)?,
            ))
        })
        .map_err(err)?;
    let mut records = Vec::new();
    for row in rows {
        let (seq, at_ms, kind, actor, body) = row.map_err(err)?;
        records.push(JournalRecord {
            meeting: meeting.to_owned(),
            seq: seq_from_sql(path, meeting, seq)?,
            at_ms,
            kind,
            actor,
            body,
        });
    }
    Ok(records)
}

/// Highest `seq` journaled for `meeting`, or 0 when it has no events.
fn query_last_seq(conn: &Connection, path: &Path, meeting: &str) -> Result<u64, StoreError> {
    let seq: i64 = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM events WHERE meeting = ?1")
        .and_then(|mut stmt| stmt.query_row(params![meeting], |row| row.get(0)))
        .map_err(|e| StoreError::sqlite(path, e))?;
    seq_from_sql(path, meeting, seq)
}

/// Identifiers of every meeting with at least one event, sorted.
fn query_meetings(conn: &Connection, path: &Path) -> Result<Vec<String>, StoreError> {
    let err = |e| StoreError::sqlite(path, e);
    let mut stmt = conn
        .prepare_cached("SELECT DISTINCT meeting FROM events ORDER BY meeting")
        .map_err(err)?;
    let rows = stmt.query_map([], |row| row.get(0)).map_err(err)?;
    rows.collect::<Result<Vec<String>, _>>().map_err(err)
}
