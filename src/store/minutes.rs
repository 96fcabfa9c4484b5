//! # Minutes: who spoke, when, for how long, derived from the journal
//!
//! Built by walking a meeting's journaled events in order, so the minutes can never disagree
//! with what clients were told. Per agenda item: timing (planned, allotted, actual, overrun),
//! each intervention (speaker, delegation, remote or in the room, requested / granted /
//! released, duration, limit, overrun, how it ended) and the chair's actions. Interventions
//! outside any item are listed apart. Rendered as JSON, CSV (one row per intervention) or
//! Markdown.

use std::collections::HashMap;
use std::fmt::Write as _;

use roundtable_signaling::{
    Event, ItemInfo, ItemKind, ItemState, MeetingInfo, Millis, RequestInfo, RevokeReason,
};
use serde::Serialize;

use super::JournalRecord;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON document.
    Json,
    /// CSV, one row per intervention.
    Csv,
    /// Markdown.
    Markdown,
}

impl Format {
    /// `json`, `csv`, `md` (or `markdown`).
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "md" | "markdown" => Some(Format::Markdown),
            _ => None,
        }
    }
}

/// One person's time at the microphone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Intervention {
    /// Floor request id.
    pub request: u64,
    /// Speaker.
    pub speaker: String,
    /// Delegation.
    pub delegation: String,
    /// True when the speaker sat in the room (queued on their behalf or at the lectern).
    pub in_room: bool,
    /// `main` or `reply`.
    pub list: String,
    /// Who asked for it.
    pub requested_by: String,
    /// When requested.
    pub requested_at: Millis,
    /// When granted.
    pub granted_at: Millis,
    /// When it ended (absent: still speaking when the minutes were made).
    pub released_at: Option<Millis>,
    /// Speaking time.
    pub duration_ms: Option<i64>,
    /// The limit.
    pub limit_ms: Option<i64>,
    /// Time beyond the limit.
    pub overrun_ms: Option<i64>,
    /// Who granted it (absent: the policy or the agenda slot).
    pub granted_by: Option<String>,
    /// How it ended: `released`, `revoked_chair`, `revoked_limit_reached`, ...
    pub ended: Option<String>,
    /// A presenter's slot.
    pub slot: bool,
}

/// Something the chair did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChairAction {
    /// When.
    pub at: Millis,
    /// Who.
    pub by: String,
    /// The event type (`floor_granted`, `item_extended`, ...).
    pub action: String,
    /// Details in words.
    pub detail: String,
}

/// One agenda item's record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ItemMinutes {
    /// Item id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Kind.
    pub kind: ItemKind,
    /// Presenters' names.
    pub presenters: Vec<String>,
    /// Final state.
    pub state: ItemState,
    /// Planned time.
    pub planned_ms: i64,
    /// Planned plus extensions.
    pub allotted_ms: i64,
    /// Start.
    pub started_at: Option<Millis>,
    /// End.
    pub ended_at: Option<Millis>,
    /// Wall time from start to end (pauses included).
    pub actual_ms: Option<i64>,
    /// Beyond the allotted time.
    pub overrun_ms: Option<i64>,
    /// Interventions in grant order.
    pub interventions: Vec<Intervention>,
    /// The chair's actions during the item.
    pub chair_actions: Vec<ChairAction>,
}

/// The minutes of a meeting.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Minutes {
    /// The meeting.
    pub meeting: MeetingInfo,
    /// Items in agenda order.
    pub items: Vec<ItemMinutes>,
    /// Interventions while no item was open.
    pub outside_agenda: Vec<Intervention>,
    /// Chair actions while no item was open.
    pub outside_agenda_actions: Vec<ChairAction>,
    /// Last journal sequence number included.
    pub through_seq: u64,
    /// Stream quality per participant and direction, from the health history (empty without
    /// media).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub quality: Vec<super::health::QualitySummary>,
}

/// Builds the minutes from the final agenda view and the journal.
pub fn build(meeting: &MeetingInfo, items: &[ItemInfo], records: &[JournalRecord]) -> Minutes {
    let mut out = Minutes {
        meeting: meeting.clone(),
        items: items
            .iter()
            .map(|i| ItemMinutes {
                id: i.id.clone(),
                title: i.title.clone(),
                kind: i.kind,
                presenters: i.presenters.iter().map(|p| p.name.clone()).collect(),
                state: i.state,
                planned_ms: i.planned_ms,
                allotted_ms: i.planned_ms + i.extended_ms,
                started_at: i.started_at,
                ended_at: i.ended_at,
                actual_ms: i.started_at.zip(i.ended_at).map(|(s, e)| e - s),
                overrun_ms: i.overrun_ms,
                interventions: Vec::new(),
                chair_actions: Vec::new(),
            })
            .collect(),
        outside_agenda: Vec::new(),
        outside_agenda_actions: Vec::new(),
        quality: Vec::new(),
        through_seq: records.last().map_or(0, |r| r.seq),
    };
    let mut requests: HashMap<u64, RequestInfo> = HashMap::new();
    // Open interventions: request id → (item index or None, intervention).
    let mut open: HashMap<u64, (Option<usize>, Intervention)> = HashMap::new();
    let mut current: Option<usize> = None;
    let index = |id: &str| out.items.iter().position(|i| i.id == id);
    let mut done: Vec<(Option<usize>, Intervention)> = Vec::new();
    let mut actions: Vec<(Option<usize>, ChairAction)> = Vec::new();

    for rec in records {
        let Ok(event) = serde_json::from_str::<Event>(&rec.body) else {
            continue;
        };
        let at = rec.at_ms;
        if let Event::ItemStarted { item, .. } = &event {
            current = index(item);
        }
        if let Some((action, detail, by)) = chair_action(&event, &requests) {
            actions.push((
                current,
                ChairAction {
                    at,
                    by,
                    action,
                    detail,
                },
            ));
        }
        match event {
            Event::FloorRequested { request } => {
                requests.insert(request.id, request);
            }
            Event::FloorGranted {
                request,
                by,
                limit_ms,
                slot,
                ..
            } => {
                if let Some(r) = requests.get(&request) {
                    let item = slot.as_deref().and_then(index).or(current);
                    open.insert(
                        request,
                        (
                            item,
                            Intervention {
                                request,
                                speaker: r.beneficiary.name.clone(),
                                delegation: r.beneficiary.delegation.clone(),
                                in_room: r.beneficiary.in_room,
                                list: roundtable_signaling::list_name(r.list).into(),
                                requested_by: r.requested_by.clone(),
                                requested_at: r.requested_at,
                                granted_at: at,
                                released_at: None,
                                duration_ms: None,
                                limit_ms,
                                overrun_ms: None,
                                granted_by: by,
                                ended: None,
                                slot: slot.is_some(),
                            },
                        ),
                    );
                }
            }
            Event::FloorReleased { request, .. } => {
                close(&mut open, &mut done, request, at, "released".into());
            }
            Event::FloorRevoked {
                request, reason, ..
            } => {
                close(
                    &mut open,
                    &mut done,
                    request,
                    at,
                    format!("revoked_{}", reason_name(reason)),
                );
            }
            Event::ItemEnded { .. } => current = None,
            _ => {}
        }
    }
    let mut still: Vec<(Option<usize>, Intervention)> = open.into_values().collect();
    still.sort_by_key(|(_, i)| (i.granted_at, i.request));
    done.extend(still);
    for (item, iv) in done {
        match item {
            Some(i) => out.items[i].interventions.push(iv),
            None => out.outside_agenda.push(iv),
        }
    }
    for item in &mut out.items {
        item.interventions
            .sort_by_key(|i| (i.granted_at, i.request));
    }
    out.outside_agenda
        .sort_by_key(|i| (i.granted_at, i.request));
    for (item, a) in actions {
        match item {
            Some(i) => out.items[i].chair_actions.push(a),
            None => out.outside_agenda_actions.push(a),
        }
    }
    out
}

fn close(
    open: &mut HashMap<u64, (Option<usize>, Intervention)>,
    done: &mut Vec<(Option<usize>, Intervention)>,
    request: u64,
    at: Millis,
    ended: String,
) {
    if let Some((item, mut iv)) = open.remove(&request) {
        let duration = at - iv.granted_at;
        iv.released_at = Some(at);
        iv.duration_ms = Some(duration);
        iv.overrun_ms = iv.limit_ms.map(|l| (duration - l).max(0));
        iv.ended = Some(ended);
        done.push((item, iv));
    }
}

fn reason_name(r: RevokeReason) -> &'static str {
    match r {
        RevokeReason::Chair => "chair",
        RevokeReason::LimitReached => "limit_reached",
        RevokeReason::Override => "override",
        RevokeReason::ChairPriority => "chair_priority",
        RevokeReason::AgendaChanged => "agenda_changed",
        RevokeReason::Left => "left",
    }
}

fn chair_action(
    e: &Event,
    requests: &HashMap<u64, RequestInfo>,
) -> Option<(String, String, String)> {
    let name = |id: &u64| {
        requests
            .get(id)
            .map_or_else(|| format!("request {id}"), |r| r.beneficiary.name.clone())
    };
    let (detail, by) = match e {
        Event::FloorAccepted { request, by } => (format!("accepted {}", name(request)), by),
        Event::FloorGranted {
            request,
            by: Some(by),
            ..
        } => (format!("gave the floor to {}", name(request)), by),
        Event::FloorDenied { request, by } => (format!("denied {}", name(request)), by),
        Event::FloorRevoked {
            request,
            by: Some(by),
            reason,
        } => (
            format!("revoked {} ({})", name(request), reason_name(*reason)),
            by,
        ),
        Event::FloorMoved {
            request,
            position,
            by,
        } => (
            format!("moved {} to position {position}", name(request)),
            by,
        ),
        Event::FloorCancelled { request, by }
            if requests
                .get(request)
                .is_some_and(|r| r.requested_by != *by && r.beneficiary.participant != *by) =>
        {
            (format!("cancelled the request of {}", name(request)), by)
        }
        Event::HandsLowered { requests: ids, by } => {
            (format!("lowered all hands ({} requests)", ids.len()), by)
        }
        Event::ChairPriority { by } => ("used chair priority".to_owned(), by),
        Event::FloorSettingsChanged { settings, by } => (
            format!(
                "floor settings: {:?}, {} microphone(s), {:?} when full, limit {} s",
                settings.policy,
                settings.max_speakers,
                settings.when_full,
                settings.speaking_limit_ms / 1000
            ),
            by,
        ),
        Event::ItemStarted { item, by } => (format!("started {item}"), by),
        Event::ItemPaused { item, by } => (format!("paused {item}"), by),
        Event::ItemResumed { item, by } => (format!("resumed {item}"), by),
        Event::ItemExtended { item, minutes, by } => {
            (format!("extended {item} by {minutes} min"), by)
        }
        Event::ItemEnded { item, by } => (format!("ended {item}"), by),
        Event::ItemSkipped { item, by } => (format!("skipped {item}"), by),
        Event::ItemMoved { item, position, by } => {
            (format!("moved {item} to position {position}"), by)
        }
        Event::TimerMessage { text, by } => (format!("timer message: {text:?}"), by),
        _ => return None,
    };
    Some((e.kind().to_owned(), detail, by.clone()))
}

/// Formats an absolute time as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn format_time(ms: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Formats a duration as `m:ss` (or `h:mm:ss`), with a sign when negative.
pub fn format_duration(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let s = ms.unsigned_abs() / 1000;
    if s >= 3600 {
        format!("{sign}{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    } else {
        format!("{sign}{}:{:02}", s / 60, s % 60)
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Renders the minutes; returns the body and its content type.
pub fn render(m: &Minutes, format: Format) -> (String, &'static str) {
    match format {
        Format::Json => (
            serde_json::to_string_pretty(m).unwrap_or_default(),
            "application/json",
        ),
        Format::Csv => (render_csv(m), "text/csv; charset=utf-8"),
        Format::Markdown => (render_md(m), "text/markdown; charset=utf-8"),
    }
}

fn render_csv(m: &Minutes) -> String {
    let mut s = String::from(
        "item_id,item_title,speaker,delegation,where,list,requested_at,granted_at,released_at,duration_s,limit_s,overrun_s,granted_by,ended\n",
    );
    let rows = m
        .items
        .iter()
        .flat_map(|i| i.interventions.iter().map(move |iv| (Some(i), iv)))
        .chain(m.outside_agenda.iter().map(|iv| (None, iv)));
    for (item, iv) in rows {
        let secs = |v: Option<i64>| v.map(|v| (v / 1000).to_string()).unwrap_or_default();
        let fields = [
            item.map_or("", |i| i.id.as_str()).to_owned(),
            item.map_or("", |i| i.title.as_str()).to_owned(),
            iv.speaker.clone(),
            iv.delegation.clone(),
            if iv.in_room { "in-room" } else { "remote" }.to_owned(),
            iv.list.clone(),
            format_time(iv.requested_at),
            format_time(iv.granted_at),
            iv.released_at.map(format_time).unwrap_or_default(),
            secs(iv.duration_ms),
            secs(iv.limit_ms),
            secs(iv.overrun_ms),
            iv.granted_by.clone().unwrap_or_default(),
            iv.ended.clone().unwrap_or_default(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        s.push_str(&line.join(","));
        s.push('\n');
    }
    s
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn render_md(m: &Minutes) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Minutes: {}\n", md_cell(&m.meeting.title));
    if !m.meeting.organiser.is_empty() || !m.meeting.venue.is_empty() {
        let _ = writeln!(
            s,
            "{} · {}\n",
            md_cell(&m.meeting.organiser),
            md_cell(&m.meeting.venue)
        );
    }
    let _ = writeln!(
        s,
        "Times are UTC. Generated from the journal through event {}.\n",
        m.through_seq
    );
    for (n, item) in m.items.iter().enumerate() {
        let _ = writeln!(s, "## {}. {}\n", n + 1, md_cell(&item.title));
        let mut line = format!(
            "{:?} · planned {} · allotted {}",
            item.kind,
            format_duration(item.planned_ms),
            format_duration(item.allotted_ms)
        );
        match (item.started_at, item.ended_at) {
            (Some(st), Some(en)) => {
                let _ = write!(
                    line,
                    " · held {} to {} · actual {} · overrun {}",
                    format_time(st),
                    format_time(en),
                    format_duration(en - st),
                    format_duration(item.overrun_ms.unwrap_or(0))
                );
            }
            (Some(st), None) => {
                let _ = write!(line, " · started {} · still open", format_time(st));
            }
            _ => {
                let _ = write!(line, " · {:?}", item.state);
            }
        }
        let _ = writeln!(s, "{line}\n");
        if !item.presenters.is_empty() {
            let _ = writeln!(
                s,
                "Presenter(s): {}\n",
                md_cell(&item.presenters.join(", "))
            );
        }
        write_interventions(&mut s, &item.interventions);
        write_actions(&mut s, &item.chair_actions);
    }
    if !m.outside_agenda.is_empty() || !m.outside_agenda_actions.is_empty() {
        let _ = writeln!(s, "## Outside the agenda\n");
        write_interventions(&mut s, &m.outside_agenda);
        write_actions(&mut s, &m.outside_agenda_actions);
    }
    if !m.quality.is_empty() {
        let _ = writeln!(
            s,
            "## Stream quality\n\nScores 0-100 sampled every 2 s (up: what they sent, down: what they received).\n"
        );
        let _ = writeln!(
            s,
            "| Participant | Direction | Mean | Lowest | Poor | Alerts |\n| --- | --- | --- | --- | --- | --- |"
        );
        for q in &m.quality {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} % | {} |",
                md_cell(&q.participant),
                q.direction,
                q.mean,
                q.min,
                q.poor_pct,
                q.alerts
            );
        }
        let _ = writeln!(s);
    }
    s
}

fn write_interventions(s: &mut String, ivs: &[Intervention]) {
    if ivs.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "| # | Speaker | Delegation | Where | Requested | Granted | Released | Duration | Limit | Overrun | Ended |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (n, iv) in ivs.iter().enumerate() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            n + 1,
            md_cell(&iv.speaker),
            md_cell(&iv.delegation),
            if iv.in_room { "in the room" } else { "remote" },
            format_time(iv.requested_at),
            format_time(iv.granted_at),
            iv.released_at
                .map(format_time)
                .unwrap_or_else(|| "speaking".into()),
            iv.duration_ms.map(format_duration).unwrap_or_default(),
            iv.limit_ms
                .map(format_duration)
                .unwrap_or_else(|| "none".into()),
            iv.overrun_ms.map(format_duration).unwrap_or_default(),
            iv.ended.as_deref().unwrap_or(""),
        );
    }
    s.push('\n');
}

fn write_actions(s: &mut String, actions: &[ChairAction]) {
    if actions.is_empty() {
        return;
    }
    let _ = writeln!(s, "Chair actions:\n");
    for a in actions {
        let _ = writeln!(
            s,
            "- {} {}: {}",
            format_time(a.at),
            md_cell(&a.by),
            md_cell(&a.detail)
        );
    }
    s.push('\n');
}
