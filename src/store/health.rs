//! Stream-health history (schema v2): the samples of each participant's scores, every 2 s,
//! and the alerts, kept for a bounded time (`media.health_retention_minutes`). Written by the
//! journal's writer thread without waiting (the history is a record, not the floor's truth:
//! a lost batch costs two seconds of graph, never a decision).

use std::path::Path;

use rusqlite::{Connection, params};

use super::StoreError;

/// One participant's score in one direction at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSample {
    /// Meeting id.
    pub meeting: String,
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// Participant id.
    pub participant: String,
    /// `up` or `down`.
    pub direction: String,
    /// 0 to 100.
    pub score: u8,
    /// What brought it down (`loss`, `delay`, …).
    pub cause: Option<String>,
    /// Loss, percent.
    pub loss_pct: f64,
    /// Jitter, ms.
    pub jitter_ms: f64,
    /// Round-trip time, ms.
    pub rtt_ms: Option<f64>,
    /// Bitrate, kbit/s (up: received from them; down: sent to them).
    pub kbps: f64,
}

/// An alert as it stands (upserted by meeting, raise time and id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthAlert {
    /// Meeting id.
    pub meeting: String,
    /// The alert id (per run of the meeting task).
    pub id: u64,
    /// Kind (`loss`, `dry`, …).
    pub kind: String,
    /// Whose.
    pub participant: Option<String>,
    /// `up` or `down`.
    pub direction: Option<String>,
    /// The cause, with numbers.
    pub detail: String,
    /// Raised.
    pub raised_at: i64,
    /// Cleared.
    pub cleared_at: Option<i64>,
    /// Acknowledged by.
    pub acked_by: Option<String>,
}

/// One write: new samples, alerts that changed, and the retention cut-off.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthBatch {
    /// Samples to add.
    pub samples: Vec<HealthSample>,
    /// Alerts to insert or update.
    pub alerts: Vec<HealthAlert>,
    /// Samples and cleared alerts older than this (ms since the epoch) are deleted.
    pub keep_after_ms: i64,
}

/// The migration to schema v2.
pub const MIGRATION_V2: &str = "CREATE TABLE health_samples(
        meeting TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        participant TEXT NOT NULL,
        direction TEXT NOT NULL,
        score INTEGER NOT NULL,
        cause TEXT,
        loss_pct REAL NOT NULL,
        jitter_ms REAL NOT NULL,
        rtt_ms REAL,
        kbps REAL NOT NULL
    );
    CREATE INDEX health_samples_by_time ON health_samples(meeting, at_ms);
    CREATE TABLE health_alerts(
        meeting TEXT NOT NULL,
        raised_at INTEGER NOT NULL,
        id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        participant TEXT,
        direction TEXT,
        detail TEXT NOT NULL,
        cleared_at INTEGER,
        acked_by TEXT,
        PRIMARY KEY(meeting, raised_at, id)
    ) WITHOUT ROWID;";

/// Writes a batch in one transaction.
pub(crate) fn write(conn: &mut Connection, path: &Path, b: &HealthBatch) -> Result<(), StoreError> {
    let tx = conn
        .transaction()
        .map_err(|e| StoreError::sqlite(path, e))?;
    {
        let mut ins = tx
            .prepare_cached(
                "INSERT INTO health_samples(meeting, at_ms, participant, direction, score, cause, \
                 loss_pct, jitter_ms, rtt_ms, kbps) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(|e| StoreError::sqlite(path, e))?;
        for s in &b.samples {
            ins.execute(params![
                s.meeting,
                s.at_ms,
                s.participant,
                s.direction,
                s.score,
                s.cause,
                s.loss_pct,
                s.jitter_ms,
                s.rtt_ms,
                s.kbps
            ])
            .map_err(|e| StoreError::sqlite(path, e))?;
        }
        let mut up = tx
            .prepare_cached(
                "INSERT INTO health_alerts(meeting, raised_at, id, kind, participant, direction, \
                 detail, cleared_at, acked_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
                 ON CONFLICT(meeting, raised_at, id) DO UPDATE SET cleared_at = excluded.cleared_at, \
                 acked_by = excluded.acked_by",
            )
            .map_err(|e| StoreError::sqlite(path, e))?;
        for a in &b.alerts {
            up.execute(params![
                a.meeting,
                a.raised_at,
                a.id as i64,
                a.kind,
                a.participant,
                a.direction,
                a.detail,
                a.cleared_at,
                a.acked_by
            ])
            .map_err(|e| StoreError::sqlite(path, e))?;
        }
        // Retention per meeting (the (meeting, at_ms) index serves it); alerts left open by a
        // stop go by their raise time.
        let meetings: std::collections::BTreeSet<&str> = b
            .samples
            .iter()
            .map(|s| s.meeting.as_str())
            .chain(b.alerts.iter().map(|a| a.meeting.as_str()))
            .collect();
        for m in meetings {
            tx.execute(
                "DELETE FROM health_samples WHERE meeting = ?1 AND at_ms < ?2",
                params![m, b.keep_after_ms],
            )
            .map_err(|e| StoreError::sqlite(path, e))?;
            tx.execute(
                "DELETE FROM health_alerts WHERE meeting = ?1 AND raised_at < ?2 \
                 AND (cleared_at IS NULL OR cleared_at < ?2)",
                params![m, b.keep_after_ms],
            )
            .map_err(|e| StoreError::sqlite(path, e))?;
        }
    }
    tx.commit().map_err(|e| StoreError::sqlite(path, e))
}

/// Every sample of a meeting, oldest first.
pub(crate) fn load_samples(
    conn: &Connection,
    path: &Path,
    meeting: &str,
) -> Result<Vec<HealthSample>, StoreError> {
    let mut q = conn
        .prepare_cached(
            "SELECT at_ms, participant, direction, score, cause, loss_pct, jitter_ms, rtt_ms, kbps \
             FROM health_samples WHERE meeting = ?1 ORDER BY at_ms, participant, direction",
        )
        .map_err(|e| StoreError::sqlite(path, e))?;
    let rows = q
        .query_map(params![meeting], |r| {
            Ok(HealthSample {
                meeting: meeting.to_owned(),
                at_ms: r.get(0)?,
                participant: r.get(1)?,
                direction: r.get(2)?,
                score: r.get(3)?,
                cause: r.get(4)?,
                loss_pct: r.get(5)?,
                jitter_ms: r.get(6)?,
                rtt_ms: r.get(7)?,
                kbps: r.get(8)?,
            })
        })
        .map_err(|e| StoreError::sqlite(path, e))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::sqlite(path, e))
}

/// Every alert of a meeting, oldest first.
pub(crate) fn load_alerts(
    conn: &Connection,
    path: &Path,
    meeting: &str,
) -> Result<Vec<HealthAlert>, StoreError> {
    let mut q = conn
        .prepare_cached(
            "SELECT id, kind, participant, direction, detail, raised_at, cleared_at, acked_by \
             FROM health_alerts WHERE meeting = ?1 ORDER BY raised_at, id",
        )
        .map_err(|e| StoreError::sqlite(path, e))?;
    let rows = q
        .query_map(params![meeting], |r| {
            Ok(HealthAlert {
                meeting: meeting.to_owned(),
                id: r.get::<_, i64>(0)? as u64,
                kind: r.get(1)?,
                participant: r.get(2)?,
                direction: r.get(3)?,
                detail: r.get(4)?,
                raised_at: r.get(5)?,
                cleared_at: r.get(6)?,
                acked_by: r.get(7)?,
            })
        })
        .map_err(|e| StoreError::sqlite(path, e))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::sqlite(path, e))
}

/// Per participant and direction: mean and lowest score, share of samples graded poor.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QualitySummary {
    /// Participant id.
    pub participant: String,
    /// `up` or `down`.
    pub direction: String,
    /// Samples.
    pub samples: usize,
    /// Mean score.
    pub mean: f64,
    /// Lowest score.
    pub min: u8,
    /// Share of the samples with a poor score (≤ 40), percent.
    pub poor_pct: f64,
    /// Alerts raised about this participant (both directions).
    pub alerts: usize,
}

/// The minutes' quality section from the history.
pub fn summarise(samples: &[HealthSample], alerts: &[HealthAlert]) -> Vec<QualitySummary> {
    let mut by: std::collections::BTreeMap<(String, String), Vec<u8>> = Default::default();
    for s in samples {
        by.entry((s.participant.clone(), s.direction.clone()))
            .or_default()
            .push(s.score);
    }
    by.into_iter()
        .map(|((participant, direction), v)| {
            let n = v.len().max(1);
            QualitySummary {
                alerts: alerts
                    .iter()
                    .filter(|a| a.participant.as_deref() == Some(participant.as_str()))
                    .count(),
                participant,
                direction,
                samples: v.len(),
                mean: (v.iter().map(|x| f64::from(*x)).sum::<f64>() / n as f64 * 10.0).round()
                    / 10.0,
                min: v.iter().copied().min().unwrap_or(0),
                poor_pct: (v.iter().filter(|x| **x <= 40).count() as f64 * 1000.0 / n as f64)
                    .round()
                    / 10.0,
            }
        })
        .collect()
}

/// The history as CSV (one row per sample).
pub fn samples_csv(samples: &[HealthSample]) -> String {
    let mut s =
        String::from("time,participant,direction,score,cause,loss_pct,jitter_ms,rtt_ms,kbps\n");
    for x in samples {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            super::minutes::format_time(x.at_ms),
            csv_field(&x.participant),
            x.direction,
            x.score,
            x.cause.as_deref().unwrap_or(""),
            x.loss_pct,
            x.jitter_ms,
            x.rtt_ms.map(|r| r.to_string()).unwrap_or_default(),
            x.kbps
        ));
    }
    s
}

fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: i64, who: &str, score: u8) -> HealthSample {
        HealthSample {
            meeting: "m".into(),
            at_ms: at,
            participant: who.into(),
            direction: "up".into(),
            score,
            cause: None,
            loss_pct: 0.0,
            jitter_ms: 1.0,
            rtt_ms: None,
            kbps: 10.0,
        }
    }

    #[test]
    fn writes_reads_keeps_a_bounded_history_and_summarises() {
        let dir = std::env::temp_dir().join(format!("rt-health-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("h.db");
        let j = crate::store::Journal::open(&path).expect("open");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let alert = HealthAlert {
                meeting: "m".into(),
                id: 1,
                kind: "loss".into(),
                participant: Some("d1".into()),
                direction: Some("up".into()),
                detail: "x".into(),
                raised_at: 1_500,
                cleared_at: None,
                acked_by: None,
            };
            j.record_health(HealthBatch {
                samples: vec![
                    sample(1_000, "d1", 90),
                    sample(2_000, "d1", 30),
                    sample(2_000, "d, 2", 100),
                ],
                alerts: vec![alert.clone()],
                keep_after_ms: 0,
            });
            j.record_health(HealthBatch {
                samples: vec![sample(3_000, "d1", 60)],
                alerts: vec![HealthAlert {
                    cleared_at: Some(2_500),
                    acked_by: Some("tech".into()),
                    ..alert
                }],
                keep_after_ms: 1_500,
            });
            let (samples, alerts) = j.load_health("m").await.expect("load");
            assert_eq!(samples.len(), 3, "the sample before the cut-off is gone");
            assert_eq!(alerts.len(), 1);
            assert_eq!(alerts[0].acked_by.as_deref(), Some("tech"));
            let sum = summarise(&samples, &alerts);
            let d1 = sum.iter().find(|s| s.participant == "d1").unwrap();
            assert_eq!((d1.samples, d1.min, d1.alerts), (2, 30, 1));
            assert_eq!(d1.mean, 45.0);
            assert_eq!(d1.poor_pct, 50.0);
            let csv = samples_csv(&samples);
            assert!(csv.contains("\"d, 2\""), "{csv}");
            assert_eq!(csv.lines().count(), 4);
            j.close().await.unwrap();
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
