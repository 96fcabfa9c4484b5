//! `GET /metrics`: the Prometheus text format (version 0.0.4), every name prefixed
//! `roundtable_`. Counters come from the meeting tasks' shared [`crate::meeting::Counters`],
//! the media engine's [`EngineStats`] and each meeting's stream health (asked over its
//! channel, so no lock is shared with a meeting).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::media::engine::EngineStats;

/// Upper bounds of the latency buckets, seconds.
pub const BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A latency histogram updated with atomics (no lock), read by `/metrics`.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes it in the text format (cumulative buckets).
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut acc = 0;
        for (b, n) in BUCKETS.iter().zip(&self.buckets) {
            acc += n.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {acc}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// What one meeting reports for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct MeetingMetrics {
    /// Meeting id.
    pub meeting: String,
    /// Connected participants by role (`as_str` of the role).
    pub participants: Vec<(&'static str, u64)>,
    /// Quality scores: (participant, direction `up`/`down`, score).
    pub scores: Vec<(String, &'static str, u8)>,
    /// Alerts still on.
    pub alerts_on: u64,
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders the whole exposition.
pub fn render(
    counters: &crate::meeting::Counters,
    ws_clients: u64,
    engine: Option<&EngineStats>,
    meetings: &[MeetingMetrics],
) -> String {
    let mut o = String::with_capacity(4096);
    metric(
        &mut o,
        "roundtable_websocket_clients",
        "gauge",
        "Open websocket connections.",
    );
    let _ = writeln!(o, "roundtable_websocket_clients {ws_clients}");
    metric(
        &mut o,
        "roundtable_tokio_tasks",
        "gauge",
        "Tasks alive in the server's async runtime (a leak shows as growth).",
    );
    let tasks = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0);
    let _ = writeln!(o, "roundtable_tokio_tasks {tasks}");
    metric(
        &mut o,
        "roundtable_heap_bytes",
        "gauge",
        "Heap bytes allocated and not yet freed (a leak shows as growth; RSS also keeps freed pages).",
    );
    let _ = writeln!(o, "roundtable_heap_bytes {}", crate::heap::live_bytes());
    metric(
        &mut o,
        "roundtable_heap_allocations_total",
        "counter",
        "Heap allocations made.",
    );
    let _ = writeln!(
        o,
        "roundtable_heap_allocations_total {}",
        crate::heap::allocations()
    );
    metric(
        &mut o,
        "roundtable_resumes_total",
        "counter",
        "Connections that resumed their event stream from a sequence number.",
    );
    let _ = writeln!(
        o,
        "roundtable_resumes_total {}",
        counters.resumes.load(Ordering::Relaxed)
    );
    metric(
        &mut o,
        "roundtable_participants",
        "gauge",
        "Connected participants by meeting and role.",
    );
    for m in meetings {
        for (role, n) in &m.participants {
            let _ = writeln!(
                o,
                "roundtable_participants{{meeting=\"{}\",role=\"{role}\"}} {n}",
                label(&m.meeting)
            );
        }
    }
    metric(
        &mut o,
        "roundtable_quality_score",
        "gauge",
        "Stream health score, 0-100, by participant and direction.",
    );
    for m in meetings {
        for (p, dir, s) in &m.scores {
            let _ = writeln!(
                o,
                "roundtable_quality_score{{meeting=\"{}\",participant=\"{}\",direction=\"{dir}\"}} {s}",
                label(&m.meeting),
                label(p)
            );
        }
    }
    metric(
        &mut o,
        "roundtable_alerts_on",
        "gauge",
        "Stream health alerts still on.",
    );
    for m in meetings {
        let _ = writeln!(
            o,
            "roundtable_alerts_on{{meeting=\"{}\"}} {}",
            label(&m.meeting),
            m.alerts_on
        );
    }
    let c = |o: &mut String, name: &str, help: &str, v: u64| {
        metric(o, name, "counter", help);
        let _ = writeln!(o, "{name} {v}");
    };
    c(
        &mut o,
        "roundtable_events_total",
        "Meeting events journaled and broadcast.",
        counters.events.load(Ordering::Relaxed),
    );
    c(
        &mut o,
        "roundtable_command_errors_total",
        "Client commands refused.",
        counters.errors.load(Ordering::Relaxed),
    );
    c(
        &mut o,
        "roundtable_lagging_connections_total",
        "Websocket connections dropped for being too slow.",
        counters.lagging.load(Ordering::Relaxed),
    );
    counters.fanout.render(
        &mut o,
        "roundtable_event_fanout_seconds",
        "Time to queue a batch of events to every connection of a meeting.",
    );
    counters.journal_write.render(
        &mut o,
        "roundtable_journal_write_seconds",
        "Time to write a batch of events to the journal (SQLite).",
    );
    if let Some(e) = engine {
        metric(
            &mut o,
            "roundtable_media_connections",
            "gauge",
            "WebRTC peer connections.",
        );
        let _ = writeln!(o, "roundtable_media_connections {}", e.connections);
        for (name, help, v) in [
            (
                "roundtable_rtp_packets_in_total",
                "RTP packets received from publishers.",
                e.rtp_in,
            ),
            (
                "roundtable_rtp_bytes_in_total",
                "RTP payload bytes received from publishers.",
                e.bytes_in,
            ),
            (
                "roundtable_rtp_packets_out_total",
                "RTP packets forwarded to subscribers.",
                e.rtp_forwarded,
            ),
            (
                "roundtable_rtp_bytes_out_total",
                "RTP payload bytes forwarded to subscribers.",
                e.bytes_forwarded,
            ),
            (
                "roundtable_datagrams_in_total",
                "UDP datagrams received.",
                e.datagrams_in,
            ),
            (
                "roundtable_datagrams_out_total",
                "UDP datagrams sent.",
                e.datagrams_out,
            ),
            (
                "roundtable_floor_gate_dropped_total",
                "Audio packets held back by the floor gate.",
                e.gate_dropped,
            ),
            (
                "roundtable_nacks_received_total",
                "NACK packets received from subscribers.",
                e.nacks_in,
            ),
            (
                "roundtable_plis_sent_total",
                "Keyframe requests (PLI) sent to publishers.",
                e.plis_sent,
            ),
            (
                "roundtable_ice_restarts_total",
                "ICE restarts (subscriber re-offers and publisher offers with new credentials).",
                e.ice_restarts,
            ),
            (
                "roundtable_keyframe_requests_received_total",
                "Keyframe requests (PLI, FIR) received from subscribers.",
                e.keyframe_requests_in,
            ),
            (
                "roundtable_forward_errors_total",
                "RTP packets a subscriber track refused.",
                e.forward_errors,
            ),
        ] {
            c(&mut o, name, help, v);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_counted() {
        let h = Histogram::default();
        h.observe(std::time::Duration::from_micros(50));
        h.observe(std::time::Duration::from_millis(3));
        h.observe(std::time::Duration::from_secs(5));
        let mut s = String::new();
        h.render(&mut s, "x", "help");
        assert!(s.contains("x_bucket{le=\"0.0001\"} 1\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.005\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"1\"} 2\n"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("x_count 3\n"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
