//! Stream health: what clients report of their own streams (`client_stats`), and what
//! technicians receive (`health`, `alert`).

use serde::{Deserialize, Serialize};

use crate::common::Millis;

/// The type of an ICE candidate (of the selected pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateType {
    /// A local interface address.
    Host,
    /// Server reflexive (behind a NAT, found with STUN).
    Srflx,
    /// Peer reflexive (learned from connectivity checks).
    Prflx,
    /// Through a TURN relay.
    Relay,
}

/// Why a sender's encoder holds back (W3C `qualityLimitationReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityLimitation {
    /// Not limited.
    None,
    /// Limited by CPU.
    Cpu,
    /// Limited by the bandwidth estimate.
    Bandwidth,
    /// Anything else.
    Other,
}

/// A client's summary of its own sending side (`client_stats.up`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientUp {
    /// Why the encoder is limited (the worst of the camera's layers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality_limitation: Option<QualityLimitation>,
    /// The connection's outgoing bandwidth estimate, kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_kbps: Option<f64>,
    /// Frames per second of the highest layer sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Height of the highest layer sent, pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Microphone level, 0 to 1 (W3C `audioLevel` of the media source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_level: Option<f64>,
}

/// A client's summary of its own receiving side (`client_stats.down`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientDown {
    /// Video freezes so far (W3C `freezeCount`, summed over the received videos).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_count: Option<u32>,
    /// Frames per second of the main video received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Height of the main video received, pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Mean jitter buffer delay of the main video, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_buffer_ms: Option<f64>,
    /// Packets lost so far on every received stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packets_lost: Option<u64>,
    /// Level of the loudest received audio, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_level: Option<f64>,
}

/// Quality grade of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// Score above 80.
    Excellent,
    /// Score above 40.
    Good,
    /// Score of 40 or less.
    Poor,
}

/// What brought a score down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCause {
    /// Packet loss.
    Loss,
    /// Delay and jitter.
    Delay,
    /// Bitrate well below what the stream should carry.
    Bitrate,
    /// A lower simulcast layer than wanted.
    Layer,
    /// No packets at all.
    Dry,
    /// Video frozen at the receiver.
    Freeze,
}

/// One direction of one participant's media, as the server sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamHealth {
    /// 0 to 100, smoothed (falls fast, recovers slowly).
    pub score: u8,
    /// Grade of the score.
    pub grade: Grade,
    /// What brought the score down, when it is below 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<HealthCause>,
    /// Estimated mean opinion score of the audio (ITU-T G.107 E-model), 1 to 4.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mos: Option<f64>,
    /// Packet loss over the last sample period, percent.
    pub loss_pct: f64,
    /// Interarrival jitter (RFC 3550), ms.
    pub jitter_ms: f64,
    /// Round-trip time to the client, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Bitrate, kbit/s.
    pub kbps: f64,
    /// Video frames per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
    /// Video height, pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Scores of the last 5 minutes, oldest first, one per report (every 2 s).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<u8>,
}

/// One participant's row on the technician page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantHealth {
    /// Participant id.
    pub participant: String,
    /// What they send (absent: not publishing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<StreamHealth>,
    /// What they receive (absent: not subscribed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<StreamHealth>,
    /// Candidate type of the client's side of the selected ICE pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateType>,
    /// Microphone level, 0 (loudest) to 127 (silence), -dBov, from RFC 6464.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<u8>,
    /// What the client itself reports (last `client_stats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientReport>,
    /// A technician's override of what they receive (absent: automatic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<ForceLayer>,
}

/// The client's own last report, as received (`client_stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientReport {
    /// When it arrived.
    pub at: Millis,
    /// Sending side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<ClientUp>,
    /// Receiving side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<ClientDown>,
    /// The local candidate type of its selected ICE pair, as it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateType>,
}

/// What a technician forces a participant to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForceLayer {
    /// The automatic choice (render size, layer fallback).
    Auto,
    /// Every video on its lowest simulcast layer.
    Low,
    /// No video at all, audio only.
    AudioOnly,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A published stream sent nothing for 3 s.
    Dry,
    /// A received video froze (the client reports freezes, or no frames while packets flow).
    Frozen,
    /// Loss over 5 % for 10 s.
    Loss,
    /// The floor holder's microphone silent for 10 s.
    DeadMic,
    /// Speech from someone without the floor (their audio is held back).
    SoundWithoutFloor,
    /// The client connects only through a TURN relay.
    RelayOnly,
    /// The server's CPU over 80 %.
    CpuHigh,
}

/// An alert, raised and later cleared; a technician (or, for the floor alerts, the chair)
/// acknowledges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertInfo {
    /// Alert id (per meeting, increasing).
    pub id: u64,
    /// What it is about.
    pub kind: AlertKind,
    /// Whose stream (absent: the server's, `cpu_high`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    /// Which direction: `up` (what they send) or `down` (what they receive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Human-readable cause, with the numbers.
    pub detail: String,
    /// When it was raised.
    pub raised_at: Millis,
    /// When the condition ended (absent: still on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<Millis>,
    /// Who acknowledged it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_by: Option<String>,
    /// When it was acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<Millis>,
    /// A floor alert (`dead_mic`, `sound_without_floor`): the chair receives it too.
    pub floor: bool,
}

/// A direction of a participant's media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// What they send.
    Up,
    /// What they receive.
    Down,
}
