//! The group-committing journal writer ([`Journal`]) and the synchronous
//! read-only view ([`JournalReader`]).
//!
//! See the [module documentation](super) for the durability contract.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{
    JournalRecord, StoreError, check_schema, configure, migrate, query_last_seq, query_load,
    query_load_after, query_meetings,
};

/// Upper bound on requests folded into one group commit, so a single
/// transaction (and the latency of the first request in it) stays bounded.
const MAX_GROUP: usize = 512;

/// Name of the writer thread (visible in debuggers and `top -H`).
const WRITER_THREAD_NAME: &str = "roundtable-journal";

const INSERT_SQL: &str =
    "INSERT INTO events(meeting, seq, at_ms, kind, actor, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Snapshot of the writer's counters (see [`Journal::stats`]).
///
/// Each field is read atomically but the snapshot as a whole is not: under
/// load, fields may come from slightly different instants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Committed (fsynced) write transactions.
    pub commits: u64,
    /// Append calls acknowledged `Ok`.
    pub appends: u64,
    /// Records stored by those appends.
    pub records: u64,
    /// Append calls answered with an error.
    pub rejected: u64,
    /// Sum over commits of the time from `BEGIN` to the end of `COMMIT`
    /// (including the fsync), in microseconds.
    pub total_commit_us: u64,
    /// Longest single commit, in microseconds.
    pub max_commit_us: u64,
}

impl JournalStats {
    /// Mean commit latency in microseconds (0 before the first commit).
    pub fn mean_commit_us(&self) -> u64 {
        self.total_commit_us.checked_div(self.commits).unwrap_or(0)
    }
}

/// Lock-free counters shared between the writer thread and the handles.
#[derive(Debug, Default)]
struct StatCells {
    commits: AtomicU64,
    appends: AtomicU64,
    records: AtomicU64,
    rejected: AtomicU64,
    total_commit_us: AtomicU64,
    max_commit_us: AtomicU64,
}

impl StatCells {
    fn snapshot(&self) -> JournalStats {
        JournalStats {
            commits: self.commits.load(Ordering::Relaxed),
            appends: self.appends.load(Ordering::Relaxed),
            records: self.records.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            total_commit_us: self.total_commit_us.load(Ordering::Relaxed),
            max_commit_us: self.max_commit_us.load(Ordering::Relaxed),
        }
    }

    fn record_commit(&self, started: Instant) {
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.total_commit_us.fetch_add(us, Ordering::Relaxed);
        self.max_commit_us.fetch_max(us, Ordering::Relaxed);
    }

    fn record_outcome(&self, records: usize, outcome: &Result<(), StoreError>) {
        if outcome.is_ok() {
            self.appends.fetch_add(1, Ordering::Relaxed);
            self.records.fetch_add(records as u64, Ordering::Relaxed);
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Work for the writer thread.
enum Request {
    Append {
        records: Vec<JournalRecord>,
        reply: Reply<()>,
    },
    Load {
        meeting: String,
        reply: Reply<Vec<JournalRecord>>,
    },
    LastSeq {
        meeting: String,
        reply: Reply<u64>,
    },
    LoadAfter {
        meeting: String,
        after: u64,
        reply: Reply<Vec<JournalRecord>>,
    },
    MarkInvite {
        mark: super::invites::InviteMark,
        reply: Reply<()>,
    },
    LoadInvites {
        reply: Reply<Vec<super::invites::InviteMark>>,
    },
    Flush {
        reply: oneshot::Sender<()>,
    },
    Health {
        batch: super::health::HealthBatch,
    },
    LoadHealth {
        meeting: String,
        reply: Reply<(
            Vec<super::health::HealthSample>,
            Vec<super::health::HealthAlert>,
        )>,
    },
}

/// An append waiting for the next group commit.
struct PendingAppend {
    records: Vec<JournalRecord>,
    reply: Reply<()>,
}

/// Asynchronous handle onto the journal's single writer thread.
///
/// Cheap to clone (one `Arc`). The writer thread ends once the last clone is
/// dropped, after finishing everything already queued; [`Journal::close`]
/// additionally waits for that. See the [module documentation](super) for
/// the durability contract.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    requests: mpsc::Sender<Request>,
    stats: Arc<StatCells>,
    path: PathBuf,
    /// Resolves when the writer thread has closed the connection and exited.
    exited: oneshot::Receiver<()>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.inner.path)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Journal {
    /// Opens (creating it and its parent directories if needed) the journal
    /// at `path`, migrates its schema, and starts the writer thread.
    ///
    /// Blocking (file I/O and possibly fsyncs): call it at start-up or from
    /// `spawn_blocking`. A tokio runtime is not required to open the journal,
    /// only to await its methods.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if the file is not an SQLite database or is
    /// another application's database, [`StoreError::SchemaTooNew`] if it was
    /// written by a newer build, [`StoreError::Io`] / [`StoreError::Sqlite`]
    /// on I/O failures.
    pub fn open(path: &Path) -> Result<Journal, StoreError> {
        let dirs_to_sync = create_parent_dirs(path)?;
        let created = !path.exists();

        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(path, flags).map_err(|e| StoreError::sqlite(path, e))?;
        configure(&conn, path)?;
        // First statement that reads the header: a non-SQLite file fails here.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| StoreError::sqlite(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            // Still durable (synchronous=FULL), only readers may block writes.
            tracing::warn!(path = %path.display(), %mode, "journal could not switch to WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| StoreError::sqlite(path, e))?;
        migrate(&mut conn, path)?;

        if created {
            for dir in &dirs_to_sync {
                sync_dir(dir)?;
            }
        }

        let (requests, rx) = mpsc::channel();
        let (exited_tx, exited) = oneshot::channel();
        let stats = Arc::new(StatCells::default());
        let writer = Writer {
            conn,
            path: path.to_path_buf(),
            stats: Arc::clone(&stats),
        };
        std::thread::Builder::new()
            .name(WRITER_THREAD_NAME.to_owned())
            .spawn(move || writer.run(rx, exited_tx))
            .map_err(|e| StoreError::io(path, e))?;
        tracing::info!(path = %path.display(), "journal opened");

        Ok(Journal {
            inner: Arc::new(Inner {
                requests,
                stats,
                path: path.to_path_buf(),
                exited,
            }),
        })
    }

    /// Path of the journal file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Durably appends `records` (all or nothing) and resolves once they are
    /// committed and fsynced. Records of one call may belong to several
    /// meetings; they are committed together with whatever other appends are
    /// queued at the same time (group commit).
    ///
    /// Dropping the returned future does not cancel a write already queued.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] if some `(meeting, seq)` is already journaled
    /// (or repeated within `records`), [`StoreError::Invalid`] if a `seq`
    /// exceeds `i64::MAX`, [`StoreError::Closed`] if the writer is gone, or
    /// the underlying SQLite error. On error nothing of this call is stored.
    pub async fn append(&self, records: Vec<JournalRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.request(|reply| Request::Append { records, reply })
            .await
    }

    /// All records of `meeting` in `seq` order (empty if it has none).
    ///
    /// Served by the writer thread, so it reflects every append acknowledged
    /// before the call.
    pub async fn load(&self, meeting: &str) -> Result<Vec<JournalRecord>, StoreError> {
        let meeting = meeting.to_owned();
        self.request(|reply| Request::Load { meeting, reply }).await
    }

    /// The records of `meeting` after `after`, in `seq` order (a resuming client's gap).
    pub async fn load_after(
        &self,
        meeting: &str,
        after: u64,
    ) -> Result<Vec<JournalRecord>, StoreError> {
        let meeting = meeting.to_owned();
        self.request(|reply| Request::LoadAfter {
            meeting,
            after,
            reply,
        })
        .await
    }

    /// Durably stores that an invite was redeemed or revoked.
    pub async fn mark_invite(&self, mark: super::invites::InviteMark) -> Result<(), StoreError> {
        self.request(|reply| Request::MarkInvite { mark, reply })
            .await
    }

    /// Every invite mark (loaded once at start).
    pub async fn invites(&self) -> Result<Vec<super::invites::InviteMark>, StoreError> {
        self.request(|reply| Request::LoadInvites { reply }).await
    }

    /// Highest `seq` journaled for `meeting`, or 0 if it has no events.
    pub async fn last_seq(&self, meeting: &str) -> Result<u64, StoreError> {
        let meeting = meeting.to_owned();
        self.request(|reply| Request::LastSeq { meeting, reply })
            .await
    }

    /// Queues a stream-health batch for the writer without waiting (see
    /// [`super::health`]); an error is logged there.
    pub fn record_health(&self, batch: super::health::HealthBatch) {
        if self.send(Request::Health { batch }).is_err() {
            tracing::debug!("health history dropped: the journal is closed");
        }
    }

    /// The stream-health history of a meeting: samples and alerts, oldest first.
    pub async fn load_health(
        &self,
        meeting: &str,
    ) -> Result<
        (
            Vec<super::health::HealthSample>,
            Vec<super::health::HealthAlert>,
        ),
        StoreError,
    > {
        let meeting = meeting.to_owned();
        self.request(|reply| Request::LoadHealth { meeting, reply })
            .await
    }

    /// Waits until every request queued before this call has been processed
    /// (in particular, every earlier append is committed or rejected).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Flush { reply })?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Flushes, then releases this handle. If it was the last one, also
    /// waits until the writer thread has closed the database (checkpointing
    /// the WAL) and exited. Other live clones keep the writer running.
    pub async fn close(self) -> Result<(), StoreError> {
        self.flush().await?;
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => {
                let Inner {
                    requests, exited, ..
                } = inner;
                drop(requests);
                exited.await.map_err(|_| StoreError::Closed)
            }
            Err(_shared) => Ok(()),
        }
    }

    /// Current writer counters: commits, records and commit latency.
    pub fn stats(&self) -> JournalStats {
        self.inner.stats.snapshot()
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.inner
            .requests
            .send(request)
            .map_err(|_| StoreError::Closed)
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// State owned by the writer thread.
struct Writer {
    conn: Connection,
    path: PathBuf,
    stats: Arc<StatCells>,
}

impl Writer {
    /// Thread body: serve request groups until every handle is dropped.
    fn run(mut self, rx: mpsc::Receiver<Request>, exited: oneshot::Sender<()>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            // Appends first (one group commit), then reads and flushes: a
            // flush is thus answered after everything queued before it is
            // durable, and reads see every append acknowledged before them.
            let mut appends = Vec::new();
            let mut others = Vec::new();
            for request in batch {
                match request {
                    Request::Append { records, reply } => {
                        appends.push(PendingAppend { records, reply });
                    }
                    other => others.push(other),
                }
            }
            if !appends.is_empty() {
                self.commit_group(appends);
            }
            for request in others {
                self.serve(request);
            }
        }
        if let Err((_conn, err)) = self.conn.close() {
            tracing::warn!(path = %self.path.display(), %err, "closing journal failed");
        }
        tracing::debug!(path = %self.path.display(), "journal writer stopped");
        // Nobody may be waiting (last handle dropped without `close`).
        let _ = exited.send(());
    }

    fn serve(&mut self, request: Request) {
        // A send error only means the caller stopped waiting.
        match request {
            Request::Load { meeting, reply } => {
                let _ = reply.send(query_load(&self.conn, &self.path, &meeting));
            }
            Request::LastSeq { meeting, reply } => {
                let _ = reply.send(query_last_seq(&self.conn, &self.path, &meeting));
            }
            Request::LoadAfter {
                meeting,
                after,
                reply,
            } => {
                let _ = reply.send(query_load_after(&self.conn, &self.path, &meeting, after));
            }
            Request::MarkInvite { mark, reply } => {
                let _ = reply.send(super::invites::write(&self.conn, &self.path, &mark));
            }
            Request::LoadInvites { reply } => {
                let _ = reply.send(super::invites::load(&self.conn, &self.path));
            }
            Request::Flush { reply } => {
                let _ = reply.send(());
            }
            Request::Health { batch } => {
                if let Err(err) = super::health::write(&mut self.conn, &self.path, &batch) {
                    tracing::warn!(%err, "health history not written");
                }
            }
            Request::LoadHealth { meeting, reply } => {
                let r =
                    super::health::load_samples(&self.conn, &self.path, &meeting).and_then(|s| {
                        Ok((
                            s,
                            super::health::load_alerts(&self.conn, &self.path, &meeting)?,
                        ))
                    });
                let _ = reply.send(r);
            }
            Request::Append { records, reply } => {
                self.commit_group(vec![PendingAppend { records, reply }])
            }
        }
    }

    /// Commits `group` in one transaction and answers each request.
    ///
    /// Each request gets its own savepoint, so a request-local failure
    /// (conflict, invalid record) rolls back that request alone. If the group
    /// fails as a whole (I/O error, full disk, failed commit…), every request
    /// is retried in its own transaction so each caller gets its own outcome.
    fn commit_group(&mut self, group: Vec<PendingAppend>) {
        let started = Instant::now();
        match self.try_group(&group) {
            Ok(outcomes) => {
                self.stats.record_commit(started);
                for (pending, outcome) in group.into_iter().zip(outcomes) {
                    self.answer(pending, outcome);
                }
            }
            Err(err) => {
                tracing::warn!(
                    path = %self.path.display(), %err, requests = group.len(),
                    "journal group commit failed; retrying requests one by one"
                );
                for pending in group {
                    let started = Instant::now();
                    let outcome = self.commit_one(&pending.records);
                    if outcome.is_ok() {
                        self.stats.record_commit(started);
                    }
                    self.answer(pending, outcome);
                }
            }
        }
    }

    /// Writes the whole group in one transaction. `Ok` holds the outcome of
    /// each request (in order) and means the transaction committed; `Err`
    /// means nothing of the group was committed.
    fn try_group(
        &mut self,
        group: &[PendingAppend],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let path = self.path.as_path();
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(path, e))?;
        let mut outcomes = Vec::with_capacity(group.len());
        for pending in group {
            let sp = tx.savepoint().map_err(|e| StoreError::sqlite(path, e))?;
            match insert_all(&sp, path, &pending.records) {
                Ok(()) => {
                    sp.commit().map_err(|e| StoreError::sqlite(path, e))?;
                    outcomes.push(Ok(()));
                }
                Err(err) if is_request_local(&err) => {
                    // Default drop behaviour: roll back to and release.
                    sp.finish().map_err(|e| StoreError::sqlite(path, e))?;
                    outcomes.push(Err(err));
                }
                Err(err) => return Err(err),
            }
        }
        tx.commit().map_err(|e| StoreError::sqlite(path, e))?;
        Ok(outcomes)
    }

    /// Writes one request in its own transaction.
    fn commit_one(&mut self, records: &[JournalRecord]) -> Result<(), StoreError> {
        let path = self.path.as_path();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(path, e))?;
        insert_all(&tx, path, records)?;
        tx.commit().map_err(|e| StoreError::sqlite(path, e))
    }

    fn answer(&self, pending: PendingAppend, outcome: Result<(), StoreError>) {
        self.stats.record_outcome(pending.records.len(), &outcome);
        // A send error only means the caller stopped waiting.
        let _ = pending.reply.send(outcome);
    }
}

/// Inserts `records` with the cached insert statement; stops at the first
/// failure (the caller rolls back).
fn insert_all(conn: &Connection, path: &Path, records: &[JournalRecord]) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(INSERT_SQL)
        .map_err(|e| StoreError::sqlite(path, e))?;
    for record in records {
        let seq = i64::try_from(record.seq).map_err(|_| StoreError::Invalid {
            reason: format!(
                "meeting {:?}: seq {} exceeds i64::MAX",
                record.meeting, record.seq
            ),
        })?;
        stmt.execute(params![
            record.meeting,
            seq,
            record.at_ms,
            record.kind,
            record.actor,
            record.body
        ])
        .map_err(|e| {
            if is_primary_key_violation(&e) {
                StoreError::Conflict {
                    meeting: record.meeting.clone(),
                    seq: record.seq,
                }
            } else {
                StoreError::sqlite(path, e)
            }
        })?;
    }
    Ok(())
}

fn is_primary_key_violation(err: &rusqlite::Error) -> bool {
    matches!(
        err,
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// Failures caused by the request's own records, which leave the surrounding
/// transaction usable (statement-level errors).
fn is_request_local(err: &StoreError) -> bool {
    match err {
        StoreError::Conflict { .. } | StoreError::Invalid { .. } => true,
        StoreError::Sqlite(e) => e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation),
        _ => false,
    }
}

/// Creates the parent directories of `path`. Returns the directories whose
/// entries change when the file and those directories are created (the
/// file's parent up to the first pre-existing ancestor), bottom-up.
fn create_parent_dirs(path: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut dirs = Vec::new();
    let mut dir = Some(parent);
    while let Some(d) = dir {
        dirs.push(d.to_path_buf());
        if d.exists() {
            break;
        }
        dir = d.parent().filter(|p| !p.as_os_str().is_empty());
    }
    std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
    Ok(dirs)
}

/// Fsyncs a directory so entries created in it survive a crash.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Directory fsync is not available (nor needed) on this platform.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

impl Journal {
    /// The stream-health history read on a read-only connection of its own, off the writer
    /// thread (a day of samples must not hold back the floor's appends) and off the async
    /// runtime (`spawn_blocking`).
    pub async fn read_health(
        &self,
        meeting: &str,
    ) -> Result<
        (
            Vec<super::health::HealthSample>,
            Vec<super::health::HealthAlert>,
        ),
        StoreError,
    > {
        let path = self.path().to_path_buf();
        let meeting = meeting.to_owned();
        tokio::task::spawn_blocking(move || {
            let r = JournalReader::open_readonly(&path)?;
            Ok((
                super::health::load_samples(&r.conn, &r.path, &meeting)?,
                super::health::load_alerts(&r.conn, &r.path, &meeting)?,
            ))
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// Synchronous, read-only view of a journal file, for tools such as
/// `roundtable minutes`. Safe to use while a server writes to the same file;
/// each call reads one consistent snapshot.
pub struct JournalReader {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for JournalReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JournalReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl JournalReader {
    /// Opens an existing journal read-only. Never creates or migrates it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the file does not exist, [`StoreError::Corrupt`]
    /// if it is not an initialised journal, [`StoreError::SchemaTooNew`] if
    /// it was written by a newer build.
    pub fn open_readonly(path: &Path) -> Result<JournalReader, StoreError> {
        std::fs::metadata(path).map_err(|e| StoreError::io(path, e))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn =
            Connection::open_with_flags(path, flags).map_err(|e| StoreError::sqlite(path, e))?;
        configure(&conn, path)?;
        check_schema(&conn, path)?;
        Ok(JournalReader {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Path of the journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All records of `meeting` in `seq` order (empty if it has none).
    pub fn load(&self, meeting: &str) -> Result<Vec<JournalRecord>, StoreError> {
        query_load(&self.conn, &self.path, meeting)
    }

    /// Highest `seq` journaled for `meeting`, or 0 if it has no events.
    pub fn last_seq(&self, meeting: &str) -> Result<u64, StoreError> {
        query_last_seq(&self.conn, &self.path, meeting)
    }

    /// Every meeting with at least one event, sorted.
    pub fn meetings(&self) -> Result<Vec<String>, StoreError> {
        query_meetings(&self.conn, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A scratch directory removed on drop (no `tempfile` dependency).
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "roundtable-store-{}-{}-{}",
                std::process::id(),
                name,
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            TestDir(dir)
        }

        fn join(&self, rel: &str) -> PathBuf {
            self.0.join(rel)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn rec(meeting: &str, seq: u64) -> JournalRecord {
        JournalRecord {
            meeting: meeting.to_owned(),
            seq,
            at_ms: 1_700_000_000_000 + seq as i64,
            kind: "floor.granted".to_owned(),
            actor: (seq % 2 == 0).then(|| format!("p{seq}")),
            body: format!(r#"{{"seq":{seq},"meeting":"{meeting}"}}"#),
        }
    }

    fn seqs(records: &[JournalRecord]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    #[tokio::test]
    async fn append_then_load_returns_records_in_order() {
        let dir = TestDir::new("roundtrip");
        let journal = Journal::open(&dir.join("journal.db")).expect("open");

        journal
            .append(vec![rec("m1", 1), rec("m1", 2)])
            .await
            .expect("append");
        journal.append(vec![rec("m2", 1)]).await.expect("append");
        // Stored out of order within one call: loads come back by seq.
        journal
            .append(vec![rec("m1", 4), rec("m1", 3)])
            .await
            .expect("append");
        journal.append(Vec::new()).await.expect("empty append");

        let m1 = journal.load("m1").await.expect("load");
        assert_eq!(
            m1,
            vec![rec("m1", 1), rec("m1", 2), rec("m1", 3), rec("m1", 4)]
        );
        assert_eq!(journal.load("m2").await.expect("load"), vec![rec("m2", 1)]);
        assert!(journal.load("nope").await.expect("load").is_empty());
        assert_eq!(journal.last_seq("m1").await.expect("last_seq"), 4);
        assert_eq!(journal.last_seq("nope").await.expect("last_seq"), 0);

        let stats = journal.stats();
        assert_eq!((stats.appends, stats.records, stats.rejected), (3, 5, 0));
        assert!(stats.commits >= 1 && stats.max_commit_us <= stats.total_commit_us);
        journal.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_all_land_and_are_group_committed() {
        const TASKS: u64 = 50;
        const MEETINGS: u64 = 5;
        const PER_TASK: u64 = 20;
        let dir = TestDir::new("concurrent");
        let journal = Journal::open(&dir.join("journal.db")).expect("open");
        let start = Arc::new(tokio::sync::Barrier::new(TASKS as usize));

        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let journal = journal.clone();
            let start = Arc::clone(&start);
            tasks.push(tokio::spawn(async move {
                let meeting = format!("m{}", task % MEETINGS);
                // Tasks sharing a meeting own disjoint seq ranges.
                let base = (task / MEETINGS) * PER_TASK;
                start.wait().await;
                for i in 1..=PER_TASK {
                    journal.append(vec![rec(&meeting, base + i)]).await?;
                }
                Ok::<(), StoreError>(())
            }));
        }
        for task in tasks {
            task.await.expect("task panicked").expect("append");
        }

        let per_meeting = TASKS / MEETINGS * PER_TASK;
        for m in 0..MEETINGS {
            let meeting = format!("m{m}");
            let loaded = journal.load(&meeting).await.expect("load");
            assert_eq!(seqs(&loaded), (1..=per_meeting).collect::<Vec<_>>());
        }
        let stats = journal.stats();
        assert_eq!(stats.records, TASKS * PER_TASK);
        assert_eq!(stats.appends, TASKS * PER_TASK);
        assert!(
            stats.commits < stats.records,
            "group commit did not batch: {stats:?}"
        );
        journal.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conflict_is_reported_to_that_caller_only() {
        let dir = TestDir::new("conflict");
        let journal = Journal::open(&dir.join("journal.db")).expect("open");
        journal.append(vec![rec("m1", 1)]).await.expect("append");

        let mut others = Vec::new();
        for i in 0..20 {
            let journal = journal.clone();
            others.push(tokio::spawn(async move {
                journal.append(vec![rec("m2", i + 1)]).await
            }));
        }
        // Seq 2 is new but seq 1 is taken: the whole call must be rejected.
        let err = journal
            .append(vec![rec("m1", 2), rec("m1", 1)])
            .await
            .expect_err("duplicate must fail");
        assert!(
            matches!(&err, StoreError::Conflict { meeting, seq: 1 } if meeting == "m1"),
            "{err:?}"
        );
        for other in others {
            other
                .await
                .expect("task panicked")
                .expect("unaffected append");
        }
        // Duplicate within a single call is a conflict too.
        let err = journal
            .append(vec![rec("m3", 7), rec("m3", 7)])
            .await
            .expect_err("duplicate must fail");
        assert!(
            matches!(err, StoreError::Conflict { seq: 7, .. }),
            "{err:?}"
        );

        assert_eq!(seqs(&journal.load("m1").await.expect("load")), vec![1]);
        assert_eq!(journal.load("m2").await.expect("load").len(), 20);
        assert!(journal.load("m3").await.expect("load").is_empty());
        assert_eq!(journal.stats().rejected, 2);
        journal.close().await.expect("close");
    }

    /// Deterministic check of the savepoint isolation inside ONE group.
    #[test]
    fn failing_request_in_a_group_does_not_affect_the_others() {
        let dir = TestDir::new("group");
        let path = dir.join("journal.db");
        std::fs::create_dir_all(&dir.0).expect("mkdir");
        let mut conn = Connection::open(&path).expect("open");
        migrate(&mut conn, &path).expect("migrate");
        let mut writer = Writer {
            conn,
            path: path.clone(),
            stats: Arc::new(StatCells::default()),
        };
        let requests = [
            vec![rec("m", 1), rec("m", 2)],
            vec![rec("m", 3), rec("m", 1)], // conflicts with the first request
            vec![rec("m", 4)],
            vec![rec("m", u64::MAX)], // invalid
            vec![rec("m", 5)],
        ];
        let mut group = Vec::new();
        let mut replies = Vec::new();
        for records in requests {
            let (reply, rx) = oneshot::channel();
            group.push(PendingAppend { records, reply });
            replies.push(rx);
        }
        writer.commit_group(group);

        let outcomes: Vec<_> = replies
            .into_iter()
            .map(|mut rx| rx.try_recv().expect("answered"))
            .collect();
        assert!(outcomes[0].is_ok() && outcomes[2].is_ok() && outcomes[4].is_ok());
        assert!(matches!(
            outcomes[1],
            Err(StoreError::Conflict { seq: 1, .. })
        ));
        assert!(matches!(outcomes[3], Err(StoreError::Invalid { .. })));
        let stats = writer.stats.snapshot();
        assert_eq!(
            (stats.commits, stats.appends, stats.records, stats.rejected),
            (1, 3, 4, 2)
        );
        let stored = query_load(&writer.conn, &path, "m").expect("load");
        assert_eq!(seqs(&stored), vec![1, 2, 4, 5]);
    }

    #[tokio::test]
    async fn reopen_after_drop_keeps_every_acked_record() {
        let dir = TestDir::new("reopen");
        let path = dir.join("journal.db");
        let journal = Journal::open(&path).expect("open");
        for seq in 1..=50 {
            journal.append(vec![rec("m1", seq)]).await.expect("append");
        }
        journal
            .append((1..=10).map(|s| rec("m2", s)).collect())
            .await
            .expect("append");
        drop(journal); // no close: simulates an abrupt restart

        let journal = Journal::open(&path).expect("reopen");
        assert_eq!(journal.stats(), JournalStats::default());
        assert_eq!(
            seqs(&journal.load("m1").await.expect("load")),
            (1..=50).collect::<Vec<_>>()
        );
        assert_eq!(journal.last_seq("m2").await.expect("last_seq"), 10);
        journal
            .append(vec![rec("m1", 51)])
            .await
            .expect("append after reopen");
        assert!(matches!(
            journal.append(vec![rec("m1", 50)]).await,
            Err(StoreError::Conflict { seq: 50, .. })
        ));
        journal.close().await.expect("close");
    }

    #[tokio::test]
    async fn reader_opens_while_writer_is_active() {
        let dir = TestDir::new("reader");
        let path = dir.join("journal.db");
        let journal = Journal::open(&path).expect("open");
        journal
            .append(vec![rec("b", 1), rec("a", 1), rec("a", 2)])
            .await
            .expect("append");

        let reader = JournalReader::open_readonly(&path).expect("reader");
        assert_eq!(reader.path(), path.as_path());
        assert_eq!(reader.meetings().expect("meetings"), vec!["a", "b"]);
        assert_eq!(
            reader.load("a").expect("load"),
            vec![rec("a", 1), rec("a", 2)]
        );
        assert_eq!(reader.last_seq("a").expect("last_seq"), 2);

        // The writer keeps working with the reader open, and the reader sees
        // new commits on its next call.
        journal
            .append(vec![rec("a", 3), rec("c", 1)])
            .await
            .expect("append");
        assert_eq!(reader.last_seq("a").expect("last_seq"), 3);
        assert_eq!(reader.meetings().expect("meetings"), vec!["a", "b", "c"]);
        drop(reader);
        journal.close().await.expect("close");

        // Also readable after the writer is gone.
        let reader = JournalReader::open_readonly(&path).expect("reader");
        assert_eq!(reader.load("a").expect("load").len(), 3);
    }

    #[tokio::test]
    async fn garbage_file_is_an_error_not_a_panic() {
        let dir = TestDir::new("garbage");
        let path = dir.join("journal.db");
        std::fs::create_dir_all(&dir.0).expect("mkdir");
        let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &garbage).expect("write");

        let err = Journal::open(&path).expect_err("garbage must not open");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let err = JournalReader::open_readonly(&path).expect_err("garbage must not open");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        // The file was left untouched.
        assert_eq!(std::fs::read(&path).expect("read"), garbage);
    }

    #[tokio::test]
    async fn foreign_or_newer_databases_are_refused() {
        let dir = TestDir::new("foreign");
        std::fs::create_dir_all(&dir.0).expect("mkdir");

        let foreign = dir.join("foreign.db");
        Connection::open(&foreign)
            .and_then(|c| c.execute_batch("CREATE TABLE t(x)"))
            .expect("create foreign db");
        let err = Journal::open(&foreign).expect_err("foreign db");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let err = JournalReader::open_readonly(&foreign).expect_err("foreign db");
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");

        let newer = dir.join("newer.db");
        Connection::open(&newer)
            .and_then(|c| c.pragma_update(None, "user_version", 99))
            .expect("create newer db");
        let err = Journal::open(&newer).expect_err("newer db");
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 99, .. }),
            "{err:?}"
        );

        let err = JournalReader::open_readonly(&dir.join("missing.db")).expect_err("missing");
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn db_file_is_created_in_nested_directories() {
        let dir = TestDir::new("nested");
        let path = dir.join("var/data/roundtable/journal.db");
        let journal = Journal::open(&path).expect("open");
        assert_eq!(journal.path(), path.as_path());
        assert!(path.is_file());
        journal.append(vec![rec("m", 1)]).await.expect("append");
        journal.close().await.expect("close");

        let reader = JournalReader::open_readonly(&path).expect("reader");
        assert_eq!(reader.load("m").expect("load"), vec![rec("m", 1)]);
    }

    #[tokio::test]
    async fn close_of_one_clone_keeps_the_others_working() {
        let dir = TestDir::new("close");
        let journal = Journal::open(&dir.join("journal.db")).expect("open");
        let other = journal.clone();
        journal.append(vec![rec("m", 1)]).await.expect("append");
        journal.close().await.expect("close clone");
        other.append(vec![rec("m", 2)]).await.expect("still open");
        other.flush().await.expect("flush");
        assert_eq!(other.last_seq("m").await.expect("last_seq"), 2);
        other.close().await.expect("close last");
    }
}
